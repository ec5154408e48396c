"""Pure tests of ICMP packet building and classification, and of ancillary-data parsing."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probes import Outcome
from probes.icmp_packet import (
    BAD_CHECKSUM,
    COOKIE,
    FOREIGN,
    MALFORMED,
    Decoder,
    Parsed,
    checksum,
    checksum_ok,
    describe_error,
)
from probes.icmp_socket import (
    IP_RECVERR,
    IPV6_RECVERR,
    SO_EE_ORIGIN_ICMP,
    SO_TIMESTAMPNS,
    extended_error,
    receive_time_ns,
)
from tests.probes.packets import (
    IDENT,
    KINDS,
    SECRET,
    TAG,
    V4_DGRAM,
    V4_RAW,
    V6,
    as_reply,
    error_v4,
    error_v6,
    ipv4_header,
    raw_v4,
    request,
    with_checksum,
)

# --- checksum ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (folded)
        (bytes.fromhex("0001f203f4f5f6f7"), 0xDDF2 ^ 0xFFFF),
        # odd length: the last byte is padded with zero, 0x2dcf9 folds to 0xdcfb
        (bytes.fromhex("0001f203f4f5f6"), 0xDCFB ^ 0xFFFF),
        # the IPv4 header example of Wikipedia's "Internet checksum" article
        (bytes.fromhex("450000730000400040110000c0a80001c0a800c7"), 0xB861),
        (b"", 0xFFFF),
    ],
)
def test_checksum_known_vectors(data: bytes, expected: int) -> None:
    assert checksum(data) == expected


@given(
    seq=st.integers(0, 0xFFFF),
    ident=st.integers(0, 0xFFFF),
    size=st.integers(8, 300),
    tag=st.integers(0, 0xFFFFFFFF),
)
def test_precomputed_checksum_matches_the_full_computation(
    seq: int, ident: int, size: int, tag: int
) -> None:
    packet = request(seq, ident=ident, size=size, tag=tag)
    assert len(packet) == 8 + size
    assert int.from_bytes(packet[2:4], "big") == checksum(packet[:2] + b"\0\0" + packet[4:])
    assert checksum(packet) == 0  # what a receiver verifies
    assert checksum_ok(packet)


@given(st.binary(max_size=300))
def test_checksum_ok_agrees_with_the_rfc_1071_sum(data: bytes) -> None:
    assert checksum_ok(data) == (checksum(data) == 0 and any(data))
    assert checksum_ok(with_checksum(data.ljust(4, b"\1")))


def test_request_layout() -> None:
    packet = request(0x1234, size=20, tag=0x0A0B0C0D)
    assert packet[:2] == bytes([8, 0])
    assert struct.unpack_from("!HH", packet, 4) == (IDENT, 0x1234)
    assert packet[8:16] == SECRET + bytes([10, 11, 12, 13])
    assert packet[16:] == bytes(12)
    v6 = request(7, v6=True)
    assert v6[0] == 128
    assert v6[2:4] == b"\0\0"  # the kernel fills ICMPv6 checksums


@pytest.mark.parametrize("size", [0, 7, 65508])
def test_payload_size_out_of_range(size: int) -> None:
    with pytest.raises(ValueError, match="payload_size"):
        request(0, size=size)


# --- replies ----------------------------------------------------------------


@given(seq=st.integers(0, 0xFFFF))
def test_reply_round_trip(seq: int) -> None:
    reply = as_reply(request(seq))
    assert V4_RAW(raw_v4(reply)) == (Outcome.REPLY, seq, TAG, "", "")
    assert V4_DGRAM(reply) == (Outcome.REPLY, seq, TAG, "", "")
    assert V6(as_reply(request(seq, v6=True), v6=True)) == (Outcome.REPLY, seq, TAG, "", "")


def test_raw_v4_skips_ip_options() -> None:
    reply = as_reply(request(5))
    header = bytearray(ipv4_header("192.0.2.7", "192.0.2.1", len(reply) + 8))
    header[0] = 0x47  # IHL 7: 8 bytes of options
    assert V4_RAW(bytes(header) + bytes(8) + reply)[:2] == (Outcome.REPLY, 5)


def test_other_id_is_foreign() -> None:
    assert V4_DGRAM(as_reply(request(1, ident=IDENT + 1)))[0] == FOREIGN
    assert V6(as_reply(request(1, v6=True, ident=1), v6=True))[0] == FOREIGN


def test_wrong_secret() -> None:
    reply = bytearray(as_reply(request(3)))
    reply[8] ^= 0xFF
    assert V4_DGRAM(bytes(reply))[0] == COOKIE
    assert V4_RAW(raw_v4(with_checksum(bytes(reply))))[0] == COOKIE


def test_bad_checksum_only_where_the_kernel_does_not_check() -> None:
    reply = bytearray(as_reply(request(3)))
    reply[20] ^= 0x01  # in the padding: only the checksum can tell
    assert V4_RAW(raw_v4(bytes(reply)))[0] == BAD_CHECKSUM
    assert V4_DGRAM(bytes(reply))[:3] == (Outcome.REPLY, 3, TAG)
    error = bytearray(error_v4(3, 1, request(77), "203.0.113.9"))
    error[-1] ^= 0x01
    assert V4_RAW(bytes(error))[0] == BAD_CHECKSUM
    # foreign packets are not checked: they are foreign whatever their checksum
    foreign = bytearray(as_reply(request(3, ident=IDENT ^ 1)))
    foreign[20] ^= 0x01
    assert V4_RAW(raw_v4(bytes(foreign)))[0] == FOREIGN


@pytest.mark.parametrize("icmp_type", [8, 5, 12, 13, 255])
def test_other_types_are_foreign(icmp_type: int) -> None:
    packet = bytes([icmp_type]) + request(1)[1:]
    assert V4_DGRAM(packet)[0] == FOREIGN


def test_requests_seen_by_the_v6_socket_are_foreign() -> None:
    assert V6(request(1, v6=True))[0] == FOREIGN


# --- ICMP errors quoting our probes -------------------------------------------


# RFC 792 routers quote the IP header and 8 bytes (no cookie); RFC 1812 and
# RFC 4443 ones quote more. Both name the destination and our id and seq.
@pytest.mark.parametrize(
    ("decode", "packet", "expected"),
    [
        (
            V4_RAW,
            error_v4(3, 1, request(77), "203.0.113.9"),
            (Outcome.UNREACHABLE, 77, 0, "203.0.113.9", "host unreachable (ICMP type 3 code 1)"),
        ),
        (
            V4_RAW,
            error_v4(11, 0, request(65535)[:8], "203.0.113.200"),
            (
                Outcome.TTL_EXCEEDED,
                65535,
                0,
                "203.0.113.200",
                "TTL exceeded in transit (ICMP type 11 code 0)",
            ),
        ),
        (
            V6,
            error_v6(1, 3, request(9, v6=True), "2001:db8::9"),
            (
                Outcome.UNREACHABLE,
                9,
                0,
                "2001:db8::9",
                "address unreachable (ICMPv6 type 1 code 3)",
            ),
        ),
        (
            V6,
            error_v6(3, 0, request(10, v6=True)[:8], "2001:db8::a"),
            (
                Outcome.TTL_EXCEEDED,
                10,
                0,
                "2001:db8::a",
                "hop limit exceeded in transit (ICMPv6 type 3 code 0)",
            ),
        ),
    ],
)
def test_errors_name_the_quoted_probe(decode: Decoder, packet: bytes, expected: Parsed) -> None:
    assert decode(packet) == expected


def test_errors_about_other_packets_are_foreign() -> None:
    udp = struct.pack("!HHHH", 40000, 33434, 8, 0)
    inner = ipv4_header("192.0.2.1", "203.0.113.9", len(udp), protocol=17) + udp
    assert V4_RAW(raw_v4(struct.pack("!BBHI", 3, 3, 0, 0) + inner))[0] == FOREIGN
    assert V4_RAW(error_v4(3, 1, request(1, ident=IDENT ^ 1), "203.0.113.9"))[0] == FOREIGN
    # an error quoting an echo *reply* (someone else answered a ping) is not ours
    assert V4_RAW(error_v4(3, 1, as_reply(request(1)), "203.0.113.9"))[0] == FOREIGN


def test_unknown_code_is_still_described() -> None:
    assert describe_error(False, 3, 99) == (
        Outcome.UNREACHABLE,
        "unknown code (ICMP type 3 code 99)",
    )
    assert describe_error(True, 128, 0) is None


# --- truncated and garbage input ----------------------------------------------

# (decoder, a packet it accepts, the length below which every prefix is malformed)
COMPLETE_PACKETS = [
    (V4_RAW, raw_v4(as_reply(request(1))), 20 + 16),
    (V4_DGRAM, as_reply(request(1)), 16),
    (V6, as_reply(request(1, v6=True), v6=True), 16),
    (V4_RAW, error_v4(3, 1, request(1)[:8], "203.0.113.9"), 20 + 8 + 20 + 8),
    (V6, error_v6(1, 0, request(1, v6=True)[:8], "2001:db8::9"), 8 + 40 + 8),
]


@pytest.mark.parametrize(("decode", "packet", "complete"), COMPLETE_PACKETS)
def test_every_truncation_is_malformed(decode: Decoder, packet: bytes, complete: int) -> None:
    assert decode(packet)[0] in {Outcome.REPLY, Outcome.UNREACHABLE}
    assert decode(packet[:complete])[0] == decode(packet)[0]
    for length in range(complete):
        assert decode(packet[:length]) == (MALFORMED, 0, 0, "", ""), length


def test_bad_ip_header_length_is_malformed() -> None:
    packet = bytearray(raw_v4(as_reply(request(1))))
    packet[0] = 0x44  # IHL 4 words: shorter than any IPv4 header
    assert V4_RAW(bytes(packet))[0] == MALFORMED
    quoted = bytearray(error_v4(3, 1, request(1)[:8], "203.0.113.9"))
    quoted[28] = 0x41
    assert V4_RAW(bytes(quoted))[0] == MALFORMED


@given(st.binary(max_size=200))
def test_garbage_never_raises(data: bytes) -> None:
    for decode in (V4_RAW, V4_DGRAM, V6):
        kind, seq, _, _, _ = decode(data)
        assert kind in KINDS
        assert 0 <= seq <= 0xFFFF
        assert decode.quoted_probe(data) in {FOREIGN, COOKIE} | set(range(0x10000))


# --- ancillary data -----------------------------------------------------------


def test_receive_time_from_timestampns() -> None:
    timespec = struct.pack("@ll", 1_700_000_000, 123_456_789)
    ancillary = [(socket.SOL_SOCKET, SO_TIMESTAMPNS, timespec)]
    assert receive_time_ns(ancillary, 5) == 1_700_000_000_123_456_789
    assert receive_time_ns([], 5) == 5
    assert receive_time_ns([(socket.SOL_SOCKET, SO_TIMESTAMPNS, b"\0")], 5) == 5


def test_extended_error_names_the_router() -> None:
    err = struct.pack("=IBBBBII", 113, SO_EE_ORIGIN_ICMP, 3, 1, 0, 0, 0)
    offender = struct.pack("=HH4s8x", socket.AF_INET, 0, socket.inet_aton("198.51.100.2"))
    ancillary = [(socket.IPPROTO_IP, IP_RECVERR, err + offender)]
    assert extended_error(ancillary, v6=False) == (SO_EE_ORIGIN_ICMP, 3, 1, "198.51.100.2")
    offender6 = struct.pack(
        "=HHI16sI", socket.AF_INET6, 0, 0, socket.inet_pton(socket.AF_INET6, "2001:db8::1"), 0
    )
    ancillary6 = [(socket.IPPROTO_IPV6, IPV6_RECVERR, err + offender6)]
    assert extended_error(ancillary6, v6=True) == (SO_EE_ORIGIN_ICMP, 3, 1, "2001:db8::1")
    assert extended_error([(socket.IPPROTO_IP, IP_RECVERR, err)], v6=False) == (
        SO_EE_ORIGIN_ICMP,
        3,
        1,
        "unknown",
    )
    assert extended_error([(socket.IPPROTO_IP, IP_RECVERR, err[:5])], v6=False) is None
    assert extended_error(ancillary6, v6=False) is None
