"""The reply decoders against 120,000 random and mutated packets: none raises, each is named.

The packets come from a seeded generator, so every run checks the same ones and a
failure names the packet that caused it; ``VCMON_FUZZ_SEED=N`` explores others. The
seeds are the shapes a raw or datagram ICMP socket can read: replies (IPv4 with and
without IP options), ICMP errors quoting our probes (in full, cut to 8 bytes, cut
shorter), errors quoting foreign UDP, foreign echo ids, echo replies, IPv6 packets
with extension headers, other ICMP types. Each is then cut, bit-flipped, overwritten
at the offsets the decoder reads, stretched or shrunk, and half the time given a
valid checksum again so the mutants get past that check to the deeper ones. Plus
plain random bytes.

Every result is checked against an oracle that reads the bytes itself: a packet is
a reply only if its type, id and secret are ours (and, on raw IPv4, its checksum
holds), an error only if it names a quoted destination of the right family.
"""

from __future__ import annotations

import os
import random
import socket
import struct
from collections import Counter

from probes import Outcome
from probes.icmp_packet import BAD_CHECKSUM, Decoder, checksum_ok
from tests.probes.mutate import ihl, mutants, no_ip_header
from tests.probes.packets import (
    IDENT,
    KINDS,
    SECRET,
    V4_DGRAM,
    V4_RAW,
    V6,
    as_reply,
    error_v4,
    error_v6,
    ipv4_header,
    ipv6_header,
    raw_v4,
    request,
    with_checksum,
)

SEED = int(os.environ.get("VCMON_FUZZ_SEED", "11"))
PER_DECODER = 40_000
ERRORS = {Outcome.UNREACHABLE, Outcome.TTL_EXCEEDED}

def v4_error_quoting(quoted: bytes, *, icmp_type: int = 3, code: int = 1) -> bytes:
    """An ICMPv4 error (no outer IP header) quoting ``quoted``, a whole IP packet's start."""
    return with_checksum(struct.pack("!BBHI", icmp_type, code, 0, 0) + quoted)


def v4_quote(echo: bytes, *, options: int = 0, protocol: int = 1) -> bytes:
    header = bytearray(ipv4_header("192.0.2.1", "203.0.113.9", len(echo) + options, protocol))
    header[0] = 0x45 + options // 4
    return bytes(header) + bytes([1]) * options + echo


def icmp_v4_seeds(rng: random.Random) -> list[bytes]:
    """ICMPv4 messages as a datagram socket reads them (a raw one adds the IP header)."""
    ours = request(rng.randrange(0x10000), tag=rng.randrange(1 << 32))
    udp = struct.pack("!HHHH", 40000, 33434, 8, 0)
    forged = bytearray(ours)
    forged[8] ^= 0xFF
    seeds = [
        as_reply(ours),
        as_reply(request(7, ident=IDENT ^ 1)),
        as_reply(request(7, size=8)),
        with_checksum(bytes(ours)),  # an echo request: someone pinging this host
        with_checksum(bytes([5, 1]) + ours[2:]),  # a redirect
        with_checksum(bytes([12, 0]) + ours[2:]),  # a parameter problem
        with_checksum(bytes([13, 0]) + ours[2:]),  # a timestamp request
    ]
    for icmp_type, code in ((3, rng.randrange(16)), (3, 99), (11, rng.randrange(2))):
        seeds += [
            v4_error_quoting(v4_quote(ours), icmp_type=icmp_type, code=code),
            v4_error_quoting(v4_quote(ours[:8]), icmp_type=icmp_type, code=code),
            v4_error_quoting(v4_quote(ours[:5]), icmp_type=icmp_type, code=code),
            v4_error_quoting(v4_quote(ours, options=rng.choice((4, 8, 40))), icmp_type=icmp_type),
            v4_error_quoting(v4_quote(udp, protocol=17), icmp_type=icmp_type, code=code),
            v4_error_quoting(v4_quote(request(1, ident=IDENT ^ 1)[:8]), icmp_type=icmp_type),
            v4_error_quoting(v4_quote(as_reply(ours)), icmp_type=icmp_type),
            v4_error_quoting(v4_quote(bytes(forged)), icmp_type=icmp_type),
        ]
    return seeds


def raw_v4_seeds(rng: random.Random) -> list[bytes]:
    seeds = [raw_v4(icmp) for icmp in icmp_v4_seeds(rng)]
    reply = as_reply(request(rng.randrange(0x10000)))
    for options in (4, 8, 40):  # IHL 6, 7 and 15
        header = bytearray(ipv4_header("192.0.2.7", "192.0.2.1", len(reply) + options))
        header[0] = 0x45 + options // 4
        seeds.append(bytes(header) + bytes([1]) * options + reply)
    seeds.append(error_v4(3, 1, request(9), "203.0.113.9"))
    return seeds


