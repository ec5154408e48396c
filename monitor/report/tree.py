"""The inventory as a tree, with counts: what ``vcmon inventory`` prints."""

from __future__ import annotations

from collections.abc import Iterable
from typing import get_args

from monitor.inventory import Config, Provision, Site, Tier


def tier_counts(config: Config) -> dict[str, int]:
    """Sites per tier, every tier listed, from the province down."""
    return _count(get_args(Tier), (site.tier for site in config.sites))


def provision_counts(config: Config) -> dict[str, int]:
    """Sites per provision: telecom-provisioned (vnpt) and contracted."""
    return _count(get_args(Provision), (site.provision for site in config.sites))


def render_tree(config: Config) -> str:
    """Each site under its parent, one line each, then the counts; no trailing newline."""
    lines: list[str] = []
    # a stack, not recursion: a chain of parents may be deeper than Python's recursion limit
    stack = [(root, "", "") for root in reversed(config.sites) if root.parent is None]
    while stack:
        site, lead, indent = stack.pop()
        lines.append(lead + _line(site))
        children = config.children(site.id)
        for i, child in reversed(list(enumerate(children))):
            branch, rest = ("└── ", "    ") if i == len(children) - 1 else ("├── ", "│   ")
            stack.append((child, indent + branch, indent + rest))
    lines += [
        "",
        "By tier: " + _listing(tier_counts(config)),
        "By provision: " + _listing(provision_counts(config)),
        f"Total: {len(config.sites)} sites",
    ]
    return "\n".join(lines)


def _line(site: Site) -> str:
    return f"{site.name} ({site.id}) {site.address} [{site.tier}, {site.provision}]"


def _count(keys: tuple[str, ...], values: Iterable[str]) -> dict[str, int]:
    counts = dict.fromkeys(keys, 0)
    for value in values:
        counts[value] += 1
    return counts


def _listing(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {count}" for key, count in counts.items())
