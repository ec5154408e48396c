"""Which sites one instance probes when several split an inventory (``shard:``).

Root cause across shards: an instance also probes the upstream chain (parent,
grandparent…) of its own sites when another instance owns it, so that its health
tracker knows whether a child's silence is the child's or its uplink's. Those
upstream sites are probed for that only: nothing about them is exported, published
or counted here (their owner does that), so every site appears once across instances.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import get_args

from monitor.inventory.fields import Tier
from monitor.inventory.schema import Config, Site


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
