"""ICMP engine benchmark: vcmon's engine vs fping vs icmplib, on loopback targets.

Not part of the test run; it prints figures. Run as root from the repository root:

    .venv/bin/python tests/bench/bench_engine.py --targets 1000 10000 --seconds 30

What it does. For each target count N it builds N loopback addresses 127.20.X.Y
(refusing to start unless every one is inside 127.0.0.0/8 and the route to them is
``dev lo``), then runs each tool, one after another, as its own process, asking each
for 1 probe per second per target (N probes/s) for ``--seconds``:

- ``vcmon``: ``monitor.scheduler.Scheduler`` feeding ``probes.icmp.IcmpEngine``, wired
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
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _common import assert_loopback, rtt_summary_ms, target_addresses, vmhwm_kib

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parents[1]
TOOLS = ("vcmon", "fping", "icmplib")
GRACE = 60.0  # seconds a tool may run past --seconds before it is killed
FPING_SPREAD = 0.9  # fping's rounds should fit in this fraction of a second
FPING_OVERSHOOT_MS = 0.08  # measured extra time fping 5.1 takes per inter-packet sleep
FPING_MAX_TARGETS = 5000  # per fping process at 1/s: see run_fping


@dataclass
class Child:
    """How one tool's process ended and what it cost."""

    stdout: str
    stderr: str
    cpu: float
    maxrss_kib: int  # ru_maxrss: floored by the launcher's own peak, see vmhwm_kib()
    hwm_kib: int  # VmHWM of the exec'd image, polled every 0.1 s while it ran
    wall: float
    killed: bool
    exit_code: int


@dataclass
class Row:
    tool: str
    targets: int
    status: str
    sent: int = 0
    resolved: int = 0
    received: int = 0
    window: float = 0.0
    cpu: float = 0.0
    wall: float = 0.0
    maxrss_mib: float = 0.0
    rtt_median_ms: float | None = None
    rtt_p99_ms: float | None = None
    rtt_max_ms: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_per_1k(self) -> float | None:
        return self.cpu / self.resolved * 1000 if self.resolved else None

    @property
    def cpu_percent(self) -> float | None:
        return self.cpu / self.wall * 100 if self.wall else None

    @property
    def rate_percent(self) -> float | None:
        if not self.window:
            return None
        return self.resolved / (self.targets * self.window) * 100

    @property
    def received_percent(self) -> float | None:
        return self.received / self.sent * 100 if self.sent else None


def run_children(cmds: list[list[str]], limit: float) -> Child:
    """Run ``cmds`` side by side, each in its own session; kill them all after ``limit``
    seconds; reap each with ``wait4``. CPU and peak RSS are summed over the processes."""
    with contextlib.ExitStack() as stack:
        outs = [stack.enter_context(tempfile.TemporaryFile()) for _ in cmds]
        errs = [stack.enter_context(tempfile.TemporaryFile()) for _ in cmds]
        started = time.monotonic()
        procs = [subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                  cwd=ROOT, start_new_session=True)
                 for cmd, out, err in zip(cmds, outs, errs, strict=True)]
        hwm = dict.fromkeys((p.pid for p in procs), 0)
        running = set(hwm)
        killed = False
        # Poll without reaping, so each pid (and its group) stays ours until we kill it.
        while running:
            for pid in list(running):
                if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                    hwm[pid] = max(hwm[pid], vmhwm_kib(pid) or 0)
                else:
                    running.discard(pid)
            if running and time.monotonic() - started > limit:
                for pid in running:
                    os.killpg(pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.1)
        cpu = 0.0
        maxrss = 0
        exit_code = 0
        for proc in procs:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            exit_code = exit_code or proc.returncode
            cpu += usage.ru_utime + usage.ru_stime
            maxrss += usage.ru_maxrss
        wall = time.monotonic() - started
        for f in (*outs, *errs):
            f.seek(0)
        return Child(
            stdout="".join(out.read().decode(errors="replace") for out in outs),
            stderr="".join(err.read().decode(errors="replace") for err in errs),
            cpu=cpu,
            maxrss_kib=maxrss,
            hwm_kib=sum(hwm.values()),
            wall=wall,
            killed=killed,
            exit_code=exit_code,
        )


def last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            record: dict[str, Any] = json.loads(line)
            return record
    return None


def base_row(tool: str, targets: int, child: Child) -> Row:
    if child.killed:
        status = "killed"
    elif child.exit_code != 0:
        status = f"exit {child.exit_code}"
    else:
        status = "ok"
    return Row(tool=tool, targets=targets, status=status, cpu=child.cpu, wall=child.wall,
               maxrss_mib=child.hwm_kib / 1024, notes={"ru_maxrss_kib": child.maxrss_kib})


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


def fping_interval_ms(args: argparse.Namespace, targets: int) -> str:
    if args.fping_interval is not None:
        return f"{args.fping_interval:.3f}"
    return f"{max(0.0, FPING_SPREAD * 1000 / targets - FPING_OVERSHOOT_MS):.3f}"


