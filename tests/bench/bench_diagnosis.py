"""Diagnosis benchmark: time from a hop fault to vcmon naming that hop; packets and CPU
per trace.

Not part of the test run; it prints figures. Run as root from the repository root
(about 3 minutes):

    .venv/bin/python tests/bench/bench_diagnosis.py

Two routed labs (host → core → district → commune namespaces on random /24s of
198.19.64.0/18 and random ULA /48s, routes checked with ``ip route get`` before the
first packet), one site on each lab's target, one vcmon daemon in this process probing
both. Each round puts 50 % loss on one router of each lab (hops 1, 2, 3 in turn), times
the site's state change and the moment its path record names that router as the first
bad hop, then clears the fault and waits for both sites to be ok again. 10 rounds: 20
faults.

Settings: the diagnosis budget is the shipped default (cycles 10, 2 traces at once,
40 packets a second); ``min_spacing`` is 0 so that one site can be faulted again within
the run (shipped: 5 min). Probing and health judge faster than shipped (interval
200 ms, window 5 s, evaluate_every 1 s) so that 20 faults fit in about three minutes: the time
from the fault to the state change is printed apart from the trace's own part, which
does not depend on them. With the shipped health settings (evaluate_every 5 s,
enter_after 3) the state change comes 10-15 s after the fault instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from monitor.daemon import Daemon
from monitor.inventory import load_config
from monitor.inventory.diagnosis import DiagnosisSettings
from monitor.lab.routed import RoutedLab
from monitor.probing.diagnosis import REPLY_TIMEOUT, plan
from monitor.status.health import Status
from probes.trace import trace_blocking

ROUNDS = 10
LOSS = 0.5
ROLES = ("core", "district", "commune")
BAD = (Status.DEGRADED, Status.DOWN)


def _inventory(labs: list[RoutedLab]) -> str:
    sites = "".join(f"  - {{id: site-{i}, name: Site {i}, tier: commune, "
                    f"address: {lab.target}}}\n" for i, lab in enumerate(labs))
    return ("defaults: {interval: 200ms, timeout: 500ms, window: 5s, down_after: 25}\n"
            "health: {evaluate_every: 1s, enter_after: 3, leave_after: 2, min_replies: 5}\n"
            "diagnosis: {min_spacing: 0}\n"
            "listen: 127.0.0.1:0\n"
            f"sites:\n{sites}")


async def _until(check: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(check) and check():
            return True
        await asyncio.sleep(0.05)
    return False


async def _round(daemon: Daemon, labs: list[RoutedLab], hop: int,
                 ) -> dict[str, tuple[float, float, bool]]:
    """One fault at ``hop`` on every lab: site -> (state change, named, right hop),
    seconds after the fault."""
    sites = [f"site-{i}" for i in range(len(labs))]
    started = time.time()
    for lab in labs:
        lab.lose(hop, LOSS)
    changed: dict[str, float] = {}
    named: dict[str, tuple[float, bool]] = {}

    def done() -> bool:
        now = time.time()
        for site_id, lab in zip(sites, labs, strict=True):
            h = daemon.health.sites[site_id]
            if site_id not in changed and h.status in BAD and h.since >= started - 1:
                changed[site_id] = now
            path = daemon.health.paths.get(site_id)
            last = path.last if path is not None else None
            if site_id not in named and last is not None and last.started_at >= started:
                bad = last.bad_hop
                named[site_id] = (now, bad is not None and bad.ttl == hop + 1
                                  and bad.address == lab.path()[hop])
        return len(named) == len(sites)

    if not await _until(done, 90):
        print(f"not every site named within 90 s: {named}", file=sys.stderr)
    for lab in labs:
        lab.clear(hop)
    await _until(lambda: all(daemon.health.sites[s].status is Status.OK for s in sites), 60)
    return {site_id: (changed.get(site_id, at) - started, at - started, right)
            for site_id, (at, right) in named.items()}


async def _faults(daemon: Daemon, labs: list[RoutedLab]) -> list[tuple[float, float, bool]]:
    """(fault → state change, fault → named, named right) per fault."""
    out: list[tuple[float, float, bool]] = []
    for round_ in range(ROUNDS):
        hop = round_ % len(ROLES)
        for site_id, (change, at, right) in (await _round(daemon, labs, hop)).items():
            out.append((change, at, right))
            print(f"fault at hop {hop + 1} ({ROLES[hop]}) behind {site_id}: state change "
                  f"after {change:5.1f} s, named after {at:5.1f} s"
                  f"{'' if right else '  (WRONG HOP)'}", flush=True)
    return out


def _cost(lab: RoutedLab, traces: int = 10) -> tuple[float, float, float]:
    """(packets, CPU ms, seconds) per trace of the default plan on a clean 3-hop path."""
    settings = DiagnosisSettings()
    hops, interval = plan(len(ROLES), settings.share)
    cpu: list[float] = []
    packets: list[int] = []
    durations: list[float] = []

    def one() -> None:
        before = time.thread_time()
        snapshot = trace_blocking(lab.target, cycles=settings.cycles, interval=interval,
                                  reply_timeout=REPLY_TIMEOUT, max_hops=hops)
        cpu.append(time.thread_time() - before)
        packets.append(snapshot.packets)
        durations.append(snapshot.duration)

    for _ in range(traces):
        worker = threading.Thread(target=one)
        worker.start()
        worker.join()
    return (statistics.fmean(packets), statistics.fmean(cpu) * 1000,
            statistics.fmean(durations))


async def main() -> None:
    with RoutedLab(ROLES) as first, RoutedLab(ROLES) as second:
        labs = [first, second]
        for lab in labs:
            lab.check_route(lab.target)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "sites.yaml"
            path.write_text(_inventory(labs))
            daemon = Daemon(load_config(path), config_path=str(path),
                            registry=CollectorRegistry())
            await daemon.startup()
            try:
                await _until(lambda: all(h.status is Status.OK
                                         for h in daemon.health.sites.values()), 30)
                faults = await _faults(daemon, labs)
                traces = sum(daemon.diagnosis.traces.values())
                sent = sum(daemon.diagnosis.packets.values())
            finally:
                with contextlib.suppress(Exception):
                    await daemon.shutdown()
        packets, cpu_ms, seconds = _cost(first)
    named = sorted(at for _, at, _ in faults)
    changes = sorted(change for change, _, _ in faults)
    trace_parts = sorted(at - change for change, at, _ in faults)
    print(f"\n{len(faults)} faults, {sum(1 for *_, right in faults if right)} named at the "
          "right hop")
    print(f"fault -> named hop:     median {statistics.median(named):.1f} s, "
          f"max {max(named):.1f} s")
    print(f"fault -> state change:  median {statistics.median(changes):.1f} s, "
          f"max {max(changes):.1f} s")
    print(f"state change -> named:  median {statistics.median(trace_parts):.1f} s, "
          f"max {max(trace_parts):.1f} s")
    print(f"daemon traces: {traces}, {sent} echo requests, {sent / max(1, traces):.0f} per trace")
    print(f"a default trace of a clean 3-hop path: {packets:.0f} packets, {cpu_ms:.1f} ms CPU, "
          f"{seconds:.1f} s")


if __name__ == "__main__":
    asyncio.run(main())
