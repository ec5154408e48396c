"""The diagnosis runner: traces on request through a real routed lab, within its budget.

The lab is host → core → district → commune (target on commune's lo), made by the test
and checked with ``ip route get`` before the first packet. Packets are counted on the
wire by tcpdump on the lab's host link, independently of the runner's own counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.inventory import parse_config
from monitor.inventory.diagnosis import MAX_HOPS, DiagnosisSettings
from monitor.lab.netlab import run
from monitor.lab.routed import RoutedLab
from monitor.probing.diagnosis import DiagnosisRunner, TraceRequest, plan
from monitor.probing.plan import ProbePlan
from monitor.probing.scheduler import Scheduler
from monitor.status.paths import PathBook
from probes import ProbeResult
from probes.trace import PathSnapshot, render
from tests.netns import skip_unless_available

ROLES = ("core", "district", "commune")


@pytest.mark.parametrize("share", [8, 10, 20, 25, 40, 100, 500])
@pytest.mark.parametrize("known", [None, 2, 5, 9, 27])
def test_a_trace_plan_keeps_every_second_within_its_share(share: int,
                                                         known: int | None) -> None:
    hops, interval = plan(known, share)
    assert 1 <= hops <= min(MAX_HOPS, share)
    if known is not None:
        assert hops >= min(known, share)  # the known path is measured whole when it fits
    starts = [k * interval for k in range(100)]
    # the densest one-second window, starts landing on both of its ends included
    densest = max(sum(1 for s in starts if t <= s <= t + 1.0) for t in starts)
    assert densest * hops <= share, (hops, interval, densest)


class Recorded:
    def __init__(self) -> None:
        self.book = PathBook()
        self.done: list[tuple[TraceRequest, PathSnapshot, float]] = []
        self.arrived = asyncio.Event()

    def __call__(self, request: TraceRequest, snapshot: PathSnapshot) -> None:
        self.book.record(request.site_id, request.reason, snapshot)
        self.done.append((request, snapshot, time.monotonic()))
        self.arrived.set()

    async def wait_for(self, count: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while len(self.done) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{len(self.done)} of {count} traces after {seconds} s"
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)


@contextlib.asynccontextmanager
async def running(runner: DiagnosisRunner):  # type: ignore[no-untyped-def]
    task = asyncio.create_task(runner.run())
    try:
        yield runner
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def lab() -> Iterator[RoutedLab]:
    with RoutedLab(ROLES) as made:
        made.check_route(made.target)
        made.check_route(made.target6)
        yield made


def settings(**kw: object) -> DiagnosisSettings:
    values: dict[str, object] = {"cycles": 20, "max_concurrent": 1, "packets_per_second": 200,
                                 "min_spacing": 300.0}
    values.update(kw)
    return DiagnosisSettings.model_validate(values)


@skip_unless_available
@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
async def test_a_fault_at_each_hop_is_named_and_a_clean_path_blames_none(
        lab: RoutedLab, v6: bool) -> None:
    recorded = Recorded()
    runner = DiagnosisRunner(recorded, settings())
    address = lab.target6 if v6 else lab.target
    async with running(runner):
        assert runner.request("clean", address, "requested") == "queued"
        await recorded.wait_for(1, 30)
        for faulty in range(len(ROLES)):
            lab.lose(faulty, 0.5)
            assert runner.request(f"fault-{faulty}", address, "degraded") == "queued"
            await recorded.wait_for(2 + faulty, 30)
            lab.clear(faulty)
    clean = recorded.book.get("clean")
    assert clean is not None and clean.last is not None and clean.last.bad_hop is None
    assert clean.baseline is clean.last  # a clean trace is the site's first baseline
    for faulty in range(len(ROLES)):
        path = recorded.book.get(f"fault-{faulty}")
        assert path is not None and path.last is not None
        bad = path.last.bad_hop
        assert bad is not None, path.last
        assert (bad.ttl, bad.address) == (faulty + 1, lab.path(v6)[faulty])


@skip_unless_available
async def test_a_rate_limited_router_is_not_blamed_and_a_dead_one_ends_the_path(
        lab: RoutedLab) -> None:
    recorded = Recorded()
    runner = DiagnosisRunner(recorded, settings())
    async with running(runner):
        lab.rate_limit(1)
        runner.request("limited", lab.target, "degraded")
        await recorded.wait_for(1, 30)
        lab.down(1)
        runner.request("dead", lab.target, "down")
        await recorded.wait_for(2, 30)
    limited, dead = recorded.book.get("limited"), recorded.book.get("dead")
    assert limited is not None and limited.last is not None
    assert limited.last.hops[1].loss > 0 and limited.last.bad_hop is None, limited.last
    assert dead is not None and dead.last is not None and dead.last.bad_hop is not None
    assert dead.last.bad_hop.ttl == 2 and not dead.last.reached


@skip_unless_available
async def test_shared_cause_groups_the_sites_behind_one_router(lab: RoutedLab) -> None:
    recorded = Recorded()
    runner = DiagnosisRunner(recorded, settings(max_concurrent=2, packets_per_second=400))
    lab.lose(1, 0.5)  # district: every site behind it suffers
    went_bad = time.time()
    async with running(runner):
        for site in ("xa-1", "xa-2", "xa-3"):
            runner.request(site, lab.target, "degraded")
        await recorded.wait_for(3, 60)
    causes = recorded.book.shared_causes(dict.fromkeys(("xa-1", "xa-2", "xa-3"), went_bad))
    traces = "\n".join(f"{request.site_id}: {render(snapshot)}"
                       for request, snapshot, _ in recorded.done)
    assert [(c.address, c.sites) for c in causes] == [(lab.hop_address(1),
                                                       ("xa-1", "xa-2", "xa-3"))], traces


@skip_unless_available
async def test_unreachable_and_unresolvable_destinations_give_clear_results(
        lab: RoutedLab) -> None:
    recorded = Recorded()
    runner = DiagnosisRunner(recorded, settings(cycles=3))
    async with running(runner):
        lab.check_route(lab.unrouted)
        runner.request("unrouted", lab.unrouted, "down")
        # .invalid never resolves (RFC 6761): no packet is sent for it
        runner.request("nameless", "vc-xa.invalid", "down")
        await recorded.wait_for(2, 30)
    unrouted, nameless = recorded.book.get("unrouted"), recorded.book.get("nameless")
    assert unrouted is not None and unrouted.last is not None
    assert not unrouted.last.reached and unrouted.last.bad_hop is not None
    assert nameless is not None and nameless.last is not None
    assert nameless.last.hops == () and nameless.last.packets == 0
    assert nameless.last.error is not None
    assert nameless.last.error.startswith("cannot resolve vc-xa.invalid")


async def test_spacing_duplicates_and_the_off_switch_refuse_without_tracing() -> None:
    recorded = Recorded()
    runner = DiagnosisRunner(recorded, settings(enabled=False))
    assert runner.request("xa", "127.0.0.1", "degraded") == "disabled"
    runner.configure(settings(cycles=2), [])
    async with running(runner):
        assert runner.request("xa", "127.0.0.1", "degraded") == "queued"
        assert runner.request("xa", "127.0.0.1", "down") == "already queued"
        await asyncio.sleep(0.05)  # the loop starts the trace (of loopback)
        assert runner.request("xa", "127.0.0.1", "requested") == "running"
        await recorded.wait_for(1, 30)
        # traced automatically a moment ago: a flap is not traced again, an operator is
        assert runner.request("xa", "127.0.0.1", "degraded") == "spaced"
        assert runner.request("xa", "127.0.0.1", "requested") == "queued"
    assert runner.refused == {"disabled": 1, "already queued": 1, "running": 1, "spaced": 1}


def capture(link: str, pcap: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["tcpdump", "-i", link, "-n", "-U", "-w", str(pcap),
                             "icmp[icmptype] == icmp-echo"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = proc.stderr.readline()  # "listening on …" once the capture is armed
    assert b"listening on" in line, line
    return proc


def sent_times(pcap: Path) -> list[float]:
    out = subprocess.run(["tcpdump", "-r", str(pcap), "-n", "-tt"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return [float(line.split()[0]) for line in out.splitlines() if line]


@skip_unless_available
async def test_a_burst_of_50_degradations_keeps_to_the_budget_and_the_probe_schedule(
        lab: RoutedLab, tmp_path: Path) -> None:
    budget, at_once, cycles = 80.0, 4, 2
    recorded = Recorded()
    runner = DiagnosisRunner(recorded, settings(cycles=cycles, max_concurrent=at_once,
                                                packets_per_second=budget))
    # normal probing meanwhile: 50 loopback sites every 50 ms through the real ICMP engine
    lags: list[float] = []
    config = parse_config("defaults: {interval: 50ms, timeout: 40ms}\nsites:\n" + "".join(
        f"  - {{id: s{i}, name: S{i}, tier: commune, address: 127.20.0.{i + 1}}}\n"
        for i in range(50)))
    results: list[ProbeResult] = []
    probe_plan = ProbePlan(results.append)
    scheduler = Scheduler(results.append, observe_lag=lags.append)
    scheduler.set_targets(await probe_plan.targets(config))
    scheduler_task = asyncio.create_task(scheduler.run())
    pcap = tmp_path / "diagnosis.pcap"
    tcpdump = capture(lab.host_link, pcap)
    try:
        await asyncio.sleep(2.0)
        quiet = sorted(lags)
        lags.clear()
        async with running(runner):
            burst_started = time.time()
            for i in range(50):
                assert runner.request(f"xa-{i}", lab.target, "degraded") == "queued"
            await recorded.wait_for(50, 150)
        busy = sorted(lags)
    finally:
        scheduler_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await scheduler_task
        await probe_plan.close()
        await asyncio.sleep(1.0)  # the last packets reach the capture file
        tcpdump.terminate()
        _, errors = tcpdump.communicate(timeout=10)
    times = sent_times(pcap)
    # what went on the wire is what the runner says it sent
    assert len(times) == sum(snapshot.packets for _, snapshot, _ in recorded.done), errors
    assert times[0] >= burst_started
    # never above the budget in any one second
    densest = max(sum(1 for t in times[i:i + int(budget) + 1] if t - start <= 1.0)
                  for i, start in enumerate(times))
    assert densest <= budget, densest
    # never more traces at once than allowed, by the traces' own start and end times
    spans = [(s.started_at, s.started_at + s.duration) for _, s, _ in recorded.done]
    overlap = max(sum(1 for a, b in spans if a <= start < b) for start, _ in spans)
    assert overlap <= at_once and runner.most_at_once <= at_once
    # normal probing kept its schedule: the 99th percentile of its lag grew by < 10 ms
    p99 = lambda lag: lag[int(len(lag) * 0.99)]  # noqa: E731
    assert len(busy) > 1000 and p99(busy) < p99(quiet) + 0.010, (p99(quiet), p99(busy))


@skip_unless_available
async def test_a_rerouted_site_is_reported_changed_at_the_hop_where_it_diverges(
        lab: RoutedLab) -> None:
    """The site's address moves behind a second chain of routers: the same commune,
    reached through other routers from hop 1 on."""
    recorded = Recorded()
    runner = DiagnosisRunner(recorded, settings(cycles=5))
    async with running(runner):
        runner.request("xa", lab.target, "baseline")
        await recorded.wait_for(1, 30)
        with RoutedLab(("core2", "district2", "commune2")) as other:
            other.check_route(other.target)
            reroute(lab.target, other)
            runner.request("xa", lab.target, "requested")
            await recorded.wait_for(2, 30)
    path = recorded.book.get("xa")
    assert path is not None and path.baseline is not None and path.last is not None
    assert [hop.address for hop in path.baseline.hops] == lab.path()
    assert [hop.address for hop in path.last.hops] == [*other.path()[:2], lab.target]
    assert path.change is not None
    assert (path.change.ttl, path.change.address, path.change.was) == (
        1, other.hop_address(0), lab.hop_address(0))


def reroute(address: str, other: RoutedLab) -> None:
    """``address`` (a /32 of the first lab) now lives on ``other``'s last router and is
    routed there from the host and each router of ``other``; the host route goes with
    ``other``'s link when that lab is taken down."""
    last = len(other.roles) - 1
    run(["ip", "-n", other.namespaces[last], "address", "add", f"{address}/32", "dev", "lo"])
    for index in range(last):
        run(["ip", "-n", other.namespaces[index], "route", "add", f"{address}/32", "via",
             other.hop_address(index + 1)])
    run(["ip", "route", "add", f"{address}/32", "via", other.hop_address(0),
         "dev", other.host_link])
    words = run(["ip", "-o", "route", "get", address]).split()
    assert words[words.index("dev") + 1] == other.host_link, words


