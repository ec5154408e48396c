"""TWAMP-light test packets, byte for byte: RFC 5357 unauthenticated mode.

The sender's packet (§4.1.2, the OWAMP layout of RFC 4656 §4.1.2)::

    0  Sequence Number (4)
    4  Timestamp (8)            T1, NTP 32.32 seconds since 1900
    12 Error Estimate (2)       S, Z, Scale (6 bits), Multiplier (8 bits)
    14 Packet Padding

The reflector's reply (§4.2.1)::

    0  Sequence Number (4)      the reflector's own counter
    4  Timestamp (8)            T3, taken as the reply is sent
    12 Error Estimate (2)
    14 MBZ (2)
    16 Receive Timestamp (8)    T2, when the request arrived
    24 Sender Sequence Number (4)
    28 Sender Timestamp (8)     T1, echoed
    36 Sender Error Estimate (2)
    38 MBZ (2)
    40 Sender TTL (1)           TTL / hop limit of the request as received
    41 Packet Padding

STAMP (RFC 8762 §4.2.1, §4.3.1) keeps this layout for its unauthenticated packets. A
sender pads its request to at least ``REFLECTION_HEADER`` octets, so the reflector can
answer with a packet of the same size (RFC 6038 §4.2, symmetrical size): never larger
than the request, which keeps the reflector useless as an amplifier.

Timestamps are handled as integer nanoseconds of CLOCK_REALTIME (the kernel's
SO_TIMESTAMPNS clock), converted to and from the wire here only.
"""

from __future__ import annotations

import ctypes
import socket
from dataclasses import dataclass
from struct import Struct
from typing import Final

__all__ = [
    "ANCILLARY_SIZE",
    "DEFAULT_PORT",
    "IP_RECVTTL",
    "REFLECTION_HEADER",
    "SENDER_HEADER",
    "SO_TIMESTAMPNS",
    "Arrival",
    "ErrorEstimate",
    "MalformedPacket",
    "Reflection",
    "TestPacket",
    "arrival",
    "clock_error_estimate",
    "enable_arrival_data",
    "ns_from_ntp",
    "ntp_from_ns",
    "reflect",
    "tos_ancillary",
]

# IANA's twamp-test port (RFC 5357 §8, the registry's "twamp-test" entry, as RFC 8545
# clarified); TWAMP-light has no control session to agree another.
DEFAULT_PORT: Final = 862
SENDER_HEADER: Final = 14
REFLECTION_HEADER: Final = 41
# 1900-01-01 to 1970-01-01
_NTP_UNIX_OFFSET: Final = 2_208_988_800
_NS: Final = 1_000_000_000
_SENDER: Final = Struct("!IQH")
_REFLECTION: Final = Struct("!IQHHQIQHHB")
_REPLY_HEAD: Final = Struct("!IQHHQ")
_REPLY_TAIL: Final = Struct("!HB")
_S_BIT: Final = 0x8000
_Z_BIT: Final = 0x4000
_MAX_SCALE: Final = 63


class MalformedPacket(ValueError):
    """A datagram that is not a TWAMP test packet of the expected kind."""


