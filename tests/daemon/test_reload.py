"""Reloading the inventory: nothing lost for sites that stay, a bad file changes nothing."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from monitor.daemon import Daemon
from monitor.inventory import load_config
from monitor.metrics.page import render
from tests.conftest import free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMP sockets need root here")

HEAD = "defaults: {interval: 20ms, timeout: 200ms}\nsites:\n"
SITE = "  - {{id: {id}, name: Site {id}, tier: commune, address: 127.0.0.{n}{extra}}}\n"


def inventory(ids: list[str], extra: dict[str, str] | None = None) -> str:
    extra = extra or {}
    return HEAD + "".join(
        SITE.format(id=i, n=20 + int(i[1:]), extra=extra.get(i, "")) for i in ids)


A = inventory(["s1", "s2", "s3", "s4", "s5"])
B = inventory(["s1", "s2", "s3", "s4", "s6"],
              {"s2": ", probe: {interval: 30ms}", "s3": ", thresholds: {rtt: 5ms}"})
BROKEN = A.replace("address: 127.0.0.21", "address: 127.0.0.300")


def counters(daemon: Daemon) -> dict[str, float]:
    text = render(daemon, daemon.registry).decode()
    return {s.labels["site"]: s.value
            for f in text_string_to_metric_families(text)
            if f.name == "vcmon_probe_packets_sent" for s in f.samples
            if s.name.endswith("_total")}


async def test_fifty_reloads_while_scraped(tmp_path: Path) -> None:
    path = tmp_path / "sites.yaml"
    path.write_text(A)
    registry = CollectorRegistry()
    port = free_port()
    daemon = Daemon(load_config(path), config_path=str(path), registry=registry,
                    listen=f"127.0.0.1:{port}")
    await daemon.startup()
    try:
        await asyncio.sleep(0.3)
        last = counters(daemon)
        async with aiohttp.ClientSession() as http:
            for i in range(50):
                broken = i == 25
                path.write_text(BROKEN if broken else (B if i % 2 == 0 else A))
                if i % 5 == 0:
                    async with http.post(f"http://127.0.0.1:{port}/-/reload") as response:
                        body = await response.text()
                        assert response.status == (400 if broken else 200), body
                    problems = body.splitlines()[1:] if broken else []
                else:
                    problems = await daemon.reload()
                await asyncio.sleep(0.05)
                now = counters(daemon)
                for site in ("s1", "s2", "s3", "s4"):  # in every valid version
                    assert now[site] >= last[site], (i, site, last[site], now[site])
                if broken:
                    assert len(problems) == 1 and "sites[0].address" in problems[0]
                    assert registry.get_sample_value(
                        "vcmon_config_last_reload_successful") == 0
                    assert set(now) == set(last)  # nothing changed
                else:
                    assert problems == []
                    assert registry.get_sample_value(
                        "vcmon_config_last_reload_successful") == 1
                    expect = {"s1", "s2", "s3", "s4", "s6" if i % 2 == 0 else "s5"}
                    assert set(now) == expect
                last = now
        path.write_text(B)
        assert await daemon.reload() == []
        assert registry.get_sample_value(
            "vcmon_config_reloads_total", {"result": "failure"}) == 1
        assert registry.get_sample_value(
            "vcmon_config_reloads_total", {"result": "success"}) == 51  # 49 + 1 + the start
        # s1 never stopped: 20 ms for about 3 s is some 150 probes, with nothing lost
        s1 = daemon.table.sites["s1"]
        assert s1.sent >= 100
        assert s1.received == s1.sent
        assert daemon.config.site("s6").address == "127.0.0.26"
        assert daemon.config.settings_for(daemon.config.site("s2")).interval == pytest.approx(0.03)
        assert daemon.health.sites["s3"].limits.rtt == pytest.approx(0.005)
    finally:
        await daemon.shutdown()


async def test_a_changed_interval_takes_effect_and_others_keep_their_phase(
        tmp_path: Path) -> None:
    path = tmp_path / "sites.yaml"
    path.write_text(inventory(["s1", "s2"]))
    daemon = Daemon(load_config(path), config_path=str(path),
                    listen=f"127.0.0.1:{free_port()}")
    await daemon.startup()
    try:
        await asyncio.sleep(0.2)
        kept = daemon.scheduler.targets["s1"]
        path.write_text(inventory(["s1", "s2"], {"s2": ", probe: {interval: 100ms}"}))
        assert await daemon.reload() == []
        assert daemon.scheduler.targets["s1"] is kept
        before = daemon.table.sites["s2"].sent
        await asyncio.sleep(0.5)
        assert 3 <= daemon.table.sites["s2"].sent - before <= 7  # 100 ms, not 20 ms
    finally:
        await daemon.shutdown()
