"""Flood benchmark: the ICMP engine probing real targets while foreign ICMP pours in.

Not part of the test run; it prints figures. Run as root from the repository root:

    .venv/bin/python tests/bench/bench_flood.py --targets 200 --rate 50000 --seconds 10

What it does. It makes two network namespaces of its own joined by a veth pair:
``host`` (198.51.100.1/30) and ``flood`` (198.51.100.2/30), and checks every route
before the first packet. In ``host`` it runs vcmon's ``IcmpEngine`` in this process,
probing ``--targets`` addresses 127.20.X.Y on host's ``lo`` (answered by host's
kernel) ``--probe-rate`` times a second each, spread evenly, timeout 1 s. Phases:

- ``before``: ``--seconds`` of probing alone;
- ``flood``: ``--seconds`` more while a sender process in ``flood`` sends ``--rate``
  ICMP packets a second to 198.51.100.1 from a raw socket (at most rate x seconds
  packets, and it stops after ``--seconds`` whatever it reached). The mix is what a
  raw socket on a WAN-facing host sees: 60 % echo replies with random ids (another
  program's pings, or backscatter of spoofed ones; the socket's kernel filter drops
  those whose id is not the engine's), 20 % port-unreachable errors quoting foreign
  UDP, 10 % TTL-exceeded quoting a foreign echo request (both pass the filter and are
  read, decoded and counted), 10 % echo requests (dropped by the filter; the host's
  kernel answers them);
- ``after``: half of ``--seconds`` of probing alone again, to show it recovers.

Each ``--modes`` (raw, dgram) gets its own run. Per phase (by probe send time):

- ``sent`` probes and ``recv %``: replies / sent (on loopback anything lower is loss
  inside this host: the socket's buffer overflowing, replies read too late);
- ``RTT med / p99 / max``: as reported (kernel timestamps), in ms;
- ``lag p99 / max``: how late probes left against their plan, in ms (the loop's
  wake-up granularity is about 1 ms: a starved sender shows far more);
- ``CPU %``: this process's user+system CPU over the phase's wall time, % of one core
  (it runs only the engine and this prober);
- ``ignored``: packets the engine read and counted as not its own during the phase
  (counters are read at the first wake-up past each boundary, so a few flood packets
  fall into the neighbouring phases);
- ``drops``: packets the kernel dropped on the engine's socket (receive buffer full),
  from ``/proc/net/raw`` and ``/proc/net/icmp``;
- ``RSS MiB``: resident set at the phase's end; ``VmHWM`` (peak) is printed below.

The flooder's own figures (sent, achieved rate, CPU) are printed under each table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import socket
import struct
import subprocess
import sys
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from _common import assert_loopback, percentile, target_addresses

from probes import ProbeResult
from probes.icmp import IcmpEngine, Mode
from probes.icmp_packet import checksum
from tests.bench.service import require_root
from tests.netns import NetNamespace

HOST, FLOODER = "198.51.100.1", "198.51.100.2"
PROBE_TIMEOUT = 1.0
SENDER_BATCH = 0.001  # the flooder sends a batch every millisecond


# --- the flooder (runs as its own process inside the flood namespace) -------------


def foreign_packets(rng: random.Random, count: int) -> list[bytes]:
    """``count`` ICMP messages in the mix described above, with valid checksums."""

    def finish(icmp: bytes) -> bytes:
        return icmp[:2] + checksum(icmp).to_bytes(2, "big") + icmp[4:]

    def ip_header(source: str, destination: str, protocol: int, length: int) -> bytes:
        return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, 0, 0, 64, protocol, 0,
                           socket.inet_aton(source), socket.inet_aton(destination))

    packets = []
    for number in range(count):
        ident, seq = rng.randrange(0x10000), rng.randrange(0x10000)
        share = number % 10
        if share < 6:
            packets.append(finish(struct.pack("!BBHHH", 0, 0, 0, ident, seq) + rng.randbytes(56)))
        elif share < 8:
            udp = struct.pack("!HHHH", rng.randrange(1024, 65536), 33434, 8, 0)
            quoted = ip_header(HOST, "203.0.113.7", 17, len(udp)) + udp
            packets.append(finish(struct.pack("!BBHI", 3, 3, 0, 0) + quoted))
        elif share < 9:
            echo = finish(struct.pack("!BBHHH", 8, 0, 0, ident, seq) + bytes(8))
            quoted = ip_header(HOST, "203.0.113.9", 1, len(echo)) + echo
            packets.append(finish(struct.pack("!BBHI", 11, 0, 0, 0) + quoted))
        else:
            packets.append(finish(struct.pack("!BBHHH", 8, 0, 0, ident, seq) + bytes(56)))
    return packets


def flood(namespace: str, destination: str, rate: int, seconds: float, start_at: float) -> None:
    """Send ``rate`` packets/s to ``destination`` from ``start_at`` (wall clock) for
    ``seconds``; print one JSON line. Refuses to run outside ``namespace``."""
    if os.stat("/proc/self/ns/net").st_ino != os.stat(f"/run/netns/{namespace}").st_ino:
        raise SystemExit(f"refusing to flood: not inside the network namespace {namespace}")
    packets = foreign_packets(random.Random(11), 1024)
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    time.sleep(max(0.0, start_at - time.time()))
    late_start = time.time() - start_at
    started = time.monotonic()
    cpu_before = cpu_seconds()
    limit = int(rate * seconds)
    sent = errors = 0
    address = (destination, 0)
    sendto = sock.sendto
    while sent + errors < limit:
        elapsed = time.monotonic() - started
        if elapsed >= seconds:
            break
        due = min(limit, int((elapsed + SENDER_BATCH) * rate))
        for _ in range(due - sent - errors):
            try:
                sendto(packets[(sent + errors) & 1023], address)
                sent += 1
            except OSError:  # ENOBUFS: the veth queue is full for a moment
                errors += 1
        pause = started + (sent + errors) / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    print(json.dumps({
        "sent": sent, "errors": errors, "seconds": time.monotonic() - started,
        "late_start": late_start, "cpu": cpu_seconds() - cpu_before,
    }), flush=True)


# --- the prober (this process, inside the host namespace) -------------------------


@dataclass
class Phase:
    name: str
    start: float  # wall clock
    end: float
    sent: int = 0
    received: int = 0
    rtts: array[float] = field(default_factory=lambda: array("d"))
    lags: array[float] = field(default_factory=lambda: array("d"))
    cpu: float = 0.0
    ignored: Counter[str] = field(default_factory=Counter)
    drops: int = 0
    rss_kib: int = 0

    def row(self) -> str:
        rtts, lags = sorted(self.rtts), sorted(self.lags)

        def ms(values: list[float], fraction: float) -> str:
            return f"{percentile(values, fraction) * 1000:.4f}" if values else "-"

        recv = f"{self.received / self.sent * 100:.2f}" if self.sent else "-"
        wall = self.end - self.start
        return (f"{self.name:<7} {wall:>5.1f} {self.sent:>6} {recv:>7} {ms(rtts, 0.5):>10} "
                f"{ms(rtts, 0.99):>10} {ms(rtts, 1.0):>10} {ms(lags, 0.99):>8} "
                f"{ms(lags, 1.0):>8} {self.cpu / wall * 100:>6.1f} {self.ignored.total():>8} "
                f"{self.drops:>6} {self.rss_kib / 1024:>7.1f}")


HEADER = (f"{'phase':<7} {'s':>5} {'sent':>6} {'recv %':>7} {'RTT med ms':>10} "
          f"{'RTT p99 ms':>10} {'RTT max ms':>10} {'lag p99':>8} {'lag max':>8} "
          f"{'CPU %':>6} {'ignored':>8} {'drops':>6} {'RSS MiB':>7}")


def status_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def socket_drops() -> int:
    """Drops the kernel counted on this namespace's ICMP sockets (raw and ping)."""
    total = 0
    for table in ("raw", "icmp"):
        lines = Path(f"/proc/self/net/{table}").read_text().splitlines()[1:]
        total += sum(int(line.split()[-1]) for line in lines)
    return total


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def probe_through(mode: Mode, addresses: list[str], args: argparse.Namespace,
                        flooder: FloodRun) -> tuple[list[Phase], str, int]:
    phases: list[Phase] = []

    def phase_of(wall: float) -> Phase | None:
        for phase in phases:
            if phase.start <= wall < phase.end:
                return phase
        return None

    def on_result(result: ProbeResult) -> None:
        phase = phase_of(result.sent_at)
        if phase is not None and result.rtt is not None:
            phase.received += 1
            phase.rtts.append(result.rtt)

    engine = IcmpEngine(on_result, mode=mode)
    await engine.start()
    loop = asyncio.get_running_loop()
    now = time.time()
    start = now + 1.0  # a second to warm up (first sends, first replies)
    durations = (("before", args.seconds), ("flood", args.seconds), ("after", args.seconds / 2))
    for name, seconds in durations:
        phases.append(Phase(name, start, start + seconds))
        start += seconds
    flooder.start(phases[1].start, args.seconds)

    step = 1.0 / (len(addresses) * args.probe_rate)
    mono_start = loop.time() + (phases[0].start - 1.0 - time.time())
    end = phases[-1].end
    boundary = 0
    marks: list[tuple[float, Counter[str], int]] = []
    number = 0
    while True:
        wall = time.time()
        if boundary < len(phases) and wall >= phases[boundary].start:
            marks.append((cpu_seconds(), engine.ignored.copy(), socket_drops()))
            if boundary:
                phases[boundary - 1].rss_kib = status_kib("VmRSS")
            boundary += 1
        if wall >= end:
            break
        now_mono = loop.time()
        # every probe that is due goes out at this wake-up, as the daemon's scheduler does
        while mono_start + number * step <= now_mono:
            phase = phase_of(wall)
            address = addresses[number % len(addresses)]
            engine.send(address, address, PROBE_TIMEOUT)
            if phase is not None:
                phase.sent += 1
                phase.lags.append(now_mono - (mono_start + number * step))
            number += 1
        await asyncio.sleep(max(0.0, mono_start + number * step - loop.time()))
    marks.append((cpu_seconds(), engine.ignored.copy(), socket_drops()))
    phases[-1].rss_kib = status_kib("VmRSS")
    for phase, (cpu0, ign0, drop0), (cpu1, ign1, drop1) in zip(
            phases, marks, marks[1:], strict=False):
        phase.cpu, phase.ignored, phase.drops = cpu1 - cpu0, ign1 - ign0, drop1 - drop0
    await asyncio.sleep(PROBE_TIMEOUT + 0.2)  # the last probes resolve
    opened = engine.mode
    await engine.close()
    return phases, opened, status_kib("VmHWM")


