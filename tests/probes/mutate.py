"""Mutations of packets for the decoder fuzz test and the engine's injection test."""

from __future__ import annotations

import random
from collections.abc import Callable

from tests.probes.packets import with_checksum

Mutator = Callable[[random.Random, bytearray], None]

# Offsets each decoder reads: type and code, the echo id, the secret and tag, the IP
# header length, the quoted header's length and protocol, the quoted echo.
HOT_V4_RAW = (0, 9, 20, 21, 24, 25, 28, 29, 37, 48, 49, 52, 53, 56, 57)
HOT_ICMP = (0, 1, 4, 5, 8, 9, 12, 13, 14, 17, 28, 29, 32, 33, 36, 48, 49, 52, 53)


def cut(rng: random.Random, data: bytearray) -> None:
    del data[rng.randrange(len(data) + 1) :]


def flip_bits(rng: random.Random, data: bytearray) -> None:
    for _ in range(rng.randint(1, 8)):
        if data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)


def overwrite(rng: random.Random, data: bytearray) -> None:
    for _ in range(rng.randint(1, 4)):
        if data:
            data[rng.randrange(len(data))] = rng.choice((0, 1, 0x40, 0x45, 0x4F, 0x7F, 0xFF))


def stretch(rng: random.Random, data: bytearray) -> None:
    at = rng.randrange(len(data) + 1)
    if rng.random() < 0.5:
        data[at:at] = rng.randbytes(rng.randint(1, 48))
    else:
        del data[at : at + rng.randint(1, 48)]


def hot_offsets(offsets: tuple[int, ...]) -> Mutator:
    def mutate(rng: random.Random, data: bytearray) -> None:
        for _ in range(rng.randint(1, 3)):
            at = rng.choice(offsets)
            if at < len(data):
                data[at] = rng.randrange(256)

    return mutate


def mutants(
    rng: random.Random, seeds: list[bytes], count: int, icmp_at: Callable[[bytes], int]
) -> list[bytes]:
    """``count`` packets: the seeds, then mutants of them, and one in ten random bytes."""
    hot = HOT_V4_RAW if icmp_at is ihl else HOT_ICMP
    mutators: list[Mutator] = [cut, flip_bits, overwrite, stretch, hot_offsets(hot)]
    packets = list(seeds)
    while len(packets) < count:
        if rng.random() < 0.1:
            packets.append(rng.randbytes(rng.randint(0, 120)))
            continue
        data = bytearray(rng.choice(seeds))
        for mutate in rng.choices(mutators, k=rng.randint(1, 3)):
            mutate(rng, data)
        at = icmp_at(bytes(data))
        if rng.random() < 0.5 and len(data) >= at + 4:
            data[at:] = with_checksum(bytes(data[at:]))
        packets.append(bytes(data))
    return packets


def ihl(data: bytes) -> int:
    return (data[0] & 0x0F) * 4 if data else 0


def no_ip_header(data: bytes) -> int:
    return 0
