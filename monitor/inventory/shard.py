"""Sharding: which sites an instance owns when several split one inventory.

A site belongs to shard ``jump(blake2b(id), count)``: a function of its id and the
shard count alone, so every instance, given the same inventory and count, agrees on
the split without talking to the others, and adding or removing a site moves no
other site. Jump consistent hash (Lamping and Veach, 2014, arXiv:1406.2294) rather
than ``hash % count``: growing from n to n + 1 instances moves only the ~1/(n + 1)
of the sites that the new instance takes, where ``%`` would move almost all of them.

Which sites of an inventory an instance owns, and which it probes upstream of them
for root cause: ``monitor.inventory.selection``.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from pydantic import BaseModel, ConfigDict, model_validator

from monitor.inventory.fields import between

# Past a few hundred instances the inventory itself (parsed by every instance) is
# the cost to cut, not the probing.
MAX_SHARDS = 1024

_MASK64 = (1 << 64) - 1


class Shard(BaseModel):
    """``shard: {index: i, count: n}``: this instance is number i of n (0 ≤ i < n)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    index: Annotated[int, between(0, MAX_SHARDS, what="shard index")]
    count: Annotated[int, between(1, MAX_SHARDS, what="shard count")]

    @model_validator(mode="after")
    def _index_below_count(self) -> Shard:
        if self.index >= self.count:
            raise ValueError(
                f"index {self.index} is not below count {self.count}; the {self.count} "
                f"instances are numbered 0 to {self.count - 1}")
        return self

    def owns(self, site_id: str) -> bool:
        return shard_of(site_id, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def site_key(site_id: str) -> int:
    """64 bits of BLAKE2b of the id: the same on every machine and Python version
    (``hash()`` of a str is salted per process)."""
    return int.from_bytes(hashlib.blake2b(site_id.encode(), digest_size=8).digest(), "big")


def jump(key: int, buckets: int) -> int:
    """Jump consistent hash: the bucket in 0..buckets-1 for a 64-bit ``key``."""
    bucket, candidate = -1, 0
    while candidate < buckets:
        bucket = candidate
        key = (key * 2862933555777941757 + 1) & _MASK64
        candidate = int((bucket + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return bucket


def shard_of(site_id: str, count: int) -> int:
    """The shard (0..count-1) that owns ``site_id``."""
    return jump(site_key(site_id), count)


def parse_shard(text: str) -> Shard:
    """``"1/3"`` → ``Shard(index=1, count=3)``; ValueError with a sentence otherwise."""
    index, slash, count = text.partition("/")
    if not (slash and index.strip().isdigit() and count.strip().isdigit()):
        raise ValueError(f"{text!r} is not a shard; write INDEX/COUNT, e.g. 0/3 for the "
                         "first of three instances")
    try:
        return Shard(index=int(index), count=int(count))
    except ValueError as exc:  # pydantic's ValidationError, reworded
        errors = getattr(exc, "errors", None)
        message = errors()[0]["msg"].removeprefix("Value error, ") if errors else str(exc)
        raise ValueError(f"shard {text}: {message}") from None
