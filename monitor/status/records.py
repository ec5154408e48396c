"""The records every sink shares: one site as people and scripts read it, tallies by
tier, provision and district, and the summary. The JSON API serves them as they are,
the board and the reports read them, MQTT publishes their tallies.

Field names are a contract, written down in ``monitor/data/openapi.yaml``: add fields,
never rename or remove one. Times are ISO 8601 in the schedule's time zone, with the
Unix time beside them for scripts; measurements are in base units (seconds, ratios).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from monitor.inventory import Config
from monitor.inventory.reports import DEFAULT_TIMES
from monitor.status.health import HealthTracker, SiteHealth, Status, window_stats
from monitor.status.paths import SharedCause, path_record, verdict
from monitor.status.sites import SiteState, SiteTable
from monitor.status.streams import StreamState, stream_document

STATUSES = tuple(status.value for status in Status)


def iso(timestamp: float | None, zone: ZoneInfo) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, zone).isoformat(timespec="seconds")


def _window(state: SiteState, h: SiteHealth | None, now: float) -> dict[str, Any]:
    # safe from the worker thread this runs in (``window_stats``)
    s = window_stats(state, h, now)
    return {"seconds": state.window.length, "sent": s.sent, "received": s.received,
            "loss_ratio": s.loss_ratio, "rtt_min": s.rtt_min, "rtt_avg": s.rtt_avg,
            "rtt_max": s.rtt_max, "rtt_median": s.rtt_median, "rtt_p95": s.rtt_p95,
            "jitter": s.jitter, "mos": s.mos}


def shared_causes(health: HealthTracker) -> dict[str, SharedCause]:
    """Site id -> the shared cause it belongs to, over every degraded or down site."""
    bad = {site_id: h.since for site_id, h in list(health.sites.items())
           if h.status in (Status.DEGRADED, Status.DOWN)}
    return {site_id: cause for cause in health.paths.shared_causes(bad)
            for site_id in cause.sites}


def site_record(state: SiteState, h: SiteHealth | None, config: Config,
                health: HealthTracker, now: float,
                causes: dict[str, SharedCause] | None = None) -> dict[str, Any]:
    """One site as ``GET /api/v1/sites/{id}`` shows it; ``causes``: ``shared_causes``."""
    site, zone = state.site, config.schedule.zone
    path = health.paths.get(site.id)
    cause = (causes if causes is not None else shared_causes(health)).get(site.id)
    district = site.district or site.id
    try:
        district_name = config.site(district).name
    except KeyError:  # a reload removed the district between two reads
        district_name = district
    status = h.status if h is not None else Status.UNKNOWN
    return {
        "id": site.id,
        "name": site.name,
        "tier": site.tier,
        "parent": site.parent,
        "district": district,
        "district_name": district_name,
        "provision": site.provision,
        "address": site.address,
        "contact": site.contact.model_dump() if site.contact else None,
        "contract": site.contract.model_dump() if site.contract else None,
        "status": status.value,
        "reason": h.reason if h is not None else "",
        "since": iso(h.since, zone) if h is not None else None,
        "since_timestamp": h.since if h is not None else None,
        "exceeded": list(h.exceeded) if h is not None else [],
        "root_cause": health.root_cause(h) if status is Status.UNREACHABLE and h else None,
        "unreachable_behind": h.unreachable_behind if h is not None else 0,
        "up": state.up,
        "consecutive_lost": state.consecutive_lost,
        "last_probe_at": iso(state.last_result_at, zone),
        "counters": {"sent": state.sent, "received": state.received},
        "window": _window(state, h, now),
        "path": path_record(path, cause, zone),
        "diagnosis": verdict(path, cause, zone),
        "streams": [_stream(stream, now, zone)
                    for stream in health.streams.of_site(site.id)],
    }


def _stream(stream: StreamState, now: float, zone: ZoneInfo) -> dict[str, Any]:
    document = stream_document(stream, now)
    document["last_stream_at"] = iso(document["last_stream_at"], zone)
    return document


def site_records(table: SiteTable, health: HealthTracker, config: Config,
                 now: float) -> list[dict[str, Any]]:
    """Every site in inventory order; runs in a worker thread (see ``_window``)."""
    healths = health.sites
    causes = shared_causes(health)
    return [site_record(state, healths.get(state.site.id), config, health, now, causes)
            for state in list(table.sites.values())]


def counts(statuses: Iterable[str]) -> dict[str, int]:
    """Sites per status, every status present (0 when none), total last."""
    tally = Counter(statuses)
    out = {status: tally.get(status, 0) for status in STATUSES}
    out["total"] = sum(tally.values())
    return out


def tallies(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts overall, by tier, by provision and by district (inventory order)."""
    districts: dict[str, tuple[str, list[str]]] = {}
    for r in records:
        districts.setdefault(r["district"], (r["district_name"], []))[1].append(r["status"])

    def grouped(key: str) -> dict[str, dict[str, int]]:
        groups: dict[str, list[str]] = {}
        for r in records:
            groups.setdefault(r[key], []).append(r["status"])
        return {name: counts(statuses) for name, statuses in groups.items()}

    actions = to_act_on(records)
    acting: Counter[str] = Counter(entry["district"] for entry in actions)
    return {
        "counts": counts(r["status"] for r in records),
        "by_tier": grouped("tier"),
        "by_provision": grouped("provision"),
        "by_district": [{"id": district, "name": name, "counts": counts(statuses),
                         "to_act_on": acting.get(district, 0)}
                        for district, (name, statuses) in districts.items()],
        "to_act_on": actions,
        "maintenance": [_entry(r, []) for r in records if r["status"] == "maintenance"],
    }


