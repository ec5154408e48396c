"""TWAMP-light session-sender: streams of media-sized test packets to reflectors.

One UDP socket per address family serves every stream, as the ICMP engine does. A
stream is ``count`` packets ``spacing`` apart (20 ms and 172 bytes by default: an RTP
packet of 20 ms of G.711, 12 header bytes and 160 of voice), each marked with the
stream's TOS (EF by default) and timed out on its own.

Replies are matched by (reflector address, port, sender sequence number). The check
that a reply is for us is the echoed T1 and error estimate, which must equal what we
sent bit for bit, and the sequence numbers, which start at a random value per
reflector: RFC 5357 reflectors echo only those fields (padding comes back only under
RFC 6038's Reflect Octets), so there is nowhere else to carry a token. Only one stream
runs per reflector at a time: the reflector's counter is per sender, and two streams
interleaved on it would make its gaps (reverse loss) meaningless.

Every datagram read that is not a first reply in time is counted in ``ignored`` under
one of ``IGNORE_REASONS``; nothing the network sends raises.
"""

from __future__ import annotations

import asyncio
import heapq
import ipaddress
import itertools
import os
import secrets
import socket
from collections import Counter
from dataclasses import dataclass, field
from time import time_ns
from typing import Annotated, Any, ClassVar, Final

from pydantic import Field, field_validator, model_validator

from probes._service import DSCP_NAMES, Dscp, Port, ServiceSpec
from probes.icmp_socket import RECEIVE_BUFFER, SO_RCVBUFFORCE
from probes.twamp import (
    ANCILLARY_SIZE,
    DEFAULT_PORT,
    REFLECTION_HEADER,
    SENDER_HEADER,
    ErrorEstimate,
    MalformedPacket,
    Reflection,
    TestPacket,
    arrival,
    clock_error_estimate,
    enable_arrival_data,
    tos_ancillary,
)
from probes.twamp_stream import DuplicateReply, StreamPacket, StreamStats, stream_stats

__all__ = ["EF", "IGNORE_REASONS", "StreamResult", "TwampSender", "TwampSpec"]

EF: Final = 0xB8  # DSCP 46 (expedited forwarding, RFC 3246) in the TOS byte
MALFORMED: Final = "malformed"  # not a reflection: too short, truncated, zero multiplier
FOREIGN: Final = "foreign"  # from an address and port no stream of ours is talking to
UNMATCHED: Final = "unmatched"  # from our reflector, but not echoing a packet we sent
LATE: Final = "late"  # the reply to a packet already counted as lost (past its timeout)
DUPLICATE: Final = "duplicate"  # a further reply to a packet already answered
IGNORE_REASONS: Final = (MALFORMED, FOREIGN, UNMATCHED, LATE, DUPLICATE)

# Reads per reader callback before yielding to the loop (~1 ms; the ICMP engine reads
# as many per poll).
_DRAIN_BATCH: Final = 256
# Packets of different streams due within this much of each other go out in one
# wake-up, as the scheduler's probes do (T1 is read at each send, so no figure moves).
_COALESCE: Final = 0.0005
# A jumbo frame's worth; a longer datagram is cut, flagged MSG_TRUNC and dropped, so
# no stream may use longer packets (their replies are as long).
_RECEIVE_SIZE: Final = 9216
_MAX_SIZE: Final = _RECEIVE_SIZE
# where a reflection echoes the sender's sequence number, timestamp and error estimate
_ECHO_START: Final = 24
_ECHO_END: Final = _ECHO_START + SENDER_HEADER


