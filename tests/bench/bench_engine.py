"""ICMP engine benchmark: vcmon's engine vs fping vs icmplib, on loopback targets.

Not part of the test run; it prints figures. Run as root from the repository root:

    .venv/bin/python tests/bench/bench_engine.py --targets 1000 10000 --seconds 30

What it does. For each target count N it builds N loopback addresses 127.20.X.Y
(refusing to start unless every one is inside 127.0.0.0/8 and the route to them is
``dev lo``), then runs each tool, one after another, as its own process, asking each
for 1 probe per second per target (N probes/s) for ``--seconds``:

- ``vcmon``: ``monitor.probing.scheduler.Scheduler`` feeding ``probes.icmp.IcmpEngine``, wired
  as the daemon wires them (``_run_vcmon.py``);
- ``fping``: ``fping -C SECONDS -p 1000 -i I -q -t TIMEOUT -B1 -r0 -f FILE``, one process
  per 5,000 targets (fping 5.1 runs out of sequence numbers above ~6,500 probes/s per
  process: it holds each one for 10 s; two processes at 10,000 targets, CPU and RSS
  summed). fping 5.1 takes a fractional ``-i`` in ms, down to 0 (each round one burst),
  but overshoots every inter-packet sleep by about 0.08 ms here (50 us timer slack plus
  its loop): ``-i 0.09`` over 10,000 targets takes 1.7 s per round, not 0.9 s. So by
  default I = max(0, 0.9 x 1000/n - 0.08) ms for n targets per process, which spreads
  each round over most of the second like vcmon's schedule; ``--fping-interval`` sets I;
- ``icmplib``: ``icmplib.async_multiping`` over all N addresses once per second, rounds
  on absolute seconds, all N concurrent by default (``_run_icmplib.py``).

How to read the table (one per target count):

- ``CPU s/1k``: the child's user+system CPU seconds (``os.wait4`` rusage) per 1,000
  probes resolved. Python runners include their own interpreter start and imports:
  that is what a deployment pays.
- ``xfping``: ``CPU s/1k`` over fping's (when fping ran).
- ``CPU %``: the same CPU time over the child's wall time, in % of one core.
- ``RSS MiB``: the child's peak resident set, ``VmHWM`` of its own image: read by the
  Python runners just before they summarise, polled every 0.1 s for fping. (A child's
  ``ru_maxrss`` from ``wait4`` is kept in the JSON but not shown: on Linux it starts at
  the launching process's peak, about 12 MiB here, so it cannot show fping's few MiB.)
  The Python runners' figure includes their RTT array, 8 bytes per reply.
- ``rate %``: probes resolved (reply, timeout or error) per second of the sending
  window, against the intended N/s. The window is ``--seconds`` for vcmon, the span of
  the rounds for icmplib (at least ``--seconds``), and for fping, which runs a fixed
  count, max(``--seconds``, wall time - timeout); a killed run uses its wall time.
- ``recv %``: replies / probes sent. On loopback anything under 100 % is the tool's
  own loss (socket buffer overflow, late reads counted as timeouts, ...).
- ``RTT med`` / ``RTT p99``: the RTT each tool reports, in ms (true loopback RTT is a
  few microseconds, so this mostly measures where each tool takes its timestamps).

``status`` is ``ok``, ``behind`` (finished but resolved under 99 % of N/s), ``killed``
or ``exit N``. Notes under each table: counts, wall and CPU time, RTT max, vcmon's
socket mode, ``ignored`` packets (ICMP its raw socket saw that was not its own: other
programs' pings show up there), icmplib's rounds and their duration.

Each tool gets at most ``--seconds`` + 60 s; then its process group is killed and the
row says ``killed`` with what it reported so far (icmplib prints progress per round).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from _common import assert_loopback, target_addresses
from _tools import (
    GRACE,
    ROOT,
    Row,
    base_row,
    check_route,
    last_json,
    machine,
    run_children,
    run_fping,
    table,
)

BENCH = Path(__file__).resolve().parent
TOOLS = ("vcmon", "fping", "icmplib")


def python_runner(script: str, extra: Callable[[argparse.Namespace, int], list[str]]
                  ) -> Callable[[argparse.Namespace, int, str], Row]:
    def run(args: argparse.Namespace, targets: int, target_file: str) -> Row:
        cmd = [sys.executable, str(BENCH / script), target_file, str(args.seconds),
               str(args.timeout), *extra(args, targets)]
        child = run_children([cmd], args.seconds + GRACE)
        tool = script.removeprefix("_run_").removesuffix(".py")
        row = base_row(tool, targets, child)
        record = last_json(child.stdout)
        if record is None:
            row.notes["stderr"] = child.stderr.strip().splitlines()[-5:]
            return row
        for key in ("sent", "resolved", "received", "window", "rtt_median_ms", "rtt_p99_ms",
                    "rtt_max_ms"):
            if key in record:
                setattr(row, key, record[key])
        if child.killed:
            row.window = child.wall
        if record.get("vmhwm_kib"):  # read by the runner itself just before its summary
            row.maxrss_mib = record["vmhwm_kib"] / 1024
        for key in ("mode", "ignored", "outcomes", "skipped_cycles", "rounds", "round_seconds"):
            if key in record:
                row.notes[key] = record[key]
        return row

    return run


run_vcmon = python_runner("_run_vcmon.py", lambda args, _n: [args.vcmon_mode])
run_icmplib = python_runner(
    "_run_icmplib.py", lambda args, n: [str(args.icmplib_concurrency or n)])


RUNNERS: dict[str, Callable[[argparse.Namespace, int, str], Row]] = {
    "vcmon": run_vcmon,
    "fping": run_fping,
    "icmplib": run_icmplib,
}


VCMON_MODE_PROBE = """
import asyncio
from probes.icmp import IcmpEngine

