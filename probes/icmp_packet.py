"""ICMP echo packets for the engine: build requests, classify whatever the socket reads.

Pure functions over bytes, no sockets. Classification never raises: a raw socket sees
every ICMP packet on the host (and whatever anyone sends it), so each packet that is
not a reply or error for one of our probes is named by one of ``IGNORE_REASONS``.

The echo payload starts with an 8-byte cookie: a 4-byte per-process secret, then a
4-byte tag naming the destination the request was sent to. The secret tells our
replies from forged ones and other programs'; the tag tells a reply that came from
the address it was sent to from one that did not (a reflector, a misrouted or
multi-homed answer), whatever its sequence number.
"""

from __future__ import annotations

import socket
from struct import Struct
from typing import Final

from probes._result import Outcome

# type, code, checksum, identifier, sequence (RFC 792 / RFC 4443 echo header)
ECHO_HEADER: Final = Struct("!BBHHH")
# the echo header, then the cookie: the process's secret and the destination's tag
_ECHO_COOKIE: Final = Struct("!BBHHHII")
SECRET_SIZE: Final = 4
COOKIE_SIZE: Final = _ECHO_COOKIE.size - ECHO_HEADER.size
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

# Why a packet read from the socket is not a result: the keys of IcmpEngine.ignored,
# exported as vcmon_icmp_packets_ignored_total{reason}. Checked in this order, so a
# packet that is wrong in several ways has one stable reason.
MALFORMED: Final = "malformed"  # too short or inconsistent to classify
FOREIGN: Final = "foreign"  # not ours: another id, another type, another program's error
COOKIE: Final = "cookie"  # our id but not our secret: forged, or another process's
# raw IPv4 only (the kernel checks the others): ours by id and secret, but damaged
BAD_CHECKSUM: Final = "bad_checksum"
WRONG_SOURCE: Final = "wrong_source"  # a reply to a probe sent to another address
UNMATCHED: Final = "unmatched"  # ours by id and secret, but for no probe ever sent
LATE: Final = "late"  # for a probe already reported as timed out
DUPLICATE: Final = "duplicate"  # a second reply (or error) for an answered probe
LOCAL_ERROR: Final = "local_error"  # an error-queue entry sendto had already reported
IGNORE_REASONS: Final = (
    MALFORMED, FOREIGN, COOKIE, BAD_CHECKSUM, WRONG_SOURCE, UNMATCHED, LATE, DUPLICATE,
    LOCAL_ERROR,
)  # fmt: skip

Parsed = tuple[str, int, int, str, str]
"""``(kind, seq, tag, quoted_destination, detail)``.

``kind`` is ``Outcome.REPLY``, ``Outcome.UNREACHABLE``, ``Outcome.TTL_EXCEEDED`` or
one of the reasons the decoder can tell alone (``MALFORMED``, ``FOREIGN``, ``COOKIE``,
``BAD_CHECKSUM``). ``tag`` is the destination tag a reply carries. For ICMP errors,
``quoted_destination`` is the destination of the quoted probe (the error's source
address names the router instead) and ``detail`` names the error.
"""

# Shared constant tuples: the ignore paths allocate nothing.
_FOREIGN: Final[Parsed] = (FOREIGN, 0, 0, "", "")
_MALFORMED: Final[Parsed] = (MALFORMED, 0, 0, "", "")
_COOKIE: Final[Parsed] = (COOKIE, 0, 0, "", "")
_BAD_CHECKSUM: Final[Parsed] = (BAD_CHECKSUM, 0, 0, "", "")

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


def checksum_ok(data: bytes) -> bool:
    """True if ``data``, an ICMP message with its checksum field, has a valid checksum.

    2**16 is 1 modulo 0xFFFF, so the ones'-complement sum of the 16-bit words is the
    big-endian number modulo 0xFFFF, which is 0 exactly when that sum is 0xFFFF (or
    every word is zero, which no valid message is). An odd length pads a zero byte:
    a factor 256, which is prime to 0xFFFF. One C-level pass, no Python loop.
    """
    value = int.from_bytes(data, "big")
    return value % 0xFFFF == 0 and value != 0


def describe_error(v6: bool, icmp_type: int, code: int) -> tuple[Outcome, str] | None:
    """The outcome and a readable name for an ICMP error, or None if it is not one we report."""
    entry = _ERRORS.get((v6, icmp_type))
    if entry is None:
        return None
    outcome, names = entry
    name = names[code] if code < len(names) else "unknown code"
    return outcome, f"{name} (ICMP{'v6' if v6 else ''} type {icmp_type} code {code})"