class TwampSpec(ServiceSpec):
    """A ``twamp`` entry of a site's ``probes:``: one stream to the site's reflector every
    ``interval``, shaped like a media stream (50 packets 20 ms apart, one second of RTP;
    172 bytes, an RTP packet of G.711; marked EF as conference endpoints mark voice).

    ``timeout`` (of the schedule) is each packet's own wait for its reply, so a stream
    lasts ``(packets − 1) · spacing + timeout`` and must end before the next one starts.
    """

    # Durations of this kind, with their range: the inventory parses them ("20ms") where
    # it parses every duration, and checks the range with the same words.
    durations: ClassVar[dict[str, tuple[float, float]]] = {"spacing": (0.0, 1.0)}

    dscp: Dscp | None = DSCP_NAMES["EF"]
    port: Port = DEFAULT_PORT
    # the reflector, when it is not the site's own address (a small box beside the endpoint)
    reflector: str | None = None
    packets: Annotated[int, Field(ge=2, le=1000)] = 50
    spacing: float = 0.02
    size: Annotated[int, Field(ge=REFLECTION_HEADER, le=1472)] = 172
    # a fixed UDP source port, for router reflectors whose test sessions name the
    # sender's port (Huawei TWAMP Light test-session remote-port); none: an ephemeral one
    source_port: Annotated[int, Field(ge=1024, le=65535)] | None = None

    @field_validator("reflector")
    @classmethod
    def _literal(cls, reflector: str | None) -> str | None:
        if reflector is not None:
            try:
                return str(ipaddress.ip_address(reflector))
            except ValueError:
                raise ValueError(f'"{reflector}" is not an IP address; write the reflector\'s '
                                 "IPv4 or IPv6 address, e.g. 10.20.0.5") from None
        return reflector

    @model_validator(mode="after")
    def _fits_interval(self) -> TwampSpec:
        # the schedule's fields, on the inventory's model that joins both
        interval: float | None = getattr(self, "interval", None)
        timeout: float | None = getattr(self, "timeout", None)
        if interval is not None and timeout is not None:
            lasts = (self.packets - 1) * self.spacing + timeout
            if lasts >= interval:
                raise ValueError(
                    f"a stream of {self.packets} packets {self.spacing * 1000:g} ms apart, "
                    f"waiting {timeout:g} s for the last reply, lasts {lasts:g} s, not less "
                    f"than the interval of {interval:g} s; lower packets, spacing or timeout, "
                    "or raise interval")
        return self

    def host(self, site_address: str) -> str:
        return self.reflector or site_address


@dataclass(frozen=True, slots=True)
class StreamResult:
    """One stream, finished: every packet sent, each answered or lost, and the figures.

    ``send_errors`` counts packets the kernel refused to send (they count as lost).
    """

    address: str
    port: int
    tos: int
    size: int
    spacing: float
    timeout: float
    packets: tuple[StreamPacket, ...]
    duplicates: tuple[DuplicateReply, ...]
    send_errors: int
    stats: StreamStats


class _Packet:
    __slots__ = ("deadline_ns", "done", "header", "received_ns", "reflection", "reply_ttl",
                 "sent_ns")

    def __init__(self, sent_ns: int, timeout_ns: int, header: bytes) -> None:
        self.sent_ns = sent_ns
        # what the reflector must echo, compared as bytes: a nanosecond reading of T1
        # would not see a change in the lowest bits of its NTP fraction
        self.header = header
        self.deadline_ns = sent_ns + timeout_ns
        self.done = False  # answered, or counted as lost
        self.reflection: Reflection | None = None
        self.received_ns: int | None = None
        self.reply_ttl: int | None = None


@dataclass(slots=True)
class _Stream:
    base_seq: int
    error_estimate: ErrorEstimate
    timeout_ns: int
    packets: list[_Packet] = field(default_factory=list)
    duplicates: list[DuplicateReply] = field(default_factory=list)
    unresolved: int = 0
    all_sent: bool = False
    all_answered: asyncio.Event = field(default_factory=asyncio.Event)


class _Sending:
    """A stream being sent: where to, how, and the index of its next packet."""

    __slots__ = ("ancillary", "count", "done", "first", "index", "run", "send_errors", "size",
                 "sock", "sockaddr", "spacing", "stopped")

    def __init__(self, sock: socket.socket, sockaddr: tuple[Any, ...],
                 ancillary: list[tuple[int, int, bytes]], run: _Stream, count: int,
                 spacing: float, size: int, first: float) -> None:
        self.sock, self.sockaddr, self.ancillary = sock, sockaddr, ancillary
        self.run, self.count, self.spacing, self.size = run, count, spacing, size
        self.first = first  # loop time of packet 0; packet i is due at first + i·spacing
        self.index = 0
        self.send_errors = 0
        self.stopped = False
        self.done = asyncio.Event()


class _Destination:
    __slots__ = ("busy", "next_seq")

    def __init__(self) -> None:
        self.next_seq = secrets.randbits(32)
        self.busy = asyncio.Lock()


