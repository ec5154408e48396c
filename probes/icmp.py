"""ICMP echo probes, built like fping: one socket per address family for every target.

Replies are matched to their probe by (address, sequence) with the engine's echo id, a
per-process random secret and the destination's tag in the payload. RTTs come from
kernel receive timestamps (SO_TIMESTAMPNS), so when a reply is read never shows up in
its RTT: the engine reads its sockets when it polls, not at every packet. It polls right
after each run of sends (a scheduler's wake-up sends a dozen probes or hundreds; on
loopback and a LAN their replies are back by then), at the deadline of the earliest
unanswered probe, and otherwise every ``_POLL_MAX`` while probes are out (every
``_IDLE_POLL_MAX`` while none is), or sooner when the arrival rate would fill a quarter
of the socket's buffer before the next poll. At the province's 240 sites over a WAN
that is one wake-up per scheduler slot instead of one per reply. A probe's timeout is
independent of how often the caller sends. Every packet read that resolves no probe is
counted in ``ignored`` under one of ``IGNORE_REASONS``; nothing else is kept of it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import sys
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from math import inf
from time import monotonic_ns, time_ns
from typing import Any, Final, Literal

from probes._result import Outcome, ProbeResult
from probes.icmp_packet import (
    DUPLICATE,
    FOREIGN,
    IGNORE_REASONS,
    LATE,
    LOCAL_ERROR,
    MALFORMED,
    UNMATCHED,
    WRONG_SOURCE,
    Decoder,
    EchoRequest,
    check_payload_size,
    describe_error,
)
from probes.icmp_socket import (
    ANCILLARY_SIZE,
    SO_EE_ORIGIN_ICMP,
    SO_EE_ORIGIN_ICMP6,
    IcmpPermissionError,
    Mode,
    dropped,
    open_icmp_socket,
    read_error_queue,
    receive_time_ns,
    socket_address,
)

__all__ = ["IGNORE_REASONS", "IcmpEngine", "IcmpPermissionError", "Mode", "ping"]

# Per process, so a second vcmon (or a restarted one) never takes our replies for its
# own; RFC 792 routers do not quote it, so errors are matched on address, id and seq.
_SECRET: Final = os.urandom(4)
# Reads per socket and poll before yielding to the loop; the rest is read in the next
# iteration. It bounds how long a flood of foreign packets holds up the sender and the
# timers: each read costs a few microseconds, so 256 is about a millisecond. Measured
# (tests/bench/bench_flood.py, 120,000 foreign packets/s on 2 cores): sends 8 ms late at
# p99 with 256, 20-80 ms with 4,096.
_DRAIN_BATCH: Final = 256
# IPv6 routers quote up to the minimum MTU of the offending packet (RFC 4443 2.4(c)).
_MIN_RECEIVE: Final = 1280
# Timeouts are reported up to this late, so that the deadlines of a few probes share a
# wake-up. Lateness is judged on the kernel timestamp, so the slack changes only when a
# TIMEOUT is reported, never an RTT.
_TIMER_SLACK: Final = 0.01
# The longest the engine leaves replies unread while probes are out: results reach
# the caller this late at most (RTTs are the kernel's), and a lone site costs about
# one poll per probe.
_POLL_MAX: Final = 0.1
_POLL_MIN: Final = 0.001
# ... and while none is out: what arrives then (duplicates, other programs' ICMP on a
# raw socket) is counted this late at most, and never fills the socket unread.
_IDLE_POLL_MAX: Final = 10.0
# What one queued packet takes of a socket's receive buffer: measured 829 bytes for a
# 56-byte echo reply on loopback (ping and raw sockets, Linux 6.18); rounded up.
_PACKET_TRUESIZE: Final = 1024
_IP_HEADER_MAX: Final = 60

_REPLY: Final = Outcome.REPLY
_ERRORS: Final = (Outcome.UNREACHABLE, Outcome.TTL_EXCEEDED)


_Ancillary = list[tuple[int, int, bytes]]


def _try_send(
    sock: socket.socket, packet: bytearray, sockaddr: tuple[Any, ...], tos: _Ancillary
) -> OSError | None:
    try:
        sock.sendmsg((packet,), tos, 0, sockaddr)
    except OSError as exc:
        return exc
    return None


class _Channel:
    """One open ICMP socket (one address family) and what it needs per packet."""

    __slots__ = ("decode", "request", "sock", "tos", "v6")

    def __init__(self, sock: socket.socket, request: EchoRequest, decode: Decoder, v6: bool):
        self.sock = sock
        self.request = request
        self.decode = decode
        self.v6 = v6
        # The IP_TOS / IPV6_TCLASS control message per TOS value (none for 0, the
        # socket's own): one socket serves them all, as ping and raw sockets, IPv4 and
        # IPv6, take it per sendmsg. A raw socket per TOS would each read every reply.
        level, kind = (
            (socket.IPPROTO_IPV6, socket.IPV6_TCLASS) if v6 else (socket.IPPROTO_IP, socket.IP_TOS)
        )
        self.tos: list[_Ancillary] = [[]] + [
            [(level, kind, tos.to_bytes(4, sys.byteorder))] for tos in range(1, 256)
        ]


class _Destination:
    """One address probed (whatever its spellings): its sequence numbers and its tag."""

    __slots__ = ("issued", "key", "next_seq", "sockaddr", "tag", "v6")

    def __init__(self, v6: bool, sockaddr: tuple[Any, ...], key: str, tag: int) -> None:
        self.v6, self.sockaddr, self.key, self.tag = v6, sockaddr, key, tag
        self.next_seq = secrets.randbits(16)
        self.issued = 0  # sequence numbers taken, to tell a late reply from a made-up one

    def issued_recently(self, seq: int) -> bool:
        """Whether ``seq`` is among the last 65,536 sequence numbers sent here."""
        return (self.next_seq - 1 - seq) & 0xFFFF < self.issued


# One probe out: (target, address, seq, sent_ns, sent_mono_ns, timeout_ns, deadline), in
# ``_waiting`` by its key, ``_key(tag, seq)``, until its reply, error or timeout.
# Then only its deadline stays, in ``_resolved`` by its key, so that a second copy of its
# reply is told apart from a late one. What the engine keeps of a probe for longer than
# its round trip is numbers only, which the cyclic collector never tracks: at 20,000
# sites 20,000 probes are kept at any time (each until its deadline), and every object
# among them was in the young generation at each collection, which walked them all (as
# objects of a class: a full collection of 80 ms every 5 s; as this tuple and a key
# tuple or two of their own: 10-25 ms a young collection, the loop's worst lag).
_Probe = tuple[str, str, int, int, int, int, float]
# its fields, as literals so that the type checker knows each one's type
_TARGET: Final = 0
_ADDRESS: Final = 1
_SEQ: Final = 2
_SENT_NS: Final = 3
_SENT_MONO_NS: Final = 4
_TIMEOUT_NS: Final = 5
_DEADLINE: Final = 6


def _key(tag: int, seq: int) -> int:
    """A probe's key: its destination's tag and its sequence number in one int, which
    (unlike a tuple) the cyclic collector never tracks."""
    return tag << 16 | seq


def _result(probe: _Probe, outcome: Outcome, rtt: float | None = None,
            detail: str = "") -> ProbeResult:
    return ProbeResult(probe[_TARGET], probe[_ADDRESS], probe[_SEQ], probe[_SENT_NS] * 1e-9,
                       outcome, rtt, detail)


def fill_time(capacity: int, arrived: int, elapsed: float) -> float:
    """Seconds until a socket holding ``capacity`` packets is a quarter full, at the rate
    of ``arrived`` packets in ``elapsed`` seconds (inf while nothing arrives)."""
    return capacity / 4 / (arrived / elapsed) if arrived else inf


class _Expiry:
    """The probes sent with one timeout, in send order: their deadlines only grow, so
    the earliest is always at the left and a poll pops what has passed in O(1) each
    (one heap over every probe cost two pushes and two pops a probe). Keys and
    deadlines side by side, in deques of numbers."""

    __slots__ = ("deadlines", "keys", "unanswered", "unanswered_at")

    def __init__(self) -> None:
        # every probe until its deadline (a reply before it is a duplicate, after it late)
        self.keys: deque[int] = deque()
        self.deadlines: deque[float] = deque()
        # the same probes, resolved ones dropped lazily from the left: the first one left
        # is the earliest deadline a timeout may be due at
        self.unanswered: deque[int] = deque()
        self.unanswered_at: deque[float] = deque()


class IcmpEngine:
    """Sends echo requests to many addresses over one socket per family; see module doc.

    Exactly one ProbeResult per ``send`` reaches ``on_result``, always from the loop
    thread and never from inside ``send``. ``on_result`` must not raise.
    """

    __slots__ = (
        "_arrived",
        "_bufsize",
        "_by_key",
        "_by_tag",
        "_capacity",
        "_destinations",
        "_expiry",
        "_fill_time",
        "_loop",
        "_mode",
        "_on_result",
        "_payload_size",
        "_poll_soon",
        "_polled_at",
        "_resolved",
        "_timer",
        "_timer_at",
        "_v4",
        "_v6",
        "_v6_error",
        "_waiting",
        "ignored",
        "polls",
        "received",
        "sent",
    )

    def __init__(
        self,
        on_result: Callable[[ProbeResult], None],
        *,
        payload_size: int = 56,
        mode: Mode = "auto",
    ) -> None:
        check_payload_size(payload_size)
        self._on_result = on_result
        self._payload_size = payload_size
        self._mode: Mode = mode
        self._bufsize = max(_MIN_RECEIVE, _IP_HEADER_MAX + 8 + payload_size)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._v4: _Channel | None = None
        self._v6: _Channel | None = None
        self._v6_error = ""
        # by the caller's spelling where it is not the kernel's (most are: one table less
        # at 20,000 sites), by the kernel's spelling, and by tag (the index)
        self._destinations: dict[str, _Destination] = {}
        self._by_key: dict[str, _Destination] = {}
        self._by_tag: list[_Destination] = []
        # by ``_key(tag, seq)``: unresolved probes, and the deadlines of resolved ones
        # until they pass
        self._waiting: dict[int, _Probe] = {}
        self._resolved: dict[int, float] = {}
        self._expiry: dict[float, _Expiry] = {}
        # one timer for the next poll: the earliest unanswered deadline, or a poll while
        # probes are out
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = inf
        # a poll asked for by send(), run by the loop right after the caller's sends
        self._poll_soon = False
        self._polled_at = 0.0
        # seconds until a quarter of the socket's buffer fills at the arrival rate
        self._fill_time = inf
        # packets read since the last poll, for the arrival rate
        self._arrived = 0
        # packets a socket holds before the kernel drops replies (the smallest socket's)
        self._capacity = 0
        # Every reason from the start, so its series exists before the first such packet.
        self.ignored: Counter[str] = Counter(dict.fromkeys(IGNORE_REASONS, 0))
        self.sent = 0
        self.received = 0
        self.polls = 0

    @property
    def mode(self) -> str:
        """``dgram`` or ``raw`` once started; the requested mode before."""
        return self._mode

    @property
    def pending_count(self) -> int:
        """Probes sent and not yet resolved."""
        return len(self._waiting)

    @property
    def dropped(self) -> int:
        """Packets the kernel dropped because the sockets were full (for want of a
        poll in time): replies among them were reported as timeouts. Read from the
        kernel's socket table at each call (a scrape), not on the probe path."""
        mode: Literal["dgram", "raw"] = "raw" if self._mode == "raw" else "dgram"
        return sum(dropped(channel.sock, mode, channel.v6)
                   for channel in (self._v4, self._v6) if channel is not None)

    @property
    def capacity(self) -> int:
        """Replies the smallest open socket can hold before the kernel drops them
        (0 before ``start()``): what the kernel granted of the 4 MiB asked for."""
        return self._capacity

    async def start(self) -> None:
        """Open the IPv4 socket (IPv6 opens on the first IPv6 send)."""
        if self._loop is not None:
            raise RuntimeError("IcmpEngine.start() was already called")
        loop = asyncio.get_running_loop()
        self._v4 = self._open(v6=False)
        self._loop = loop

    def _open(self, v6: bool) -> _Channel:
        # IPv6 opens in the mode IPv4 got: the same sysctl and capability decide both.
        sock, opened, ident = open_icmp_socket(v6, self._mode)
        self._mode = opened
        # Only raw IPv4 needs a checksum from us and only raw IPv4 reads carry the IP header.
        raw_v4 = opened == "raw" and not v6
        channel = _Channel(
            sock,
            EchoRequest(
                v6=v6,
                ident=ident,
                secret=_SECRET,
                payload_size=self._payload_size,
                with_checksum=raw_v4,
            ),
            Decoder(v6=v6, ident=ident, secret=_SECRET, ip_header=raw_v4),
            v6,
        )
        # What the kernel grants (it reports twice the size asked for, its bookkeeping
        # included): without CAP_NET_ADMIN, capped by net.core.rmem_max.
        capacity = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // _PACKET_TRUESIZE
        self._capacity = min(self._capacity, capacity) if self._capacity else capacity
        return channel

    def send(self, target: str, address: str, timeout: float, *, tos: int = 0) -> None:
        """Send one echo request to ``address`` (an IP literal); never blocks.

        ``tos`` is the IPv4 TOS byte or the IPv6 traffic class of this one packet
        (DSCP in the upper six bits: 0xb8 is EF, 0x88 AF41). Raises ValueError if
        ``address`` is not an IP literal or ``tos`` is not within 0..255.
        """
        loop = self._loop
        if loop is None or self._v4 is None:
            raise RuntimeError("IcmpEngine.send() before start() or after close()")
        if tos and not 0 < tos < 256:
            raise ValueError(f"tos must be between 0 and 255, not {tos}")
        destination = self._by_key.get(address)
        if destination is None:
            destination = self._destinations.get(address) or self._destination(address)
        seq = destination.next_seq
        destination.next_seq = (seq + 1) & 0xFFFF
        destination.issued += 1
        channel = self._v6 if destination.v6 else self._v4
        if channel is None:
            channel = self._open_v6()
            if channel is None:
                self._send_error(loop, target, address, seq, time_ns(), self._v6_error)
                return
        tag = destination.tag
        packet = channel.request.build(seq, tag)
        # Taken before sendto: on loopback the reply is received and timestamped
        # inside the sendto call itself (measured: a clock read after sendto returns
        # is up to 3 us later than the reply's timestamp, giving negative RTTs).
        sent_ns, sent_mono_ns = time_ns(), monotonic_ns()
        try:
            if tos:
                channel.sock.sendmsg((packet,), channel.tos[tos], 0, destination.sockaddr)
            else:
                channel.sock.sendto(packet, destination.sockaddr)
        except OSError as exc:
            error: OSError | None = exc
            if self._mode == "dgram":
                # A ping socket's sendto first reports (and clears) the error the kernel
                # recorded for an earlier probe (sk_err: with RECVERR, any ICMP error);
                # that error is attributed from the error queue, so one retry tells it
                # apart from an error of this send. Raw sends never check sk_err.
                sent_ns, sent_mono_ns = time_ns(), monotonic_ns()
                error = _try_send(channel.sock, packet, destination.sockaddr, channel.tos[tos])
            if error is not None:
                self._send_error(loop, target, address, seq, sent_ns, error.strerror or str(error))
                return
        self.sent += 1
        key = _key(tag, seq)
        # loop.time() is time.monotonic(): the same clock as sent_mono_ns
        deadline = sent_mono_ns * 1e-9 + timeout
        probe = (target, address, seq, sent_ns, sent_mono_ns, int(timeout * 1e9), deadline)
        waiting = self._waiting
        older = waiting.get(key)
        if older is not None:
            # 65,536 sends to one address within one timeout: the sequence wrapped.
            detail = "no reply before its sequence number was reused"
            loop.call_soon(self._on_result, _result(older, Outcome.TIMEOUT, detail=detail))
        self._resolved.pop(key, None)
        waiting[key] = probe
        expiry = self._expiry.get(timeout)
        if expiry is None:
            expiry = self._expiry[timeout] = _Expiry()
        expiry.keys.append(key)
        expiry.deadlines.append(deadline)
        expiry.unanswered.append(key)
        expiry.unanswered_at.append(deadline)
        if not self._poll_soon:
            # after the caller's run of sends, not inside it: its tables may be in use
            self._poll_soon = True
            loop.call_soon(self._poll)

    def _destination(self, address: str) -> _Destination:
        v6, sockaddr, key = socket_address(address)
        # One per address whatever its spelling ("::1", "0::1"): replies name it one way.
        destination = self._by_key.get(key)
        if destination is None:
            destination = _Destination(v6, sockaddr, key, len(self._by_tag))
            self._by_key[key] = destination
            self._by_tag.append(destination)
        if address != key:
            self._destinations[address] = destination
        return destination

    def _send_error(
        self,
        loop: asyncio.AbstractEventLoop,
        target: str,
        address: str,
        seq: int,
        sent_ns: int,
        detail: str,
    ) -> None:
        result = ProbeResult(
            target, address, seq, sent_ns * 1e-9, Outcome.SEND_ERROR, detail=detail
        )
        # Deferred: the caller may be iterating its own tables when it calls send().
        loop.call_soon(self._on_result, result)

    def _open_v6(self) -> _Channel | None:
        if self._v6_error:
            return None
        try:
            self._v6 = self._open(v6=True)
        except OSError as exc:
            self._v6_error = f"cannot open an IPv6 ICMP socket: {exc}"
        return self._v6

    def _poll(self) -> None:
        """Read what the sockets hold, report the timeouts that are due, plan the next
        poll. Replies the kernel queued (timestamped in time) while the loop was busy
        are matched before their probes are declared lost."""
        self._poll_soon = False
        loop = self._loop
        if loop is None:  # closed while the poll was queued
            return
        self.polls += 1
        more = False
        for channel in (self._v4, self._v6):
            if channel is not None:
                more = self._drain(channel) or more
        now = loop.time()
        self._expire(now)
        elapsed = now - self._polled_at
        if elapsed > 0:
            self._fill_time = fill_time(self._capacity, self._arrived, elapsed)
        self._polled_at, self._arrived = now, 0
        if more:
            # a socket had more than a batch: read on in the next iteration, after the
            # sender and the timers have had their turn
            self._poll_soon = True
            loop.call_soon(self._poll)
        self._arm(loop, now)

    def _expire(self, now: float) -> None:
        waiting, resolved = self._waiting, self._resolved
        for expiry in self._expiry.values():
            keys, deadlines = expiry.keys, expiry.deadlines
            while deadlines and deadlines[0] <= now:
                key, deadline = keys.popleft(), deadlines.popleft()
                # the deadline tells this probe from a later one under the same key
                probe = waiting.get(key)
                if probe is not None and probe[_DEADLINE] == deadline:
                    del waiting[key]
                    detail = f"no reply within {probe[_TIMEOUT_NS] / 1e9:g} s"
                    self._on_result(_result(probe, Outcome.TIMEOUT, detail=detail))
                elif resolved.get(key) == deadline:
                    del resolved[key]

    def _arm(self, loop: asyncio.AbstractEventLoop, now: float) -> None:
        """The timer for the next poll: the earliest deadline of a probe still
        unanswered, and before the socket could be a quarter full; no later than
        ``_POLL_MAX`` from now while probes are out, ``_IDLE_POLL_MAX`` while none is."""
        waiting = self._waiting
        longest = _POLL_MAX if waiting else _IDLE_POLL_MAX
        when = now + max(_POLL_MIN, min(longest, self._fill_time))
        for expiry in self._expiry.values():
            unanswered, at = expiry.unanswered, expiry.unanswered_at
            while unanswered and ((probe := waiting.get(unanswered[0])) is None
                                  or probe[_DEADLINE] != at[0]):
                unanswered.popleft()
                at.popleft()
            if unanswered:
                when = min(when, at[0] + _TIMER_SLACK)
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when < inf:
            self._timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = inf
        self._poll()

    def _drain(self, channel: _Channel) -> bool:
        """Read up to a batch from ``channel``; True if more may be waiting."""
        recvmsg = channel.sock.recvmsg
        decode = channel.decode
        waiting, resolved = self._waiting, self._resolved
        by_tag = self._by_tag
        ignored = self.ignored
        bufsize = self._bufsize
        read = 0
        for _ in range(_DRAIN_BATCH):
            try:
                data, ancillary, _, source = recvmsg(bufsize, ANCILLARY_SIZE)
            except BlockingIOError:
                break
            except OSError:
                # The socket's pending error (sk_err: a "hard" ICMP error on a raw
                # socket, any with RECVERR) is raised once and cleared; the ICMP error
                # itself is read as a packet or from the error queue.
                continue
            read += 1
            kind, seq, tag, quoted, detail = decode(data)
            if kind is _REPLY:
                key = _key(tag, seq)
                probe = waiting.get(key)
                # a probe under this key was sent to by_tag[tag]: the reply must come from there
                if probe is not None and by_tag[tag].key == source[0]:
                    del waiting[key]
                    resolved[key] = probe[_DEADLINE]
                    self._reply(probe, receive_time_ns(ancillary, time_ns()))
                else:
                    self._claim(source[0], seq, tag)
            elif kind in _ERRORS:
                probe = self._claim(quoted, seq, -1)
                if probe is not None:
                    self._on_result(
                        _result(probe, Outcome(kind), detail=f"{detail} from {source[0]}")
                    )
            else:
                ignored[kind] += 1
        self._arrived += read
        if self._mode == "dgram":
            self._drain_error_queue(channel)
        return read == _DRAIN_BATCH

    def _claim(self, address: str, seq: int, tag: int) -> _Probe | None:
        """The unresolved probe a reply or ICMP error is for, now resolved; else count why not.

        ``address`` is the reply's source or the error's quoted destination; ``tag`` is
        the reply's destination tag, -1 for errors (they need not quote it).
        """
        # Where the probe was sent: the tag says so for replies; errors have only their
        # quoted destination.
        if tag < 0:
            destination = self._by_key.get(address)
        else:
            destination = self._by_tag[tag] if tag < len(self._by_tag) else None
        if destination is None:
            reason = UNMATCHED
        elif destination.key != address:
            reason = WRONG_SOURCE
        else:
            key = _key(destination.tag, seq)
            probe = self._waiting.pop(key, None)
            if probe is not None:
                self._resolved[key] = probe[_DEADLINE]
                return probe
            if key in self._resolved:
                reason = DUPLICATE
            elif destination.issued_recently(seq):
                reason = LATE  # its probe was reported as a timeout
            else:
                reason = UNMATCHED
        self.ignored[reason] += 1
        return None

    def _reply(self, probe: _Probe, received_ns: int) -> None:
        rtt_ns = received_ns - probe[_SENT_NS]
        # The kernel stamps CLOCK_REALTIME; if the wall clock stepped since the send,
        # the monotonic span up to now (an upper bound) is the better estimate.
        monotonic_rtt_ns = monotonic_ns() - probe[_SENT_MONO_NS]
        if rtt_ns < 0 or rtt_ns > monotonic_rtt_ns:
            rtt_ns = monotonic_rtt_ns
        if rtt_ns > probe[_TIMEOUT_NS]:
            # It came after its deadline; only the timer had not noticed yet.
            self.ignored[LATE] += 1
            detail = f"reply after {rtt_ns / 1e9:g} s, past the timeout"
            self._on_result(_result(probe, Outcome.TIMEOUT, detail=detail))
            return
        self.received += 1
        self._on_result(_result(probe, _REPLY, rtt_ns * 1e-9))

    def _drain_error_queue(self, channel: _Channel) -> None:
        for data, destination, error in read_error_queue(channel.sock, self._bufsize, channel.v6):
            if error is None:
                self.ignored[MALFORMED] += 1
                continue
            origin, icmp_type, code, offender = error
            if origin not in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6):
                # A local error (e.g. EMSGSIZE), which sendto already raised.
                self.ignored[LOCAL_ERROR] += 1
                continue
            described = describe_error(channel.v6, icmp_type, code)
            seq = channel.decode.quoted_probe(data)
            if described is None:
                # Redirects, parameter problems and source quench reach ping sockets too.
                self.ignored[FOREIGN] += 1
                continue
            if isinstance(seq, str):
                self.ignored[seq] += 1
                continue
            probe = self._claim(destination, seq, -1)
            if probe is not None:
                outcome, name = described
                self._on_result(_result(probe, outcome, detail=f"{name} from {offender}"))

    async def close(self) -> None:
        """Stop reading, cancel the timer and close the sockets; pending probes are dropped."""
        loop = self._loop
        if loop is None:  # never started: nothing is open
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = inf
        for channel in (self._v4, self._v6):
            if channel is not None:
                channel.sock.close()
        self._v4 = self._v6 = None
        self._loop = None  # a poll still queued finds nothing to read
        self._waiting.clear()
        self._resolved.clear()
        self._expiry.clear()


async def ping(
    address: str,
    *,
    count: int,
    interval: float,
    timeout: float,  # noqa: ASYNC109 - each probe's ICMP timeout, not a deadline for the call
    payload_size: int = 56,
    mode: Mode = "auto",
) -> AsyncIterator[ProbeResult]:
    """Send ``count`` probes to ``address`` every ``interval`` s; yield results as they resolve.

    Sends keep an absolute schedule (no drift from slow consumers), and every probe
    resolves within ``timeout``, so iteration ends by ``(count - 1) * interval +
    timeout``. For the ``vcmon probe ADDRESS`` technician tool, not for the daemon.
    """
    socket_address(address)  # an invalid literal fails here, not inside the sender task
    results: asyncio.Queue[ProbeResult] = asyncio.Queue()
    engine = IcmpEngine(results.put_nowait, payload_size=payload_size, mode=mode)
    await engine.start()
    loop = asyncio.get_running_loop()

    async def send_all() -> None:
        first = loop.time()
        for number in range(count):
            await asyncio.sleep(first + number * interval - loop.time())
            engine.send(address, address, timeout)

    sender = asyncio.create_task(send_all())
    try:
        for _ in range(count):
            yield await results.get()
    finally:
        sender.cancel()
        await engine.close()
