"""Service probe state, its series on /metrics, and health: ping fine + service down =
degraded (reason service); then a real daemon showing it."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from monitor.daemon import Daemon
from monitor.inventory import parse_config
from monitor.metrics.labels import LabelCache
from monitor.metrics.page import render
from monitor.metrics.services import render_services
from monitor.probing.services import ServiceRunner
from monitor.status.health import HealthTracker, Status
from monitor.status.sites import SiteTable
from probes import Outcome, ProbeResult
from tests.conftest import free_port, promtool_check_metrics
from tests.probes.peers import port_of, tcp_peer

T0 = 1_774_569_600.0

CONFIG = """
defaults: {interval: 1s, down_after: 3}
health: {recover_after: 2}
sites:
  - id: hall
    name: Hội trường
    tier: province
    address: 127.0.0.10
    probe: {dscp: AF41}
    probes:
      - {kind: sip, down_after: 2}
      - {kind: tls, port: 443}
      - {kind: icmp, name: icmp-be, dscp: 0}
"""

LABELS = {"site": "hall", "tier": "province", "district": "hall", "provision": "vnpt"}


def sip_answer(at: float, code: int = 200) -> ProbeResult:
    return ProbeResult("hall/sip", "127.0.0.10", 0, at, Outcome.REPLY, 0.004, f"{code} OK",
                       {"status_code": code, "retransmissions": 0})


def sip_lost(at: float) -> ProbeResult:
    return ProbeResult("hall/sip", "127.0.0.10", 0, at, Outcome.TIMEOUT,
                       detail="SIP OPTIONS over UDP port 5060: no answer before the timeout")


class World:
    def __init__(self) -> None:
        self.config = parse_config(CONFIG)
        self.now = T0
        self.table = SiteTable(self.config, clock=lambda: self.now)
        self.health = HealthTracker(self.config, T0)
        self.services = self.health.services

    def second(self, sip: ProbeResult | None) -> Status:
        """One ping answered, and the SIP probe's result if any, then a health tick."""
        self.table.record(ProbeResult("hall", "127.0.0.10", 0, self.now, Outcome.REPLY, 0.01))
        if sip is not None:
            self.services.record(sip)
        self.now += 1
        self.health.update(self.table, self.now, evaluate=False)
        return self.health.sites["hall"].status


def test_ping_fine_and_sip_down_is_degraded_with_reason_service_then_recovers() -> None:
    world = World()
    assert world.second(sip_answer(world.now)) is Status.OK
    assert world.second(sip_lost(world.now)) is Status.OK  # one loss: down_after is 2
    assert world.second(sip_lost(world.now)) is Status.DEGRADED
    reason = world.health.sites["hall"].reason
    assert reason == ("service sip failed 2 times in a row (SIP OPTIONS over UDP port 5060: "
                      "no answer before the timeout)")
    assert world.second(sip_answer(world.now)) is Status.DEGRADED  # recover_after is 2
    assert world.second(sip_answer(world.now, 405)) is Status.OK


def test_a_down_site_is_down_not_degraded_by_its_services() -> None:
    world = World()
    world.second(sip_answer(world.now))
    for _ in range(3):
        world.table.record(ProbeResult("hall", "127.0.0.10", 0, world.now, Outcome.TIMEOUT))
        world.services.record(sip_lost(world.now))
        world.now += 1
        world.health.update(world.table, world.now, evaluate=False)
    assert world.health.sites["hall"].status is Status.DOWN


def test_series_by_probe_with_reasons_expiry_and_dscp() -> None:
    world = World()
    services = world.services
    services.record(sip_answer(T0, 405))
    services.record(sip_lost(T0 + 1))
    expiry = T0 + 10 * 86400
    services.record(ProbeResult("hall/tls", "127.0.0.10", 0, T0, Outcome.FAILED,
                                detail="certificate rejected (expired)",
                                values={"verify": "expired", "reason": "cert_expired",
                                        "cert_not_after": expiry, "handshake_seconds": 0.002}))
    services.record(ProbeResult("hall/icmp-be", "127.0.0.10", 7, T0, Outcome.REPLY, 0.0001))
    services.record(ProbeResult("gone/sip", "127.0.0.99", 0, T0, Outcome.REPLY, 0.1))  # ignored
    texts = LabelCache()
    texts.fill(world.table, services)
    text = render_services(services, texts.probes, T0 + 86400)
    assert promtool_check_metrics(text) == ""
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted({**LABELS, **labels}.items()))))

    assert value("vcmon_probe_info", probe="sip", kind="sip", port="5060", dscp="34") == 1
    assert value("vcmon_probe_info", probe="tls", kind="tls", port="443", dscp="34") == 1
    assert value("vcmon_probe_info", probe="icmp-be", kind="icmp", port="", dscp="0") == 1
    assert value("vcmon_probe_attempts_total", probe="sip") == 2
    assert value("vcmon_probe_success", probe="sip") == 0
    assert value("vcmon_probe_up", probe="sip") == 1  # one failure; down_after is 2
    assert value("vcmon_probe_duration_seconds", probe="sip") == 0.004
    assert value("vcmon_probe_status_code", probe="sip") == 405
    assert value("vcmon_probe_failures_total", probe="sip", reason="timeout") == 1
    assert value("vcmon_probe_failures_total", probe="tls", reason="cert_expired") == 1
    assert value("vcmon_tls_cert_expiry_seconds", probe="tls") == 9 * 86400
    assert value("vcmon_tls_handshake_seconds", probe="tls") == 0.002
    assert value("vcmon_probe_up", probe="tls") is None  # not known after one failure
    assert value("vcmon_probe_success", probe="icmp-be") == 1
    assert not any(dict(labels).get("site") == "gone" for _, labels in samples)


