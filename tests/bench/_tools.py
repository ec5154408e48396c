"""What the ICMP benchmarks share: running tools as child processes, fping, the table.

``bench_engine.py`` and ``bench_scale.py`` run the same fping the same way and print
their figures in the same table; how each column is measured is said in their docstrings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import rtt_summary_ms, vmhwm_kib

ROOT = Path(__file__).resolve().parents[2]
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
    # True when the figure is the upper bound of a histogram bucket, not a measured value
    rtt_median_is_bound: bool = False
    rtt_p99_is_bound: bool = False
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
    for key, summary in rtt_summary_ms(rtts).items():
        setattr(row, key, summary)
    row.notes["cmd"] = " ".join([*cmd, "<targets>"])
    row.notes["processes"] = shards
    errors = [line for line in child.stderr.splitlines() if " : " not in line]
    if errors:
        row.notes["stderr"] = errors[:3]
    return row

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


def cpu_ratio(row: Row, rows: list[Row], to: str = "fping") -> float | None:
    """``row``'s CPU per 1,000 probes over the ``to`` row's, if both are known."""
    base = next((r.cpu_per_1k for r in rows if r.tool == to), None)
    mine = row.cpu_per_1k
    return mine / base if mine is not None and base else None


def table(rows: list[Row], title: str) -> str:
    header = ("tool", "status", "CPU s/1k", "xfping", "CPU %", "RSS MiB", "rate %", "recv %",
              "RTT med ms", "RTT p99 ms")
    lines = [[r.tool, r.status, fmt(r.cpu_per_1k, 4), fmt(cpu_ratio(r, rows), 2),
              fmt(r.cpu_percent), fmt(r.maxrss_mib), fmt(r.rate_percent),
              fmt(r.received_percent, 2),
              ("<=" if r.rtt_median_is_bound else "") + fmt_rtt(r.rtt_median_ms),
              ("<=" if r.rtt_p99_is_bound else "") + fmt_rtt(r.rtt_p99_ms)] for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines, strict=True)]
    out = [f"== {title}"]
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
