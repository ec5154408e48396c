"""/metrics is gzipped only when the client's Accept-Encoding admits it, q-values included."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
import pytest

from monitor.daemon import Daemon
from monitor.http.encoding import accepts_gzip
from monitor.inventory import load_config
from tests.conftest import free_port


@pytest.mark.parametrize(("header", "gzipped"), [
    ("gzip", True), ("gzip, deflate, br", True), ("deflate, gzip;q=1.0, *;q=0.5", True),
    ("GZIP;Q=0.1", True), ("x-gzip", True), ("*", True), ("br;q=1, *;q=0.2", True),
    ("", False), ("identity", False), ("gzip;q=0", False), ("gzip; q=0.000", False),
    ("gzip;q=0, *", False), ("*;q=0", False), ("deflate, br", False), ("gzip;q=nonsense", False),
    ("br, *;q=0.5, gzip;q=0", False),
])
def test_accept_encoding_weights(header: str, gzipped: bool) -> None:
    assert accepts_gzip(header) is gzipped


@pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMP sockets need root here")
async def test_gzip_refused_by_weight_gets_plain_text(tmp_path: Path) -> None:
    path = tmp_path / "sites.yaml"
    path.write_text("sites:\n  - {id: a, name: A, tier: province, address: 127.0.0.1}\n")
    port = free_port()
    daemon = Daemon(load_config(path), config_path=str(path), listen=f"127.0.0.1:{port}")
    await daemon.startup()
    try:
        async with aiohttp.ClientSession(auto_decompress=False) as http:
            for header, encoding in (("gzip;q=0", None), ("gzip;q=0.5", "gzip")):
                async with http.get(f"http://127.0.0.1:{port}/metrics",
                                    headers={"Accept-Encoding": header}) as response:
                    body = await response.read()
                assert response.headers.get("Content-Encoding") == encoding, header
                assert body.startswith(b"\x1f\x8b") is (encoding == "gzip"), header
    finally:
        await daemon.shutdown()