class TwampSender:
    """Runs streams to TWAMP-light reflectors; see the module doc.

    ``error_estimate`` is what our packets say of our clock (default: the kernel's own
    bound and sync state, ``clock_error_estimate()``); ``source_port`` the UDP port the
    streams leave from (0: one the kernel picks).
    """

    __slots__ = ("_active", "_destinations", "_due", "_error", "_loop", "_padding", "_sockets",
                 "_source_port", "_tie", "_timer", "ignored")

    def __init__(self, *, error_estimate: ErrorEstimate | None = None,
                 source_port: int = 0) -> None:
        self._error = error_estimate or clock_error_estimate()
        # 0: the kernel's choice; a fixed port for reflectors configured per sender port
        self._source_port = source_port
        # RFC 4656 §4.1.2: padding SHOULD be pseudo-random, so that compressing links
        # do not shrink the packets; drawn once, the cost stays off the send path.
        self._padding = os.urandom(_RECEIVE_SIZE)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sockets: dict[int, socket.socket] = {}
        self._destinations: dict[tuple[str, int], _Destination] = {}
        self._active: dict[tuple[str, int], _Stream] = {}
        # (loop time due, tie-breaker, stream): the next packet of every stream being sent
        self._due: list[tuple[float, int, _Sending]] = []
        self._tie = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        # Every reason from the start, so its series exists before the first such packet.
        self.ignored: Counter[str] = Counter(dict.fromkeys(IGNORE_REASONS, 0))

    async def start(self) -> None:
        if self._loop is not None:
            raise RuntimeError("TwampSender.start() was already called")
        self._loop = asyncio.get_running_loop()

    def _socket(self, family: int) -> socket.socket:
        sock = self._sockets.get(family)
        if sock is not None:
            return sock
        loop = self._loop
        if loop is None:
            raise RuntimeError("TwampSender.stream() before start() or after close()")
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            # Replies of thousands of streams arrive while the loop is busy (a scrape, a
            # health tick): a large buffer holds them, stamped by the kernel, until read.
            # SO_RCVBUFFORCE passes net.core.rmem_max but needs CAP_NET_ADMIN.
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            v6 = family == socket.AF_INET6
            if v6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            enable_arrival_data(sock, v6)
            sock.bind(("::" if v6 else "0.0.0.0", self._source_port))
            loop.add_reader(sock.fileno(), self._drain, sock, v6)
        except BaseException:
            sock.close()
            raise
        self._sockets[family] = sock
        return sock

    async def stream(
        self,
        address: str,
        port: int = DEFAULT_PORT,
        *,
        count: int = 50,
        spacing: float = 0.02,
        size: int = 172,
        timeout: float = 1.0,  # noqa: ASYNC109 - each packet's own timeout, not the call's
        tos: int = EF,
    ) -> StreamResult:
        """Send one stream to the reflector at ``address`` (an IP literal) and ``port``.

        Sends keep an absolute schedule; the call returns once every packet has its
        reply or is past its ``timeout``, so within ``(count − 1) · spacing + timeout``
        seconds. ``size`` is the UDP payload of each packet, at least 41 bytes so the
        reply can be as small as the request. Raises ValueError for bad arguments.
        """
        if count < 1:
            raise ValueError(f"a stream needs at least one packet, not count={count}")
        if spacing < 0 or timeout <= 0:
            raise ValueError(f"spacing must be at least 0 s and timeout more than 0 s, not"
                             f" spacing={spacing} and timeout={timeout}")
        if not REFLECTION_HEADER <= size <= _MAX_SIZE:
            raise ValueError(
                f"a test packet of {size} bytes cannot be answered at its own size: use a size"
                f" of at least {REFLECTION_HEADER} (the reply header) and at most {_MAX_SIZE}")
        if not 0 < port < 65536:
            raise ValueError(f"port must be within 1..65535, not {port}")
        try:
            family, _, _, _, sockaddr = socket.getaddrinfo(
                address, port, 0, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST)[0]
        except socket.gaierror:
            raise ValueError(f"{address!r} is not an IP address literal; resolve host names"
                             " before starting a stream") from None
        sock = self._socket(family)
        ancillary = tos_ancillary(tos, family == socket.AF_INET6)
        key = (str(sockaddr[0]), port)  # the kernel's spelling, as recvmsg reports replies
        destination = self._destinations.setdefault(key, _Destination())
        async with destination.busy:
            run = _Stream(destination.next_seq, self._error, int(timeout * 1e9))
            destination.next_seq = (destination.next_seq + count) & 0xFFFFFFFF
            self._active[key] = run
            sending = _Sending(sock, sockaddr, ancillary, run, count, spacing, size,
                               asyncio.get_running_loop().time())
            try:
                self._pace(sending)
                await sending.done.wait()
                send_errors = sending.send_errors
                last_deadline = run.packets[-1].deadline_ns if run.packets else time_ns()
                if run.unresolved:
                    try:
                        await asyncio.wait_for(run.all_answered.wait(),
                                               max(0.0, (last_deadline - time_ns()) / 1e9))
                    except TimeoutError:
                        # Replies the kernel queued (stamped in time) while the loop
                        # was busy are still matched before anything is called lost.
                        self._drain(sock, family == socket.AF_INET6)
            finally:
                sending.stopped = True  # a cancelled stream sends nothing more
                del self._active[key]
        return self._result(address, port, tos, size, spacing, timeout, run, send_errors)

    def _pace(self, sending: _Sending) -> None:
        """Put ``sending``'s next packet on the one schedule of every stream."""
        when = sending.first + sending.index * sending.spacing
        heapq.heappush(self._due, (when, next(self._tie), sending))
        if self._timer is None or when < self._timer.when():
            self._arm(when)

    def _arm(self, when: float) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._send_due)

    def _send_due(self) -> None:
        # One timer for every stream's packets, not a task waking per packet: 200
        # streams at 50 packets/s each were 10,000 task wake-ups a second, and packets
        # due within _COALESCE of each other now go out in the same wake-up.
        self._timer = None
        assert self._loop is not None
        horizon = self._loop.time() + _COALESCE
        due = self._due
        while due and due[0][0] <= horizon:
            sending = heapq.heappop(due)[2]
            if sending.stopped:
                continue
            self._send_one(sending)
            if sending.index < sending.count:
                heapq.heappush(due, (sending.first + sending.index * sending.spacing,
                                     next(self._tie), sending))
                continue
            run = sending.run
            run.all_sent = True
            if not run.unresolved:
                run.all_answered.set()
            sending.done.set()
        if due:
            self._arm(due[0][0])

    def _send_one(self, sending: _Sending) -> None:
        run, index = sending.run, sending.index
        sending.index += 1
        # T1 is taken before sendmsg: on loopback the reply can be received and
        # stamped inside the sendmsg call (measured for ICMP in probes/icmp.py).
        sent_ns = time_ns()
        data = TestPacket((run.base_seq + index) & 0xFFFFFFFF, sent_ns, run.error_estimate,
                          sending.size).encode(self._padding)
        packet = _Packet(sent_ns, run.timeout_ns, data[:SENDER_HEADER])
        run.packets.append(packet)
        try:
            sending.sock.sendmsg((data,), sending.ancillary, 0, sending.sockaddr)
        except OSError:
            packet.done = True
            sending.send_errors += 1
            return
        run.unresolved += 1

    def _drain(self, sock: socket.socket, v6: bool) -> None:
        ignored = self.ignored
        for _ in range(_DRAIN_BATCH):
            try:
                data, ancillary, flags, source = sock.recvmsg(_RECEIVE_SIZE, ANCILLARY_SIZE)
            except BlockingIOError:
                return
            except OSError:
                # a pending socket error (an ICMP error for an earlier send): the
                # packet it was about is judged by its own timeout
                continue
            run = self._active.get((source[0], source[1]))
            if run is None:
                ignored[FOREIGN] += 1
                continue
            if flags & socket.MSG_TRUNC:
                ignored[MALFORMED] += 1
                continue
            try:
                reflection = Reflection.decode(data)
            except MalformedPacket:
                ignored[MALFORMED] += 1
                continue
            index = (reflection.sender_seq - run.base_seq) & 0xFFFFFFFF
            if index >= len(run.packets):
                ignored[UNMATCHED] += 1
                continue
            packet = run.packets[index]
            if data[_ECHO_START:_ECHO_END] != packet.header:
                ignored[UNMATCHED] += 1
                continue
            came = arrival(ancillary, time_ns())
            if packet.reflection is not None:
                ignored[DUPLICATE] += 1
                run.duplicates.append(DuplicateReply(index, reflection.seq, came.received_ns))
            elif packet.done or came.received_ns > packet.deadline_ns:
                ignored[LATE] += 1
                self._resolve(run, packet)
            else:
                packet.reflection = reflection
                packet.received_ns = came.received_ns
                packet.reply_ttl = came.ttl
                self._resolve(run, packet)

    @staticmethod
    def _resolve(run: _Stream, packet: _Packet) -> None:
        if not packet.done:
            packet.done = True
            run.unresolved -= 1
            if not run.unresolved and run.all_sent:
                run.all_answered.set()

    @staticmethod
    def _result(address: str, port: int, tos: int, size: int, spacing: float, timeout: float,
                run: _Stream, send_errors: int) -> StreamResult:
        packets = tuple(
            StreamPacket(index, (run.base_seq + index) & 0xFFFFFFFF, p.sent_ns, p.reflection,
                         p.received_ns, p.reply_ttl)
            for index, p in enumerate(run.packets))
        duplicates = tuple(run.duplicates)
        return StreamResult(address, port, tos, size, spacing, timeout, packets, duplicates,
                            send_errors, stream_stats(packets, duplicates))

    async def close(self) -> None:
        """Stop reading and close the sockets; call once no stream is running."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()
        loop = self._loop
        for sock in self._sockets.values():
            if loop is not None:
                loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets.clear()
        self._loop = None
