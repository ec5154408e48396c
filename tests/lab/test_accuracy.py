"""vcmon measures lab sites with known profiles right: RTT, jitter, loss, outages.

One lab (a test-only name and /24 of 198.19.128.0/17) serves the module; the daemon
runs in-process, once alone ("quiet") and once while it also probes 2,000 loopback
sites and /metrics is scraped every second ("busy"). Packets go only to 127.30.0.0/16
on lo and into the lab's namespace, checked by route before the daemon starts.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from collections.abc import Iterator
from typing import Any

import pytest

from monitor.lab import control
from monitor.lab.loss import GilbertElliott
from monitor.lab.netlab import Lab
from monitor.lab.profiles import Profile
from monitor.status.sites import SiteState
from tests.lab.conftest import make_lab
from tests.lab.harness import Measured, inventory, loopback_sites, measure, running
from tests.netns import skip_unless_available

pytestmark = skip_unless_available

SECONDS = 10.0  # 500 probes at 20 ms, 250 at 40 ms
LOOPBACK_SITES = 2000
FAST = {"interval": 0.02, "timeout": 0.5, "window": 60}
# Down after 2 lost probes, each known lost 20 ms after it left: an outage that starts
# just after a probe is reported 2 intervals + 20 ms + the engine's 10 ms timer slack
# later at worst, 3 intervals asked for. The spare interval is for the daemon's own
# stalls: at 2,000 sites with /metrics scraped every second its loop was seen up to
# 0.1-0.25 s late now and then (vcmon_scheduler_lag_seconds), which broke 100 ms intervals.
OUTAGE_INTERVAL = 0.25
OUTAGE = {"interval": OUTAGE_INTERVAL, "timeout": 0.02, "down_after": 2}
SITES: list[dict[str, Any]] = [
    {"id": "steady", "tier": "district", "profile": Profile(delay=0.020)},
    {"id": "jittery", "tier": "district", "profile": Profile(delay=0.030, jitter=0.012)},
    {"id": "lossy", "tier": "district", "profile": Profile(delay=0.005, loss=0.10)},
    {"id": "bursty", "tier": "district", "profile": Profile(delay=0.005, loss=0.10, burst=4)},
    # replies slower than the interval, inside the timeout
    {"id": "slow", "tier": "district", "profile": Profile(delay=0.120),
     "probe": {"interval": 0.04, "timeout": 0.5}},
    {"id": "flappy", "tier": "district", "profile": Profile(delay=0.005), "probe": OUTAGE},
    {"id": "hub", "tier": "district", "profile": Profile(delay=0.005), "probe": OUTAGE},
    {"id": "leaf", "tier": "commune", "parent": "hub", "profile": Profile(delay=0.010),
     "probe": OUTAGE},
]
PROFILES = {site["id"]: site["profile"] for site in SITES}


DOCUMENT = {"defaults": FAST, "sites": [
    {"name": site["id"], **{k: v for k, v in site.items() if k != "profile"}} for site in SITES]}
# Each site draws its delays and losses from its own stream, seeded by the lab's seed and
# its id: a fresh lab answers the same probes the same way on every run.
SEED = 7


@pytest.fixture(scope="module")
def lab_up() -> Iterator[tuple[Lab, control.Started]]:
    lab = make_lab()
    try:
        yield lab, control.up(lab, DOCUMENT, PROFILES, seed=SEED)
    finally:
        control.down(lab)


@pytest.fixture(scope="module", params=["quiet", "busy"])
def run(request: pytest.FixtureRequest) -> Measured:
    """SECONDS of probing a fresh lab, alone or among 2,000 loopback sites and scrapes."""
    lab = make_lab()
    try:
        started = control.up(lab, DOCUMENT, PROFILES, seed=SEED)
        if request.param == "quiet":
            return asyncio.run(measure(inventory(started.inventory), lab, SECONDS))
        slow_loopback = [{**site, "probe": {"interval": 1.0, "timeout": 1.0}}
                         for site in loopback_sites(LOOPBACK_SITES)]
        measured = asyncio.run(measure(inventory(started.inventory, slow_loopback), lab,
                                       SECONDS, scrape_every=1.0))
    finally:
        control.down(lab)
    # the load really was there: every loopback site probed all along, every scrape served
    loopback = [v for site, v in measured.scraped.items() if site.startswith("loop-")]
    assert len(loopback) == LOOPBACK_SITES
    assert min(v["window_packets"] for v in loopback) >= SECONDS - 2
    assert max(v["loss"] for v in loopback) == 0
    assert measured.scrapes >= SECONDS
    return measured


def numbers(run: Measured, site: str) -> dict[str, float]:
    """What vcmon reports: from /metrics in the busy run, from the site table otherwise."""
    if run.scraped:
        scraped = run.scraped[site]
        return {**scraped, "sent": scraped["window_packets"]}
    stats = run.stats[site]
    assert stats.rtt_avg is not None and stats.jitter is not None and stats.loss_ratio is not None
    return {"rtt_avg": stats.rtt_avg, "jitter": stats.jitter, "loss": stats.loss_ratio,
            "sent": stats.sent}


@pytest.mark.parametrize("site", ["steady", "jittery", "lossy", "bursty", "slow"])
def test_average_rtt_within_1ms_of_the_delay(run: Measured, site: str) -> None:
    measured = numbers(run, site)
    assert measured["sent"] >= 200
    assert measured["rtt_avg"] == pytest.approx(PROFILES[site].delay, abs=0.001)


def test_jitter_within_15_percent_of_two_thirds_j(run: Measured) -> None:
    analytic = 2 * PROFILES["jittery"].jitter / 3
    assert numbers(run, "jittery")["jitter"] == pytest.approx(analytic, rel=0.15)


def test_jitter_free_site_shows_almost_none(run: Measured) -> None:
    assert numbers(run, "steady")["jitter"] < 0.0003


def binomial_interval(n: int, p: float, level: float = 0.99) -> tuple[int, int]:
    """The smallest and largest loss counts inside the central ``level`` of Binomial(n, p)."""
    tail = (1 - level) / 2
    pmf = [math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)]
    low, below = 0, 0.0
    while below + pmf[low] <= tail:
        below += pmf[low]
        low += 1
    high, above = n, 0.0
    while above + pmf[high] <= tail:
        above += pmf[high]
        high -= 1
    return low, high


def test_binomial_interval_by_hand() -> None:
    # Binomial(10, 0.5): P(X <= 0) = P(X >= 10) = 0.001 < 0.005 < P(X <= 1) = 0.0107
    assert binomial_interval(10, 0.5) == (1, 9)


def test_loss_inside_the_99_percent_binomial_interval(run: Measured) -> None:
    measured = numbers(run, "lossy")
    sent = int(measured["sent"])
    low, high = binomial_interval(sent, PROFILES["lossy"].loss)
    assert low <= round(measured["loss"] * sent) <= high


def test_bursty_loss_rate_and_bursts(run: Measured) -> None:
    profile = PROFILES["bursty"]
    assert profile.burst is not None
    model = GilbertElliott.with_bursts(profile.loss, profile.burst, random.Random())
    measured = numbers(run, "bursty")
    sent = measured["sent"]
    # Losses of a two-state chain are correlated: the variance of their count is the
    # binomial one times (1 + λ) / (1 − λ), λ = 1 − p − r (normal approximation, 99 %).
    lam = 1 - model.p - model.r
    sd = math.sqrt(profile.loss * (1 - profile.loss) * (1 + lam) / (1 - lam) / sent)
    assert abs(measured["loss"] - profile.loss) <= 2.576 * sd
    if not run.scraped:  # the sample sequence is in the site table only
        lost = [rtt is None for _, rtt in run.samples["bursty"]]
        pairs = sum(a and b for a, b in itertools.pairwise(lost))
        # analytic 0.75 (independent losses: 0.10); about 12 bursts in the window
        assert pairs / sum(lost) == pytest.approx(model.loss_after_loss, abs=0.2)
        lossy = [rtt is None for _, rtt in run.samples["lossy"]]
        lossy_pairs = sum(a and b for a, b in itertools.pairwise(lossy))
        assert lossy_pairs / sum(lossy) < 0.35


def test_reply_slower_than_the_interval_is_received_with_its_true_rtt(run: Measured) -> None:
    measured = numbers(run, "slow")
    assert measured["sent"] >= 200
    assert measured["loss"] == 0
    assert measured["rtt_avg"] == pytest.approx(0.120, abs=0.001)
    if not run.scraped:
        stats = run.stats["slow"]
        # none reported lost, none taken for the reply to a later probe (RTT - interval)
        assert stats.rtt_min is not None and stats.rtt_min > 0.119
        assert stats.rtt_p95 is not None and stats.rtt_p95 < 0.122


async def _until(table: dict[str, SiteState], sites: list[str], up: bool, within: float) -> None:
    """Poll every 2 ms until each of ``sites`` is up (or down); fail after ``within`` s."""
    for _ in range(int(within / 0.002)):
        if all(table[site].up is up for site in sites):
            return
        await asyncio.sleep(0.002)
    pytest.fail(f"{sites} not {'up' if up else 'down'} within {within} s")


@pytest.mark.parametrize("loopback", [0, LOOPBACK_SITES], ids=["quiet", "busy"])
async def test_down_and_up_reported_within_three_intervals(
        lab_up: tuple[Lab, control.Started], loopback: int) -> None:
    lab, started = lab_up
    extra = [{**site, "probe": {"interval": 1.0}} for site in loopback_sites(loopback)]
    config = inventory(started.inventory, extra)
    loop = asyncio.get_running_loop()
    async with running(config, lab, scrape_every=1.0 if loopback else None) as run:
        table = run.daemon.table.sites
        await _until(table, ["flappy", "hub", "leaf"], True, 5.0)
        try:
            # hub down takes leaf, behind it, down too
            for key, watched in (("flappy", ["flappy"]), ("hub", ["hub", "leaf"])):
                for _ in range(2):
                    for word, wanted in (("down", False), ("up", True)):
                        await asyncio.to_thread(control.set_site, lab, key, [word])
                        changed_at = loop.time()  # the responder has its SIGHUP
                        await _until(table, watched, wanted, 2.0)
                        elapsed = loop.time() - changed_at
                        assert elapsed <= 3 * OUTAGE_INTERVAL, (key, word, elapsed)
        finally:
            for key in ("flappy", "hub"):
                await asyncio.to_thread(control.set_site, lab, key, ["up"])
