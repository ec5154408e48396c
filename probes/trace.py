"""Path diagnosis, MTR-style: per-hop loss and RTT to one address, and where it breaks.

``trace`` sends ``cycles`` rounds of echo requests with TTL 1, 2, … to one IPv4 or
IPv6 address and folds the answers (ICMP time-exceeded from routers, the echo reply
or an unreachable from the end) into one ``Hop`` per TTL. ``first_bad_hop`` names the
first hop from which loss or added delay persists to the end of the path, and
``divergence`` the first hop where two snapshots took different routers. Both, and
``render``, are pure functions of the hop table.

Sockets: icmplib's raw socket (``privileged=True``, needs CAP_NET_RAW or root), since
icmplib's unprivileged datagram socket only ``recvfrom``s and Linux hands a ping
socket its ICMP errors solely through the IP_RECVERR error queue, so with icmplib no
router would ever answer. Without CAP_NET_RAW the trace falls back to our own ping
socket with RECVERR (allowed by ``net.ipv4.ping_group_range``).

icmplib's own ``traceroute`` is not used: it stops probing a hop at the first
timeout (``except ICMPLibError: break``), so its loss figures say only where the
first loss fell; it restarts sequence numbers at 0 for every TTL, so a late
time-exceeded is credited to the next hop; and it probes hop after hop, never the
whole path in the same moment, which is what tells a lossy link from a noisy router.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import select
import socket
import statistics
import struct
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal, Protocol

import icmplib

from probes.icmp_socket import (
    ANCILLARY_SIZE,
    IcmpPermissionError,
    attach_echo_filter,
    extended_error,
    open_icmp_socket,
    receive_time_ns,
)

__all__ = [
    "BadHop",
    "Hop",
    "IcmpPermissionError",
    "PathSnapshot",
    "divergence",
    "first_bad_hop",
    "render",
    "trace",
    "trace_blocking",
]

TraceMode = Literal["auto", "raw", "dgram"]

# Bounds of one trace: at most MAX_CYCLES · MAX_HOPS packets (6,400) and
# MAX_CYCLES · MAX_INTERVAL + MAX_TIMEOUT seconds (505 s at the very worst).
MAX_CYCLES: Final = 100
MAX_HOPS: Final = 64
MAX_INTERVAL: Final = 5.0
MAX_TIMEOUT: Final = 5.0
# 100 cycles a second at most: faster only spends the routers' ICMP error budgets
# (Linux answers 1,000 errors a second in all, net.ipv4.icmp_msgs_per_sec).
MIN_INTERVAL: Final = 0.01
_PAYLOAD_SIZE: Final = 56
_RECEIVE_SIZE: Final = 1280
# Sends of one request on a ping socket: each failure clears one pending ICMP error,
# and more than a few never arrive between two sends of a burst (sub-ms apart).
_SEND_ATTEMPTS: Final = 16
# Reads per drain of a ping socket: a trace has at most MAX_HOPS requests in flight per
# cycle, so this is never the limit for our own packets.
_DRAIN_LIMIT: Final = 1024
# How long icmplib may take over a read the raw socket already has queued.
_READ_LIMIT: Final = 0.5

_Kind = Literal["reply", "ttl_exceeded", "unreachable"]
# ICMP types of an answer by family: echo reply, time exceeded, destination unreachable
_KINDS: Final[dict[bool, dict[int, _Kind]]] = {
    False: {0: "reply", 11: "ttl_exceeded", 3: "unreachable"},
    True: {129: "reply", 3: "ttl_exceeded", 1: "unreachable"},
}


@dataclass(frozen=True, slots=True)
class Hop:
    """One TTL of the path over every cycle; RTTs in seconds, None when nothing came back.

    ``address`` is the address that answered most often (None: ``*``, never answered).
    """

    ttl: int
    address: str | None
    sent: int
    received: int
    last: float | None = None
    avg: float | None = None
    best: float | None = None
    worst: float | None = None
    stddev: float | None = None

    @property
    def loss(self) -> float:
        return 1.0 - self.received / self.sent if self.sent else 0.0

    @property
    def lost(self) -> int:
        return self.sent - self.received

    @property
    def silent(self) -> bool:
        return self.received == 0


@dataclass(frozen=True, slots=True)
class BadHop:
    """The hop a path goes bad at, and why in words ("loss 30 % from hop 3 on")."""

    ttl: int
    address: str | None
    why: str


@dataclass(frozen=True, slots=True)
class PathSnapshot:
    """One trace: ``started_at`` wall-clock seconds, ``duration`` seconds.

    ``packets`` counts the echo requests sent. ``error`` says why the trace ended early
    (the kernel refused a send), else None; the hops measured until then are kept.
    """

    target: str
    started_at: float
    duration: float
    cycles: int
    packets: int
    hops: tuple[Hop, ...]
    reached: bool
    bad_hop: BadHop | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values; each hop also carries its ``loss`` ratio."""
        document = asdict(self)
        for row, hop in zip(document["hops"], self.hops, strict=True):
            row["loss"] = hop.loss
        return document