def test_the_site_info_carries_its_dscp_and_metrics_render_services() -> None:
    world = World()

    class Source:
        def __init__(self) -> None:
            self.table, self.health = world.table, world.health
            self.config = world.config
            self.ignored_packets: Counter[str] = Counter()
            self.skipped_cycles = self.scheduler_sends = self.receive_dropped = 0

    text = render(Source(), CollectorRegistry()).decode()
    assert 'vcmon_site_info{site="hall"' in text and 'dscp="34"} 1' in text
    assert 'vcmon_probe_info{site="hall",tier="province",district="hall",provision="vnpt",' \
           'probe="sip",kind="sip",port="5060",dscp="34"} 1' in text


def test_a_reload_keeps_counters_of_kept_probes_and_drops_removed_ones() -> None:
    world = World()
    world.services.record(sip_answer(T0))
    changed = CONFIG.replace("      - {kind: tls, port: 443}\n", "")
    world.health.reconfigure(parse_config(changed), T0 + 1)
    assert sorted(world.services.probes) == ["hall/icmp-be", "hall/sip"]
    assert world.services.probes["hall/sip"].attempts == 1


# --- a real daemon: ping on loopback answers, the SIP and H.323 ports do not ---------

DAEMON = """
defaults: {{interval: 50ms, timeout: 200ms}}
health: {{recover_after: 2}}
sites:
  - id: codec
    name: Codec
    tier: province
    address: 127.0.0.1
    probes:
      - {{kind: tcp, name: h323, port: {closed}, interval: 50ms, timeout: 50ms, down_after: 2}}
  - id: mcu
    name: MCU
    tier: district
    parent: codec
    address: 127.0.0.2
    probes:
      - {{kind: tcp, name: web, port: {open}, interval: 50ms, timeout: 50ms}}
      - {{kind: icmp, name: icmp-be, dscp: 0, interval: 50ms, timeout: 50ms}}
"""


CODEC = frozenset({("site", "codec"), ("tier", "province"), ("district", "codec"),
                   ("provision", "vnpt")})
MCU = frozenset({("site", "mcu"), ("tier", "district"), ("district", "mcu"),
                 ("provision", "vnpt")})


def scraped(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


@pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMP sockets need root here")
async def test_daemon_reports_a_live_ping_with_a_dead_service_as_degraded_service() -> None:
    server = await tcp_peer("127.0.0.2")
    port = free_port()
    text = DAEMON.format(closed=free_port(), open=port_of(server))
    daemon = Daemon(parse_config(text), listen=f"127.0.0.1:{port}", registry=CollectorRegistry())
    await daemon.startup()
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 10
            while True:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                    page = await response.text()
                got = scraped(page)
                done = (got.get(("vcmon_site_status", CODEC | {("status", "degraded")})) == 1
                        and got.get(("vcmon_site_status", MCU | {("status", "ok")})) == 1
                        and got.get(("vcmon_probe_success", MCU | {("probe", "icmp-be")})) == 1)
                if done or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
    finally:
        await daemon.shutdown()
        server.close()
        await server.wait_closed()

    def status(labels: frozenset[tuple[str, str]], name: str) -> float | None:
        return got.get(("vcmon_site_status", labels | {("status", name)}))

    assert status(CODEC, "degraded") == 1, page
    assert got[("vcmon_site_up", CODEC)] == 1  # the ping is fine
    assert got[("vcmon_probe_up", CODEC | {("probe", "h323")})] == 0
    refused = got[("vcmon_probe_failures_total", CODEC | {("probe", "h323"),
                                                          ("reason", "refused")})]
    assert refused >= 2
    assert daemon.health.sites["codec"].reason.startswith("service h323 failed")
    assert "connection refused" in daemon.health.sites["codec"].reason
    assert status(MCU, "ok") == 1
    assert got[("vcmon_probe_up", MCU | {("probe", "web")})] == 1
    assert got[("vcmon_probe_success", MCU | {("probe", "icmp-be")})] == 1
    assert daemon.services.in_flight == 0  # shutdown ended every probe


async def test_a_reload_keeps_the_schedule_of_unchanged_probes_only() -> None:
    config = parse_config(CONFIG)
    health = HealthTracker(config, T0)
    runner = ServiceRunner(health.services)
    try:
        before = {t.site_id: t for t in await runner.targets(config)}
        changed = parse_config(CONFIG.replace("{kind: tls, port: 443}", "{kind: tls, port: 8443}"))
        after = {t.site_id: t for t in await runner.targets(changed)}
    finally:
        await runner.close()
    assert sorted(before) == ["hall/icmp-be", "hall/sip", "hall/tls"]
    assert after["hall/sip"].same_schedule(before["hall/sip"])
    assert after["hall/icmp-be"].same_schedule(before["hall/icmp-be"])
    assert not after["hall/tls"].same_schedule(before["hall/tls"])
    assert (before["hall/sip"].interval, before["hall/sip"].timeout) == (10.0, 2.0)
