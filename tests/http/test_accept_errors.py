"""Out of file descriptors: accept() failures pause accepting and are logged at most once
a second with a count (asyncio logged each one, thousands a second), and the listener
serves again once descriptors are free."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

# A listener allowed far more connections than the process has descriptors for (the
# unit's LimitNOFILE normally prevents this): accept() must fail with EMFILE.
SERVER = r"""
import asyncio, resource, sys
from aiohttp import web
from prometheus_client import CollectorRegistry
from monitor.http.listener import Listener, ListenerMetrics
from monitor.system.logs import configure_logging

async def hello(request):
    return web.Response(text="hello\n")

async def main():
    configure_logging("info", "json")
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    sock = __import__("socket").socket()
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    metrics = ListenerMetrics(CollectorRegistry())
    listener = Listener(runner.server, None, metrics, limit=10_000)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    listener.start(sock)
    print(sock.getsockname()[1], flush=True)
    await asyncio.sleep(float(sys.argv[1]))
    print("accept_errors", metrics.accept_errors._value.get(), flush=True)
    await listener.close()
    await runner.cleanup()

asyncio.run(main())
"""
SECONDS = 4.0


def test_accept_errors_are_paused_and_counted_not_flooded() -> None:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(SECONDS)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    held: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        started = time.monotonic()
        for _ in range(150):  # 150 connections for ~40 free descriptors
            held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        time.sleep(2.0)
        for sock in held:
            sock.close()
        held.clear()
        time.sleep(0.5)
        # descriptors are free again: served at once, however long the pause had grown
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            sock.settimeout(2)
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        assert time.monotonic() - started < SECONDS
        out, err = proc.communicate(timeout=SECONDS + 10)
    finally:
        for sock in held:
            sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err
    failed = [json.loads(line) for line in err.splitlines() if "http_accept_failed" in line]
    assert 1 <= len(failed) <= 4, err  # at most once a second, for ~2.5 s of exhaustion
    assert failed[0]["problem"] == "Too many open files"
    assert len(err.splitlines()) == len(failed), err  # and nothing else (asyncio's own)
    errors = float(out.split("accept_errors")[1])
    assert errors >= len(failed)