# --- the verdict -------------------------------------------------------------------


def first_bad_hop(
    hops: Sequence[Hop],
    *,
    reached: bool = True,
    loss_threshold: float = 0.10,
    min_lost: int = 2,
    delay_threshold: float = 0.020,
) -> BadHop | None:
    """The first hop from which loss or added delay persists to every later answering hop.

    A hop is lossy when it lost at least ``loss_threshold`` of its probes and at least
    ``min_lost`` of them (so 1 lost of 10 blames nobody). A hop adds delay when its
    mean RTT exceeds the previous answering hop's by ``delay_threshold`` seconds (the
    first hop is measured from zero). Blame needs the fault to persist: every answering
    hop after it must be lossy too, or as slow over the same baseline. Routers
    rate-limit and deprioritise their own ICMP errors, so a hop that drops or delays
    only its time-exceeded replies while later hops are clean is not blamed; silent
    hops (``*`` at every cycle) are skipped. A path that does not reach its destination
    is blamed on its last row (a silent one where it goes dark, or the router that
    answered unreachable) before any loss or delay.
    """
    if not reached and hops:
        end = hops[-1]
        if end.silent:
            return BadHop(end.ttl, None,
                          f"no reply from hop {end.ttl} on; the destination was not reached")
        return BadHop(end.ttl, end.address,
                      f"the path ends at hop {end.ttl}; the destination was not reached")
    answering = [hop for hop in hops if not hop.silent]

    def lossy(hop: Hop) -> bool:
        return hop.loss >= loss_threshold and hop.lost >= min_lost

    for index, hop in enumerate(answering):
        later = answering[index:]
        if all(lossy(h) for h in later):
            persisting = min(h.loss for h in later)
            return BadHop(hop.ttl, hop.address,
                          f"loss {persisting * 100:.0f} % from hop {hop.ttl} on")
        baseline = answering[index - 1].avg if index else 0.0
        if baseline is not None and all(
            h.avg is not None and h.avg - baseline >= delay_threshold for h in later
        ):
            added = min(h.avg - baseline for h in later if h.avg is not None)
            return BadHop(hop.ttl, hop.address,
                          f"delay +{added * 1000:.0f} ms from hop {hop.ttl} on")
    return None


def divergence(baseline: Sequence[Hop], current: Sequence[Hop]) -> int | None:
    """The TTL of the first hop whose address differs between two snapshots, or None.

    ``*`` hops (no address on either side) are no evidence of a change and are skipped.
    """
    before = {hop.ttl: hop.address for hop in baseline}
    for hop in sorted(current, key=lambda h: h.ttl):
        old = before.get(hop.ttl)
        if old is not None and hop.address is not None and old != hop.address:
            return hop.ttl
    return None


# --- the text report ---------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def render(snapshot: PathSnapshot) -> str:
    """An MTR-like report: one row per hop, RTTs in ms, then the verdict line."""
    header = (f"{'hop':>3}  {'address':<39} {'loss%':>6} {'sent':>4} {'last':>7} "
              f"{'avg':>7} {'best':>7} {'worst':>7} {'stddev':>7}")
    lines = [f"trace to {snapshot.target}: {snapshot.cycles} cycles, "
             f"{snapshot.duration:.1f} s", header]
    for hop in snapshot.hops:
        lines.append(
            f"{hop.ttl:>3}  {hop.address or '*':<39} {hop.loss * 100:>6.1f} {hop.sent:>4} "
            f"{_ms(hop.last):>7} {_ms(hop.avg):>7} {_ms(hop.best):>7} {_ms(hop.worst):>7} "
            f"{_ms(hop.stddev):>7}")
    if snapshot.error:
        lines.append(f"error: {snapshot.error}")
    bad = snapshot.bad_hop
    if bad is None:
        lines.append("no bad hop found before the trace stopped" if snapshot.error
                     else "no bad hop")
    else:
        where = f"{bad.ttl} ({bad.address})" if bad.address else f"{bad.ttl}"
        lines.append(f"first bad hop: {where}: {bad.why}")
    return "\n".join(lines)


