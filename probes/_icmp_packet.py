"""ICMP echo packets for the engine: build requests, classify whatever the socket reads.

Pure functions over bytes, no sockets. Classification never raises: anything short
or inconsistent is reported as ``MALFORMED``, because a raw socket sees every ICMP
packet on the host and one odd packet must not stop the reader.
"""

from __future__ import annotations

import socket
from struct import Struct
from typing import Final

from probes._result import Outcome

# type, code, checksum, identifier, sequence (RFC 792 / RFC 4443 echo header)
ECHO_HEADER: Final = Struct("!BBHHH")
COOKIE_SIZE: Final = 8
# The largest echo payload an IPv4 datagram can carry: 65535 - 20 (IP) - 8 (ICMP).
MAX_PAYLOAD: Final = 65507

ICMP_ECHO_REPLY: Final = 0
ICMP_UNREACHABLE: Final = 3
ICMP_ECHO_REQUEST: Final = 8
ICMP_TIME_EXCEEDED: Final = 11
ICMP6_UNREACHABLE: Final = 1
ICMP6_TIME_EXCEEDED: Final = 3
ICMP6_ECHO_REQUEST: Final = 128
ICMP6_ECHO_REPLY: Final = 129

# Why a packet read from the socket is not a result: the keys of IcmpEngine.ignored.
FOREIGN: Final = "foreign"  # not ours: another id, another type, another program's error
MALFORMED: Final = "malformed"  # too short or inconsistent to classify
COOKIE: Final = "cookie"  # our id but not our cookie: a stale or forged reply
LATE: Final = "late"  # ours, after its probe timed out (or was forgotten)
DUPLICATE: Final = "duplicate"  # a second reply (or error) for an answered probe
LOCAL_ERROR: Final = "local_error"  # an error-queue entry sendto had already reported

Parsed = tuple[str, int, str, str]
"""``(kind, seq, quoted_destination, detail)``.

``kind`` is ``Outcome.REPLY``, ``Outcome.UNREACHABLE``, ``Outcome.TTL_EXCEEDED`` or
an ignore reason (``FOREIGN``, ``MALFORMED``, ``COOKIE``). For ICMP errors,
``quoted_destination`` is the destination of the quoted probe (the reply's source
address names the router instead) and ``detail`` names the error.
"""

# Shared constant tuples: the ignore paths allocate nothing.
_FOREIGN: Final[Parsed] = (FOREIGN, 0, "", "")
_MALFORMED: Final[Parsed] = (MALFORMED, 0, "", "")
_COOKIE: Final[Parsed] = (COOKIE, 0, "", "")

_UNREACHABLE_V4: Final = (
    "network unreachable",
    "host unreachable",
    "protocol unreachable",
    "port unreachable",
    "fragmentation needed",
    "source route failed",
    "destination network unknown",
    "destination host unknown",
    "source host isolated",
    "network administratively prohibited",
    "host administratively prohibited",
    "network unreachable for TOS",
    "host unreachable for TOS",
    "communication administratively prohibited",
    "host precedence violation",
    "precedence cutoff in effect",
)
_UNREACHABLE_V6: Final = (
    "no route to destination",
    "communication administratively prohibited",
    "beyond scope of source address",
    "address unreachable",
    "port unreachable",
    "source address failed ingress/egress policy",
    "reject route to destination",
)
_TIME_EXCEEDED: Final = ("TTL exceeded in transit", "fragment reassembly time exceeded")
_TIME_EXCEEDED_V6: Final = ("hop limit exceeded in transit", "fragment reassembly time exceeded")
# (v6, ICMP type) -> outcome and the names of its codes
_ERRORS: Final[dict[tuple[bool, int], tuple[Outcome, tuple[str, ...]]]] = {
    (False, ICMP_UNREACHABLE): (Outcome.UNREACHABLE, _UNREACHABLE_V4),
    (False, ICMP_TIME_EXCEEDED): (Outcome.TTL_EXCEEDED, _TIME_EXCEEDED),
    (True, ICMP6_UNREACHABLE): (Outcome.UNREACHABLE, _UNREACHABLE_V6),
    (True, ICMP6_TIME_EXCEEDED): (Outcome.TTL_EXCEEDED, _TIME_EXCEEDED_V6),
}


def check_payload_size(payload_size: int) -> None:
    """Raise ValueError unless the payload holds the cookie and fits one IPv4 datagram."""
    if not COOKIE_SIZE <= payload_size <= MAX_PAYLOAD:
        raise ValueError(
            f"payload_size must be between {COOKIE_SIZE} (the cookie) and {MAX_PAYLOAD} bytes,"
            f" not {payload_size}"
        )


def checksum(data: bytes | bytearray) -> int:
    """The Internet checksum (RFC 1071) of ``data``, as the 16-bit value to put on the wire."""
    return _fold(_word_sum(data)) ^ 0xFFFF


def _word_sum(data: bytes | bytearray) -> int:
    if len(data) % 2:
        data = bytes(data) + b"\0"
    return sum(Struct(f"!{len(data) // 2}H").unpack(data))


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def describe_error(v6: bool, icmp_type: int, code: int) -> tuple[Outcome, str] | None:
    """The outcome and a readable name for an ICMP error, or None if it is not one we report."""
    entry = _ERRORS.get((v6, icmp_type))
    if entry is None:
        return None
    outcome, names = entry
    name = names[code] if code < len(names) else "unknown code"
    return outcome, f"{name} (ICMP{'v6' if v6 else ''} type {icmp_type} code {code})"


