"""The ICMP sockets' receive buffer: what the kernel granted, and the warning when it
holds too little of the daemon's replies for the loop's pauses."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import structlog
from prometheus_client import CollectorRegistry

from monitor.daemon import BUFFER_SECONDS, Daemon
from monitor.inventory import load_config
from monitor.probing.plan import probe_rate
from monitor.probing.scheduler import Target
from tests.conftest import free_port
from tests.netns import route_device

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMP sockets need root here")

INVENTORY = ("defaults: {interval: 1s, timeout: 500ms}\nsites:\n"
             "  - {id: s1, name: Site 1, tier: commune, address: 127.0.0.31}\n")


async def test_a_buffer_too_small_for_the_probe_rate_is_named_with_its_fix(
        tmp_path: Path) -> None:
    assert route_device("127.0.0.31") == "lo"
    path = tmp_path / "sites.yaml"
    path.write_text(INVENTORY)
    with structlog.testing.capture_logs() as logs:
        daemon = Daemon(load_config(path), config_path=str(path), registry=CollectorRegistry(),
                        listen=f"127.0.0.1:{free_port()}")
        await daemon.startup()
    try:
        engine = next(iter(daemon.plan.engines.values()))
        assert engine._v4 is not None
        granted = engine._v4.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert engine.capacity == granted // 1024 > 0
        # one site a second: the buffer holds thousands of seconds, nothing to say
        assert not [e for e in logs if e["event"] == "socket_buffer_small"]
        assert daemon.plan.buffer_seconds(1.0) == engine.capacity
        # a rate whose replies would fill it in less than BUFFER_SECONDS (not sent)
        fast = [Target(site_id=f"f{i}", address="127.0.0.31", send=lambda *a: None,
                       interval=BUFFER_SECONDS / engine.capacity, timeout=0.5)
                for i in range(2)]
        assert daemon.plan.buffer_seconds(probe_rate(fast)) == pytest.approx(BUFFER_SECONDS / 2)
        with structlog.testing.capture_logs() as logs:
            daemon._check_buffer(fast)
        (warning,) = [e for e in logs if e["event"] == "socket_buffer_small"]
        assert warning["log_level"] == "warning"
        assert warning["holds_s"] == pytest.approx(BUFFER_SECONDS / 2, abs=0.001)
        assert "net.core.rmem_max" in warning["hint"]
        assert "deploy/sysctl.d/61-vcmon-buffer.conf" in warning["hint"]
    finally:
        await daemon.shutdown()