class FloodRun:
    """The sender process in the flood namespace."""

    def __init__(self, namespace: NetNamespace, rate: int) -> None:
        self.namespace = namespace
        self.rate = rate
        self.process: subprocess.Popen[str] | None = None

    def start(self, at: float, seconds: float) -> None:
        argv = self.namespace.command([
            sys.executable, str(Path(__file__).resolve()), "--flood-sender", self.namespace.name,
            HOST,
            str(self.rate), str(seconds), repr(at)])
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)

    def result(self, limit: float) -> dict[str, Any]:
        assert self.process is not None
        try:
            out, _ = self.process.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            return {"error": "killed"}
        record: dict[str, Any] = json.loads(out.splitlines()[-1]) if out.strip() else {}
        return record


def run_mode(mode: Mode, args: argparse.Namespace) -> None:
    addresses = target_addresses(args.targets)
    assert_loopback(addresses)
    with NetNamespace("vcmon-flood-host") as host, NetNamespace("vcmon-flood") as flooding:
        host_device, flood_device = host.link(flooding, f"{HOST}/30", f"{FLOODER}/30")
        # Every route, before the first packet: targets on host's lo, the flood on the veth.
        for address in addresses:
            if host.route_device(address) != "lo":
                raise SystemExit(f"refusing: {address} is not routed through lo in {host.name}")
        if host.route_device(FLOODER) != host_device:
            raise SystemExit(f"refusing: {FLOODER} is not on {host_device}")
        if flooding.route_device(HOST) != flood_device:
            raise SystemExit(f"refusing: {HOST} is not on {flood_device} in {flooding.name}")
        host.sysctl("net.ipv4.ping_group_range", "0 2147483647")
        flooder = FloodRun(flooding, args.rate)
        with host.entered():
            phases, opened, peak_kib = asyncio.run(probe_through(mode, addresses, args, flooder))
        sender = flooder.result(args.seconds + 30)
    print(f"== {args.targets} targets x {args.probe_rate:g}/s "
          f"({args.targets * args.probe_rate:g} probes/s), {opened} socket; "
          f"{args.rate:,} foreign ICMP/s for {args.seconds:g} s in the flood phase")
    print(HEADER)
    for phase in phases:
        print(phase.row())
    for phase in phases:
        reasons = ", ".join(f"{reason} {count}" for reason, count in (+phase.ignored).items())
        print(f"  ignored while {phase.name}: {reasons or 'none'}")
    rate = sender.get("sent", 0) / sender["seconds"] if sender.get("seconds") else 0
    print(f"  peak RSS (VmHWM) {peak_kib / 1024:.1f} MiB; flooder: sent {sender.get('sent')}"
          f" ({rate:,.0f}/s, {sender.get('errors')} ENOBUFS) in {sender.get('seconds', 0):.2f} s,"
          f" started {sender.get('late_start', 0) * 1000:.1f} ms late,"
          f" CPU {sender.get('cpu', 0):.2f} s")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--flood-sender":
        namespace, destination, rate, seconds, start_at = sys.argv[2:7]
        flood(namespace, destination, int(rate), float(seconds), float(start_at))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=200)
    parser.add_argument("--probe-rate", type=float, default=5.0, help="probes/s per target")
    parser.add_argument("--rate", type=int, default=50_000, help="foreign ICMP packets/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="before and flood phases")
    parser.add_argument("--modes", nargs="+", choices=("raw", "dgram"), default=["raw", "dgram"])
    args = parser.parse_args()
    require_root("bench_flood.py", "network namespaces, raw sockets")
    print(f"machine: nproc {os.cpu_count()}, loadavg {os.getloadavg()[0]:.2f}")
    for mode in args.modes:
        run_mode(mode, args)


if __name__ == "__main__":
    main()
