"""Pure tests of the TWAMP-light wire format (RFC 5357 §4.1.2, §4.2.1; RFC 4656 §4.1.2)."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probes.twamp import (
    REFLECTION_HEADER,
    SENDER_HEADER,
    SO_TIMESTAMPNS,
    ErrorEstimate,
    MalformedPacket,
    Reflection,
    TestPacket,
    arrival,
    clock_error_estimate,
    ns_from_ntp,
    ntp_from_ns,
    reflect,
    tos_ancillary,
)

UNSYNCED = ErrorEstimate(False, 0, 1)
SYNCED = ErrorEstimate(True, 1, 1)

# --- NTP timestamps -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("ns", "ntp"),
    [
        # 1970-01-01: 2,208,988,800 s after the NTP epoch (RFC 868's figure)
        (0, 0x83AA7E80_00000000),
        # half a second is the top bit of the fraction
        (500_000_000, 0x83AA7E80_80000000),
        # 2000-01-01T00:00:00Z, Unix 946,684,800
        (946_684_800 * 10**9, 0xBC17C200_00000000),
        # 2036-02-07T06:28:16Z, the end of NTP era 0: seconds wrap to 0
        (2_085_978_496 * 10**9, 0x00000000_00000000),
        # one nanosecond is 4.29 fraction units, rounded down
        (1, 0x83AA7E80_00000004),
    ],
)
def test_ntp_known_values(ns: int, ntp: int) -> None:
    assert ntp_from_ns(ns) == ntp
    assert ns_from_ntp(ntp) == ns


@given(st.integers(min_value=0, max_value=(2**32 + 2**31 - 2_208_988_800) * 10**9 - 1))
def test_ntp_round_trip_is_exact_to_the_nanosecond(ns: int) -> None:
    # 1970 until deep into era 1 (2104): the receiver must get our T1 back exactly
    assert ns_from_ntp(ntp_from_ns(ns)) == ns


# --- error estimate -----------------------------------------------------------------


def test_error_estimate_bits() -> None:
    # S is bit 15, Z bit 14, Scale bits 8-13, Multiplier bits 0-7 (RFC 4656 §4.1.2)
    assert ErrorEstimate(True, 1, 1).encode() == 0x8101
    assert ErrorEstimate(False, 63, 255, ptp=True).encode() == 0x7FFF
    assert ErrorEstimate.decode(0x8101) == ErrorEstimate(True, 1, 1)
    assert ErrorEstimate.decode(0x7FFF) == ErrorEstimate(False, 63, 255, ptp=True)
    assert ErrorEstimate(True, 1, 1).seconds == 2.0**-31
    assert ErrorEstimate(False, 32, 3).seconds == 3.0


def test_error_estimate_rounds_up_to_what_the_field_carries() -> None:
    # 1 ms = 4,294,967.3 units of 2^-32 s: 263 · 2^14 is too many for 8 bits, 132 · 2^15
    # is the first that fits, and it is not less than 1 ms
    estimate = ErrorEstimate.for_error(1e-3, synchronized=True)
    assert (estimate.scale, estimate.multiplier, estimate.synchronized) == (15, 132, True)
    assert 1e-3 <= estimate.seconds < 1.01e-3
    assert ErrorEstimate.for_error(0.0, synchronized=False) == ErrorEstimate(False, 0, 1)


def test_clock_error_estimate_from_the_kernel() -> None:
    # adjtimex's maxerror is in µs and at most 16 s; S follows the override when given
    for synchronized in (False, True):
        estimate = clock_error_estimate(synchronized=synchronized)
        assert estimate.synchronized is synchronized
        assert 1e-6 <= estimate.seconds < 16.1
    assert clock_error_estimate().multiplier >= 1


def test_zero_multiplier_is_malformed() -> None:
    with pytest.raises(MalformedPacket, match="zero multiplier"):
        ErrorEstimate.decode(0x8100)
    with pytest.raises(ValueError, match="multiplier"):
        ErrorEstimate(True, 0, 0)


# --- sender packet ------------------------------------------------------------------


def test_sender_packet_bytes() -> None:
    data = TestPacket(1, 500_000_000, SYNCED, size=REFLECTION_HEADER).encode()
    assert data == bytes.fromhex("00000001" "83aa7e80" "80000000" "8101") + bytes(27)


def test_sender_packet_padding_fills_the_size() -> None:
    data = TestPacket(7, 0, UNSYNCED, size=172).encode(b"\x01\x02\x03")
    assert len(data) == 172
    assert data[SENDER_HEADER:SENDER_HEADER + 6] == b"\x01\x02\x03\x01\x02\x03"
    assert TestPacket.decode(data) == TestPacket(7, 0, UNSYNCED, 172)


def test_sender_packet_must_leave_room_for_the_reply() -> None:
    with pytest.raises(ValueError, match="shorter than the 41-byte reflector header"):
        TestPacket(1, 0, UNSYNCED, size=40).encode()
    with pytest.raises(MalformedPacket):
        TestPacket.decode(bytes(13))


# --- reflection ---------------------------------------------------------------------


def test_reflection_field_offsets() -> None:
    reflection = Reflection(seq=0x01020304, timestamp_ns=3_000_000_000,
                            error_estimate=UNSYNCED, receive_ns=2_000_000_000,
                            sender_seq=0x0A0B0C0D, sender_timestamp_ns=1_000_000_000,
                            sender_error_estimate=SYNCED, sender_ttl=63, size=50)
    data = reflection.encode()
    assert len(data) == 50
    assert data[0:4] == bytes.fromhex("01020304")
    assert data[4:12] == struct.pack("!II", 0x83AA7E83, 0)  # T3, 3 s after 1970
    assert data[12:14] == bytes.fromhex("0001")
    assert data[14:16] == bytes(2)  # MBZ
    assert data[16:24] == struct.pack("!II", 0x83AA7E82, 0)  # T2
    assert data[24:28] == bytes.fromhex("0a0b0c0d")
    assert data[28:36] == struct.pack("!II", 0x83AA7E81, 0)  # T1
    assert data[36:38] == bytes.fromhex("8101")
    assert data[38:40] == bytes(2)  # MBZ
    assert data[40] == 63
    assert Reflection.decode(data) == reflection


def test_reflect_echoes_the_sender_fields_and_keeps_the_size() -> None:
    request = TestPacket(0xFFFFFFFF, 123_456_789_012, SYNCED, size=100).encode(b"pad!")
    reply = reflect(request, seq=5, receive_ns=2 * 10**9, send_ns=3 * 10**9,
                    error_estimate=UNSYNCED.encode(), ttl=255)
    assert len(reply) == len(request)
    # the sender's 14 header bytes come back bit for bit, at offset 24
    assert reply[24:38] == request[:SENDER_HEADER]
    # RFC 5357 §4.2.1: the padding is the sender's, less the 27 octets of longer header
    assert reply[REFLECTION_HEADER:] == request[REFLECTION_HEADER:]
    decoded = Reflection.decode(reply)
    assert (decoded.seq, decoded.timestamp_ns, decoded.receive_ns) == (5, 3 * 10**9, 2 * 10**9)
    assert (decoded.sender_seq, decoded.sender_timestamp_ns) == (0xFFFFFFFF, 123_456_789_012)
    assert decoded.sender_error_estimate == SYNCED
    assert decoded.error_estimate == UNSYNCED
    assert decoded.sender_ttl == 255


def test_reflect_refuses_what_it_could_only_answer_larger() -> None:
    with pytest.raises(MalformedPacket, match="too short"):
        reflect(bytes(40), seq=0, receive_ns=0, send_ns=0, error_estimate=1, ttl=64)


@given(st.binary(max_size=80))
def test_any_datagram_decodes_or_is_malformed(data: bytes) -> None:
    try:
        reflection = Reflection.decode(data)
    except MalformedPacket:
        # too short, or an error estimate with a zero multiplier (T3's or the sender's)
        assert len(data) < REFLECTION_HEADER or data[13] == 0 or data[37] == 0
    else:
        assert reflection.size == len(data)


def test_ptp_timestamps_follow_the_z_bit() -> None:
    # RFC 8762 §4.2.1: Z = 1 says the timestamp is PTP: seconds since 1970, nanoseconds
    ptp = ErrorEstimate(True, 0, 1, ptp=True)
    data = struct.pack("!IIIH", 9, 1_700_000_000, 250, ptp.encode()) + bytes(27)
    packet = TestPacket.decode(data)
    assert packet.timestamp_ns == 1_700_000_000 * 10**9 + 250
    assert packet.error_estimate.ptp


# --- ancillary data -----------------------------------------------------------------


def test_arrival_reads_timestamp_ttl_and_tos() -> None:
    v4 = [(socket.SOL_SOCKET, SO_TIMESTAMPNS, struct.pack("@ll", 5, 7)),
          (socket.IPPROTO_IP, socket.IP_TTL, struct.pack("@i", 57)),
          (socket.IPPROTO_IP, socket.IP_TOS, b"\xb8")]
    came = arrival(v4, now_ns=1)
    assert (came.received_ns, came.ttl, came.tos) == (5_000_000_007, 57, 0xB8)
    v6 = [(socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT, struct.pack("@i", 255)),
          (socket.IPPROTO_IPV6, socket.IPV6_TCLASS, struct.pack("@i", 0x88))]
    came = arrival(v6, now_ns=42)
    assert (came.received_ns, came.ttl, came.tos) == (42, 255, 0x88)


def test_tos_ancillary() -> None:
    assert tos_ancillary(0xB8, v6=False) == [
        (socket.IPPROTO_IP, socket.IP_TOS, struct.pack("@i", 0xB8))]
    assert tos_ancillary(0xB8, v6=True) == [
        (socket.IPPROTO_IPV6, socket.IPV6_TCLASS, struct.pack("@i", 0xB8))]
    with pytest.raises(ValueError, match=r"0\.\.255"):
        tos_ancillary(256, v6=False)
