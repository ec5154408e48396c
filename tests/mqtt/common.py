"""What the MQTT tests share: inventories with an ``mqtt:`` section, waiting on a metric."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CollectorRegistry

from monitor.daemon import Daemon
from monitor.inventory import Config, parse_config
from tests.conftest import free_port


def inventory(port: int, *, sites: int = 4, interval: str = "50ms", first: int = 1,
              mqtt: str = "", extra: str = "") -> str:
    """``sites`` sites on 127.0.50.``first``... (host loopback), publishing to ``port``."""
    rows = "".join(
        f"  - {{id: s{n}, name: Điểm cầu {n}, tier: commune, address: 127.0.50.{n}}}\n"
        for n in range(first, first + sites))
    return (f"defaults: {{interval: {interval}, timeout: 200ms}}\n"
            f"mqtt:\n  host: 127.0.0.1\n  port: {port}\n"
            "  reconnect_initial: 50ms\n  reconnect_max: 200ms\n"
            f"{mqtt}{extra}sites:\n{rows}")


def config(port: int, **kwargs: Any) -> Config:
    return parse_config(inventory(port, **kwargs), "test.yaml")


def daemon_for(cfg: Config) -> Daemon:
    return Daemon(cfg, registry=CollectorRegistry(), listen=f"127.0.0.1:{free_port()}")


class Running:
    """A started daemon; ``stop()`` shuts it down once and says how long that took."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.stopped_in: float | None = None

    async def stop(self) -> float:
        if self.stopped_in is None:
            started = time.monotonic()
            await self.daemon.shutdown()
            self.stopped_in = time.monotonic() - started
        return self.stopped_in


@asynccontextmanager
async def running(daemon: Daemon) -> AsyncIterator[Running]:
    await daemon.startup()
    run = Running(daemon)
    try:
        yield run
    finally:
        await run.stop()


def sample(daemon: Daemon, name: str, **labels: str) -> float:
    value = daemon.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def until(check: Callable[[], bool], seconds: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        await asyncio.sleep(0.02)


def until_blocking(check: Callable[[], bool], seconds: float, what: str) -> None:
    """Wait while holding the event loop: an in-process publisher cannot run meanwhile."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.01)


def payloads(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [json.loads(m["payload"]) for m in messages if m["payload"]]


def event_seqs(messages: list[dict[str, Any]]) -> list[int]:
    return [p["seq"] for p in payloads(messages)]


def first_occurrences(seqs: list[int]) -> list[int]:
    """The sequence numbers in the order first seen: a QoS 1 re-send shows up once."""
    seen: dict[int, None] = {}
    for seq in seqs:
        seen.setdefault(seq)
    return list(seen)
