"""Where each site's path breaks: its last trace, its baseline, a path change, and the
links that several degraded sites share.

The diagnosis runner (``monitor.probing.diagnosis``) hands every finished trace to
``PathBook.record``. A clean trace taken for the baseline, or any clean trace of a site
without one, becomes the site's baseline: its normal path. A later trace that takes
another router at some hop (``probes.trace.divergence``) marks the path as changed at
that hop, since the first trace that showed it; a trace along the baseline again
clears the mark, and a changed path still in use after ``baseline_interval`` becomes
the new baseline.

Shared cause: degraded or down sites whose last trace, taken since they went bad, names
the same first bad hop address are grouped; one sentence then explains them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from probes.trace import Hop, PathSnapshot, divergence


@dataclass(frozen=True, slots=True)
class PathChange:
    """The path left its baseline at hop ``ttl`` (now through ``address``) at ``since``."""

    ttl: int
    address: str | None
    was: str | None
    since: float


@dataclass(frozen=True, slots=True)
class SharedCause:
    """Degraded sites whose traces all first go bad at ``address``."""

    address: str
    sites: tuple[str, ...]

    @property
    def text(self) -> str:
        return f"the link at hop {self.address} explains {len(self.sites)} degraded sites"


@dataclass(slots=True)
class SitePath:
    """One site's traces: the last one (why it was taken), the baseline, a change."""

    last: PathSnapshot | None = None
    reason: str = ""
    baseline: PathSnapshot | None = None
    change: PathChange | None = None


def _clean(snapshot: PathSnapshot) -> bool:
    return snapshot.reached and snapshot.bad_hop is None and snapshot.error is None


def _address_at(hops: tuple[Hop, ...], ttl: int) -> str | None:
    return next((hop.address for hop in hops if hop.ttl == ttl), None)


class PathBook:
    """Every site's ``SitePath``; written on the event loop, read by the sinks."""

    def __init__(self) -> None:
        self.sites: dict[str, SitePath] = {}
        self.baseline_interval = 86400.0

    def reconfigure(self, site_ids: set[str], baseline_interval: float) -> None:
        """Forget the sites a reload removed."""
        self.sites = {k: v for k, v in self.sites.items() if k in site_ids}
        self.baseline_interval = baseline_interval

    def get(self, site_id: str) -> SitePath | None:
        return self.sites.get(site_id)

    def record(self, site_id: str, reason: str, snapshot: PathSnapshot) -> SitePath:
        """Take in one finished trace; returns the site's path state after it."""
        path = self.sites.setdefault(site_id, SitePath())
        path.last, path.reason = snapshot, reason
        if not snapshot.hops:
            return path  # the trace could not start: nothing to compare
        baseline = path.baseline
        if baseline is None:
            if _clean(snapshot):
                path.baseline = snapshot
            return path
        ttl = divergence(baseline.hops, snapshot.hops)
        if ttl is None:
            path.change = None
            if reason == "baseline" and _clean(snapshot):
                path.baseline = snapshot
            return path
        if path.change is None or path.change.ttl != ttl:
            path.change = PathChange(ttl, _address_at(snapshot.hops, ttl),
                                     _address_at(baseline.hops, ttl), snapshot.started_at)
        elif (_clean(snapshot)
              and snapshot.started_at - path.change.since >= self.baseline_interval):
            # the new route has lasted a whole baseline interval: it is the normal one now
            path.baseline, path.change = snapshot, None
        return path

    def shared_causes(self, bad_since: Mapping[str, float]) -> list[SharedCause]:
        """Groups of two or more bad sites (id -> since when) that share a first bad hop.

        A trace taken before the site went bad says nothing about why it is bad now.
        """
        groups: dict[str, list[str]] = {}
        for site_id, since in bad_since.items():
            path = self.sites.get(site_id)
            last = path.last if path is not None else None
            if last is None or last.bad_hop is None or last.bad_hop.address is None:
                continue
            if last.started_at + last.duration < since:
                continue
            groups.setdefault(last.bad_hop.address, []).append(site_id)
        return sorted((SharedCause(address, tuple(ids)) for address, ids in groups.items()
                       if len(ids) > 1), key=lambda cause: (-len(cause.sites), cause.address))


def clock(timestamp: float, zone: ZoneInfo) -> str:
    """HH:MM in the schedule's zone: how a technician says when."""
    return datetime.fromtimestamp(timestamp, zone).strftime("%H:%M")


def change_text(change: PathChange, zone: ZoneInfo) -> str:
    return f"path changed at hop {change.ttl} since {clock(change.since, zone)}"


def hop_record(hop: Hop) -> dict[str, Any]:
    return {"ttl": hop.ttl, "address": hop.address, "sent": hop.sent,
            "received": hop.received, "loss_ratio": hop.loss, "rtt_last": hop.last,
            "rtt_avg": hop.avg, "rtt_best": hop.best, "rtt_worst": hop.worst,
            "rtt_stddev": hop.stddev}


def path_record(path: SitePath | None, cause: SharedCause | None,
                zone: ZoneInfo) -> dict[str, Any] | None:
    """A site's ``path`` as the JSON API, MQTT and the reports show it; None before its
    first trace."""
    if path is None or path.last is None:
        return None
    last = path.last
    bad = last.bad_hop
    change = path.change
    return {
        "taken_at": datetime.fromtimestamp(last.started_at, zone).isoformat(timespec="seconds"),
        "taken_at_timestamp": last.started_at,
        "trigger": path.reason,
        "target": last.target,
        "reached": last.reached,
        "cycles": last.cycles,
        "packets": last.packets,
        "error": last.error,
        "hops": [hop_record(hop) for hop in last.hops],
        "first_bad_hop": None if bad is None else {"ttl": bad.ttl, "address": bad.address,
                                                    "why": bad.why},
        "baseline_hops": None if path.baseline is None else [
            hop.address for hop in path.baseline.hops],
        "changed": None if change is None else {
            "ttl": change.ttl, "address": change.address, "was": change.was,
            "since": datetime.fromtimestamp(change.since, zone).isoformat(timespec="seconds"),
            "since_timestamp": change.since, "text": change_text(change, zone)},
        "shared_cause": None if cause is None else {
            "address": cause.address, "sites": list(cause.sites), "text": cause.text},
    }


def verdict(path: SitePath | None, cause: SharedCause | None, zone: ZoneInfo) -> str:
    """One line for a cause column or a log: the shared cause, the first bad hop, a change."""
    if path is None or path.last is None:
        return ""
    parts = []
    if cause is not None:
        parts.append(cause.text)
    bad = path.last.bad_hop
    if bad is not None and cause is None:
        where = f"{bad.ttl} ({bad.address})" if bad.address else f"{bad.ttl}"
        parts.append(f"first bad hop {where}: {bad.why}")
    if path.change is not None:
        parts.append(change_text(path.change, zone))
    return "; ".join(parts)