def run_fping(args: argparse.Namespace, targets: int, target_file: str) -> Row:
    # fping 5.1 keeps 65,535 sequence numbers for 10 s after each send, so one process
    # stops ("not enough sequence numbers available", exit 4) above ~6,500 probes/s:
    # shard the targets over as many processes as that needs.
    addresses = Path(target_file).read_text().split()
    shards = -(-len(addresses) // FPING_MAX_TARGETS)
    size = -(-len(addresses) // shards)
    interval = fping_interval_ms(args, size)
    cmd = ["fping", "-C", str(int(args.seconds)), "-p", "1000", "-i", interval, "-q",
           "-t", str(int(args.timeout * 1000)), "-B1", "-r0", "-b", "56", "-f"]
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(shards):
            files.append(Path(tmp, f"shard{i}"))
            files[-1].write_text("\n".join(addresses[i * size:(i + 1) * size]) + "\n")
        child = run_children([[*cmd, str(f)] for f in files], args.seconds + GRACE)
    row = base_row("fping", targets, child)
    if child.exit_code == 1:  # fping: some target unreachable; still a finished run
        row.status = "ok (some lost)"
    rtts: list[float] = []
    for line in child.stderr.splitlines():
        _, sep, values = line.partition(" : ")
        if not sep:
            continue
        for value in values.split():
            row.sent += 1
            if value != "-":
                rtts.append(float(value))
    row.resolved = row.sent
    row.received = len(rtts)
    row.window = child.wall if child.killed else max(args.seconds, child.wall - args.timeout)
    for key, value in rtt_summary_ms(rtts).items():
        setattr(row, key, value)
    row.notes["cmd"] = " ".join([*cmd, "<targets>"])
    row.notes["processes"] = shards
    errors = [line for line in child.stderr.splitlines() if " : " not in line]
    if errors:
        row.notes["stderr"] = errors[:3]
    return row


RUNNERS: dict[str, Callable[[argparse.Namespace, int, str], Row]] = {
    "vcmon": run_vcmon,
    "fping": run_fping,
    "icmplib": run_icmplib,
}


def check_route(address: str) -> None:
    route = subprocess.run(["ip", "route", "get", address], capture_output=True, text=True,
                           timeout=10, check=True).stdout
    if " dev lo " not in f" {route} ":
        raise SystemExit(f"refusing to probe: route to {address} is not via lo: {route!r}")


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def fmt_rtt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if value < 1 else f"{value:.1f}"


def table(rows: list[Row], targets: int, seconds: float) -> str:
    header = ("tool", "status", "CPU s/1k", "CPU %", "RSS MiB", "rate %", "recv %",
              "RTT med ms", "RTT p99 ms")
    lines = [[r.tool, r.status, fmt(r.cpu_per_1k, 4), fmt(r.cpu_percent), fmt(r.maxrss_mib),
              fmt(r.rate_percent), fmt(r.received_percent, 2), fmt_rtt(r.rtt_median_ms),
              fmt_rtt(r.rtt_p99_ms)] for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines, strict=True)]
    out = [f"== {targets} targets x 1 probe/s for {seconds:g} s ({targets}/s intended)"]
    for cells in (header, *lines):
        out.append("  ".join(str(c).rjust(w) if i > 1 else str(c).ljust(w)
                             for i, (c, w) in enumerate(zip(cells, widths, strict=True))))
    for r in rows:
        notes = {k: v for k, v in r.notes.items() if k not in ("round_seconds", "ru_maxrss_kib")}
        if r.notes.get("round_seconds"):
            rounds = r.notes["round_seconds"]
            notes["round s min/max"] = f"{min(rounds):.2f}/{max(rounds):.2f}"
        out.append(f"  {r.tool}: sent {r.sent}, resolved {r.resolved}, received {r.received},"
                   f" wall {r.wall:.1f} s, CPU {r.cpu:.2f} s, RTT max {fmt_rtt(r.rtt_max_ms)}"
                   f" ms; {json.dumps(notes)}")
    return "\n".join(out)


def machine() -> str:
    fping = subprocess.run(["fping", "--version"], capture_output=True, text=True,
                           timeout=10).stdout.strip()
    return (f"machine: nproc {os.cpu_count()}, kernel {platform.release()}, "
            f"Python {platform.python_version()}, {fping}, "
            f"loadavg {os.getloadavg()[0]:.2f}")


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
        print(table(rows, targets, args.seconds), flush=True)
        results.extend({**asdict(r), "cpu_per_1k": r.cpu_per_1k, "cpu_percent": r.cpu_percent,
                        "rate_percent": r.rate_percent, "received_percent": r.received_percent}
                       for r in rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "results": results},
                                              indent=2) + "\n")


if __name__ == "__main__":
    main()
