"""Malformed requests carrying credentials: the log says once, at info level and without
the request's content, that a client sent one; no credential reaches it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path

import pytest

from tests.conftest import free_port, stop_process
from tests.http.hostile import daemon_process, log_lines, malformed_requests, secrets_in
from tests.http.test_hostile_clients import inventory

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMP sockets need root here")


async def test_no_credential_of_a_malformed_request_reaches_the_log(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "vcmon.log"
    proc = daemon_process(inventory(tmp_path), port, log, open_files=1024)
    try:
        for _ in range(100):
            await asyncio.sleep(0.1)
            assert proc.poll() is None, log.read_text()
            if '"event": "started"' in log.read_text():
                break
        for _ in range(3):
            for request in malformed_requests():
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request)
                answer = await asyncio.wait_for(reader.read(), 5)
                refused = answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400"))
                assert answer == b"" or refused, answer[:100]
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    finally:
        stop_process(proc)
    lines = list(log_lines(log))
    assert [line for line in lines if secrets_in(line)] == []
    bad = [json.loads(line) for line in lines if "http_bad_request" in line]
    assert len(bad) == 1, lines  # 18 malformed requests from one client in a minute
    assert bad[0]["level"] == "info" and bad[0]["peer"] == "127.0.0.1"
    assert set(bad[0]) <= {"event", "level", "timestamp", "logger", "peer", "problem",
                           "status", "hint"}
