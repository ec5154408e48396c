"""TWAMP streams against lab sites whose two directions differ: each impairment reads in
its own direction only, within the bounds the ICMP accuracy tests use, and a site whose
pings are deprioritised while its EF stream passes clean stays ok (health follows the
stream; the same pings without a stream make the site degraded).

One lab (a test-only name and /24 of 198.19.128.0/17), the daemon in-process; packets
go only into the lab's namespace, checked by route before the daemon starts.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from monitor.lab import control
from monitor.lab.netlab import Lab
from monitor.lab.profiles import ICMP_DEPRIORITISED, Profile
from monitor.status.health import Status, exceeded
from monitor.status.streams import StreamWindowStats
from monitor.status.window import summarize
from tests.lab.conftest import make_lab
from tests.lab.harness import inventory, running
from tests.lab.test_accuracy import binomial_interval
from tests.netns import skip_unless_available

pytestmark = skip_unless_available

SECONDS = 13.0
STREAM = {"kind": "twamp", "interval": 1.0, "timeout": 0.2, "packets": 50, "spacing": 0.01}
DEFAULTS = {"interval": 0.05, "timeout": 0.5, "window": 60, "probes": [STREAM]}
HEALTH = {"evaluate_every": 1.0, "enter_after": 2, "leave_after": 2}
SITES: list[dict[str, Any]] = [
    {"id": "rev-loss", "profile": Profile(fwd_delay=0.005, rev_delay=0.005, rev_loss=0.10)},
    {"id": "fwd-loss", "profile": Profile(fwd_delay=0.005, fwd_loss=0.10, rev_delay=0.005)},
    {"id": "fwd-jitter", "profile": Profile(fwd_delay=0.030, fwd_jitter=0.012,
                                            rev_delay=0.005)},
    # ±67.5 ms: 45 ms of jitter read, well over the 30 ms threshold
    {"id": "rev-jitter", "profile": Profile(fwd_delay=0.005, rev_delay=0.070,
                                            rev_jitter=0.0675)},
    {"id": "deprioritised", "profile": Profile(**ICMP_DEPRIORITISED, fwd_delay=0.005,
                                               rev_delay=0.005)},
    # the control: the same pings, no stream
    {"id": "deprioritised-ping-only", "probes": [],
     "profile": Profile(**ICMP_DEPRIORITISED, fwd_delay=0.005, rev_delay=0.005)},
]
PROFILES = {site["id"]: site["profile"] for site in SITES}
DOCUMENT = {"defaults": DEFAULTS, "health": HEALTH, "sites": [
    {"name": site["id"], "tier": "district",
     **{k: v for k, v in site.items() if k != "profile"}} for site in SITES]}
SEED = 11


@dataclass
class Run:
    streams: dict[str, StreamWindowStats]
    icmp_exceeded: dict[str, tuple[str, ...]]
    status: dict[str, tuple[Status, str]]
    rtt_truth: dict[str, float]


async def _measure(lab: Lab, started: control.Started) -> Run:
    config = inventory(started.inventory)
    async with running(config, lab) as run:
        await asyncio.sleep(SECONDS)
        daemon = run.daemon
        now = daemon.table.clock()
        streams = {}
        for state in daemon.health.streams:
            stats = state.stats(now)
            assert stats is not None
            streams[state.site.id] = stats
        icmp = {state.site.id: exceeded(summarize(state.window.samples(now)),
                                        config.thresholds_for(state.site), config.health)
                for state in daemon.table}
        status = {site: (h.status, h.reason) for site, h in daemon.health.sites.items()}
    truth = {site: p.fwd_delay + p.rev_delay for site, p in PROFILES.items()}
    return Run(streams, icmp, status, truth)


@pytest.fixture(scope="module")
def measured() -> Iterator[Run]:
    lab = make_lab()
    try:
        started = control.up(lab, DOCUMENT, PROFILES, seed=SEED)
        yield asyncio.run(_measure(lab, started))
    finally:
        control.down(lab)


def test_every_stream_site_has_200_samples(measured: Run) -> None:
    assert set(measured.streams) == {s["id"] for s in SITES} - {"deprioritised-ping-only"}
    for site, stats in measured.streams.items():
        assert stats.sent >= 500, site


@pytest.mark.parametrize(("site", "lossy", "clean"), [("rev-loss", "reverse", "forward"),
                                                      ("fwd-loss", "forward", "reverse")])
def test_loss_reads_in_its_own_direction(measured: Run, site: str, lossy: str,
                                         clean: str) -> None:
    stats = measured.streams[site]
    assert stats.direction(clean).lost == 0
    assert stats.direction(clean).loss_ratio == 0
    attributed = stats.direction(lossy).lost
    assert attributed is not None
    # only a packet lost before a stream's first reply or after its last is left unplaced
    assert stats.lost_unattributed <= 0.1 * stats.lost
    low, high = binomial_interval(stats.sent, 0.10)
    assert low <= attributed + stats.lost_unattributed <= high


@pytest.mark.parametrize(("site", "jittery", "steady", "jitter"), [
    ("fwd-jitter", "forward", "reverse", 0.012), ("rev-jitter", "reverse", "forward", 0.0675)])
def test_jitter_reads_in_its_own_direction(measured: Run, site: str, jittery: str, steady: str,
                                           jitter: float) -> None:
    stats = measured.streams[site]
    reading = stats.direction(jittery).jitter
    assert reading == pytest.approx(2 * jitter / 3, rel=0.10)
    quiet = stats.direction(steady).jitter
    assert quiet is not None and quiet < 0.0005
    assert stats.direction(jittery).loss_ratio == 0


def test_rtt_is_the_configured_truth(measured: Run) -> None:
    for site, stats in measured.streams.items():
        profile = PROFILES[site]
        # the mean of uniform ±J noise strays by J/√3/√n: three of those, and 0.5 ms
        spread = math.hypot(profile.fwd_jitter, profile.rev_jitter) / math.sqrt(3)
        bound = 0.0005 + 3 * spread / math.sqrt(stats.received)
        assert stats.rtt_avg == pytest.approx(measured.rtt_truth[site], abs=bound), site


def test_reverse_jitter_is_the_reason_a_technician_reads(measured: Run) -> None:
    status, reason = measured.status["rev-jitter"]
    assert status is Status.DEGRADED
    assert reason.startswith("reverse jitter ") and "forward" not in reason


def test_icmp_says_degraded_the_stream_says_clean_and_health_follows_the_stream(
        measured: Run) -> None:
    for site in ("deprioritised", "deprioritised-ping-only"):
        assert {"jitter", "loss"} <= set(measured.icmp_exceeded[site]), site
    stream = measured.streams["deprioritised"]
    assert stream.lost == 0
    for direction in ("forward", "reverse"):
        jitter = stream.direction(direction).jitter
        assert jitter is not None and jitter < 0.001
    assert measured.status["deprioritised"] == (Status.OK, "")
    status, reason = measured.status["deprioritised-ping-only"]
    assert status is Status.DEGRADED and reason.startswith("jitter ")


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump missing")
async def test_stream_packets_carry_ef_both_ways_through_the_lab(tmp_path: Path) -> None:
    lab = make_lab()
    document = {"defaults": {**DEFAULTS, "probes": [{**STREAM, "packets": 10}]},
                "sites": [{"id": "ef", "name": "ef", "tier": "district"}]}
    try:
        started = control.up(lab, document, {"ef": Profile()}, seed=SEED)
        capture = tmp_path / "ef.txt"
        # on the host's end of the lab's link: requests leave and replies come back here
        with capture.open("w") as out:
            tcpdump = await asyncio.create_subprocess_exec(
                "tcpdump", "-n", "-v", "-l", "-i", lab.host_link, "udp", "port", "862",
                stdout=out, stderr=subprocess.DEVNULL)
            try:
                await asyncio.sleep(1.0)  # tcpdump is listening
                async with running(inventory(started.inventory), lab):
                    await asyncio.sleep(2.5)
            finally:
                tcpdump.terminate()
                await asyncio.wait_for(tcpdump.wait(), 10)
    finally:
        control.down(lab)
    lines = capture.read_text().splitlines()
    headers = [line for line in lines if " proto UDP " in line]
    address = started.config.sites[0].address
    requests = [h for h, nxt in itertools.pairwise(lines)
                if h in headers and f"> {address}.862:" in nxt]
    replies = [h for h, nxt in itertools.pairwise(lines)
               if h in headers and f"{address}.862 >" in nxt]
    assert len(requests) >= 10 and len(replies) >= 10, lines[:6]
    # tcpdump -v prints the TOS byte of each IPv4 header: EF is DSCP 46, 0xb8
    assert all("tos 0xb8" in h for h in requests + replies), (requests + replies)[:4]


async def test_lab_set_changes_one_direction_while_the_daemon_streams() -> None:
    lab = make_lab()
    document = {"defaults": {**DEFAULTS, "probes": [{**STREAM, "interval": 0.5, "packets": 20}]},
                "sites": [{"id": "live", "name": "live", "tier": "district"}]}
    try:
        started = control.up(lab, document, {"live": Profile()}, seed=SEED)
        async with running(inventory(started.inventory), lab) as run:
            await asyncio.sleep(2.0)
            await asyncio.to_thread(control.set_site, lab, "live", ["rev.loss=30%"])
            changed = run.daemon.table.clock()
            await asyncio.sleep(4.0)
            (state,) = run.daemon.health.streams
            before = [r.stats for at, r in state.window if at < changed - 0.5]
            after = [r.stats for at, r in state.window if at > changed + 0.1]
    finally:
        control.down(lab)
    assert before and all(s.lost == 0 for s in before)
    assert len(after) >= 5
    reverse = sum(s.reverse.lost or 0 for s in after)
    assert reverse >= 0.15 * sum(s.sent for s in after)
    assert all(s.forward.lost == 0 for s in after)
