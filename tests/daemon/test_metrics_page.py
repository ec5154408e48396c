"""/metrics from a running daemon as Prometheus fetches it: gzip, passed on from the
render child as it comes, one whole gzip member with the same series as the plain page."""

from __future__ import annotations

import asyncio
import os
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.daemon import Daemon
from monitor.inventory import load_config
from tests.conftest import free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMP sockets need root here")

SITES = "".join(f"  - {{id: s{i}, name: Site {i}, tier: commune, address: 127.0.0.{20 + i}}}\n"
                for i in range(6))


def series(text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {(s.name, tuple(sorted(s.labels.items())))
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.mark.parametrize("forked", [False, True], ids=["thread", "child"])
async def test_the_gzip_page_is_the_plain_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              forked: bool) -> None:
    """Both ways of rendering: a small inventory's page in a worker thread (no fork at
    every scrape), a large one's in a forked child (here: the threshold lowered)."""
    import monitor.http.server
    import monitor.system.forked

    children: list[str] = []
    run_in_child = monitor.http.server.run_in_child

    async def counted(produce: Any, what: str, **kw: Any) -> bytes:
        children.append(what)
        return await run_in_child(produce, what, **kw)

    monkeypatch.setattr(monitor.http.server, "run_in_child", counted)
    handed_over = monitor.http.server._handed_over
    direct: list[bool] = []

    async def seen(request: Any, response: Any) -> int | None:
        fd = await handed_over(request, response)
        direct.append(fd is not None)
        return fd

    monkeypatch.setattr(monitor.http.server, "_handed_over", seen)
    if forked:
        monkeypatch.setattr(monitor.system.forked, "CHILD_ABOVE_SITES", 0)
    path = tmp_path / "sites.yaml"
    path.write_text("defaults: {interval: 50ms, timeout: 200ms}\nsites:\n" + SITES)
    port = free_port()
    daemon = Daemon(load_config(path), config_path=str(path), listen=f"127.0.0.1:{port}")
    await daemon.startup()
    try:
        # every family present for every site (jitter needs two replies) before the
        # two scrapes, so that both pages hold the same series
        for _ in range(100):
            if all(state.received >= 3 for state in daemon.table):
                break
            await asyncio.sleep(0.05)
        url = f"http://127.0.0.1:{port}/metrics"
        async with aiohttp.ClientSession(auto_decompress=False) as client:
            async with client.get(url, headers={"Accept-Encoding": "gzip"}) as response:
                assert response.status == 200
                assert response.headers["Content-Encoding"] == "gzip"
                packed = await response.read()
            async with client.get(url, headers={"Accept-Encoding": "identity"}) as response:
                assert "Content-Encoding" not in response.headers
                plain = (await response.read()).decode()
            async with client.head(url) as response:  # the headers, no render
                assert response.status == 200 and await response.read() == b""
        # HTTP/1.0 has no chunks: the page comes through the daemon, ended by the close
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.0\r\nHost: vcmon\r\n\r\n")
        head, _, old_client = (await asyncio.wait_for(reader.read(), 10)).partition(b"\r\n\r\n")
        writer.close()
        assert head.startswith(b"HTTP/1.0 200") and b"chunked" not in head.lower()
        assert series(old_client.decode()) == series(plain)
        unpacked = zlib.decompressobj(16 + zlib.MAX_WBITS)
        text = unpacked.decompress(packed).decode()
        assert unpacked.eof and unpacked.unused_data == b""  # one gzip member, whole
        assert series(text) == series(plain)
        sites = {dict(labels).get("site") for name, labels in series(text)
                 if name == "vcmon_site_up"}
        assert sites == {f"s{i}" for i in range(6)}
        # and it ends where the plain page does: with the daemon-wide families
        assert text.splitlines()[-1].split(" ")[0] == plain.splitlines()[-1].split(" ")[0]
        assert children == (["render"] * 3 if forked else [])
        # over HTTP/1.1 the child writes to the client itself
        assert direct == ([True, True, False] if forked else [])
    finally:
        await daemon.shutdown()


async def test_the_tables_are_out_of_the_collectors_sight(tmp_path: Path) -> None:
    """A full collection at 20,000 sites walked the tables for ~0.1 s while probes were
    out: after the start and after a reload they are frozen (monitor.system.garbage.settle)."""
    import gc

    from monitor.status.sites import SiteState

    def walked() -> int:
        return sum(isinstance(o, SiteState) for o in gc.get_objects())

    path = tmp_path / "sites.yaml"
    path.write_text("defaults: {interval: 50ms, timeout: 200ms}\nsites:\n" + SITES)
    daemon = Daemon(load_config(path), config_path=str(path),
                    listen=f"127.0.0.1:{free_port()}")
    await daemon.startup()
    try:
        assert walked() > 0  # startup itself does not freeze: serve() settles it
        gc.freeze()
        path.write_text(path.read_text() + "".join(
            f"  - {{id: t{i}, name: T {i}, tier: commune, address: 127.0.0.{40 + i}}}\n"
            for i in range(6)))
        assert await daemon.reload() == []
        assert len(daemon.table) == 12
        assert walked() == 0
    finally:
        await daemon.shutdown()
        gc.unfreeze()
