"""TWAMP stream benchmark: what media-rate streams cost the daemon, and how right they are.

Not part of the test run; it prints figures. Run as root from the repository root:

    .venv/bin/python tests/bench/bench_twamp.py --sites 240 2000 --seconds 20

For each site count N it brings up a lab of its own (namespace ``vcmon-bench-tw`` on
198.19.0.0/17, so a user's ``vcmon-lab`` is left alone; every route checked before the
first packet) whose sites reflect TWAMP-light with a known truth: forward 5 ms ± 3 ms,
reverse 10 ms, no loss. vcmon's daemon runs in-process, probing every site by ICMP once
a second, with /metrics scraped every second, in two phases of ``--seconds`` each:

1. ICMP only: CPU seconds of the daemon's process per 1,000 ICMP probes resolved;
2. ICMP and one 50-packet stream (20 ms apart, EF) per site every 10 s: the extra CPU
   over phase 1's rate, per 1,000 stream packets resolved.

It prints, per N: both CPU figures, the scheduler lag (``vcmon_scheduler_lag_seconds``:
how late the ICMP sender woke, per wake-up; mean and the bucket holding the 99th
percentile) in each phase, the stream sender's ignored replies, and the timestamp error
against the lab's truth: stream RTT minus 15 ms, forward jitter (mean |IPDV|) minus
2·3/3 = 2 ms, reverse jitter (truth 0), as mean and worst over the sites. The lab's
own responder runs in another process at real-time priority and is not in the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from prometheus_client import CollectorRegistry

from monitor.lab import control
from monitor.lab.netlab import Lab
from monitor.lab.profiles import Profile
from monitor.lab.sites import synthetic_inventory
from tests.bench.service import require_root
from tests.lab.harness import inventory, running

LAB = Lab(name="vcmon-bench-tw", network=ipaddress.IPv4Network("198.19.0.0/17"))
TRUTH = Profile(fwd_delay=0.005, fwd_jitter=0.003, rev_delay=0.010)
STREAM = {"kind": "twamp", "interval": 10, "timeout": 1, "packets": 50, "spacing": 0.02}
ICMP = {"interval": 1, "timeout": 1, "window": 60}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _responder_cpu() -> float:
    """CPU seconds the lab's responder has used (it competes with the daemon for cores)."""
    total = 0.0
    for pid in control.responder_pids(LAB):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _lag(registry: CollectorRegistry) -> tuple[float, float, float]:
    """(count, sum, the bucket bound holding the 99th percentile) of the lag histogram."""
    count = registry.get_sample_value("vcmon_scheduler_lag_seconds_count") or 0.0
    total = registry.get_sample_value("vcmon_scheduler_lag_seconds_sum") or 0.0
    p99 = math.inf
    for bound in (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0):
        below = registry.get_sample_value("vcmon_scheduler_lag_seconds_bucket",
                                          {"le": str(bound)}) or 0.0
        if count and below >= 0.99 * count:
            p99 = bound
            break
    return count, total, p99


async def _phase(started: control.Started, streams: bool, seconds: float) -> dict[str, Any]:
    document_defaults = {**ICMP, "probes": [STREAM] if streams else []}
    config = inventory(started.inventory, defaults=document_defaults)
    async with running(config, LAB, scrape_every=1.0) as run:
        daemon = run.daemon
        # the first cycle spreads over an interval; measure from then on
        await asyncio.sleep(STREAM["interval"] if streams else 2.0)
        sent0 = sum(state.sent for state in daemon.table)
        packets0 = sum(state.sent for state in daemon.health.streams)
        lag0 = _lag(daemon.registry)
        cpu0, wall0, lab0 = _cpu(), time.monotonic(), _responder_cpu()
        await asyncio.sleep(seconds)
        cpu, wall = _cpu() - cpu0, time.monotonic() - wall0
        lab_cpu = _responder_cpu() - lab0
        load = os.getloadavg()[0]
        lag1 = _lag(daemon.registry)
        probes = sum(state.sent for state in daemon.table) - sent0
        packets = sum(state.sent for state in daemon.health.streams) - packets0
        now = daemon.table.clock()
        errors: dict[str, list[float]] = {"rtt": [], "forward": [], "reverse": []}
        for state in daemon.health.streams:
            stats = state.stats(now)
            if stats is None or stats.rtt_avg is None:
                continue
            errors["rtt"].append(stats.rtt_avg - (TRUTH.fwd_delay + TRUTH.rev_delay))
            if stats.forward.jitter is not None and stats.reverse.jitter is not None:
                errors["forward"].append(stats.forward.jitter - 2 * TRUTH.fwd_jitter / 3)
                errors["reverse"].append(stats.reverse.jitter)
        received = sum(state.received for state in daemon.health.streams)
        sent_all = sum(state.sent for state in daemon.health.streams)
        return {"cpu": cpu, "wall": wall, "lab_cpu": lab_cpu, "load": load, "probes": probes,
                "packets": packets,
                "lag_count": lag1[0] - lag0[0], "lag_sum": lag1[1] - lag0[1],
                "lag_p99": lag1[2], "errors": errors, "scrapes": len(run.scrape_seconds),
                "slowest_scrape": max(run.scrape_seconds, default=0.0),
                "ignored": dict(daemon.streams.ignored),
                "stream_received": received, "stream_sent": sent_all,
                "skipped": daemon.skipped_cycles}