async def main():
    engine = IcmpEngine(lambda result: None, mode={mode!r})
    await engine.start()  # opens the socket; sends nothing
    print(engine.mode)
    await engine.close()

asyncio.run(main())
"""


def vcmon_mode(requested: str) -> str:
    """The socket mode vcmon's engine gets here (raw or dgram), without sending."""
    try:
        done = subprocess.run([sys.executable, "-c", VCMON_MODE_PROBE.format(mode=requested)],
                              capture_output=True, text=True, timeout=30, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return "unknown (timed out)"
    if done.returncode != 0:
        return f"unavailable ({(done.stderr.strip().splitlines() or ['?'])[-1]})"
    return done.stdout.strip()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--timeout", type=float, default=1.0, help="per-probe timeout, s")
    parser.add_argument("--vcmon-mode", default="auto", choices=("auto", "raw", "dgram"))
    parser.add_argument("--fping-interval", type=float, metavar="MS",
                        help="fping -i (default: fit a round into 0.9 s, see above)")
    parser.add_argument("--icmplib-concurrency", type=int, default=0,
                        help="concurrent_tasks for async_multiping (default: all targets)")
    parser.add_argument("--json", metavar="FILE", help="also write all results here")
    args = parser.parse_args()
    if not 1 <= args.seconds <= 600 or not all(1 <= n <= 62500 for n in args.targets):
        parser.error("--seconds must be 1..600 and --targets 1..62500")
    return args


def main() -> None:
    args = parse_args()
    print(machine(), flush=True)
    if "vcmon" in args.tools:
        print(f"vcmon socket mode: {vcmon_mode(args.vcmon_mode)} (--vcmon-mode {args.vcmon_mode})",
              flush=True)
    results: list[dict[str, Any]] = []
    for targets in args.targets:
        addresses = target_addresses(targets)
        assert_loopback(addresses)
        check_route(addresses[0])
        check_route(addresses[-1])
        rows: list[Row] = []
        with tempfile.NamedTemporaryFile("w", suffix=".targets") as target_file:
            target_file.write("\n".join(addresses) + "\n")
            target_file.flush()
            for tool in args.tools:
                time.sleep(1.0)  # let the previous tool's packets and load settle
                load = os.getloadavg()[0]
                row = RUNNERS[tool](args, targets, target_file.name)
                row.notes["loadavg_before"] = round(load, 2)
                if row.status == "ok" and (row.rate_percent or 0) < 99:
                    row.status = "behind"  # finished, but sent under 99 % of N/s
                rows.append(row)
                print(f"  ... {tool} at {targets}: {row.status}, {row.wall:.1f} s", flush=True)
        print(table(rows, f"{targets} targets x 1 probe/s for {args.seconds:g} s "
                    f"({targets}/s intended)"), flush=True)
        results.extend({**asdict(r), "cpu_per_1k": r.cpu_per_1k, "cpu_percent": r.cpu_percent,
                        "rate_percent": r.rate_percent, "received_percent": r.received_percent}
                       for r in rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "results": results},
                                              indent=2) + "\n")


if __name__ == "__main__":
    main()