# --- sockets ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Answer:
    sequence: int
    source: str
    kind: _Kind
    at: float  # time.time() of the receive


class _Transport(Protocol):
    def send(self, sequence: int, ttl: int) -> float: ...

    def receive(self, timeout: float) -> _Answer | None: ...

    def close(self) -> None: ...


class _RawTransport:
    """icmplib's raw ICMP socket, filtered in the kernel to this trace's echo id and the
    errors (``attach_echo_filter``): a raw socket sees every ICMP packet on the host."""

    def __init__(self, address: str, v6: bool) -> None:
        family = icmplib.ICMPv6Socket if v6 else icmplib.ICMPv4Socket
        self._sock = family(privileged=True)
        self._address, self._kinds = address, _KINDS[v6]
        self._id = secrets.randbits(16)
        try:
            attach_echo_filter(self._sock.sock, v6, self._id)
        except OSError:
            self._sock.close()
            raise

    def send(self, sequence: int, ttl: int) -> float:
        request = icmplib.ICMPRequest(self._address, self._id, sequence,
                                      payload_size=_PAYLOAD_SIZE, ttl=ttl)
        try:
            self._sock.send(request)
        except icmplib.ICMPLibError as exc:
            raise OSError(str(exc)) from None
        return float(request.time)

    def receive(self, timeout: float) -> _Answer | None:
        # Waited for here, not in icmplib: its receive() throws away a packet it reads
        # after its own time limit, so an answer queued as a cycle's wait ran out (or
        # while this thread waited for a core) was lost and counted against its hop.
        readable, _, _ = select.select([self._sock.sock], [], [], max(timeout, 0.0))
        if not readable:
            return None
        try:
            reply = self._sock.receive(None, _READ_LIMIT)
        except icmplib.TimeoutExceeded:
            return _FOREIGN  # readable, yet nothing icmplib could parse
        except icmplib.ICMPLibError as exc:
            raise OSError(str(exc)) from None
        kind = self._kinds.get(reply.type)
        if reply.id != self._id or kind is None:
            return _FOREIGN
        return _Answer(reply.sequence, reply.source, kind, float(reply.time))

    def close(self) -> None:
        self._sock.close()


# Something read that is not ours (another process's ICMP on a raw socket).
_FOREIGN: Final = _Answer(-1, "", "reply", 0.0)


