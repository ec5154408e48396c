"""Health of each site: ok, degraded, down, unreachable, unknown or maintenance.

``down`` is judged per packet (``down_after`` consecutive losses, fast, so a page
goes out within seconds); ``degraded`` is judged on the statistics window every
``evaluate_every`` seconds, with hysteresis so one lost packet never flaps a site.
A site behind a down site is ``unreachable``: its own state is unknown and the root
cause is upstream, so only the upstream site pages.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from monitor.inventory import Config, Site
from monitor.inventory.selection import Role, select
from monitor.inventory.thresholds import THRESHOLD_NAMES, HealthSettings, Thresholds
from monitor.status.paths import PathBook
from monitor.status.services import ServiceTable, describe_failing
from monitor.status.sites import SiteState, SiteTable
from monitor.status.streams import DIRECTIONS, StreamTable, StreamWindowStats
from monitor.status.window import WindowStats, packed_until, unpacked

# How old (s) a judging's statistics may be for the pages to show them (``window_stats``):
# with the default ``evaluate_every`` of 5 s every site is judged within it. And at most
# this share of the time the window covers: a whole 60 s window shown as of up to 6 s
# ago, one 10 s into its first minute as of 1 s ago at most.
REUSE_WITHIN = 6.0
REUSE_SHARE = 0.1


class Status(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    DOWN = "down"
    UNREACHABLE = "unreachable"
    UNKNOWN = "unknown"
    MAINTENANCE = "maintenance"


def exceeded(stats: WindowStats, limits: Thresholds, health: HealthSettings) -> tuple[str, ...]:
    """The thresholds this window crosses, in ``THRESHOLD_NAMES`` order."""
    crossed: set[str] = set()
    if stats.received >= health.min_replies:
        if stats.rtt_avg is not None and stats.rtt_avg > limits.rtt:
            crossed.add("rtt")
        if stats.jitter is not None and stats.jitter > limits.jitter:
            crossed.add("jitter")
        if stats.mos is not None and stats.mos < limits.mos:
            crossed.add("mos")
    lost = stats.sent - stats.received
    if stats.loss_ratio is not None and lost >= health.min_lost and stats.loss_ratio > limits.loss:
        crossed.add("loss")
    return tuple(name for name in THRESHOLD_NAMES if name in crossed)


def describe(crossed: tuple[str, ...], stats: WindowStats, limits: Thresholds) -> str:
    """A technician's sentence: which measurement is over which limit."""
    parts = []
    for name in crossed:
        if name == "rtt" and stats.rtt_avg is not None:
            parts.append(f"RTT {stats.rtt_avg * 1000:.1f} ms > {limits.rtt * 1000:g} ms")
        elif name == "jitter" and stats.jitter is not None:
            parts.append(f"jitter {stats.jitter * 1000:.1f} ms > {limits.jitter * 1000:g} ms")
        elif name == "loss" and stats.loss_ratio is not None:
            parts.append(f"loss {stats.loss_ratio:.1%} > {limits.loss:.1%}")
        elif name == "mos" and stats.mos is not None:
            parts.append(f"MOS {stats.mos:.2f} < {limits.mos:g}")
    return ", ".join(parts)


# What a site's stream decides in place of its ICMP window (the rule in docs/twamp.md): a
# stream marked like media measures what media meets, where routers may deprioritise
# ICMP; RTT, and whether the site is down at all, stay ICMP's.
STREAM_DECIDES = frozenset({"jitter", "loss", "mos"})


