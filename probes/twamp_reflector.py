"""TWAMP-light session-reflector (RFC 5357 §4.2.1, unauthenticated), for ``vcmon reflect``.

Each request is answered on its own; the only state is a sequence counter per sender
(address, port), which RFC 5357 keeps per session and which lets a sender tell loss
on the way out from loss on the way back, and a token bucket per source address. Both
tables are bounded: the least recently seen entry goes first, and idle ones expire.

T2 is the kernel's receive timestamp (SO_TIMESTAMPNS); T3 is read just before the
reply is sent. Sender TTL is the TTL / hop limit the request arrived with; the reply
carries the request's TOS / traffic class unless one is configured.

It is built to be harmless on the Internet: it answers only sources inside the
allow-list, at most ``rate`` packets per second per source address (bursts of
``burst``), never to a well-known port (a loop with another reflector or an echo
service), and never with more bytes than it received (the reply is exactly the
request's size; a request shorter than the 41-byte reply header is dropped). Every
datagram it does not answer is counted in ``dropped`` under one of ``DROP_REASONS``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections import Counter, OrderedDict
from collections.abc import Sequence
from time import monotonic, time_ns
from typing import Final

from probes.twamp import (
    ANCILLARY_SIZE,
    DEFAULT_PORT,
    REFLECTION_HEADER,
    SENDER_HEADER,
    ErrorEstimate,
    arrival,
    clock_error_estimate,
    enable_arrival_data,
    reflect,
    tos_ancillary,
)

__all__ = ["DROP_REASONS", "TwampReflector"]

NOT_ALLOWED: Final = "not_allowed"  # source outside the allow-list
RATE_LIMITED: Final = "rate_limited"  # source over its token bucket
TOO_SHORT: Final = "too_short"  # under the 41-byte reply header: answering would amplify
TOO_LONG: Final = "too_long"  # over max_size
MALFORMED: Final = "malformed"  # zero error-estimate multiplier, source port 0
# from a well-known port: an echo (7), chargen (19) or another reflector (862) there
# would answer the reply, and a request spoofed from it would start an endless loop
SERVICE_PORT: Final = "service_port"
SEND_ERROR: Final = "send_error"  # the kernel refused the reply
DROP_REASONS: Final = (NOT_ALLOWED, RATE_LIMITED, TOO_SHORT, TOO_LONG, MALFORMED, SERVICE_PORT,
                       SEND_ERROR)

_DRAIN_BATCH: Final = 256
# Senders send from ephemeral ports; below this are the well-known services (RFC 6335 §6).
_FIRST_EPHEMERAL: Final = 1024
# 1500-byte Ethernet less IPv4 and UDP headers: media-sized test packets fit well under.
_MAX_SIZE: Final = 1472
# Linux attaches the TTL to every datagram once IP_RECVTTL / IPV6_RECVHOPLIMIT is on;
# should it not, 0 (never the TTL of a delivered packet) says "unknown" in Sender TTL.
_UNKNOWN_TTL: Final = 0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.updated = now


class TwampReflector:
    """Answers TWAMP-light test packets on ``port`` of each address in ``listen``.

    ``allow`` lists the networks (CIDR text) whose senders are answered; there is no
    default: an open reflector must be asked for (``["0.0.0.0/0", "::/0"]``). ``tos``
    None copies each request's TOS into its reply. ``error_estimate`` defaults to the
    kernel's error bound with S = 0: the reflector does not claim a synchronised clock
    unless configured to. ``port`` 0 lets the kernel choose (tests); see ``addresses``.
    """

    __slots__ = ("_allow", "_buckets", "_burst", "_counters", "_error", "_listen", "_loop",
                 "_max_senders", "_max_size", "_port", "_rate", "_sender_idle", "_sockets",
                 "_tos", "_tos_messages", "dropped", "reflected")

    def __init__(
        self,
        allow: Sequence[str],
        *,
        listen: Sequence[str] = ("0.0.0.0", "::"),
        port: int = DEFAULT_PORT,
        tos: int | None = None,
        error_estimate: ErrorEstimate | None = None,
        rate: float = 100.0,
        burst: int = 100,
        max_size: int = _MAX_SIZE,
        max_senders: int = 4096,
        sender_idle: float = 60.0,
    ) -> None:
        if not allow:
            raise ValueError("the reflector answers no one without an allow-list: list the"
                             " sender networks, e.g. allow=['192.0.2.0/24']")
        try:
            self._allow: tuple[Network, ...] = tuple(
                ipaddress.ip_network(network, strict=False) for network in allow)
        except ValueError as exc:
            raise ValueError(f"allow-list entry is not a network: {exc}") from None
        if tos is not None and not 0 <= tos <= 255:
            raise ValueError(f"tos must be within 0..255, not {tos}")
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 packets/s and burst at least 1 packet")
        if not REFLECTION_HEADER <= max_size <= 65_507:
            raise ValueError(f"max_size must be within {REFLECTION_HEADER}..65507, not {max_size}")
        if max_senders < 1 or sender_idle <= 0:
            raise ValueError("max_senders must be at least 1 and sender_idle > 0 seconds")
        self._listen = tuple(listen)
        self._port = port
        self._tos = tos
        self._error = (error_estimate or clock_error_estimate(synchronized=False)).encode()
        self._rate = rate
        self._burst = float(burst)
        self._max_size = max_size
        self._max_senders = max_senders
        self._sender_idle = sender_idle
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sockets: list[tuple[socket.socket, bool]] = []
        # (address, port) -> (next reflector sequence number, last seen), oldest first
        self._counters: OrderedDict[tuple[str, int], tuple[int, float]] = OrderedDict()
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        # the IP_TOS / IPV6_TCLASS control message of each TOS, made once, not per reply
        self._tos_messages = {v6: [tos_ancillary(value, v6) for value in range(256)]
                              for v6 in (False, True)}
        self.reflected = 0
        self.dropped: Counter[str] = Counter(dict.fromkeys(DROP_REASONS, 0))

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """``(address, port)`` of each listening socket, as bound."""
        return [(str(sock.getsockname()[0]), int(sock.getsockname()[1]))
                for sock, _ in self._sockets]

    async def start(self) -> None:
        """Bind every listen address; raises OSError (with the address) if one fails."""
        if self._loop is not None:
            raise RuntimeError("TwampReflector.start() was already called")
        loop = asyncio.get_running_loop()
        try:
            for address in self._listen:
                self._sockets.append(self._open(loop, address))
        except BaseException:
            self._close_sockets(loop)
            raise
        self._loop = loop

    def _open(self, loop: asyncio.AbstractEventLoop, address: str) -> tuple[socket.socket, bool]:
        v6 = ":" in address
        sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if v6:
                # "::" and "0.0.0.0" are bound side by side, each for its own family
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            enable_arrival_data(sock, v6)
            try:
                sock.bind((address, self._port))
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {address} port {self._port}:"
                              f" {exc.strerror}; ports below 1024 need root or"
                              " CAP_NET_BIND_SERVICE, and only one reflector per port") from None
            loop.add_reader(sock.fileno(), self._drain, sock, v6)
        except BaseException:
            sock.close()
            raise
        return sock, v6

    def _allowed(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.partition("%")[0])
        except ValueError:
            return False
        return any(ip in network for network in self._allow)

    def _take_token(self, address: str, now: float) -> bool:
        buckets = self._buckets
        bucket = buckets.get(address)
        if bucket is None:
            if len(buckets) >= self._max_senders:
                buckets.popitem(last=False)
            bucket = buckets[address] = _Bucket(self._burst, now)
        else:
            buckets.move_to_end(address)
            bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
            bucket.updated = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def _next_seq(self, sender: tuple[str, int], now: float) -> int:
        counters = self._counters
        entry = counters.pop(sender, None)
        # An idle sender's session is over: RFC 5357 counts from 0 in each session.
        seq = entry[0] if entry is not None and now - entry[1] < self._sender_idle else 0
        if len(counters) >= self._max_senders:
            counters.popitem(last=False)
        counters[sender] = ((seq + 1) & 0xFFFFFFFF, now)
        return seq

    def _drain(self, sock: socket.socket, v6: bool) -> None:
        dropped = self.dropped
        for _ in range(_DRAIN_BATCH):
            try:
                data, ancillary, flags, source = sock.recvmsg(self._max_size + 1, ANCILLARY_SIZE)
            except BlockingIOError:
                return
            except OSError:
                continue  # a pending error from an earlier reply's ICMP; nothing to answer
            address, port = source[0], source[1]
            if not self._allowed(address):
                dropped[NOT_ALLOWED] += 1
                continue
            if len(data) < REFLECTION_HEADER:
                dropped[TOO_SHORT] += 1
                continue
            if len(data) > self._max_size or flags & socket.MSG_TRUNC:
                dropped[TOO_LONG] += 1
                continue
            # Source port 0 cannot be answered; a zero multiplier is forbidden by RFC 4656
            # §4.1.2, and only a non-TWAMP sender writes one.
            if port == 0 or not data[SENDER_HEADER - 1]:
                dropped[MALFORMED] += 1
                continue
            if port < _FIRST_EPHEMERAL:
                dropped[SERVICE_PORT] += 1
                continue
            now = monotonic()
            if not self._take_token(address, now):
                dropped[RATE_LIMITED] += 1
                continue
            came = arrival(ancillary, time_ns())
            # DSCP only: the two ECN bits belong to the request's transport, and a copied
            # ECT or CE mark would misreport congestion on the way back (RFC 3168 §5).
            tos = self._tos if self._tos is not None else (came.tos or 0) & 0xFC
            seq = self._next_seq((address, port), now)
            ttl = _UNKNOWN_TTL if came.ttl is None else came.ttl
            send_ns = time_ns()
            reply = reflect(data, seq=seq, receive_ns=came.received_ns, send_ns=send_ns,
                            error_estimate=self._error, ttl=ttl)
            try:
                sock.sendmsg((reply,), self._tos_messages[v6][tos], 0, source)
            except OSError:
                dropped[SEND_ERROR] += 1
                continue
            self.reflected += 1

    def _close_sockets(self, loop: asyncio.AbstractEventLoop) -> None:
        for sock, _ in self._sockets:
            if sock.fileno() >= 0:
                loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets.clear()

    async def close(self) -> None:
        """Stop answering and close the sockets."""
        if self._loop is not None:
            self._close_sockets(self._loop)
            self._loop = None