class EchoRequest:
    """One reusable echo request: header, cookie, padding; ``build(seq)`` patches it in place.

    The payload is the cookie followed by zero padding to ``payload_size`` bytes.
    ``with_checksum`` is needed only for raw IPv4 sockets: the kernel fills the checksum
    for ICMP datagram sockets and for raw ICMPv6 sockets (RFC 3542 section 3.1; Linux
    rejects IPV6_CHECKSUM on them with EINVAL because it is always on, at offset 2).
    """

    __slots__ = ("_base_sum", "_ident", "_packet", "_type", "_with_checksum")

    def __init__(
        self, *, v6: bool, ident: int, cookie: bytes, payload_size: int, with_checksum: bool
    ) -> None:
        if len(cookie) != COOKIE_SIZE:
            raise ValueError(f"the cookie must be {COOKIE_SIZE} bytes, not {len(cookie)}")
        check_payload_size(payload_size)
        self._type = ICMP6_ECHO_REQUEST if v6 else ICMP_ECHO_REQUEST
        self._ident = ident
        self._with_checksum = with_checksum
        payload = cookie + bytes(payload_size - COOKIE_SIZE)
        self._packet = bytearray(ECHO_HEADER.size) + payload
        # Everything but the sequence number is constant, so its share of the
        # ones'-complement sum is computed once; per packet only seq is added
        # (the payload starts at an even offset, so its words align).
        self._base_sum = _fold((self._type << 8) + ident + _word_sum(payload))

    def build(self, seq: int) -> bytearray:
        """The request for ``seq``; the same buffer every call (sendto copies it)."""
        cksum = 0
        if self._with_checksum:
            total = self._base_sum + seq
            cksum = ((total & 0xFFFF) + (total >> 16)) ^ 0xFFFF
        ECHO_HEADER.pack_into(self._packet, 0, self._type, 0, cksum, self._ident, seq)
        return self._packet


class Decoder:
    """Classifies packets read from one ICMP socket (one family, one mode).

    ``ip_header`` is true for raw IPv4 sockets, the only kind whose reads start with
    the IP header; IPv6 raw sockets and all datagram sockets deliver the ICMP message.
    """

    __slots__ = ("_cookie", "_ident", "_ip_header", "_reply_type", "_request_type", "_v6")

    def __init__(self, *, v6: bool, ident: int, cookie: bytes, ip_header: bool) -> None:
        self._v6 = v6
        self._ident = ident
        self._cookie = cookie
        self._ip_header = ip_header
        self._reply_type = ICMP6_ECHO_REPLY if v6 else ICMP_ECHO_REPLY
        self._request_type = ICMP6_ECHO_REQUEST if v6 else ICMP_ECHO_REQUEST

    def __call__(self, data: bytes) -> Parsed:
        """Classify one packet as read from the socket."""
        offset = 0
        if self._ip_header:
            if not data:
                return _MALFORMED
            offset = (data[0] & 0x0F) << 2
            if offset < 20:
                return _MALFORMED
        if len(data) < offset + ECHO_HEADER.size:
            return _MALFORMED
        icmp_type, code, _, ident, seq = ECHO_HEADER.unpack_from(data, offset)
        if icmp_type == self._reply_type:
            if ident != self._ident:
                return _FOREIGN
            cookie = data[offset + ECHO_HEADER.size : offset + ECHO_HEADER.size + COOKIE_SIZE]
            if len(cookie) < COOKIE_SIZE:
                return _MALFORMED
            if cookie != self._cookie:
                return _COOKIE
            return (Outcome.REPLY, seq, "", "")
        described = describe_error(self._v6, icmp_type, code)
        if described is None:
            return _FOREIGN
        return self._quoted(data, offset + ECHO_HEADER.size, *described)

    def _quoted(self, data: bytes, inner: int, outcome: Outcome, detail: str) -> Parsed:
        # An ICMP error quotes the offending IP header and at least the first 8 bytes
        # of its payload (RFC 792; RFC 4443 section 2.4(c) quotes as much as fits):
        # our echo header with id and seq, but not necessarily the cookie.
        if self._v6:
            family, dst_at, addr_len, next_header, echo_at = socket.AF_INET6, 24, 16, 6, 40
            protocol = socket.IPPROTO_ICMPV6
        else:
            if len(data) <= inner:
                return _MALFORMED
            echo_at = (data[inner] & 0x0F) << 2
            if echo_at < 20:
                return _MALFORMED
            family, dst_at, addr_len, next_header = socket.AF_INET, 16, 4, 9
            protocol = socket.IPPROTO_ICMP
        if len(data) < inner + echo_at + ECHO_HEADER.size:
            return _MALFORMED
        # An error about someone else's UDP or TCP (or an IPv6 packet with extension
        # headers, which we never send) is not about one of our probes.
        if data[inner + next_header] != protocol:
            return _FOREIGN
        seq = self.quoted_echo_seq(data[inner + echo_at :])
        if seq < 0:
            return _FOREIGN
        destination = socket.inet_ntop(family, data[inner + dst_at : inner + dst_at + addr_len])
        return (outcome, seq, destination, detail)

    def quoted_echo_seq(self, echo: bytes) -> int:
        """The sequence number of our echo request quoted at the start of ``echo``, else -1."""
        if len(echo) < ECHO_HEADER.size:
            return -1
        icmp_type, _, _, ident, seq = ECHO_HEADER.unpack_from(echo)
        if icmp_type != self._request_type or ident != self._ident:
            return -1
        return int(seq)