def stream_exceeded(stats: StreamWindowStats, limits: Thresholds,
                    health: HealthSettings) -> list[tuple[str, str]]:
    """The jitter, loss and MOS thresholds a stream window crosses in either direction,
    each with a technician's words ("reverse jitter 45.0 ms > 30 ms")."""
    found: list[tuple[str, str]] = []
    for direction in DIRECTIONS:
        d = stats.direction(direction)
        if d.jitter is not None and d.jitter > limits.jitter:
            found.append(("jitter", f"{direction} jitter {d.jitter * 1000:.1f} ms > "
                                    f"{limits.jitter * 1000:g} ms"))
        if (d.loss_ratio is not None and d.lost is not None and d.lost >= health.min_lost
                and d.loss_ratio > limits.loss):
            found.append(("loss", f"{direction} loss {d.loss_ratio:.1%} > {limits.loss:.1%}"))
        if d.mos is not None and d.mos < limits.mos:
            found.append(("mos", f"{direction} MOS {d.mos:.2f} < {limits.mos:g}"))
    if (not any(name == "loss" for name, _ in found) and stats.loss_ratio is not None
            and stats.lost >= health.min_lost and stats.loss_ratio > limits.loss):
        # losses the reflector's numbers cannot place (before the first reply or after
        # the last, or a reflector that echoes our sequence numbers)
        found.append(("loss", f"stream loss {stats.loss_ratio:.1%} > {limits.loss:.1%}"))
    return found


def measurements(stats: WindowStats) -> dict[str, Any]:
    return {"rtt_avg": stats.rtt_avg, "jitter": stats.jitter, "loss_ratio": stats.loss_ratio,
            "mos": stats.mos, "sent": stats.sent, "received": stats.received}


@dataclass(frozen=True, slots=True)
class StateChange:
    site: Site
    before: Status
    after: Status
    reason: str
    at: float
    measurements: dict[str, Any]


class SiteHealth:
    """One site's health and the counters its hysteresis needs."""

    __slots__ = ("ancestors", "bad_streak", "changes", "clean_since", "degraded",
                 "degraded_reason", "down_since", "exceeded", "good_streak", "hold", "judged",
                 "limits", "own_down", "reason", "since", "site", "status",
                 "unreachable_behind")

    def __init__(self, site: Site, limits: Thresholds, ancestors: tuple[str, ...],
                 now: float, hold: float = 0.0) -> None:
        self.site = site
        self.limits = limits
        self.ancestors = ancestors  # nearest first
        self.hold = hold
        self.down_since = 0.0
        self.status = Status.UNKNOWN
        self.reason = "no probe has resolved yet"
        self.since = now
        self.changes = 0
        self.own_down = False
        self.degraded = False
        self.degraded_reason = ""
        self.exceeded: tuple[str, ...] = ()
        self.bad_streak = 0
        self.good_streak = 0
        # Statistics after an outage start here: the outage's losses must not make
        # the site "degraded" once it answers again.
        self.clean_since = 0.0
        self.unreachable_behind = 0
        # the whole window's statistics as the last judging took them, None from going
        # down until the next judging (``window_stats``)
        self.judged: bytes | None = None

    def judge(self, stats: WindowStats, health: HealthSettings,
              streams: Sequence[StreamWindowStats] = ()) -> None:
        """One threshold evaluation, with hysteresis. ``streams``: the windows of the
        site's TWAMP streams; one with replies decides jitter, loss and MOS, per
        direction, in place of the ICMP window (``STREAM_DECIDES``)."""
        crossed = exceeded(stats, self.limits, health)
        views = [s for s in streams if s.received >= health.min_replies]
        stream_words: list[str] = []
        if views:
            crossed = tuple(name for name in crossed if name not in STREAM_DECIDES)
            found = [item for view in views for item in stream_exceeded(view, self.limits, health)]
            names = {name for name, _ in found} | set(crossed)
            crossed = tuple(name for name in THRESHOLD_NAMES if name in names)
            stream_words = list(dict.fromkeys(words for _, words in found))
        self.exceeded = crossed
        # The streaks stop where they are compared (enter_after, leave_after): a small
        # int is CPython's shared one, not an object of its own for every site.
        if crossed:
            self.bad_streak = min(self.bad_streak + 1, health.enter_after)
            self.good_streak = 0
            icmp = tuple(name for name in crossed if not views or name not in STREAM_DECIDES)
            self.degraded_reason = ", ".join(
                part for part in (describe(icmp, stats, self.limits), *stream_words) if part)
        else:
            self.good_streak = min(self.good_streak + 1, health.leave_after)
            self.bad_streak = 0
        if not self.degraded and self.bad_streak >= health.enter_after:
            self.degraded = True
        elif self.degraded and self.good_streak >= health.leave_after:
            self.degraded = False


