"""The scheduler on a real event loop, with a recording send function."""

from __future__ import annotations

import asyncio
import gc
import socket
import time
from collections import defaultdict
from typing import Any

import pytest

from monitor.probing.scheduler import (
    CATCH_UP,
    SLOT,
    SLOT_PROBES,
    SLOT_SHARE,
    Scheduler,
    Target,
    phase_fraction,
    phases,
    slot_for,
)
from probes import Outcome, ProbeResult


class Recorder:
    def __init__(self) -> None:
        self.sends: dict[str, list[float]] = defaultdict(list)
        self.addresses: dict[str, str] = {}
        self.results: list[ProbeResult] = []

    def send(self, site_id: str, ip: str, timeout: float) -> None:
        self.sends[site_id].append(asyncio.get_running_loop().time())
        self.addresses[site_id] = ip

    def on_result(self, result: ProbeResult) -> None:
        self.results.append(result)


def target(rec: Recorder, site_id: str, **kw: Any) -> Target:
    kw.setdefault("address", "127.0.0.1")
    kw.setdefault("interval", 0.05)
    kw.setdefault("timeout", 0.05)
    return Target(site_id=site_id, send=rec.send, **kw)


async def run_for(scheduler: Scheduler, seconds: float) -> None:
    task = asyncio.create_task(scheduler.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_absolute_schedule_does_not_drift() -> None:
    rec = Recorder()
    scheduler = Scheduler(rec.on_result)
    scheduler.set_targets([target(rec, f"s{i}") for i in range(5)])
    await run_for(scheduler, 1.02)
    for site_id, times in rec.sends.items():
        assert 19 <= len(times) <= 21, site_id
        # Every send lands on phase + k·interval; errors do not accumulate.
        first = times[0]
        for k, t in enumerate(times):
            assert abs(t - (first + k * 0.05)) < 0.02, (site_id, k, t - first)


async def test_starts_are_spread_over_the_interval() -> None:
    rec = Recorder()
    scheduler = Scheduler(rec.on_result)
    start = asyncio.get_running_loop().time()
    scheduler.set_targets([target(rec, f"site-{i}", interval=0.5) for i in range(200)])
    await run_for(scheduler, 0.55)
    offsets = sorted(times[0] - start for times in rec.sends.values())
    assert len(offsets) == 200
    # uniform over [0, 0.5): both halves of the interval get a fair share
    assert 60 <= sum(o < 0.25 for o in offsets) <= 140
    assert offsets[-1] - offsets[0] > 0.4
    assert 0 <= phase_fraction("a") < 1 and phase_fraction("a") == phase_fraction("a")


async def test_bursts_go_out_at_their_spacing_each_cycle() -> None:
    rec = Recorder()
    scheduler = Scheduler(rec.on_result)
    scheduler.set_targets([target(rec, "b", interval=0.2, burst=3, burst_spacing=0.02)])
    await run_for(scheduler, 0.61)
    times = rec.sends["b"]
    assert len(times) == 9
    for cycle in range(3):
        base = times[cycle * 3]
        assert base - times[0] == pytest.approx(0.2 * cycle, abs=0.012)
        for j in (1, 2):
            assert times[cycle * 3 + j] - base == pytest.approx(0.02 * j, abs=0.008)


async def test_first_cycle_done_after_every_target_sent() -> None:
    rec = Recorder()
    scheduler = Scheduler(rec.on_result)
    scheduler.set_targets([target(rec, f"s{i}", interval=0.2) for i in range(20)])
    assert not scheduler.first_cycle_done.is_set()
    task = asyncio.create_task(scheduler.run())
    await asyncio.wait_for(scheduler.first_cycle_done.wait(), 0.5)
    assert len(rec.sends) == 20
    task.cancel()


async def test_reload_keeps_unchanged_targets_in_phase_and_stops_removed() -> None:
    rec = Recorder()
    scheduler = Scheduler(rec.on_result)
    scheduler.set_targets([target(rec, "keep"), target(rec, "drop")])
    task = asyncio.create_task(scheduler.run())
    await asyncio.sleep(0.3)
    scheduler.set_targets([target(rec, "keep"), target(rec, "new", interval=0.1)])
    dropped_at = len(rec.sends["drop"])
    await asyncio.sleep(0.3)
    task.cancel()
    assert len(rec.sends["drop"]) == dropped_at
    assert 2 <= len(rec.sends["new"]) <= 4
    keep = rec.sends["keep"]
    assert all(abs(t - (keep[0] + k * 0.05)) < 0.012 for k, t in enumerate(keep))
    assert 11 <= len(keep) <= 13


async def test_a_stalled_loop_skips_cycles_instead_of_sending_a_backlog() -> None:
    rec = Recorder()
    scheduler = Scheduler(rec.on_result)
    scheduler.set_targets([target(rec, "s", interval=0.05)])
    task = asyncio.create_task(scheduler.run())
    await asyncio.sleep(0.12)
    before = len(rec.sends["s"])
    time.sleep(0.3)  # noqa: ASYNC251 -- blocking the loop for six intervals is the test
    await asyncio.sleep(0.01)
    task.cancel()
    # the overdue probe, and at most the next one at its phase: no backlog of six
    assert len(rec.sends["s"]) - before <= 2
    assert scheduler.skipped_cycles >= 5


async def test_hostnames_resolve_and_failures_stay_per_site(
        monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def fake_getaddrinfo(host: str, *args: Any, **kw: Any) -> Any:
        if host == "vc-broken.example":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return await real(host, *args, **kw)

    monkeypatch.setattr(loop, "getaddrinfo", fake_getaddrinfo)
    rec = Recorder()
    scheduler = Scheduler(rec.on_result)
    scheduler.set_targets([target(rec, "named", address="localhost"),
                           target(rec, "broken", address="vc-broken.example"),
                           target(rec, "ip", address="127.0.0.2")])
    await run_for(scheduler, 0.3)
    assert rec.addresses["named"] in ("127.0.0.1", "::1")
    assert rec.addresses["ip"] == "127.0.0.2"
    assert "broken" not in rec.sends
    errors = [r for r in rec.results if r.target == "broken"]
    assert len(errors) >= 4
    assert all(r.outcome is Outcome.SEND_ERROR for r in errors)
    assert "cannot resolve vc-broken.example: " in errors[-1].detail
    assert "Name or service not known" in errors[-1].detail
    assert len(rec.sends["ip"]) >= 5


async def test_sends_due_within_a_slot_share_a_wake_up_and_none_goes_out_late_or_far_early(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """400 targets a second: fewer wake-ups than probes, each probe within the slot of
    its due time (never before it by more than the slot), and the schedule unchanged."""
    wakes: list[float] = []
    wake = Scheduler._wake

    def counting(scheduler: Scheduler, loop: asyncio.AbstractEventLoop) -> None:
        wakes.append(loop.time())
        wake(scheduler, loop)

    monkeypatch.setattr(Scheduler, "_wake", counting)
    rec = Recorder()
    scheduler = Scheduler(rec.on_result)
    start = asyncio.get_running_loop().time()
    targets = [target(rec, f"s{i}", interval=0.5) for i in range(200)]
    scheduler.set_targets(targets)
    await run_for(scheduler, 1.02)
    sends = sum(len(times) for times in rec.sends.values())
    assert sends >= 400
    # the slot here is 5 % of 0.5 s, 25 ms: 10 probes a wake-up
    assert len(wakes) < sends * 0.2, (len(wakes), sends)
    start_at = phases(targets)
    for site_id, times in rec.sends.items():
        due = start + start_at[site_id] * 0.5
        for k, sent in enumerate(times):
            # early by at most the slot (plus the clock's resolution); late only by lag
            assert -0.025 - 0.001 <= sent - (due + k * 0.5) < 0.05, (site_id, k)


def test_slot_shrinks_for_fast_intervals_bursts_and_high_rates() -> None:
    rec = Recorder()
    assert slot_for([target(rec, "a", interval=1.0)]) == SLOT
    assert slot_for([target(rec, "a", interval=1.0), target(rec, "b", interval=0.02)]) \
        == pytest.approx(0.02 * SLOT_SHARE)
    assert slot_for([target(rec, "a", interval=1.0, burst=3, burst_spacing=0.04)]) \
        == pytest.approx(0.04 * SLOT_SHARE)
    assert slot_for([]) == SLOT
    # 20,000 sites a second: SLOT_PROBES a wake-up on average, not 1,000
    many = [target(rec, f"s{i}", interval=1.0) for i in range(20_000)]
    assert slot_for(many) == pytest.approx(SLOT_PROBES / 20_000)


def test_phases_space_each_interval_evenly_and_stay_put() -> None:
    """The starts of the sites of one interval: the k-th by hash at (k + 1/2)/n, so the
    send times of 240 sites are within 1/(2n) of uniform (random phases: ~5 %), and the
    same inventory gives each site the same phase."""
    rec = Recorder()
    sites = [target(rec, f"site-{i:04d}", interval=1.0) for i in range(240)]
    slow = [target(rec, f"slow-{i}", interval=10.0) for i in range(7)]
    spread = phases(sites + slow)
    ordered = sorted(spread[t.site_id] for t in sites)
    n = len(ordered)
    gap = max(max(abs(p - i / n), abs(p - (i + 1) / n)) for i, p in enumerate(ordered))
    assert gap == pytest.approx(0.5 / n)
    assert sorted(spread[t.site_id] for t in slow) == pytest.approx(
        [(k + 0.5) / 7 for k in range(7)])
    # the order is the hash's: the same for every start of the same inventory
    by_hash = sorted(sites, key=lambda t: phase_fraction(t.site_id))
    assert [spread[t.site_id] for t in by_hash] == ordered
    assert phases(list(reversed(sites + slow))) == spread


async def test_a_backlog_goes_out_a_bounded_run_at_a_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After a stall, what is overdue goes out at most CATCH_UP probes a wake-up, so that
    the engine's poll and the other callbacks run in between; nothing is lost."""
    runs: list[int] = []
    wake = Scheduler._wake

    def counting(scheduler: Scheduler, loop: asyncio.AbstractEventLoop) -> None:
        before = scheduler.sends
        wake(scheduler, loop)
        runs.append(scheduler.sends - before)

    monkeypatch.setattr(Scheduler, "_wake", counting)
    rec = Recorder()
    scheduler = Scheduler(rec.on_result)
    count = 3 * CATCH_UP
    scheduler.set_targets([target(rec, f"s{i}", interval=1.0) for i in range(count)])
    task = asyncio.create_task(scheduler.run())
    time.sleep(1.05)  # noqa: ASYNC251 -- the stall: every target is overdue after it
    await asyncio.sleep(0.1)
    task.cancel()
    assert max(runs) == CATCH_UP
    assert len(rec.sends) == count  # every target had its probe


async def test_the_schedule_keeps_no_object_per_target_for_the_cyclic_collector() -> None:
    """Each target has one entry in the heap, made anew at every send and alive for an
    interval: at 20,000 sites 20,000 objects in the young generation at each collection,
    which walks them all (as tuples, with the engine's, 10-25 ms of the loop at a time).
    An entry is one int, which the collector does not track."""
    sent = [0]

    def send(site_id: str, ip: str, timeout: float) -> None:
        sent[0] += 1

    scheduler = Scheduler(lambda result: None)
    scheduler.set_targets(Target(site_id=f"s{i}", address=f"127.0.{i // 250}.{1 + i % 250}",
                                 send=send, interval=0.1, timeout=0.05) for i in range(1000))
    was_enabled = gc.isenabled()
    gc.collect()  # what is alive now is old
    gc.disable()  # what is made from now on stays in the young generation
    try:
        before = len(gc.get_objects(generation=0))
        await run_for(scheduler, 0.35)  # every entry made again three times
        made = len(gc.get_objects(generation=0)) - before
    finally:
        if was_enabled:
            gc.enable()
    assert sent[0] >= 3000
    # the task and the timers of the run itself (a tuple an entry: 1,000 more)
    assert made < 100, made