# What a person does first: a root cause before the links it cuts off, then the links
# that still carry a conference badly, then the sites nobody has heard from yet.
_ACTION_ORDER = {"down": 0, "unreachable": 1, "degraded": 2, "unknown": 3}
_TIER_ORDER = {"province": 0, "district": 1}


def _entry(record: dict[str, Any], behind: list[str]) -> dict[str, Any]:
    return {"id": record["id"], "name": record["name"], "tier": record["tier"],
            "district": record["district"], "district_name": record["district_name"],
            "status": record["status"], "reason": record["reason"], "since": record["since"],
            "root_cause": record["root_cause"], "behind": len(behind) or (
                record.get("unreachable_behind", 0) if record["status"] == "down" else 0),
            "behind_sites": behind}


def to_act_on(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The list people act on, one line per thing to fix: a down site once, with the
    sites unreachable behind it folded under it (``behind``, ``behind_sites``), so that
    one outage never pushes the degraded links off a screen. An unreachable site whose
    root cause is not among ``records`` (another shard's) keeps its own line; sites in
    maintenance and ok sites are not listed."""
    present = {r["id"] for r in records}
    behind: dict[str, list[str]] = {}
    for r in records:
        if r["status"] == "unreachable" and r["root_cause"] in present:
            behind.setdefault(r["root_cause"], []).append(r["id"])
    entries = [_entry(r, behind.get(r["id"], [])) for r in records
               if r["status"] in _ACTION_ORDER
               and not (r["status"] == "unreachable" and r["root_cause"] in present)]
    entries.sort(key=lambda e: (_ACTION_ORDER[e["status"]], _TIER_ORDER.get(e["tier"], 2),
                                -e["behind"]))
    return entries


def report_times(config: Config) -> list[str]:
    """The configured report times, or the defaults when reports are off."""
    settings = config.reports
    return list(settings.times) if settings is not None else list(DEFAULT_TIMES)


def summary(records: list[dict[str, Any]], config: Config, now: float) -> dict[str, Any]:
    """``GET /api/v1/summary``: the tallies, the time zone, report times and sessions."""
    zone = config.schedule.zone
    moment = datetime.fromtimestamp(now, zone)
    return {
        "generated_at": iso(now, zone),
        "timestamp": now,
        "timezone": config.schedule.timezone,
        "report_times": report_times(config),
        "demo": config.demo,
        **tallies(records),
        "conferences": [
            {"name": c.name, "start": c.bounds(zone)[0].isoformat(timespec="seconds"),
             "end": c.bounds(zone)[1].isoformat(timespec="seconds"),
             "active": active, "preflight": preflight}
            for c, active, preflight in config.schedule.phases(moment)],
    }
