"""Checks across sites: duplicate ids and addresses, and parents that name no site or loop."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from monitor.inventory.fields import address_key
from monitor.inventory.problems import Loc, did_you_mean, show

# a problem's place in the document, and what to say about it
Found = tuple[Loc, str]


def link_problems(
    sites: Sequence[Mapping[str, object]], where: Callable[[int], str]
) -> list[Found]:
    """Problems between ``sites``; ``where(i)`` names site i in a message.

    Works on raw mappings as well as on validated sites, looking only at values that are
    text, so that the loader can report these next to the problems of single fields.
    """

    def text(site: Mapping[str, object], key: str) -> str | None:
        value = site.get(key)
        return value if isinstance(value, str) else None

    found: list[Found] = []
    index: dict[str, int] = {}
    addresses: dict[str, int] = {}
    for i, site in enumerate(sites):
        site_id, address = text(site, "id"), text(site, "address")
        for field, value, seen in (("id", site_id, index), ("address", address, addresses)):
            if value is None:
                continue
            key = value if field == "id" else address_key(value)
            if key in seen:
                message = f"{field} {show(value)} is already used by {where(seen[key])}"
                found.append((("sites", i, field), f"{message}; give every site its own {field}"))
            else:
                seen[key] = i
    for i, site in enumerate(sites):
        for field in ("parent", "district"):
            target = text(site, field)
            if target is not None and target not in index:
                hint = did_you_mean(target, index)
                message = f"{field} {show(target)} is not the id of any site{hint}; use a listed id"
                found.append((("sites", i, field), message))
    parents = {site_id: text(sites[i], "parent") for site_id, i in index.items()}
    for loop in _loops(parents):
        turn = loop.index(min(loop, key=index.__getitem__))
        chain = " -> ".join(map(show, [*loop[turn:], *loop[:turn], loop[turn]]))
        message = f"the parents go round in a loop: {chain}; give one of these sites another parent"
        found.append((("sites", index[loop[turn]], "parent"), message))
    return found


def _loops(parents: Mapping[str, str | None]) -> list[list[str]]:
    """Each cycle in the child -> parent graph once, in the order the chain runs."""
    loops: list[list[str]] = []
    done: set[str] = set()
    for start in parents:
        chain: list[str] = []
        node: str | None = start
        while node is not None and node in parents and node not in done and node not in chain:
            chain.append(node)
            node = parents[node]
        if node is not None and node in chain:
            loops.append(chain[chain.index(node) :])
        done.update(chain)
    return loops
