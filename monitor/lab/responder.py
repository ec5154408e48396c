"""The lab's ICMP echo responder: far sites with delay, jitter, loss and outages.

This kernel has no ``netem``, so the lab namespace's kernel is told not to answer
pings (``net.ipv4.icmp_echo_ignore_all=1``) and this process answers instead, on one
raw socket: each request to a lab site's address is answered from that address
after the site's delay ± uniform jitter, or dropped by the site's loss model, or
ignored while the site or any site upstream of it is down. Needs CAP_NET_RAW.

Replies leave on a timerfd armed for the earliest one due, measured from the
request's kernel receive timestamp: asyncio's own timers wake up to 1 ms late
(epoll's millisecond timeout), which would bias every RTT the lab is meant to prove.

As the lab runs it (``vcmon lab up`` starts it inside the lab namespace)::

    python -m monitor.lab.responder --state /run/vcmon-lab/state.json --pid-file ...

It prints ``ready`` once it answers, re-reads the state file on SIGHUP and stops on
SIGTERM. In-process (tests): ``Responder(state).start()`` … ``close()``.

It also reflects TWAMP-light test packets (RFC 5357 §4.2.1, UDP port 862) sent to any
lab site, with the site's two directions apart (``monitor.lab.profiles``): a request
lost on the way out is dropped before the site's counter numbers it; one that arrives
is stamped T2 at its arrival plus the forward delay, numbered, and its reply, stamped
T3 = T2, is lost or leaves after the reverse delay. So a sender reads the configured
forward and reverse figures from the four timestamps and the counter, as it would on
a real path; the reply carries the request's DSCP back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import heapq
import itertools
import os
import random
import signal
import socket
import sys
import time
from pathlib import Path
from struct import Struct

import structlog

from monitor.lab.loss import LossModel, loss_model
from monitor.lab.profiles import LabError, Profile
from monitor.lab.state import LabSite, LabState, read_state
from monitor.system.logs import configure_logging
from probes.icmp_packet import ECHO_HEADER, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, checksum
from probes.icmp_socket import (
    ANCILLARY_SIZE,
    ICMP_FILTER,
    SO_TIMESTAMPNS,
    SOL_RAW,
    receive_time_ns,
)
from probes.twamp import (
    DEFAULT_PORT,
    ErrorEstimate,
    MalformedPacket,
    arrival,
    enable_arrival_data,
    reflect,
    tos_ancillary,
)

log = structlog.get_logger("vcmon.lab.responder")

# ICMP_FILTER: a set bit drops that type; only echo requests get through.
_ONLY_REQUESTS = Struct("=I").pack(0xFFFFFFFF & ~(1 << ICMP_ECHO_REQUEST))
IP_PKTINFO = 8  # linux/in.h; Python 3.11 does not export it
_PKTINFO = Struct("=I4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr
# Replies due within this much of the wake-up go out together.
_EARLY_NS = 20_000
_DRAIN_BATCH = 1024
# A parent chain longer than this is a loop in a hand-written state file.
_MAX_DEPTH = 64
# The lab's clock is the host's: it claims no synchronisation, so senders report no
# one-way delay (a real unsynchronised reflector's honest answer).
_LAB_ERROR_ESTIMATE = ErrorEstimate.for_error(0.001, synchronized=False).encode()
# Senders' counters: the lab's are few, but a runaway test must not grow them forever.
_MAX_COUNTERS = 65536

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK_CLOEXEC = os.O_NONBLOCK | os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1
_PR_SET_TIMERSLACK = 29
# above every ordinary process, below the kernel's own threads (priority 50)
_REALTIME_PRIORITY = 10


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, call: str) -> int:
    if result < 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{call}: {os.strerror(error)}")
    return result


class _Timer:
    """A CLOCK_MONOTONIC timerfd (Python 3.11 has no os.timerfd_create)."""

    def __init__(self) -> None:
        self.fd = _check(_libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK_CLOEXEC),
                         "timerfd_create")

    def arm(self, when_ns: int) -> None:
        value = _Timespec(when_ns // 1_000_000_000, when_ns % 1_000_000_000)
        spec = _Itimerspec(_Timespec(0, 0), value)
        _check(_libc.timerfd_settime(self.fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None),
               "timerfd_settime")

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)

    def close(self) -> None:
        os.close(self.fd)


class _Site:
    """A lab site as the responder runs it: profile, random stream and loss state."""

    __slots__ = ("address", "id", "loss", "parent", "profile", "rng", "source", "udp_source")

    def __init__(self, site: LabSite, seed: int) -> None:
        self.id = site.id
        self.address = site.address
        self.source = _PKTINFO.pack(0, socket.inet_aton(site.address), b"\0\0\0\0")
        self.udp_source = (socket.IPPROTO_IP, IP_PKTINFO, self.source)
        # One stream per site, from the lab's seed and the site's id: a site's draws do
        # not depend on how requests to other sites interleave with its own, nor on the
        # address it got, so a fresh lab with the same seed drops the same packets.
        self.rng = random.Random(f"{seed}:{site.id}")
        self.parent = site.parent
        self.profile = site.profile
        self.loss: LossModel = loss_model(site.profile.loss, site.profile.burst, self.rng)

    def update(self, site: LabSite) -> None:
        self.parent = site.parent
        if site.profile != self.profile:
            old = self.profile
            self.profile = site.profile
            if (old.loss, old.burst) != (site.profile.loss, site.profile.burst):
                self.loss = loss_model(site.profile.loss, site.profile.burst, self.rng)


def _destination(ancillary: list[tuple[int, int, bytes]]) -> bytes:
    """The packed destination address of a datagram, from its IP_PKTINFO message."""
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= _PKTINFO.size:
            destination: bytes = _PKTINFO.unpack_from(data)[2]
            return destination
    return b""


def _silent(profile: Profile, now: float) -> bool:
    return profile.down or (profile.flap > 0 and now % profile.flap >= profile.flap / 2)


class Responder:
    """Answers echo requests to the lab sites of a ``LabState``; see the module doc."""

    def __init__(self, state: LabState) -> None:
        self._seed = state.seed
        self._by_id: dict[str, _Site] = {}
        self._by_packed: dict[bytes, _Site] = {}
        self.apply(state)
        # (due monotonic ns, tie-breaker, site, reply, requester, its UDP port and the
        # reply's TOS, or None for an echo reply)
        self._queue: list[tuple[int, int, _Site, bytes, str, tuple[int, int] | None]] = []
        self._udp: socket.socket | None = None
        # (site, sender address, sender port) -> the site's next reflector number
        self._counters: dict[tuple[str, str, int], int] = {}
        self.reflected = 0
        self.dropped_forward = 0
        self.dropped_reverse = 0
        self.malformed = 0
        self._tie = itertools.count()
        self._armed_ns = 0
        self._sock: socket.socket | None = None
        self._timer: _Timer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.answered = 0
        self.dropped_loss = 0
        self.dropped_down = 0
        self.not_lab = 0
        self.send_failed = 0

    def apply(self, state: LabState) -> None:
        """Take new profiles; sites whose loss settings stay keep their loss state."""
        by_id: dict[str, _Site] = {}
        for site in state.sites:
            current = self._by_id.get(site.id)
            if current is not None and current.address == site.address:
                current.update(site)
                by_id[site.id] = current
            else:
                by_id[site.id] = _Site(site, state.seed)
        self._by_id = by_id
        self._by_packed = {socket.inet_aton(s.address): s for s in by_id.values()}

    @property
    def sites(self) -> list[_Site]:
        return list(self._by_id.values())

    def answering(self, site: _Site, now: float) -> bool:
        """False while the site, or any site between it and the province, is down."""
        node: _Site | None = site
        for _ in range(_MAX_DEPTH):
            if node is None:
                return True
            if _silent(node.profile, now):
                return False
            node = self._by_id.get(node.parent) if node.parent is not None else None
        return True

    def start(self, port: int = DEFAULT_PORT) -> None:
        """Open the raw socket and the reflector's UDP socket on ``port`` (in the calling
        thread's namespace) and start answering."""
        self._loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        try:
            sock.setblocking(False)
            sock.setsockopt(SOL_RAW, ICMP_FILTER, _ONLY_REQUESTS)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)  # the requests' arrival
            self._timer = _Timer()
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._loop.add_reader(sock.fileno(), self._read)
        self._loop.add_reader(self._timer.fd, self._send_due)
        self._udp = self._reflector_socket(port)
        self._loop.add_reader(self._udp.fileno(), self._reflect)

    @staticmethod
    def _reflector_socket(port: int) -> socket.socket:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.setblocking(False)
            enable_arrival_data(udp, v6=False)
            # which lab site a request was sent to: its header's destination
            udp.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            udp.bind(("0.0.0.0", port))
        except BaseException:
            udp.close()
            raise
        return udp

    def _reflect(self) -> None:
        assert self._udp is not None
        offset = time.monotonic_ns() - time.time_ns()
        now = time.time()
        for _ in range(_DRAIN_BATCH):
            try:
                data, ancillary, _, (requester, port) = self._udp.recvmsg(2048, ANCILLARY_SIZE)
            except BlockingIOError:
                break
            except OSError:
                continue
            site = self._by_packed.get(_destination(ancillary))
            if site is None:
                self.not_lab += 1
                continue
            if not self.answering(site, now):
                self.dropped_down += 1
                continue
            profile, rng = site.profile, site.rng
            if profile.fwd_loss and rng.random() < profile.fwd_loss:
                self.dropped_forward += 1
                continue
            came = arrival(ancillary, time.time_ns())
            forward = profile.fwd_delay + (rng.uniform(-profile.fwd_jitter, profile.fwd_jitter)
                                           if profile.fwd_jitter else 0.0)
            t2 = came.received_ns + int(forward * 1e9)
            seq = self._next_seq(site, requester, port)
            reverse = profile.rev_delay + (rng.uniform(-profile.rev_jitter, profile.rev_jitter)
                                           if profile.rev_jitter else 0.0)
            lost = bool(profile.rev_loss) and rng.random() < profile.rev_loss
            if not profile.icmp_only:
                # the site's round-trip settings sit on the way back of every packet
                reverse += profile.delay + (rng.uniform(-profile.jitter, profile.jitter)
                                            if profile.jitter else 0.0)
                lost = site.loss.lost() or lost
            if lost:
                self.dropped_reverse += 1
                continue
            try:
                reply = reflect(data, seq=seq, receive_ns=t2, send_ns=t2,
                                error_estimate=_LAB_ERROR_ESTIMATE, ttl=came.ttl or 0)
            except MalformedPacket:
                self.malformed += 1
                continue
            due = t2 + int(reverse * 1e9) + offset
            heapq.heappush(self._queue, (due, next(self._tie), site, reply, requester,
                                         (port, (came.tos or 0) & 0xFC)))
        self._arm()

    def _next_seq(self, site: _Site, requester: str, port: int) -> int:
        key = (site.id, requester, port)
        seq = self._counters.get(key, 0)
        if key not in self._counters and len(self._counters) >= _MAX_COUNTERS:
            self._counters.clear()
        self._counters[key] = (seq + 1) & 0xFFFFFFFF
        return seq

    def _read(self) -> None:
        assert self._sock is not None
        recvmsg = self._sock.recvmsg
        # the kernel stamps arrival in CLOCK_REALTIME; replies are timed on the monotonic clock
        offset = time.monotonic_ns() - time.time_ns()
        now = time.time()
        for _ in range(_DRAIN_BATCH):
            try:
                packet, ancillary, _, (requester, _) = recvmsg(65535, ANCILLARY_SIZE)
            except BlockingIOError:
                break
            header = (packet[0] & 0x0F) * 4
            site = self._by_packed.get(packet[16:20])
            if site is None or len(packet) < header + ECHO_HEADER.size:
                self.not_lab += 1
                continue
            if not self.answering(site, now):
                self.dropped_down += 1
                continue
            if site.loss.lost():
                self.dropped_loss += 1
                continue
            # The reply echoes the request's id, seq and payload (RFC 792) with a new
            # type and checksum.
            icmp = bytearray(packet[header:])
            icmp[0] = ICMP_ECHO_REPLY
            icmp[2:4] = b"\0\0"
            icmp[2:4] = checksum(icmp).to_bytes(2, "big")
            profile = site.profile
            delay = profile.delay
            if profile.jitter:
                delay += site.rng.uniform(-profile.jitter, profile.jitter)
            due = receive_time_ns(ancillary, time.time_ns()) + offset + int(delay * 1e9)
            heapq.heappush(self._queue, (due, next(self._tie), site, bytes(icmp), requester,
                                         None))
        self._arm()

    def _arm(self) -> None:
        if self._timer is None or not self._queue:
            return
        due = max(self._queue[0][0], 1)  # an absolute time of 0 would disarm the timer
        if self._armed_ns == 0 or due < self._armed_ns:
            self._timer.arm(due)
            self._armed_ns = due

    def _send_due(self) -> None:
        assert self._timer is not None and self._sock is not None
        self._timer.clear()
        self._armed_ns = 0
        horizon = time.monotonic_ns() + _EARLY_NS
        now = time.time()
        queue = self._queue
        while queue and queue[0][0] <= horizon:
            _, _, site, reply, requester, udp = heapq.heappop(queue)
            # A link that went down takes the packets still on it along.
            if not self.answering(site, now):
                self.dropped_down += 1
                continue
            if udp is not None:
                self._send_reflection(site, reply, requester, *udp)
                continue
            try:
                # IP_PKTINFO's spec_dst sets the source: the reply comes from the site.
                self._sock.sendmsg([reply], [(socket.IPPROTO_IP, IP_PKTINFO, site.source)], 0,
                                   (requester, 0))
            except OSError:
                self.send_failed += 1
                continue
            self.answered += 1
        self._arm()

    def _send_reflection(self, site: _Site, reply: bytes, requester: str, port: int,
                         tos: int) -> None:
        assert self._udp is not None
        try:
            # from the site's address, with the request's DSCP
            self._udp.sendmsg([reply], [site.udp_source, *tos_ancillary(tos, False)], 0,
                              (requester, port))
        except OSError:
            self.send_failed += 1
            return
        self.reflected += 1

    def counters(self) -> dict[str, int]:
        return {"answered": self.answered, "dropped_loss": self.dropped_loss,
                "dropped_down": self.dropped_down, "not_lab": self.not_lab,
                "send_failed": self.send_failed, "queued": len(self._queue),
                "reflected": self.reflected, "dropped_forward": self.dropped_forward,
                "dropped_reverse": self.dropped_reverse, "malformed": self.malformed}

    def close(self) -> None:
        if self._loop is not None and self._sock is not None and self._timer is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._loop.remove_reader(self._timer.fd)
            self._sock.close()
            self._timer.close()
        if self._loop is not None and self._udp is not None:
            self._loop.remove_reader(self._udp.fileno())
            self._udp.close()
        self._udp = None
        self._sock = None
        self._timer = None
        self._queue.clear()


