"""Packets as the engine's sockets would read them, built by hand for its decoders."""

from __future__ import annotations

import socket
import struct

from probes import Outcome
from probes.icmp_packet import (
    BAD_CHECKSUM,
    COOKIE,
    FOREIGN,
    MALFORMED,
    Decoder,
    EchoRequest,
    checksum,
)

IDENT = 0xBEEF
SECRET = bytes.fromhex("01234567")
TAG = 0x89ABCDEF
KINDS = {
    Outcome.REPLY, Outcome.UNREACHABLE, Outcome.TTL_EXCEEDED, FOREIGN, MALFORMED, COOKIE,
    BAD_CHECKSUM,
}  # fmt: skip


def ipv4_header(source: str, destination: str, payload_length: int, protocol: int = 1) -> bytes:
    return struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + payload_length,
        0,
        0,
        64,
        protocol,
        0,
        socket.inet_aton(source),
        socket.inet_aton(destination),
    )


def ipv6_header(source: str, destination: str, payload_length: int) -> bytes:
    return struct.pack(
        "!IHBB16s16s",
        6 << 28,
        payload_length,
        58,
        64,
        socket.inet_pton(socket.AF_INET6, source),
        socket.inet_pton(socket.AF_INET6, destination),
    )


def request(
    seq: int, *, v6: bool = False, ident: int = IDENT, size: int = 56, tag: int = TAG
) -> bytes:
    echo = EchoRequest(v6=v6, ident=ident, secret=SECRET, payload_size=size, with_checksum=not v6)
    return bytes(echo.build(seq, tag))


def with_checksum(icmp: bytes) -> bytes:
    icmp = icmp[:2] + b"\0\0" + icmp[4:]
    return icmp[:2] + checksum(icmp).to_bytes(2, "big") + icmp[4:]


def as_reply(packet: bytes, *, v6: bool = False) -> bytes:
    """The echo reply to ``packet``, with its checksum (the v6 one is never checked)."""
    return with_checksum(bytes([129 if v6 else 0]) + packet[1:])


def raw_v4(icmp: bytes, source: str = "192.0.2.7") -> bytes:
    return ipv4_header(source, "192.0.2.1", len(icmp)) + icmp


def error_v4(icmp_type: int, code: int, quoted_echo: bytes, destination: str) -> bytes:
    inner = ipv4_header("192.0.2.1", destination, len(quoted_echo)) + quoted_echo
    icmp = with_checksum(struct.pack("!BBHI", icmp_type, code, 0, 0) + inner)
    return raw_v4(icmp, source="198.51.100.2")


def error_v6(icmp_type: int, code: int, quoted_echo: bytes, destination: str) -> bytes:
    inner = ipv6_header("2001:db8::1", destination, len(quoted_echo)) + quoted_echo
    return struct.pack("!BBHI", icmp_type, code, 0, 0) + inner


V4_RAW = Decoder(v6=False, ident=IDENT, secret=SECRET, ip_header=True)
V4_DGRAM = Decoder(v6=False, ident=IDENT, secret=SECRET, ip_header=False)
V6 = Decoder(v6=True, ident=IDENT, secret=SECRET, ip_header=False)