def _shown_until(state: SiteState, h: SiteHealth, now: float) -> float | None:
    """Until when the pages may show the statistics a judging took at ``now``: at most
    ``REUSE_WITHIN`` s and ``REUSE_SHARE`` of the time the window covers (a window still
    filling is short, and a few seconds are much of it). None if they are not the whole
    window's: an outage in it, which the judging leaves out (``clean_since``)."""
    window = state.window
    oldest = window.oldest()
    if h.clean_since > now - window.length or oldest is None:
        return None
    return now + min(REUSE_WITHIN, REUSE_SHARE * min(window.length, now - oldest))


def window_stats(state: SiteState, h: SiteHealth | None, now: float) -> WindowStats:
    """The statistics of the site's window that /metrics, the API and MQTT show: those
    its last threshold judging took, while ``_shown_until`` allows (none from going down
    to the next judging); else computed now. The counters beside them are always live.

    The judging computes them for every site once per ``evaluate_every`` anyway; at
    20,000 sites taking them again made a gzipped /metrics read 0.40 s where it is now
    0.33 s (p50 in the daemon's first minute, benchmarked with a core free).
    Safe from another thread: ``judged`` is bytes, replaced whole.
    """
    judged = h.judged if h is not None else None
    if judged is not None:
        until = packed_until(judged)
        # (a clock stepped back by more than a few seconds: taken anew)
        if until - REUSE_WITHIN - 1.0 <= now <= until:
            return unpacked(judged)
    return state.window.current_stats(now)