def ntp_from_ns(ns: int) -> int:
    """The 64-bit NTP timestamp (32.32 seconds since 1900) of CLOCK_REALTIME ``ns``.

    The fraction is rounded down: ``ns_from_ntp`` rounds up, so nanoseconds survive a
    round trip exactly (one fraction unit is 0.23 ns). Seconds wrap in 2036 (NTP era 1).
    """
    seconds, rest = divmod(ns, _NS)
    return (((seconds + _NTP_UNIX_OFFSET) & 0xFFFFFFFF) << 32) | ((rest << 32) // _NS)


def ns_from_ntp(ntp: int) -> int:
    """CLOCK_REALTIME nanoseconds of a 64-bit NTP timestamp.

    A seconds field with its top bit clear is taken as NTP era 1 (2036-02-07 to 2104),
    as RFC 4330 §3 suggests, so the conversion keeps working past the 2036 wrap.
    """
    seconds = ntp >> 32
    if not seconds & 0x80000000:
        seconds += 1 << 32
    fraction_ns = -((-(ntp & 0xFFFFFFFF) * _NS) >> 32)  # ceiling division by 2**32
    return (seconds - _NTP_UNIX_OFFSET) * _NS + fraction_ns


def _ns_from_ptp(value: int) -> int:
    # RFC 8186 §2.3 / RFC 8762 §4.2.1: with Z set, the 64 bits are the truncated PTP
    # format, 32-bit seconds since 1970 and 32-bit nanoseconds.
    return (value >> 32) * _NS + (value & 0xFFFFFFFF)


@dataclass(frozen=True, slots=True)
class ErrorEstimate:
    """RFC 4656 §4.1.2 Error Estimate: the clock's error bound, and whether it is synced.

    ``synchronized`` is the S bit: the clock follows UTC from an external source. Only
    when both ends set it may one-way delays be computed. ``ptp`` is the Z bit (RFC 8186:
    the timestamps next to it are in the PTP format; RFC 4656 had it as MBZ).
    """

    synchronized: bool
    scale: int
    multiplier: int
    ptp: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.scale <= _MAX_SCALE:
            raise ValueError(f"error estimate scale must be within 0..63, not {self.scale}")
        # RFC 4656 §4.1.2: "Multiplier MUST NOT be set to zero".
        if not 1 <= self.multiplier <= 255:
            raise ValueError(
                f"error estimate multiplier must be within 1..255, not {self.multiplier}")

    @property
    def seconds(self) -> float:
        """The error bound: Multiplier · 2^(Scale − 32) seconds."""
        return float(self.multiplier * 2.0 ** (self.scale - 32))

    def encode(self) -> int:
        return ((_S_BIT if self.synchronized else 0) | (_Z_BIT if self.ptp else 0)
                | self.scale << 8 | self.multiplier)

    @classmethod
    def decode(cls, value: int) -> ErrorEstimate:
        """Raises MalformedPacket for a zero multiplier, which RFC 4656 forbids."""
        if not value & 0xFF:
            raise MalformedPacket("error estimate with a zero multiplier (RFC 4656 §4.1.2)")
        return cls(bool(value & _S_BIT), (value >> 8) & 0x3F, value & 0xFF, bool(value & _Z_BIT))

    @classmethod
    def for_error(cls, seconds: float, *, synchronized: bool) -> ErrorEstimate:
        """The smallest estimate that is at least ``seconds`` (rounded up, never down)."""
        if seconds < 0:
            raise ValueError(f"a clock error cannot be negative ({seconds} s)")
        units = seconds * 2.0**32
        for scale in range(_MAX_SCALE + 1):
            multiplier = max(1, -int(-units // 2.0**scale))
            if multiplier <= 255:
                return cls(synchronized, scale, multiplier)
        raise ValueError(f"a clock error of {seconds} s is beyond what the field can carry")

    def timestamp_ns(self, value: int) -> int:
        """CLOCK_REALTIME nanoseconds of a timestamp this estimate describes."""
        return _ns_from_ptp(value) if self.ptp else ns_from_ntp(value)


class _Timex(ctypes.Structure):
    # struct timex (linux/timex.h) up to the fields read here, then room for the rest:
    # the kernel writes the whole struct (208 bytes on 64-bit Linux).
    _fields_ = (
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("rest", ctypes.c_byte * 256),
    )


_TIME_ERROR: Final = 5  # adjtimex(2) return: the clock is not synchronised
_STA_UNSYNC: Final = 0x0040
# adjtimex's maxerror when nothing (ntpd, chrony, timesyncd) disciplines the clock: 16 s
_UNKNOWN_ERROR_US: Final = 16_000_000


def clock_error_estimate(*, synchronized: bool | None = None) -> ErrorEstimate:
    """This host's Error Estimate from the kernel's own bound (adjtimex(2) ``maxerror``).

    ``synchronized`` None takes the S bit from the kernel too (its clock is disciplined
    by an NTP/PTP daemon); False or True overrides it, e.g. False for a reflector whose
    operator does not vouch for its clock. Where adjtimex cannot be called the error is
    the kernel's "unknown" bound, 16 s, and the clock counts as unsynchronised.
    """
    timex = _Timex()
    try:
        state = ctypes.CDLL(None, use_errno=True).adjtimex(ctypes.byref(timex))
    except AttributeError:  # not Linux/glibc
        state = -1
    if state < 0:
        kernel_synced, error_us = False, _UNKNOWN_ERROR_US
    else:
        kernel_synced = state != _TIME_ERROR and not timex.status & _STA_UNSYNC
        error_us = max(1, min(timex.maxerror, _UNKNOWN_ERROR_US))
    synced = kernel_synced if synchronized is None else synchronized
    return ErrorEstimate.for_error(error_us / 1e6, synchronized=synced)


@dataclass(frozen=True, slots=True)
class TestPacket:
    """A session-sender's test packet (RFC 5357 §4.1.2); ``size`` counts padding too."""

    __test__ = False  # a protocol record, not a pytest test class

    seq: int
    timestamp_ns: int
    error_estimate: ErrorEstimate
    size: int = REFLECTION_HEADER

    def encode(self, padding: bytes = b"") -> bytes:
        """The datagram: header, then ``padding`` repeated or cut to fill ``size``.

        ``size`` below REFLECTION_HEADER raises ValueError: the reply could not be as
        small as the request (RFC 6038 §4.2), and our reflector drops such requests.
        """
        if self.size < REFLECTION_HEADER:
            raise ValueError(
                f"a test packet of {self.size} bytes is shorter than the {REFLECTION_HEADER}"
                "-byte reflector header; use a size of at least that")
        header = _SENDER.pack(self.seq, ntp_from_ns(self.timestamp_ns),
                              self.error_estimate.encode())
        fill = self.size - SENDER_HEADER
        if not padding:
            return header + bytes(fill)
        return header + (padding * (fill // len(padding) + 1))[:fill]

    @classmethod
    def decode(cls, data: bytes) -> TestPacket:
        if len(data) < SENDER_HEADER:
            raise MalformedPacket(f"{len(data)} bytes, shorter than a TWAMP test packet")
        seq, timestamp, error = _SENDER.unpack_from(data)
        estimate = ErrorEstimate.decode(error)
        return cls(seq, estimate.timestamp_ns(timestamp), estimate, len(data))


@dataclass(frozen=True, slots=True)
class Reflection:
    """A session-reflector's reply (RFC 5357 §4.2.1), timestamps in ns.

    ``sender_ttl`` is the TTL (IPv6: hop limit) the request arrived with; 255 sent
    means zero hops were crossed.
    """

    seq: int
    timestamp_ns: int
    error_estimate: ErrorEstimate
    receive_ns: int
    sender_seq: int
    sender_timestamp_ns: int
    sender_error_estimate: ErrorEstimate
    sender_ttl: int
    size: int = REFLECTION_HEADER

    def encode(self) -> bytes:
        """The datagram, zero-padded to ``size`` (at least REFLECTION_HEADER)."""
        if self.size < REFLECTION_HEADER:
            raise ValueError(f"a reflection is at least {REFLECTION_HEADER} bytes, not {self.size}")
        header = _REFLECTION.pack(
            self.seq, ntp_from_ns(self.timestamp_ns), self.error_estimate.encode(), 0,
            ntp_from_ns(self.receive_ns), self.sender_seq, ntp_from_ns(self.sender_timestamp_ns),
            self.sender_error_estimate.encode(), 0, self.sender_ttl)
        return header + bytes(self.size - REFLECTION_HEADER)

    @classmethod
    def decode(cls, data: bytes) -> Reflection:
        """Raises MalformedPacket when ``data`` is too short or an estimate is invalid.

        The MBZ fields are not checked: RFC 5357 §4.2.1 has receivers ignore them, and
        RFC 8972 gives STAMP meaning to some of those octets.
        """
        if len(data) < REFLECTION_HEADER:
            raise MalformedPacket(f"{len(data)} bytes, shorter than a TWAMP reflection")
        (seq, timestamp, error, _, receive, sender_seq, sender_timestamp, sender_error, _,
         ttl) = _REFLECTION.unpack_from(data)
        estimate = ErrorEstimate.decode(error)
        sender_estimate = ErrorEstimate.decode(sender_error)
        return cls(seq, estimate.timestamp_ns(timestamp), estimate, estimate.timestamp_ns(receive),
                   sender_seq, sender_estimate.timestamp_ns(sender_timestamp), sender_estimate,
                   ttl, len(data))


def reflect(request: bytes, *, seq: int, receive_ns: int, send_ns: int,
            error_estimate: int, ttl: int) -> bytes:
    """The reply to ``request``, of the same size (RFC 5357 §4.2.1, RFC 6038 §4.2).

    The sender's sequence number, timestamp and error estimate are echoed as they came,
    bit for bit; the padding is the request's, less the 27 octets the longer header
    takes (RFC 5357 §4.2.1 has the reflector truncate it so). ``error_estimate`` is the
    encoded field. Raises MalformedPacket for a request shorter than the reply header.
    """
    if len(request) < REFLECTION_HEADER:
        raise MalformedPacket(
            f"{len(request)} bytes, too short to answer without amplification")
    return b"".join((
        _REPLY_HEAD.pack(seq & 0xFFFFFFFF, ntp_from_ns(send_ns), error_estimate, 0,
                         ntp_from_ns(receive_ns)),
        request[:SENDER_HEADER],
        _REPLY_TAIL.pack(0, ttl),
        request[REFLECTION_HEADER:],
    ))


# Ancillary data of received datagrams. Linux values Python 3.11 does not export.
SO_TIMESTAMPNS: Final = 35  # asm-generic/socket.h; SCM_TIMESTAMPNS has the same value
IP_RECVTTL: Final = 12  # linux/in.h; the message it enables has type IP_TTL (2)
ANCILLARY_SIZE: Final = 256
_TIMESPEC: Final = Struct("@ll")  # tv_sec, tv_nsec (the 64-bit SO_TIMESTAMPNS_OLD layout)
_INT: Final = Struct("@i")


@dataclass(frozen=True, slots=True)
class Arrival:
    """What the kernel said about a datagram it received: when, with which TTL and TOS.

    ``received_ns`` is the kernel's timestamp, or the caller's clock when none came;
    ``ttl`` / ``tos`` are None when that option was not enabled on the socket.
    """

    received_ns: int
    ttl: int | None
    tos: int | None


def enable_arrival_data(sock: socket.socket, v6: bool) -> None:
    """Ask the kernel for the receive timestamp, TTL / hop limit and TOS / traffic class."""
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    if v6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVTCLASS, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)


def arrival(ancillary: list[tuple[int, int, bytes]], now_ns: int) -> Arrival:
    """Parse recvmsg ancillary data of a socket set up by ``enable_arrival_data``."""
    received_ns, ttl, tos = now_ns, None, None
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            received_ns = seconds * _NS + nanoseconds
        elif level == socket.IPPROTO_IP and kind == socket.IP_TTL and len(data) >= _INT.size:
            ttl = _INT.unpack_from(data)[0]
        elif level == socket.IPPROTO_IP and kind == socket.IP_TOS and data:
            tos = data[0]  # IP_RECVTOS delivers one byte, unlike the int IPv6 uses
        elif level == socket.IPPROTO_IPV6 and len(data) >= _INT.size:
            if kind == socket.IPV6_HOPLIMIT:
                ttl = _INT.unpack_from(data)[0]
            elif kind == socket.IPV6_TCLASS:
                tos = _INT.unpack_from(data)[0]
    return Arrival(received_ns, ttl, tos)


def tos_ancillary(tos: int, v6: bool) -> list[tuple[int, int, bytes]]:
    """The control message that sets one sendmsg's IPv4 TOS / IPv6 traffic class."""
    if not 0 <= tos <= 255:
        raise ValueError(f"a TOS byte is within 0..255, not {tos}")
    if v6:
        return [(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, _INT.pack(tos))]
    return [(socket.IPPROTO_IP, socket.IP_TOS, _INT.pack(tos))]