class _DgramTransport:
    """A ping socket with IP_RECVERR: no CAP_NET_RAW needed (see the module doc)."""

    def __init__(self, address: str, v6: bool) -> None:
        self._sock, _, _ = open_icmp_socket(v6, "dgram")
        self._v6, self._kinds = v6, _KINDS[v6]
        info = socket.getaddrinfo(address, None, self._sock.family, socket.SOCK_DGRAM, 0,
                                  socket.AI_NUMERICHOST)
        self._sockaddr = info[0][4]
        self._pending: list[_Answer] = []

    def send(self, sequence: int, ttl: int) -> float:
        if self._v6:
            self._sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
        else:
            self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        # The kernel sets the id (the socket's port) and the checksum of a ping socket.
        packet = struct.pack("!BBHHH", 128 if self._v6 else 8, 0, 0, 0, sequence)
        packet += bytes(_PAYLOAD_SIZE)
        # An ICMP error for an earlier probe also sets the socket's pending error, which
        # the next send reports and clears (EHOSTUNREACH for time-exceeded, measured),
        # sending nothing; a refusal of our own (no route) repeats on every attempt.
        for _ in range(_SEND_ATTEMPTS - 1):
            sent_at = time.time()
            with contextlib.suppress(OSError):
                self._sock.sendto(packet, self._sockaddr)
                return sent_at
        sent_at = time.time()
        self._sock.sendto(packet, self._sockaddr)
        return sent_at

    def receive(self, timeout: float) -> _Answer | None:
        if not self._pending:
            # A queued ICMP error makes the socket readable too (POLLERR).
            readable, _, _ = select.select([self._sock], [], [], max(timeout, 0.0))
            if not readable:
                return None
            self._drain()
        return self._pending.pop(0) if self._pending else _FOREIGN

    def _drain(self) -> None:
        """Move every queued error and reply into ``_pending``, with kernel timestamps."""
        for _ in range(_DRAIN_LIMIT):
            try:
                data, ancillary, _, _ = self._sock.recvmsg(
                    _RECEIVE_SIZE, ANCILLARY_SIZE, socket.MSG_ERRQUEUE)
            except BlockingIOError:
                break
            error = extended_error(ancillary, self._v6)
            if error is not None and len(data) >= 8:
                kind = self._kinds.get(error[1])
                if kind is not None and kind != "reply":
                    # the quoted start of our request: type, code, checksum, id, sequence
                    sequence = struct.unpack_from("!H", data, 6)[0]
                    self._pending.append(_Answer(sequence, error[3], kind, _at(ancillary)))
        for _ in range(_DRAIN_LIMIT):
            try:
                data, ancillary, _, source = self._sock.recvmsg(_RECEIVE_SIZE, ANCILLARY_SIZE)
            except BlockingIOError:
                break
            except OSError:
                continue  # the pending error again; its message is in the error queue
            if len(data) >= 8 and self._kinds.get(data[0]) == "reply":
                sequence = struct.unpack_from("!H", data, 6)[0]
                self._pending.append(_Answer(sequence, str(source[0]), "reply", _at(ancillary)))

    def close(self) -> None:
        self._sock.close()


def _at(ancillary: list[tuple[int, int, bytes]]) -> float:
    return receive_time_ns(ancillary, time.time_ns()) / 1e9


def _open(address: str, v6: bool, mode: TraceMode) -> _Transport:
    if mode != "dgram":
        try:
            return _RawTransport(address, v6)
        except icmplib.SocketPermissionError:
            if mode == "raw":
                raise IcmpPermissionError(
                    "a raw ICMP socket was refused: run as root or grant CAP_NET_RAW "
                    "(setcap cap_net_raw+ep on the Python interpreter, or "
                    "AmbientCapabilities=CAP_NET_RAW in the systemd unit)") from None
    try:
        return _DgramTransport(address, v6)
    except IcmpPermissionError as exc:
        if mode == "dgram":
            raise
        raise IcmpPermissionError(f"a raw ICMP socket was refused too (no CAP_NET_RAW); {exc}"
                                  ) from None


# --- the measurement ---------------------------------------------------------------


@dataclass(slots=True)
class _Tally:
    sent: int = 0
    rtts: list[float] = field(default_factory=list)
    sources: Counter[str] = field(default_factory=Counter)

    def hop(self, ttl: int) -> Hop:
        address = self.sources.most_common(1)[0][0] if self.sources else None
        if not self.rtts:
            return Hop(ttl, address, self.sent, 0)
        return Hop(ttl, address, self.sent, len(self.rtts), self.rtts[-1],
                   statistics.fmean(self.rtts), min(self.rtts), max(self.rtts),
                   statistics.pstdev(self.rtts))


def _check(address: str, cycles: int, interval: float, reply_timeout: float,
           max_hops: int) -> bool:
    try:
        v6 = ipaddress.ip_address(address).version == 6
    except ValueError:
        raise ValueError(f"{address!r} is not an IP address; resolve host names before "
                         "tracing") from None
    if not 1 <= cycles <= MAX_CYCLES:
        raise ValueError(f"cycles must be 1 to {MAX_CYCLES}, not {cycles}")
    if not 1 <= max_hops <= MAX_HOPS:
        raise ValueError(f"max_hops must be 1 to {MAX_HOPS}, not {max_hops}")
    if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
        raise ValueError(f"interval must be {MIN_INTERVAL} to {MAX_INTERVAL} s, not {interval}")
    if not 0 < reply_timeout <= MAX_TIMEOUT:
        raise ValueError(f"reply_timeout must be above 0 and at most {MAX_TIMEOUT} s, "
                         f"not {reply_timeout}")
    return v6