class EchoRequest:
    """One reusable echo request: header, cookie, padding; ``build`` patches it in place.

    The payload is the secret, the destination's tag, then zero padding to
    ``payload_size`` bytes.
    ``with_checksum`` is needed only for raw IPv4 sockets: the kernel fills the checksum
    for ICMP datagram sockets and for raw ICMPv6 sockets (RFC 3542 section 3.1; Linux
    rejects IPV6_CHECKSUM on them with EINVAL because it is always on, at offset 2).
    """

    __slots__ = ("_base_sum", "_ident", "_packet", "_secret", "_type", "_with_checksum")

    def __init__(
        self, *, v6: bool, ident: int, secret: bytes, payload_size: int, with_checksum: bool
    ) -> None:
        if len(secret) != SECRET_SIZE:
            raise ValueError(f"the secret must be {SECRET_SIZE} bytes, not {len(secret)}")
        check_payload_size(payload_size)
        self._type = ICMP6_ECHO_REQUEST if v6 else ICMP_ECHO_REQUEST
        self._ident = ident
        self._secret = int.from_bytes(secret, "big")
        self._with_checksum = with_checksum
        payload = secret + bytes(payload_size - SECRET_SIZE)
        self._packet = bytearray(ECHO_HEADER.size) + payload
        # Everything but the sequence number and the tag is constant, so its share of
        # the ones'-complement sum is computed once; per packet only those are added
        # (the payload starts at an even offset, so its words align).
        self._base_sum = _fold((self._type << 8) + ident + _word_sum(payload))

    def build(self, seq: int, tag: int) -> bytearray:
        """The request for ``seq`` to the destination ``tag``; the same buffer every call
        (sendto copies it)."""
        cksum = 0
        if self._with_checksum:
            total = self._base_sum + seq + (tag >> 16) + (tag & 0xFFFF)
            total = (total & 0xFFFF) + (total >> 16)
            cksum = ((total & 0xFFFF) + (total >> 16)) ^ 0xFFFF
        _ECHO_COOKIE.pack_into(
            self._packet, 0, self._type, 0, cksum, self._ident, seq, self._secret, tag
        )
        return self._packet


class Decoder:
    """Classifies packets read from one ICMP socket (one family, one mode).

    ``ip_header`` is true for raw IPv4 sockets, the only kind whose reads start with
    the IP header; IPv6 raw sockets and all datagram sockets deliver the ICMP message.
    Raw IPv4 is also the only kind whose checksums the kernel does not verify first
    (raw delivery comes before icmp_rcv; ICMPv6 raw sockets always verify, RFC 3542
    3.1; ping sockets get what icmp_rcv accepted), so only there does the decoder
    verify them, on packets that would otherwise count: foreign ones cost nothing more.
    """

    __slots__ = (
        "_ident", "_ip_header", "_reply_type", "_request_type", "_secret", "_secret_value", "_v6",
    )  # fmt: skip

    def __init__(self, *, v6: bool, ident: int, secret: bytes, ip_header: bool) -> None:
        self._v6 = v6
        self._ident = ident
        self._secret = secret
        self._secret_value = int.from_bytes(secret, "big")
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
        if len(data) >= offset + _ECHO_COOKIE.size:
            # one unpack for the common case, a reply with its cookie
            icmp_type, code, _, ident, seq, secret, tag = _ECHO_COOKIE.unpack_from(data, offset)
        elif len(data) >= offset + ECHO_HEADER.size:
            icmp_type, code, _, ident, seq = ECHO_HEADER.unpack_from(data, offset)
            secret = tag = -1
        else:
            return _MALFORMED
        if icmp_type == self._reply_type:
            if ident != self._ident:
                return _FOREIGN
            if secret < 0:
                return _MALFORMED
            if secret != self._secret_value:
                return _COOKIE
            if self._ip_header and not checksum_ok(data[offset:]):
                return _BAD_CHECKSUM
            return (Outcome.REPLY, seq, tag, "", "")
        described = describe_error(self._v6, icmp_type, code)
        if described is None:
            return _FOREIGN
        return self._quoted(data, offset, *described)

    def _quoted(self, data: bytes, offset: int, outcome: Outcome, detail: str) -> Parsed:
        # An ICMP error quotes the offending IP header and at least the first 8 bytes
        # of its payload (RFC 792; RFC 4443 section 2.4(c) quotes as much as fits):
        # our echo header with id and seq, but not necessarily the cookie.
        inner = offset + ECHO_HEADER.size
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
        echo = inner + echo_at
        if len(data) < echo + ECHO_HEADER.size:
            return _MALFORMED
        # An error about someone else's UDP or TCP (or an IPv6 packet with extension
        # headers, which we never send) is not about one of our probes.
        if data[inner + next_header] != protocol:
            return _FOREIGN
        seq = self.quoted_probe(data[echo:])
        if isinstance(seq, str):
            return _COOKIE if seq == COOKIE else _FOREIGN
        if self._ip_header and not checksum_ok(data[offset:]):
            return _BAD_CHECKSUM
        destination = socket.inet_ntop(family, data[inner + dst_at : inner + dst_at + addr_len])
        return (outcome, seq, 0, destination, detail)

    def quoted_probe(self, echo: bytes) -> int | str:
        """The sequence number of our echo request quoted at the start of ``echo``.

        Else ``FOREIGN`` (not our request, or cut before its id and sequence number),
        or ``COOKIE`` when it quotes a secret that is not ours: routers that quote more
        than 8 bytes (RFC 1812 4.3.2.3, RFC 4443 2.4(c)) quote the secret too, so an
        error quoting a wrong one was made up.
        """
        if len(echo) < ECHO_HEADER.size:
            return FOREIGN
        icmp_type, _, _, ident, seq = ECHO_HEADER.unpack_from(echo)
        if icmp_type != self._request_type or ident != self._ident:
            return FOREIGN
        if len(echo) >= ECHO_HEADER.size + SECRET_SIZE and not echo.startswith(
            self._secret, ECHO_HEADER.size
        ):
            return COOKIE
        return int(seq)
