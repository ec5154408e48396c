"""Lab benchmark: vcmon against the conference-day scenario, configured vs measured.

Not part of the test run; it prints figures. Run as root from the repository root:

    .venv/bin/python tests/bench/bench_lab.py --loopback 2000 --seconds 60

It brings up a lab of its own (namespace ``vcmon-bench`` on 198.19.0.0/17, so a
user's ``vcmon-lab`` is left alone) with ``--sites`` sites in the conference-day
scenario, adds ``--loopback`` sites on 127.30.0.0/16 probed every second, checks every
route, runs vcmon's daemon in-process for ``--seconds`` with /metrics scraped every
second, and takes the lab down again.

Per scenario profile (a label: province, district, commune, degraded, down, behind-down)
it prints the configured and measured mean RTT, jitter and loss, and the worst error of
one site; ``σ`` columns are the sampling standard error a perfect meter would show
with that many probes (RTT: J/√(3n) for uniform ±J jitter; loss: √(p(1−p)/n)), so an
error of a few σ is the randomness of the lab, not vcmon. Configured jitter is the
analytic mean |ΔRTT| of uniform ±J noise, 2J/3. Down sites show how many were
reported down; their RTT and jitter are empty.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import math
import resource
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from monitor.lab import control
from monitor.lab.netlab import Lab
from monitor.lab.profiles import Profile
from monitor.lab.sites import synthetic_inventory
from tests.bench.service import require_root
from tests.lab.harness import Measured, inventory, loopback_sites, measure

LAB = Lab(name="vcmon-bench", network=ipaddress.IPv4Network("198.19.0.0/17"))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}"


def report(profiles: dict[str, Profile], measured: Measured, loopback: int) -> list[str]:
    groups: dict[str, list[str]] = defaultdict(list)
    for site_id, profile in profiles.items():
        groups[profile.label].append(site_id)
    lines = [f"{'profile':<12} {'sites':>5} | {'RTT ms: conf':>12} {'meas':>7} {'worst':>6} "
             f"{'σ':>5} | {'jitter ms: conf':>15} {'meas':>6} {'worst':>6} | "
             f"{'loss %: conf':>12} {'meas':>5} {'worst':>5} {'σ':>5} | {'down':>4} "
             f"{'probes/site':>11}"]
    worst = {"rtt": 0.0, "jitter": 0.0, "loss": 0.0}
    for label, ids in groups.items():
        stats = [measured.stats[i] for i in ids]
        chosen = [profiles[i] for i in ids]
        n = statistics.mean(s.sent for s in stats)
        down = sum(measured.up[i] is False for i in ids)
        if all(p.down for p in chosen) or label == "behind-down":
            lines.append(f"{label:<12} {len(ids):>5} | {'':>12} {'-':>7} {'':>6} {'':>5} | "
                         f"{'':>15} {'-':>6} {'':>6} | {'100.00':>12} "
                         f"{_pct(statistics.mean(s.loss_ratio or 0 for s in stats)):>5} "
                         f"{'':>5} {'':>5} | {down:>4} {n:>11.0f}")
            continue
        errors = {"rtt": [abs((s.rtt_avg or 0) - p.delay) for s, p in zip(stats, chosen,
                                                                              strict=True)],
                  "jitter": [abs((s.jitter or 0) - 2 * p.jitter / 3)
                             for s, p in zip(stats, chosen, strict=True)],
                  "loss": [abs((s.loss_ratio or 0) - p.loss) for s, p in zip(stats, chosen,
                                                                               strict=True)]}
        for key, values in errors.items():
            worst[key] = max(worst[key], *values)
        jitter = max(p.jitter for p in chosen)
        loss = max(p.loss for p in chosen)
        lines.append(
            f"{label:<12} {len(ids):>5} | {_ms(statistics.mean(p.delay for p in chosen)):>12} "
            f"{_ms(_mean(s.rtt_avg for s in stats)):>7} {_ms(max(errors['rtt'])):>6} "
            f"{_ms(jitter / math.sqrt(3 * n)):>5} | "
            f"{_ms(statistics.mean(2 * p.jitter / 3 for p in chosen)):>15} "
            f"{_ms(_mean(s.jitter for s in stats)):>6} {_ms(max(errors['jitter'])):>6} | "
            f"{_pct(statistics.mean(p.loss for p in chosen)):>12} "
            f"{_pct(_mean(s.loss_ratio for s in stats)):>5} {_pct(max(errors['loss'])):>5} "
            f"{_pct(math.sqrt(loss * (1 - loss) / n)):>5} | {down:>4} {n:>11.0f}")
    loop = [measured.stats[s] for s in measured.stats if s.startswith("loop-")]
    if loopback:
        rtts = sorted(s.rtt_median or 0 for s in loop)
        lines.append(f"{'loopback':<12} {len(loop):>5} | median of medians "
                     f"{_ms(rtts[len(rtts) // 2])} ms, worst median {_ms(rtts[-1])} ms, "
                     f"loss {_pct(_mean(s.loss_ratio for s in loop))} %, "
                     f"{statistics.mean(s.sent for s in loop):.0f} probes/site")
    lines.append(f"worst error of one lab site: RTT {_ms(worst['rtt'])} ms, jitter "
                 f"{_ms(worst['jitter'])} ms, loss {_pct(worst['loss'])} points")
    return lines


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.mean(present) if present else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=240, help="lab sites (240)")
    parser.add_argument("--loopback", type=int, default=2000, help="loopback sites (2000)")
    parser.add_argument("--seconds", type=float, default=60.0, help="probing time (60)")
    parser.add_argument("--interval", type=float, default=0.25,
                        help="lab sites' probe interval in s (0.25: 240 probes a minute)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    require_root("bench_lab.py", "network namespaces, raw sockets")
    control.down(LAB)  # a previous run that was killed
    started = control.up(LAB, synthetic_inventory(args.sites), "conference-day", seed=args.seed)
    try:
        defaults = {"interval": args.interval, "timeout": 1.0, "window": args.seconds + 10}
        loop_sites = [{**site, "probe": {"interval": 1.0}}
                      for site in loopback_sites(args.loopback)]
        config = inventory(started.inventory, loop_sites, defaults)
        cpu = time.process_time()
        measured = asyncio.run(measure(config, LAB, args.seconds, scrape_every=1.0))
        cpu = time.process_time() - cpu
    finally:
        control.down(LAB)
    profiles = {site.id: site.profile for site in started.state.sites}
    print(f"vcmon lab benchmark: conference-day (seed {args.seed}), {args.sites} lab sites "
          f"every {args.interval:g} s + {args.loopback} loopback sites every 1 s, "
          f"{args.seconds:g} s, /metrics scraped every second")
    print("\n".join(report(profiles, measured, args.loopback)))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"daemon (in-process): {cpu:.1f} CPU-s ({cpu / args.seconds * 100:.0f} % of a core), "
          f"peak RSS {peak:.0f} MiB, {measured.scrapes} scrapes, slowest "
          f"{measured.slowest_scrape:.3f} s, {measured.skipped_cycles} skipped probe cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
