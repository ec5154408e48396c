"""TWAMP streams in a real daemon: scheduled per site, matched against what a hostile
reflector sends back, and shown on /metrics (checked by promtool) per direction."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import cast

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from monitor.daemon import Daemon
from monitor.inventory import parse_config
from probes.twamp import SENDER_HEADER, ErrorEstimate, reflect
from probes.twamp_reflector import TwampReflector
from tests.conftest import free_port, promtool_check_metrics

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMP sockets need root here")

DAEMON = """
defaults: {{interval: 0.5s, window: 30s, down_after: 3}}
health: {{evaluate_every: 0.5s, enter_after: 1, leave_after: 1}}
sites:
  - id: hall
    name: Hội trường
    tier: province
    address: 127.0.0.30
    probes:
      - {{kind: twamp, port: {port}, interval: 0.5s, packets: 20, spacing: 10ms, timeout: 100ms}}
"""

LABELS = {"site": "hall", "tier": "province", "district": "hall", "provision": "vnpt",
          "probe": "twamp"}
UNSYNCED = ErrorEstimate(False, 10, 1).encode()


def samples(page: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(page) for s in family.samples}


def value(got: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float | None:
    return got.get((name, frozenset({**LABELS, **labels}.items())))


async def scrape_until(port: int, done: str, seconds: float = 10.0) -> str:
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + seconds
        while True:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                page = await response.text()
            if done in page and "vcmon_stream_packets_received_total{" in page:
                got = samples(page)
                if (value(got, "vcmon_stream_packets_received_total") or 0) >= 40:
                    return page
            if time.monotonic() > deadline:
                return page
            await asyncio.sleep(0.1)


async def test_a_daemon_streams_to_a_reflector_and_shows_both_directions() -> None:
    reflector = TwampReflector(["127.0.0.0/8"], listen=("127.0.0.30",), port=0)
    await reflector.start()
    web = free_port()
    text = DAEMON.format(port=reflector.addresses[0][1])
    daemon = Daemon(parse_config(text), listen=f"127.0.0.1:{web}", registry=CollectorRegistry())
    await daemon.startup()
    try:
        page = await scrape_until(web, 'direction="reverse"')
    finally:
        await daemon.shutdown()
        await reflector.close()
    promtool_check_metrics(page)
    got = samples(page)
    for direction in ("forward", "reverse"):
        assert value(got, "vcmon_stream_loss_ratio", direction=direction) == 0, page
        jitter = value(got, "vcmon_stream_jitter_seconds", direction=direction)
        assert jitter is not None and 0 <= jitter < 0.005
        mos = value(got, "vcmon_stream_mos", direction=direction)
        assert mos is not None and mos > 4.3
        # the reflector does not claim a synchronised clock: no one-way figure
        assert value(got, "vcmon_stream_one_way_delay_seconds", direction=direction) is None
    rtt = value(got, "vcmon_stream_rtt_seconds")
    assert rtt is not None and 0 < rtt < 0.005
    assert value(got, "vcmon_probe_up") == 1  # the stream is the site's probe "twamp"
    assert daemon.health.sites["hall"].status.value == "ok"
    assert daemon.streams.in_flight == 0  # shutdown ended every stream


class HostileReflector(asyncio.DatagramProtocol):
    """Answers every request, and around it sends what a network can: a copy from a
    foreign port, a reply echoing a timestamp we never sent, and for every fifth packet
    the only reply after the sender's timeout (late)."""

    def __init__(self, late_after: float) -> None:
        self.late_after = late_after
        self.seq = 0
        self.foreign = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.foreign.bind(("127.0.0.31", 0))
        self.transport: asyncio.DatagramTransport | None = None
        self.requests = 0
        self.senders: set[tuple[str, int]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.requests += 1
        self.senders.add(addr)
        now = time.time_ns()
        reply = reflect(data, seq=self.seq, receive_ns=now, send_ns=now,
                        error_estimate=UNSYNCED, ttl=64)
        self.seq += 1
        if self.requests % 5 == 0:
            asyncio.get_running_loop().call_later(self.late_after, self.transport.sendto,
                                                  reply, addr)
            return
        self.transport.sendto(reply, addr)
        self.foreign.sendto(reply, addr)
        # the sender's timestamp changed: a reply to a packet nobody sent
        forged = bytearray(reply)
        forged[24 + 4:24 + SENDER_HEADER - 2] = bytes(8)
        self.transport.sendto(bytes(forged), addr)


async def test_the_daemon_ignores_foreign_forged_and_late_replies() -> None:
    loop = asyncio.get_running_loop()
    hostile = HostileReflector(late_after=0.15)
    transport, _ = await loop.create_datagram_endpoint(lambda: hostile,
                                                       local_addr=("127.0.0.30", 0))
    port = transport.get_extra_info("sockname")[1]
    web, source_port = free_port(), free_port()
    # a fixed source port, as router reflectors with per-sender test sessions need
    text = DAEMON.format(port=port).replace("timeout: 100ms}",
                                            f"timeout: 100ms, source_port: {source_port}}}")
    daemon = Daemon(parse_config(text), listen=f"127.0.0.1:{web}", registry=CollectorRegistry())
    await daemon.startup()
    try:
        page = await scrape_until(web, 'direction="reverse"')
        await asyncio.sleep(0.3)  # the last late replies come in
        ignored = dict(daemon.streams.ignored)
    finally:
        await daemon.shutdown()
        transport.close()
        hostile.foreign.close()
    assert {port for _, port in hostile.senders} == {source_port}
    got = samples(page)
    sent = value(got, "vcmon_stream_packets_sent_total")
    received = value(got, "vcmon_stream_packets_received_total")
    assert sent is not None and received is not None and sent >= 40
    # every fifth packet's only reply came after its timeout: lost, never matched
    assert received == pytest.approx(sent * 0.8, abs=2)
    assert ignored["foreign"] >= received - 2
    assert ignored["unmatched"] >= received - 2
    assert ignored["late"] >= 1
    exported = {s.labels["reason"]: s.value for family in text_string_to_metric_families(page)
                for s in family.samples if s.name == "vcmon_stream_replies_ignored_total"}
    assert exported["foreign"] >= received - 2 and exported["unmatched"] >= received - 2
    # the reflector numbered the late ones: they read as lost on the way back
    reverse = value(got, "vcmon_stream_packets_lost_total", direction="reverse")
    forward = value(got, "vcmon_stream_packets_lost_total", direction="forward")
    assert reverse is not None and reverse >= 0.14 * sent
    assert forward == 0
    assert value(got, "vcmon_stream_duplicates", direction="reverse") == 0
