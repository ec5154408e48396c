"""A reload is a transaction: every resource that can fail is opened before the swap, and
a failure at any of them leaves the running daemon exactly as it was."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import probes.icmp
from monitor.daemon import Daemon
from monitor.inventory import load_config
from tests.conftest import free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMP sockets need root here")

HEAD = "defaults: {interval: 20ms, timeout: 200ms}\n"
SITES = """sites:
  - {id: s1, name: Site 1, tier: province, address: 127.0.0.21}
  - {id: s2, name: Site 2, tier: commune, parent: s1, address: 127.0.0.22}
"""
# a third site: one more row in the API and more series on /metrics
S3 = "  - {id: s3, name: Site 3, tier: commune, parent: s1, address: 127.0.0.23%s}\n"
GOOD = HEAD + SITES + S3 % ""


def faults(tmp: Path) -> dict[str, str]:
    """An inventory per resource that can fail; each also adds site s3."""
    garbage = tmp / "garbage.pem"
    garbage.write_text("not a certificate\n")
    fifo = tmp / "password-fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    web = tmp / "web.yml"
    web.write_text(f"tls_server_config: {{cert_file: {tmp}/none.crt, key_file: {tmp}/none.key}}\n")
    return {
        # a new payload size needs a new ICMP engine, whose socket fails
        "engine": HEAD + SITES + S3 % ", probe: {payload_size: 512}",
        # the first ICMP service probe needs the echo engine, whose socket fails
        "echo engine": HEAD + SITES + S3 % ", probes: [{kind: icmp, name: echo}]",
        # both: the engine opened first must be closed again when the second fails
        "engine, then echo engine": HEAD + SITES + S3 % (
            ", probe: {payload_size: 512}, probes: [{kind: icmp, name: echo}]"),
        "mqtt password file": GOOD + "mqtt: {host: 127.0.0.1, username: vcmon, "
                              f"password_file: {tmp}/missing-password}}\n",
        # a FIFO nobody writes to: reading it would block the event loop for good
        "mqtt password fifo": GOOD + "mqtt: {host: 127.0.0.1, username: vcmon, "
                              f"password_file: {fifo}}}\n",
        "mqtt tls files": GOOD + f"mqtt: {{host: 127.0.0.1, tls: {{ca_file: {garbage}}}}}\n",
        "web tls files": GOOD + f"web: {{config_file: {web}}}\n",
        "inventory": GOOD.replace("127.0.0.23", "127.0.0.300"),
    }


# found by the reader (the child that parses the inventory), as problems of the file
READ_FAULTS = {"web tls files", "inventory"}


def failing_sockets(fail_from: int) -> Callable[..., Any]:
    """``open_icmp_socket`` failing from its ``fail_from``-th call on (0: every call)."""
    real = probes.icmp.open_icmp_socket
    calls = [0]

    def open_icmp_socket(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] > fail_from:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        return real(*args, **kwargs)

    return open_icmp_socket


async def running_state(daemon: Daemon, port: int) -> dict[str, Any]:
    """What a reload may change, as the daemon's clients and its parts see it."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/api/v1/sites") as response:
            sites = [record["id"] for record in (await response.json())["sites"]]
        async with http.get(f"http://127.0.0.1:{port}/metrics",
                            headers={"Accept-Encoding": "identity"}) as response:
            text = await response.text()
    # which series exist, as far as the inventory decides it (a site's jitter, say,
    # appears once it has two replies, whatever the reload)
    families = list(text_string_to_metric_families(text))
    series = {(s.name, tuple(sorted(s.labels.items())))
              for family in families if family.name == "vcmon_site_info"
              for s in family.samples}
    assert series, "vcmon_site_info is on the page"
    series |= {("site", s.labels["site"]) for family in families for s in family.samples
               if "site" in s.labels}
    return {
        "sites": sites, "series": series, "config": id(daemon.config),
        "source": daemon.config.source,
        "targets": {k: (t.address, t.send, t.interval)
                    for k, t in daemon.scheduler.targets.items()},
        "services": {k: (t.address, t.send) for k, t in daemon.services.scheduler.targets.items()},
        "engines": dict(daemon.plan.engines), "echo": daemon.services.echo,
        "table": list(daemon.table.sites), "health": list(daemon.health.sites),
    }


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("how", ["post", "sighup"])
async def test_a_failing_resource_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        how: str) -> None:
    path = tmp_path / "sites.yaml"
    path.write_text(HEAD + SITES)
    registry = CollectorRegistry()
    port = free_port()
    daemon = Daemon(load_config(path), config_path=str(path), registry=registry,
                    listen=f"127.0.0.1:{port}")
    serving = asyncio.create_task(daemon.serve())
    try:
        await asyncio.wait_for(daemon.scheduler.first_cycle_done.wait(), 5)
        for fault, text in faults(tmp_path).items():
            path.write_text(text)
            # the second ICMP socket of "engine, then echo engine" fails, the first opens
            fail_from = 1 if fault == "engine, then echo engine" else 0
            monkeypatch.setattr(probes.icmp, "open_icmp_socket", failing_sockets(fail_from))
            before, fds = await running_state(daemon, port), open_fds()
            with structlog.testing.capture_logs() as logs, caplog.at_level(logging.ERROR):
                if how == "post":
                    async with aiohttp.ClientSession() as http, http.post(
                            f"http://127.0.0.1:{port}/-/reload") as response:
                        body = await response.text()
                    assert response.status == 400, (fault, body)
                    assert "reload failed; still running the previous configuration" in body
                    assert "Server got itself in trouble" not in body
                else:
                    os.kill(os.getpid(), signal.SIGHUP)
                    for _ in range(100):
                        await asyncio.sleep(0.05)
                        if not daemon._background and any(
                                e["event"] == "reload_failed" for e in logs):
                            break
                gc.collect()  # an unretrieved task exception is reported when collected
            failed = [e for e in logs if e["event"] == "reload_failed"]
            assert len(failed) == 1, (fault, logs)
            if how == "post":
                # found reading the file: each problem with its file; else the reason
                told = "/tmp/" if fault in READ_FAULTS else failed[0]["reason"]
                assert told in body, (fault, body)
            assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
            monkeypatch.undo()
            assert registry.get_sample_value("vcmon_config_last_reload_successful") == 0
            after = await running_state(daemon, port)
            assert after == before, fault
            assert open_fds() == fds, f"{fault}: sockets opened for it stay open"
        # and the same inventory, once its resources can be had, is applied whole
        path.write_text(faults(tmp_path)["engine, then echo engine"])
        assert await daemon.reload() == []
        assert registry.get_sample_value("vcmon_config_last_reload_successful") == 1
        assert set(daemon.scheduler.targets) == {"s1", "s2", "s3"}
        assert set(daemon.services.scheduler.targets) == {"s3/echo"}
        assert ("icmp", 512) in daemon.plan.engines and daemon.services.echo is not None
    finally:
        daemon.request_stop()
        await asyncio.wait_for(serving, 10)