def _ms(value: float) -> str:
    return f"{value * 1000:.3f}"


def _summary(name: str, values: list[float]) -> str:
    if not values:
        return f"{name}: no stream"
    worst = max(values, key=abs)
    return (f"{name}: mean {_ms(statistics.fmean(values))} ms, worst {_ms(worst)} ms "
            f"over {len(values)} sites")


def bench(sites: int, seconds: float) -> list[str]:
    document = {"defaults": ICMP, **synthetic_inventory(sites)}
    profiles = {site["id"]: TRUTH for site in document["sites"]}
    started = control.up(LAB, document, profiles, seed=3)
    try:
        icmp = asyncio.run(_phase(started, streams=False, seconds=seconds))
        both = asyncio.run(_phase(started, streams=True, seconds=seconds))
    finally:
        control.down(LAB)
    per_probe = icmp["cpu"] / icmp["probes"]
    extra = both["cpu"] - per_probe * both["probes"]
    per_packet = extra / both["packets"] if both["packets"] else math.nan
    lines = [f"== {sites} sites: ICMP 1/s each, stream 50 packets / 10 s each, "
             f"/metrics scraped every second, {seconds:g} s per phase =="]
    lines.append(f"ICMP only:   {icmp['probes']} probes, CPU {icmp['cpu']:.2f} s -> "
                 f"{1000 * per_probe:.3f} CPU s per 1,000 ICMP probes "
                 f"({100 * icmp['cpu'] / icmp['wall']:.1f} % of a core)")
    lines.append(f"with streams: {both['probes']} probes + {both['packets']} stream packets, "
                 f"CPU {both['cpu']:.2f} s -> {1000 * per_packet:.3f} CPU s per 1,000 stream "
                 f"packets ({100 * both['cpu'] / both['wall']:.1f} % of a core)")
    for label, phase in (("ICMP only", icmp), ("with streams", both)):
        lines.append(f"lab responder, {label}: {100 * phase['lab_cpu'] / phase['wall']:.1f} % "
                     f"of a core (real-time priority); 1-min load average {phase['load']:.2f} "
                     f"on {os.cpu_count()} CPUs")
        mean = phase["lag_sum"] / phase["lag_count"] if phase["lag_count"] else math.nan
        lines.append(f"scheduler lag, {label}: mean {_ms(mean)} ms, p99 <= "
                     f"{_ms(phase['lag_p99'])} ms over {phase['lag_count']:.0f} wake-ups; "
                     f"{phase['scrapes']} scrapes, slowest {phase['slowest_scrape']:.3f} s, "
                     f"skipped cycles {phase['skipped']}")
    errors = both["errors"]
    lines.append("timestamp error against the lab's truth (fwd 5 ± 3 ms, rev 10 ms):")
    lines.append("  " + _summary("RTT - 15 ms", errors["rtt"]))
    lines.append("  " + _summary("forward jitter - 2 ms", errors["forward"]))
    lines.append("  " + _summary("reverse jitter - 0 ms", errors["reverse"]))
    lines.append(f"stream replies received {both['stream_received']} of {both['stream_sent']}; "
                 f"ignored by the sender: {both['ignored']}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[240, 2000])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    require_root("bench_twamp.py", "a lab of network namespaces, raw ICMP sockets")
    for count in args.sites:
        for line in bench(count, args.seconds):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