class HealthTracker:
    """Turns the site table into health states; returns what changed.

    ``sites`` are the sites this instance owns; each gets a status. ``upstream`` are the
    other shards' sites above them (``monitor.inventory.shard``): only whether they are down is
    tracked, for the root cause of ours.
    """

    def __init__(self, config: Config, now: float) -> None:
        self.sites: dict[str, SiteHealth] = {}
        self.upstream: dict[str, SiteHealth] = {}
        # the sites' service probes: a site that answers ping while one of them is down
        # is degraded (reason "service …")
        self.services = ServiceTable(config)
        # each site's traced path, first bad hop and baseline (monitor/status/paths.py)
        self.paths = PathBook()
        # the sites' TWAMP-light streams: per direction, they judge jitter, loss and MOS
        # for their site (see ``SiteHealth.judge``)
        self.streams = StreamTable(config, self.services)
        self.reconfigure(config, now)

    def reconfigure(self, config: Config, now: float) -> None:
        """Apply a reloaded inventory: kept sites keep their status and hysteresis."""
        self.config = config
        self.settings = config.health
        self.services.reconfigure(config)
        self.streams.reconfigure(config)
        selection = select(config)
        before = {**self.upstream, **self.sites}
        sites: dict[str, SiteHealth] = {}
        upstream: dict[str, SiteHealth] = {}
        # district → its sites, made when a maintenance window first names a district
        # (most never do; one list a site was 4 MB at 20,000 sites of their own district)
        self._by_district: dict[str, list[str]] | None = None
        # Owned site → every site behind it in the whole inventory, ours or not (only
        # sites with someone behind them: most sites are leaves)
        self._behind: dict[str, list[str]] = {}
        for site in config.sites:
            ancestors = _ancestors(config, site)
            for ancestor in ancestors:
                if ancestor in selection.owned:
                    self._behind.setdefault(ancestor, []).append(site.id)
            role = selection.role(site.id)
            if role is None:
                continue
            limits, hold = config.thresholds_for(site), _hold(config, site, ancestors)
            h = before.get(site.id)
            if h is None:
                h = SiteHealth(site, limits, ancestors, now, hold)
            else:
                h.site, h.limits, h.ancestors, h.hold = site, limits, ancestors, hold
            (sites if role is Role.OWNED else upstream)[site.id] = h
        self.sites, self.upstream = sites, upstream
        # one shard (the usual case): no copy of the sites' table
        self._tracked = {**upstream, **sites} if upstream else sites
        self.paths.reconfigure(set(sites), config.diagnosis.baseline_interval)

    def update(self, table: SiteTable, now: float, *, evaluate: bool) -> list[StateChange]:
        """Recompute every site's status at wall-clock ``now`` in one go.

        ``evaluate``: also judge every site's thresholds.
        """
        judge = self.sites.keys() if evaluate else ()
        return [change for step in self.steps(table, now, judge) for change in step]

    def steps(self, table: SiteTable, now: float, judge: Collection[str],
              chunk: int = 250) -> Iterator[list[StateChange]]:
        """``update`` in chunks of sites, so that a caller on the event loop can let
        probes go out between them (20,000 sites take ~0.1 s in all, a chunk ~1.5 ms:
        1,000 a chunk held the loop 5-10 ms, the whole of the probe lag budget).

        Thresholds are judged for the sites in ``judge`` only: the daemon spreads the
        judging of all sites over ``evaluate_every``.
        """
        health = self.settings
        for site_id, h in list(self.upstream.items()):
            upstream_state = table.upstream.get(site_id)
            if upstream_state is not None:
                self._track_down(h, upstream_state, now)
        # Two lists rather than one of (id, health) pairs: 20,000 new tuples a tick were
        # each looked at by the cyclic collector, and made it collect 28 times a tick,
        # each time walking every object the probes keep alive for a second (50-60 ms
        # of one tick's first chunk at 20,000 sites, the probe loop's worst lag).
        ids, healths = list(self.sites), list(self.sites.values())
        for start in range(0, len(ids), chunk):
            end = start + chunk
            for site_id, h in zip(ids[start:end], healths[start:end], strict=True):
                state = table.sites.get(site_id)
                if state is None:
                    continue
                self._track_down(h, state, now)
                if site_id in judge and not h.own_down and state.up is not None:
                    stats = state.window.stats(now, since=h.clean_since)
                    h.judge(stats, health, self._stream_windows(site_id, now, h.clean_since))
                    until = _shown_until(state, h, now)
                    h.judged = None if until is None else stats.packed(until)
            yield []
        moment = datetime.fromtimestamp(now, UTC)
        in_maintenance = self._maintenance(moment)
        for start in range(0, len(ids), chunk):
            end = start + chunk
            yield self._statuses(zip(ids[start:end], healths[start:end], strict=True), table, now,
                                 in_maintenance)

    def _stream_windows(self, site_id: str, now: float,
                        since: float) -> list[StreamWindowStats]:
        found = (state.stats(now, since) for state in self.streams.of_site(site_id))
        return [stats for stats in found if stats is not None]

    def _maintenance(self, moment: datetime) -> dict[str, str]:
        """Site id → reason, for the sites in a maintenance window at ``moment``."""
        found: dict[str, str] = {}
        for window in self.config.schedule.active_maintenance(moment):
            reason = window.reason or "in a maintenance window"
            for site_id in window.sites:
                found.setdefault(site_id, reason)
            for district in window.districts:
                for site_id in self._district_sites().get(district, ()):
                    found.setdefault(site_id, reason)
        return found

    def _district_sites(self) -> dict[str, list[str]]:
        if self._by_district is None:
            by_district: dict[str, list[str]] = {}
            for site in self.config.sites:
                by_district.setdefault(site.district or site.id, []).append(site.id)
            self._by_district = by_district
        return self._by_district

    def _statuses(self, items: Iterable[tuple[str, SiteHealth]], table: SiteTable, now: float,
                  in_maintenance: dict[str, str]) -> list[StateChange]:
        changes = []
        for site_id, h in items:
            status, reason = self._status(h, table.sites.get(site_id), in_maintenance, now)
            h.unreachable_behind = self._cut_off(h, in_maintenance) if h.own_down else 0
            if status is not h.status:
                state = table.sites.get(site_id)
                stats = state.window.stats(now) if state is not None else None
                found = measurements(stats) if stats is not None else {}
                streams = self._stream_windows(site_id, now, 0.0)
                if streams and found:
                    # per direction, what the rule judges: compact, as every change is
                    # logged and published (a thousand at once when an uplink fails)
                    found["streams"] = [
                        {d: {"jitter": w.direction(d).jitter,
                             "loss_ratio": w.direction(d).loss_ratio,
                             "mos": w.direction(d).mos} for d in DIRECTIONS}
                        for w in streams]
                changes.append(StateChange(h.site, h.status, status, reason, now, found))
                h.status, h.since = status, now
                h.changes += 1
            h.reason = reason
        return changes

    def _track_down(self, h: SiteHealth, state: SiteState, now: float) -> None:
        if not h.own_down and state.up is False:
            h.own_down = True
            h.down_since = now
            h.judged = None  # the outage is the window's news: the pages take it anew
            h.degraded, h.bad_streak, h.good_streak, h.exceeded = False, 0, 0, ()
            h.degraded_reason = ""
        elif h.own_down and state.consecutive_received >= self.settings.recover_after:
            h.own_down = False
            h.clean_since = now

    def _status(self, h: SiteHealth, state: SiteState | None,
                in_maintenance: dict[str, str], now: float) -> tuple[Status, str]:
        reason = in_maintenance.get(h.site.id)
        if reason is not None:
            return Status.MAINTENANCE, reason
        root = self.root_cause(h)
        if root is not None:
            return Status.UNREACHABLE, f"upstream site {root} is down"
        if h.own_down:
            held = self._held(h, now)
            if held is not None:
                return held
            lost = state.consecutive_lost if state is not None else 0
            return Status.DOWN, f"no reply to the last {lost} probes"
        if state is None or state.up is None:
            return Status.UNKNOWN, "no probe has resolved yet"
        failing = self.services.failing(h.site.id)
        if h.degraded or failing:
            reasons = [h.degraded_reason] if h.degraded else []
            if failing:
                reasons.append(describe_failing(failing))
            return Status.DEGRADED, "; ".join(reasons)
        return Status.OK, ""

    def root_cause(self, h: SiteHealth) -> str | None:
        """The down site nearest the province above ``h``: where the technician goes."""
        for ancestor in reversed(h.ancestors):
            upstream = self._tracked.get(ancestor)
            if upstream is not None and upstream.own_down:
                return ancestor
        return None

    def _cut_off(self, h: SiteHealth, in_maintenance: dict[str, str]) -> int:
        """Sites unreachable because ``h`` is down: every site behind it outside
        maintenance, when ``h`` is the root cause. Counted from the inventory rather
        than from their statuses, since another shard may own them."""
        if self.root_cause(h) is not None:
            return 0
        return sum(1 for site_id in self._behind.get(h.site.id, ())
                   if site_id not in in_maintenance)

    def _held(self, h: SiteHealth, now: float) -> tuple[Status, str] | None:
        """Whether a site that stopped answering must wait before it counts as down.

        Parent and child probes are phased apart by up to an interval, so when an uplink
        fails the child's losses can add up before the parent's do, and when it comes
        back the child's replies can lag the parent's. For ``hold`` seconds around an
        upstream outage the child is not reported down, so that it never pages before
        (or after) the upstream site whose outage it only inherits.
        """
        if not h.ancestors:
            return None
        back = max((self._tracked[a].clean_since for a in h.ancestors if a in self._tracked),
                   default=0.0)
        # Ticks come a second apart give or take a millisecond: without the margin,
        # "two intervals" was sometimes judged 1.9999 s and held for a third tick.
        hold = h.hold * 0.95
        if now - back < hold:
            return Status.UNREACHABLE, "upstream came back; waiting for this site's replies"
        if now - h.down_since < hold and h.status is not Status.DOWN:
            return h.status, h.reason  # not confirmed yet: an upstream outage may explain it
        return None

    def conference_phases(self, now: float) -> list[tuple[str, bool, bool]]:
        moment = datetime.fromtimestamp(now, UTC)
        return [(c.name, active, preflight)
                for c, active, preflight in self.config.schedule.phases(moment)]


def _hold(config: Config, site: Site, ancestors: tuple[str, ...]) -> float:
    """Two of the slowest intervals on the path to the province: the phase gap between
    a site's probes and its upstream's, plus a health tick."""
    chain = [site, *(config.site(a) for a in ancestors)]
    return 2 * max(config.settings_for(s).interval for s in chain) if ancestors else 0.0


def _ancestors(config: Config, site: Site) -> tuple[str, ...]:
    chain = []
    parent = site.parent
    while parent is not None:
        chain.append(parent)
        parent = config.site(parent).parent
    return tuple(chain)