async def test_a_reload_stuck_reading_does_not_hold_up_the_next(tmp_path: Path) -> None:
    good = tmp_path / "sites.yaml"
    good.write_text(GOOD)
    daemon = Daemon(load_config(good), config_path=str(good), listen=f"127.0.0.1:{free_port()}")
    await daemon.startup()
    try:
        reader = daemon._read

        async def stalls() -> Any:
            # a file system that does not answer: the read never ends by itself
            await asyncio.sleep(3600)

        daemon._read = stalls  # type: ignore[method-assign]
        stuck = asyncio.create_task(daemon.reload())
        await asyncio.sleep(0.1)
        daemon._read = reader  # type: ignore[method-assign]
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(daemon.reload(), 5) == []
        assert asyncio.get_running_loop().time() - started < 2
        problems = await asyncio.wait_for(stuck, 1)
        assert problems and "a newer reload" in problems[0]
        assert set(daemon.scheduler.targets) == {"s1", "s2", "s3"}
    finally:
        await daemon.shutdown()


async def test_a_fifo_in_place_of_the_inventory_is_refused_promptly(tmp_path: Path) -> None:
    path = tmp_path / "sites.yaml"
    path.write_text(HEAD + SITES)
    port = free_port()
    daemon = Daemon(load_config(path), config_path=str(path), listen=f"127.0.0.1:{port}")
    await daemon.startup()
    try:
        path.unlink()
        os.mkfifo(path)  # opened by nobody: an open() for reading would wait forever
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with aiohttp.ClientSession() as http, http.post(
                f"http://127.0.0.1:{port}/-/reload") as response:
            body = await response.text()
        assert loop.time() - started < 2
        assert response.status == 400
        assert "the inventory path is a named pipe (FIFO), not a regular file" in body
        path.unlink()
        path.write_text(GOOD)
        assert await asyncio.wait_for(daemon.reload(), 5) == []
        assert set(daemon.scheduler.targets) == {"s1", "s2", "s3"}
    finally:
        await daemon.shutdown()