@skip_unless_available
async def test_an_asymmetric_return_path_still_gives_a_clean_trace_and_names_a_fault(
        lab: RoutedLab) -> None:
    """Commune answers the host over a link of its own (forward: core, district; back:
    direct), as a site with two uplinks would: the routers' answers come back the way
    the probes went, the site's replies another way."""
    host_end, site_end = str(lab.network[201]), str(lab.network[202])
    back = f"{lab.prefix}-r"
    commune = lab.namespaces[-1]
    run(["ip", "link", "add", back, "type", "veth", "peer", "name", "back", "netns", commune])
    try:
        run(["ip", "address", "add", f"{host_end}/30", "dev", back])
        run(["ip", "link", "set", back, "up"])
        run(["ip", "-n", commune, "address", "add", f"{site_end}/30", "dev", "back"])
        run(["ip", "-n", commune, "link", "set", "back", "up"])
        # the host's end of the lab link (the traces' source) is reached over the new link
        run(["ip", "-n", commune, "route", "replace", f"{lab.network[0]}/30", "via", host_end])
        source = str(lab.network[1])  # the host's end of the lab's link, the traces' source
        assert " dev back " in run(["ip", "-n", commune, "-o", "route", "get", source])
        lab.check_route(lab.target)
        recorded = Recorded()
        runner = DiagnosisRunner(recorded, settings())
        async with running(runner):
            runner.request("clean", lab.target, "requested")
            await recorded.wait_for(1, 30)
            lab.lose(1, 0.5)
            runner.request("lossy", lab.target, "degraded")
            await recorded.wait_for(2, 30)
    finally:
        run(["ip", "link", "delete", back])
    clean, lossy = recorded.book.get("clean"), recorded.book.get("lossy")
    assert clean is not None and clean.last is not None and lossy is not None
    assert [hop.address for hop in clean.last.hops] == lab.path()
    assert clean.last.reached and clean.last.bad_hop is None, clean.last
    assert lossy.last is not None and lossy.last.bad_hop is not None
    assert lossy.last.bad_hop.ttl == 2
