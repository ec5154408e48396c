"""systemd's notify protocol, seen from systemd's side of the socket."""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.daemon import Daemon
from monitor.inventory import parse_config
from monitor.system.sdnotify import Notifier
from tests.conftest import free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMP sockets need root here")

SITES = """
defaults: {interval: 50ms, timeout: 200ms}
sites:
  - {id: tinh, name: Tỉnh, tier: province, address: 127.0.0.10}
  - {id: xa, name: Xã, tier: commune, parent: tinh, address: 127.0.0.11}
"""


class Listener:
    """A unix datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address.replace("@", "\0", 1) if address.startswith("@") else address)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []

    def collect(self, seconds: float, until: str | None = None) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data))
            if until is not None and until in data.splitlines():
                return

    def seen(self, field: str) -> list[float]:
        return [t for t, data in self.messages if field in data.splitlines()]


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Listener, str]]:
    address = (str(tmp_path / "notify") if request.param == "path"
               else f"@vcmon-test-{secrets.token_hex(4)}")
    lst = Listener(address)
    yield lst, address
    lst.sock.close()


def test_ready_watchdog_reload_stopping(listener: tuple[Listener, str], tmp_path: Path) -> None:
    lst, address = listener
    config = tmp_path / "sites.yaml"
    config.write_text(SITES, encoding="utf-8")
    env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", "run", "--config", str(config),
         "--listen", f"127.0.0.1:{free_port()}", "--log-format", "json"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lst.collect(15, until="READY=1")
        assert lst.seen("READY=1"), lst.messages
        lst.collect(1.2)
        pings = lst.seen("WATCHDOG=1")
        # every WATCHDOG_USEC/2 = 0.2 s
        assert 4 <= len(pings) <= 8, pings
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert max(gaps) < 0.35
        proc.send_signal(signal.SIGHUP)
        lst.collect(5, until="READY=1")
        fields = [data.splitlines()[0] for _, data in lst.messages]
        reloading = fields.index("RELOADING=1")
        assert "READY=1" in fields[reloading:]
        proc.send_signal(signal.SIGTERM)
        lst.collect(5, until="STOPPING=1")
        assert lst.seen("STOPPING=1")
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


class Recording(Notifier):
    def __init__(self) -> None:
        super().__init__(address="")
        self.watchdog_interval = 0.2
        self.sent: list[tuple[float, str]] = []

    def send(self, *fields: str) -> None:
        self.sent.append((time.monotonic(), fields[0]))


async def test_a_stalled_probe_loop_stops_the_watchdog() -> None:
    notifier = Recording()
    daemon = Daemon(parse_config(SITES), listen=f"127.0.0.1:{free_port()}", notifier=notifier)
    await daemon.startup()
    try:
        await asyncio.sleep(0.65)
        assert len([f for _, f in notifier.sent if f == "WATCHDOG=1"]) >= 2
        # the probe loop dies: nothing sends, the schedule falls behind
        scheduler = daemon._tasks[0]
        scheduler.cancel()
        await asyncio.sleep(0.05)
        stalled_at = time.monotonic()
        await asyncio.sleep(0.8)
        after = [t for t, f in notifier.sent if f == "WATCHDOG=1" and t > stalled_at + 0.2]
        assert after == []
    finally:
        await daemon.shutdown()