def trace_blocking(
    address: str,
    *,
    cycles: int = 10,
    interval: float = 0.2,
    reply_timeout: float = 1.0,
    max_hops: int = 30,
    mode: TraceMode = "auto",
) -> PathSnapshot:
    """Trace the path to ``address`` (an IP literal); blocks for about
    ``cycles · interval + reply_timeout`` seconds.

    Every ``interval`` one cycle sends an echo request with each TTL from 1 to the
    destination's distance (``max_hops`` until it is known), all at once; an answer
    counts when it arrives within ``reply_timeout`` of its request. Raises ValueError for
    arguments out of bounds and IcmpPermissionError (with the fix) when no ICMP socket
    may be opened; whatever the network does ends up in the snapshot.
    """
    v6 = _check(address, cycles, interval, reply_timeout, max_hops)
    started_at, start = time.time(), time.monotonic()
    transport = _open(address, v6, mode)
    tallies = [_Tally() for _ in range(max_hops)]
    # sequence -> (ttl, time.time() at send); one sequence per packet of the trace
    pending: dict[int, tuple[int, float]] = {}
    limit, reached, packets = max_hops, False, 0
    error: str | None = None
    try:
        for cycle in range(cycles):
            cycle_end = start + (cycle + 1) * interval
            for ttl in range(1, limit + 1):
                sequence = cycle * MAX_HOPS + ttl - 1
                pending[sequence] = (ttl, transport.send(sequence, ttl))
                packets += 1
                tallies[ttl - 1].sent += 1
            # the last cycle waits out the timeout of its own requests
            deadline = cycle_end if cycle < cycles - 1 else cycle_end - interval + reply_timeout
            final = cycle == cycles - 1
            while (remaining := deadline - time.monotonic()) > 0:
                if final and not _awaited(pending, limit, time.time() - reply_timeout):
                    break
                answer = transport.receive(remaining)
                if answer is None:
                    break
                sent = pending.pop(answer.sequence, None)
                if sent is None or answer.at - sent[1] > reply_timeout:
                    continue
                ttl = sent[0]
                if ttl > limit:
                    continue  # a probe sent beyond the end before the end was known
                tallies[ttl - 1].rtts.append(max(answer.at - sent[1], 0.0))
                tallies[ttl - 1].sources[answer.source] += 1
                if answer.kind != "ttl_exceeded":
                    limit = ttl
                    reached = reached or (answer.kind == "reply"
                                          and _same(answer.source, address))
    except OSError as exc:
        # the kernel refused a send (no route, ...) or a read: the trace ends here
        error = f"the trace stopped after {packets} packets: {exc}"
    finally:
        transport.close()
    last_answer = max((t for t, tally in enumerate(tallies, 1) if tally.rtts), default=0)
    # A path that goes dark keeps one silent row after its last answer: where it ends.
    # Rows never probed (a send refused in the first cycle) are left out.
    probed = sum(1 for tally in tallies if tally.sent)
    end = min(last_answer if last_answer == limit else last_answer + 1, limit, probed)
    hops = tuple(tally.hop(ttl) for ttl, tally in enumerate(tallies[:end], 1))
    return PathSnapshot(address, started_at, time.monotonic() - start, cycles, packets, hops,
                        reached, first_bad_hop(hops, reached=reached), error)


def _awaited(pending: dict[int, tuple[int, float]], limit: int, since: float) -> bool:
    """Whether a request within the path's length, sent after ``since``, is unanswered."""
    return any(ttl <= limit and sent_at > since for ttl, sent_at in pending.values())


def _same(a: str, b: str) -> bool:
    return ipaddress.ip_address(a) == ipaddress.ip_address(b)


async def trace(
    address: str,
    *,
    cycles: int = 10,
    interval: float = 0.2,
    reply_timeout: float = 1.0,
    max_hops: int = 30,
    mode: TraceMode = "auto",
) -> PathSnapshot:
    """``trace_blocking`` in a worker thread, for the event loop (icmplib's sockets
    block; a trace holds one thread for its whole duration)."""
    return await asyncio.to_thread(trace_blocking, address, cycles=cycles, interval=interval,
                                   reply_timeout=reply_timeout, max_hops=max_hops, mode=mode)