def _announce_ready(pid_file: Path | None) -> None:
    """The socket is open: requests from now on are answered."""
    if pid_file is not None:
        pid_file.write_text(f"{os.getpid()}\n")  # a small file on tmpfs, written once
    print("ready", flush=True)
    # Nobody reads stdout after "ready"; a later write must not hit a closed pipe.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


async def _serve(state_file: Path, pid_file: Path | None) -> None:
    responder = Responder(read_state(state_file))
    responder.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def reload() -> None:
        try:
            responder.apply(read_state(state_file))
        except LabError as exc:
            log.error("reload_failed", error=str(exc), **responder.counters())
            return
        log.info("reloaded", **responder.counters())

    loop.add_signal_handler(signal.SIGHUP, reload)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("started", sites=len(responder.sites), state=str(state_file))
    _announce_ready(pid_file)
    await stop.wait()
    responder.close()
    log.info("stopped", **responder.counters())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m monitor.lab.responder", description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, required=True, help="the lab's state.json")
    parser.add_argument("--pid-file", type=Path, help="written once requests are answered")
    args = parser.parse_args(argv)
    configure_logging("info", "json")
    # The default 50 µs timer slack would be added to every reply's delay.
    _libc.prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)
    # The lab stands in for the network, which is never short of CPU: with both cores
    # busy (the daemon probing thousands of sites and rendering /metrics), an ordinary
    # process woke about 2 ms late and every lab RTT with it. A low real-time priority
    # runs it as soon as a reply is due; the kernel's RT throttling (5 % of each second
    # left to others) bounds the harm of a runaway.
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(_REALTIME_PRIORITY))
    except OSError as exc:
        log.warning("no_realtime_priority", error=str(exc),
                    consequence="replies may leave late while the CPUs are busy")
    try:
        asyncio.run(_serve(args.state, args.pid_file))
    except (LabError, OSError) as exc:
        print(f"vcmon lab responder: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
