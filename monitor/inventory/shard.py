"""Sharding: which sites an instance owns when several split one inventory.

A site belongs to shard ``jump(blake2b(id), count)``: a function of its id and the
shard count alone, so every instance, given the same inventory and count, agrees on
the split without talking to the others, and adding or removing a site moves no
other site. Jump consistent hash (Lamping and Veach, 2014, arXiv:1406.2294) rather
than ``hash % count``: growing from n to n + 1 instances moves only the ~1/(n + 1)
of the sites that the new instance takes, where ``%`` would move almost all of them.

Root cause across shards: an instance also probes the upstream chain (parent,
grandparent…) of its own sites when another instance owns it, so that its health
tracker knows whether a child's silence is the child's or its uplink's. Those
upstream sites are probed for that only: nothing about them is exported, published
or counted here (their owner does that), so every site appears once across instances.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Annotated, get_args

from pydantic import BaseModel, ConfigDict, model_validator

from monitor.inventory.fields import Tier, between

if TYPE_CHECKING:
    from monitor.inventory.schema import Config, Site

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


class Role(Enum):
    OWNED = "owned"  # probed, exported, published, counted here
    UPSTREAM = "upstream"  # another shard's, probed here for the root cause of ours


@dataclass(frozen=True, slots=True)
class Selection:
    """The sites one instance probes: its own, and the upstream chain of its own that
    other instances own (probed for root cause only)."""

    owned: frozenset[str]
    upstream: frozenset[str]

    def role(self, site_id: str) -> Role | None:
        """None: another shard's site that none of ours hangs from; not probed here."""
        if site_id in self.owned:
            return Role.OWNED
        return Role.UPSTREAM if site_id in self.upstream else None


def select(config: Config) -> Selection:
    """The sites ``config``'s shard owns and the other shards' sites upstream of them;
    without ``shard:`` every site is owned."""
    shard = config.shard
    if shard is None or shard.count == 1:
        return Selection(frozenset(site.id for site in config.sites), frozenset())
    owned = {site.id for site in config.sites if shard.owns(site.id)}
    upstream: set[str] = set()
    for site_id in owned:
        parent = config.site(site_id).parent
        # an owned or already collected parent's own chain is (or will be) walked from it
        while parent is not None and parent not in owned and parent not in upstream:
            upstream.add(parent)
            parent = config.site(parent).parent
    return Selection(frozenset(owned), frozenset(upstream))


def owned_sites(config: Config) -> list[Site]:
    """The sites ``config``'s shard owns, in inventory order."""
    if config.shard is None or config.shard.count == 1:
        return list(config.sites)
    return [site for site in config.sites if config.shard.owns(site.id)]


def describe(config: Config) -> str:
    """What ``config``'s shard takes of the inventory, for ``check-config`` and ``inventory``."""
    selection = select(config)
    tiers = Counter(config.site(site_id).tier for site_id in selection.owned)
    by_tier = ", ".join(f"{tier} {tiers[tier]}" for tier in get_args(Tier) if tiers[tier])
    return (f"shard {config.shard or '0/1'} owns {len(selection.owned)} of "
            f"{len(config.sites)} sites ({by_tier}) and probes {len(selection.upstream)} more "
            "upstream of them for root cause only")