def v6_seeds(rng: random.Random) -> list[bytes]:
    ours = request(rng.randrange(0x10000), v6=True, tag=rng.randrange(1 << 32))
    forged = bytearray(ours)
    forged[9] ^= 0x01
    udp = struct.pack("!HHHH", 40000, 33434, 8, 0)
    udp_quote = bytearray(ipv6_header("2001:db8::1", "2001:db8::9", len(udp)) + udp)
    udp_quote[6] = 17
    # a hop-by-hop options header (next header 0) before our echo: we never send one
    extension = bytearray(ipv6_header("2001:db8::1", "2001:db8::9", 8 + len(ours)))
    extension[6] = 0
    extension += bytes([58, 0, 1, 4, 0, 0, 0, 0]) + ours
    seeds = [
        as_reply(ours, v6=True),
        as_reply(request(3, v6=True, ident=IDENT ^ 1), v6=True),
        bytes(ours),  # an echo request
        bytes([2, 0]) + ours[2:],  # packet too big
        bytes([4, 1]) + ours[2:],  # a parameter problem
        bytes([135, 0]) + ours[2:],  # neighbour solicitation
    ]
    for icmp_type, code in ((1, rng.randrange(8)), (1, 200), (3, rng.randrange(2))):
        seeds += [
            error_v6(icmp_type, code, ours, "2001:db8::9"),
            error_v6(icmp_type, code, ours[:8], "2001:db8::9"),
            error_v6(icmp_type, code, ours[:6], "2001:db8::9"),
            error_v6(icmp_type, code, bytes(forged), "2001:db8::9"),
            error_v6(icmp_type, code, as_reply(ours, v6=True), "2001:db8::9"),
            struct.pack("!BBHI", icmp_type, code, 0, 0) + bytes(udp_quote),
            struct.pack("!BBHI", icmp_type, code, 0, 0) + bytes(extension),
        ]
    return seeds


# --- the oracle -----------------------------------------------------------------


def check(decode: Decoder, data: bytes, v6: bool, verifies_checksum: bool) -> str:
    """Decode ``data``, check the verdict against the bytes; return the verdict's kind."""
    try:
        kind, seq, tag, quoted, detail = decode(data)
    except Exception as exc:
        raise AssertionError(f"the decoder raised {exc!r} on {data.hex()}") from exc
    where = f"{kind} for {data.hex()}"
    assert kind in KINDS, where
    assert 0 <= seq <= 0xFFFF and 0 <= tag <= 0xFFFFFFFF, where
    icmp = data[ihl(data) :] if verifies_checksum else data
    if kind is Outcome.REPLY:
        assert icmp[0] == (129 if v6 else 0), where
        assert struct.unpack_from("!HH", icmp, 4) == (IDENT, seq), where
        assert icmp[8:12] == SECRET and int.from_bytes(icmp[12:16], "big") == tag, where
        assert not verifies_checksum or checksum_ok(icmp), where
        assert (quoted, detail) == ("", ""), where
    elif kind in ERRORS:
        assert icmp[0] in ((1, 3) if v6 else (3, 11)), where
        socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, quoted)
        assert detail.endswith(f"type {icmp[0]} code {icmp[1]})"), where
        assert not verifies_checksum or checksum_ok(icmp), where
    else:
        assert (seq, tag, quoted, detail) == (0, 0, "", ""), where
    return kind


def test_decoders_survive_and_name_every_packet() -> None:
    rng = random.Random(SEED)
    decoders = [
        (V4_RAW, False, True, raw_v4_seeds(rng), ihl),
        (V4_DGRAM, False, False, icmp_v4_seeds(rng), no_ip_header),
        (V6, True, False, v6_seeds(rng), no_ip_header),
    ]
    total = 0
    for decode, v6, verifies_checksum, seeds, icmp_at in decoders:
        kinds: Counter[str] = Counter()
        for data in mutants(rng, seeds, PER_DECODER, icmp_at):
            kinds[check(decode, data, v6, verifies_checksum)] += 1
        total += kinds.total()
        # The fuzzer reached every verdict this decoder can give, each many times.
        expected = KINDS if verifies_checksum else KINDS - {BAD_CHECKSUM}
        assert set(kinds) == expected, kinds
        assert min(kinds.values()) >= 50, kinds
    assert total >= 100_000
