"""What a readiness report says, gathered from the daemon (now) and Prometheus (history).

The daemon knows the present only; Prometheus keeps what it scraped. A report "now"
takes every site's state, reason and metadata from the daemon's API; a report for an
earlier moment (``--at``) takes the states from Prometheus at that moment and the
metadata from the daemon. The history since the previous report always comes from
Prometheus; without it the report says so and covers the present only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from monitor.status.records import iso, tallies

# The daemon's "now" stands for moments this close to it (a report started by cron a
# few seconds late); earlier ones are read from Prometheus.
NOW_TOLERANCE = 10.0
# A report written at 08:45 covers the time since the previous one (14:45 the day
# before), not the few seconds since the 08:45 slot itself began.
SLOT_GAP = 600.0
# query_range points over the period: enough for the lowest count, small to fetch.
RANGE_POINTS = 300
# History that starts this much after the period's start covers only part of it (a
# scrape interval or two is missing at the start of any period).
COVER_SLACK = 60.0
_TIMEOUT = aiohttp.ClientTimeout(total=30)


class SourceError(Exception):
    """The daemon or Prometheus could not be read; the message says which and why."""


@dataclass(frozen=True, slots=True)
class SiteHistory:
    """One site over the period; None where Prometheus had no data."""

    availability: float | None  # share of probes answered (counters' increase)
    not_ready: float | None  # share of scrapes in which the site was not "ok"
    worst_loss: float | None  # highest window loss ratio seen
    worst_rtt: float | None  # highest window average RTT seen, seconds
    worst_jitter: float | None  # highest window jitter seen, seconds
    changes: float | None  # status changes


@dataclass
class Report:
    at: float
    since: float
    timezone: str
    source: str  # "daemon" (now) or "prometheus" (an earlier moment)
    sites: list[dict[str, Any]]
    totals: dict[str, Any]
    history: dict[str, SiteHistory] | None = None
    history_note: str = ""
    lowest_ready: tuple[int, float] | None = None
    generated: float = 0.0
    prometheus: str | None = None
    names: dict[str, str] = field(default_factory=dict)
    # no history because Prometheus did not answer (not because none was given): the
    # Vietnamese text names the URL instead of the library's English error
    history_unreadable: bool = False
    # the first and last moment Prometheus had data for in the period (None: no history)
    covered: tuple[float, float] | None = None
    demo: bool = False

    @property
    def partial(self) -> bool:
        """Whether the history starts later than the period (Prometheus started since,
        or its retention ended): its figures say nothing of the time before."""
        return self.covered is not None and self.covered[0] - self.since > COVER_SLACK

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def time(self, timestamp: float | None) -> str:
        return iso(timestamp, self.zone) or ""

    @property
    def not_ready(self) -> list[dict[str, Any]]:
        return [site for site in self.sites if site["status"] != "ok"]


def previous_slot(at: float, times: list[str], zone: ZoneInfo, gap: float = SLOT_GAP) -> float:
    """The latest report time of day at least ``gap`` seconds before ``at``."""
    moment = datetime.fromtimestamp(at - gap, zone)
    best = None
    for days in (0, 1):
        day = (moment - timedelta(days=days)).date()
        for text in times:
            hour, minute = map(int, text.split(":"))
            slot = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
            if slot <= moment and (best is None or slot > best):
                best = slot
    return best.timestamp() if best is not None else at - 86400


async def _get_json(session: aiohttp.ClientSession, url: str,
                    params: dict[str, str] | None = None) -> Any:
    try:
        async with session.get(url, params=params) as response:
            if response.status != 200:
                text = (await response.text())[:200]
                raise SourceError(f"{url} answered HTTP {response.status}: {text}")
            return await response.json()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise SourceError(f"cannot read {url}: {exc or type(exc).__name__}") from None


async def _prom(session: aiohttp.ClientSession, base: str, path: str,
                params: dict[str, str]) -> list[dict[str, Any]]:
    body = await _get_json(session, f"{base.rstrip('/')}/api/v1/{path}", params)
    if body.get("status") != "success":
        raise SourceError(f"Prometheus refused {params.get('query')}: {body.get('error')}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def _by_site(session: aiohttp.ClientSession, base: str, query: str,
                   at: float) -> dict[str, float]:
    out = {}
    for series in await _prom(session, base, "query", {"query": query, "time": f"{at:.3f}"}):
        value = float(series["value"][1])
        if "site" in series["metric"] and not math.isnan(value):
            out[series["metric"]["site"]] = value
    return out


def _window_seconds(since: float, at: float) -> str:
    return f"{max(1, round(at - since))}s"


async def fetch_history(session: aiohttp.ClientSession, base: str, since: float,
                        at: float) -> tuple[dict[str, SiteHistory], tuple[int, float] | None,
                                        tuple[float, float] | None]:
    """Per-site availability and worst window values over [since, at], the lowest
    number of ready sites with its time, and the first and last moment with data."""
    d = _window_seconds(since, at)
    queries = {
        "sent": f"sum by (site) (increase(vcmon_probe_packets_sent_total[{d}]))",
        "received": f"sum by (site) (increase(vcmon_probe_packets_received_total[{d}]))",
        # scrapes with the site ok over scrapes with a status: the default series set
        # writes only the status a site is in, the full set all six (0 or 1)
        "ok": (f'(sum by (site) (sum_over_time(vcmon_site_status{{status="ok"}}[{d}]))'
               f" or 0 * sum by (site) (sum_over_time(vcmon_site_status[{d}])))"
               f" / sum by (site) (sum_over_time(vcmon_site_status[{d}]))"),
        "loss": f"max by (site) (max_over_time(vcmon_site_loss_ratio[{d}]))",
        "rtt": f'max by (site) (max_over_time(vcmon_site_rtt_seconds{{stat="avg"}}[{d}]))',
        "jitter": f"max by (site) (max_over_time(vcmon_site_jitter_seconds[{d}]))",
        "changes": f"sum by (site) (increase(vcmon_site_state_changes_total[{d}]))",
    }
    got = {name: await _by_site(session, base, query, at) for name, query in queries.items()}
    history = {}
    for site in got["sent"].keys() | got["ok"].keys():
        sent, received = got["sent"].get(site), got["received"].get(site)
        ok = got["ok"].get(site)
        history[site] = SiteHistory(
            availability=min(1.0, received / sent) if sent and received is not None else None,
            not_ready=None if ok is None else 1.0 - ok,
            worst_loss=got["loss"].get(site), worst_rtt=got["rtt"].get(site),
            worst_jitter=got["jitter"].get(site), changes=got["changes"].get(site))
    step = max(1, math.ceil((at - since) / RANGE_POINTS))
    series = await _prom(session, base, "query_range", {
        "query": 'sum(vcmon_site_status{status="ok"})', "start": f"{since:.3f}",
        "end": f"{at:.3f}", "step": f"{step}s"})
    points = [(int(float(v)), float(t)) for s in series for t, v in s["values"]]
    moments = [t for _, t in points]
    covered = (min(moments), max(moments)) if moments else None
    return history, min(points) if points else None, covered


# Status gauges read back into the API's vocabulary, for a report on an earlier moment.
_PAST_REASONS = {"down": "no reply", "maintenance": "in a maintenance window",
                 "unknown": "no data in Prometheus at this time"}


async def fetch_state_at(session: aiohttp.ClientSession, base: str, at: float,
                         records: list[dict[str, Any]], zone: ZoneInfo) -> list[dict[str, Any]]:
    """The daemon's site records with status, since, exceeded and window values as
    Prometheus scraped them at ``at``."""
    status_series = await _prom(session, base, "query",
                                {"query": "vcmon_site_status == 1", "time": f"{at:.3f}"})
    statuses = {s["metric"]["site"]: s["metric"]["status"] for s in status_series}
    since = await _by_site(session, base, "vcmon_site_status_since_timestamp_seconds", at)
    window = {key: await _by_site(session, base, query, at) for key, query in (
        ("loss_ratio", "vcmon_site_loss_ratio"),
        ("rtt_avg", 'vcmon_site_rtt_seconds{stat="avg"}'),
        ("jitter", "vcmon_site_jitter_seconds"), ("mos", "vcmon_site_mos"))}
    crossed: dict[str, list[str]] = {}
    for s in await _prom(session, base, "query", {
            "query": "vcmon_site_threshold_exceeded == 1", "time": f"{at:.3f}"}):
        crossed.setdefault(s["metric"]["site"], []).append(s["metric"]["threshold"])
    out = []
    for record in records:
        site = record["id"]
        status = statuses.get(site, "unknown")
        reason = _PAST_REASONS.get(status, "")
        if status == "degraded":
            reason = "thresholds crossed: " + ", ".join(sorted(crossed.get(site, [])))
        values = {key: got.get(site) for key, got in window.items()}
        out.append({**record, "status": status, "reason": reason,
                    "since": iso(since.get(site), zone), "since_timestamp": since.get(site),
                    "exceeded": sorted(crossed.get(site, [])), "root_cause": None,
                    "window": {**record["window"], **values},
                    # the daemon's last trace is of now, not of that moment
                    "path": None, "diagnosis": ""})
    by_id = {r["id"]: r for r in out}
    for record in out:
        if record["status"] == "unreachable":
            record["root_cause"] = _root_cause(record, by_id)
    return out


def _root_cause(record: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> str | None:
    found = None
    parent = record.get("parent")
    while parent is not None and parent in by_id:
        if by_id[parent]["status"] == "down":
            found = parent  # keep climbing: the one nearest the province is the cause
        parent = by_id[parent].get("parent")
    return found


def build(records: list[dict[str, Any]], *, at: float, since: float, timezone: str,
          source: str, generated: float, demo: bool = False) -> Report:
    return Report(at=at, since=since, timezone=timezone, source=source, sites=records,
                  totals=tallies(records), generated=generated,
                  names={r["id"]: r["name"] for r in records}, demo=demo)


async def add_history(session: aiohttp.ClientSession, report: Report,
                      prometheus: str | None) -> None:
    """The history part, or the reason why there is none."""
    report.prometheus = prometheus
    if prometheus is None:
        report.history_note = "no Prometheus given: the report covers the present only"
        return
    try:
        report.history, report.lowest_ready, report.covered = await fetch_history(
            session, prometheus, report.since, report.at)
    except SourceError as exc:
        report.history_note = f"{exc}: the report covers the present only"
        report.history_unreadable = True


def _stamp(moment: datetime, zone: ZoneInfo) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=zone)).timestamp()


async def gather(daemon: str, prometheus: str | None, at: datetime | None = None,
                 since: datetime | None = None) -> Report:
    """The report of ``vcmon report``, from a running daemon's API (and Prometheus).

    ``at`` and ``since`` without a time zone are in the daemon's schedule time zone.
    """
    base = daemon.rstrip("/")
    async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
        sites = await _get_json(session, f"{base}/api/v1/sites")
        summary = await _get_json(session, f"{base}/api/v1/summary")
        now, zone = float(sites["timestamp"]), ZoneInfo(summary["timezone"])
        moment = now if at is None else _stamp(at, zone)
        start = _stamp(since, zone) if since is not None else previous_slot(
            moment, summary["report_times"], zone)
        if start >= moment:
            raise SourceError(f"the period starts at {iso(start, zone)}, not before the "
                              f"report's moment {iso(moment, zone)}; give an earlier --since")
        records, source = sites["sites"], "daemon"
        if abs(moment - now) > NOW_TOLERANCE:
            if prometheus is None:
                raise SourceError("a report for another moment than now reads the states "
                                  "from Prometheus; give --prometheus URL")
            records = await fetch_state_at(session, prometheus, moment, records, zone)
            source = "prometheus"
        # a daemon older than the demo flag runs a real inventory
        report = build(records, at=moment, since=start, timezone=summary["timezone"],
                       source=source, generated=now, demo=bool(summary.get("demo", False)))
        await add_history(session, report, prometheus)
    return report
