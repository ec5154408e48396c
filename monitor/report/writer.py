"""Scheduled reports: the daemon writes them to a directory at the configured times.

Off the probe path: the window statistics, the rendering and the disk writes run in
worker threads, Prometheus is asked with a timeout, and one report at a time is written
within ``WRITE_TIMEOUT``; a failed report is logged and never stops the daemon.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from monitor.inventory.calendar import Schedule
from monitor.inventory.reports import Lang, ReportSettings
from monitor.report.model import Report, add_history, build, previous_slot
from monitor.report.render import render
from monitor.report.short import short
from monitor.status.records import site_records
from monitor.status.source import Source

log = structlog.get_logger("vcmon.report")

# The next slot is hours away; a report stuck on a slow disk or Prometheus gives up.
WRITE_TIMEOUT = 120.0
# The task looks at the configuration this often, so a reload's new times apply.
RECHECK = 60.0
_HISTORY_TIMEOUT = aiohttp.ClientTimeout(total=60)

Publish = Callable[[dict[str, Any]], None]


def conference_days(schedule: Schedule) -> set[date]:
    """The local dates on which a session runs (a session across midnight: both)."""
    zone, days = schedule.zone, set()
    for conference in schedule.conferences:
        start, end = (moment.astimezone(zone).date() for moment in conference.bounds(zone))
        while start <= end:
            days.add(start)
            start += timedelta(days=1)
    return days


def next_slot(now: float, settings: ReportSettings, schedule: Schedule) -> float | None:
    """The first report time after ``now``; None when no day within a year has one."""
    zone = schedule.zone
    today = datetime.fromtimestamp(now, zone).date()
    days = conference_days(schedule) if settings.days == "conference" else None
    for offset in range(367):
        day = today + timedelta(days=offset)
        if days is not None and day not in days:
            continue
        for text in sorted(settings.times):
            hour, minute = map(int, text.split(":"))
            slot = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone).timestamp()
            if slot > now:
                return slot
    return None


def summary_message(report: Report, files: list[str], lang: Lang = "vi") -> dict[str, Any]:
    """What goes to MQTT ``<prefix>/reports``: the counts and who is not ready."""
    return {
        "at": report.time(report.at), "since": report.time(report.since),
        "counts": report.totals["counts"], "history_available": report.history is not None,
        "not_ready": [{"id": s["id"], "name": s["name"], "district": s["district"],
                       "status": s["status"], "reason": s["reason"]}
                      for s in report.not_ready],
        "files": files,
        # the grouped list (a down uplink once, with its count) and a chat-sized text
        "to_act_on": report.totals["to_act_on"],
        "maintenance": [s["id"] for s in report.totals["maintenance"]],
        "demo": report.demo,
        "short": short(report, lang),
    }


def write_files(report: Report, settings: ReportSettings) -> list[str]:
    """Every configured format, each written whole then renamed into place."""
    directory = Path(settings.directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = datetime.fromtimestamp(report.at, report.zone).strftime("vcmon-report-%Y-%m-%d-%H%M")
    written = []
    for fmt in settings.formats:
        path = directory / f"{stem}.{fmt}"
        partial = path.with_suffix(f".{fmt}.partial")
        # newline="": CSV rows end in CRLF already; no other translation wanted.
        with partial.open("w", encoding="utf-8", newline="") as out:
            out.write(render(report, fmt, settings.lang))
        os.replace(partial, path)
        written.append(str(path))
    return written


async def write_report(daemon: Source, settings: ReportSettings, at: float,
                       publish: Publish | None = None) -> list[str]:
    """One scheduled report for the moment ``at``; returns the files written."""
    loop = asyncio.get_running_loop()
    config = daemon.config
    records = await loop.run_in_executor(None, site_records, daemon.table, daemon.health,
                                         config, time.time())
    report = build(records, at=at, since=previous_slot(at, settings.times, config.schedule.zone),
                   timezone=config.schedule.timezone, source="daemon", generated=time.time(),
                   demo=config.demo)
    async with aiohttp.ClientSession(timeout=_HISTORY_TIMEOUT) as session:
        await add_history(session, report, settings.prometheus)
    files = await loop.run_in_executor(None, write_files, report, settings)
    log.info("report_written", files=files, not_ready=len(report.not_ready),
             history=report.history is not None, note=report.history_note or None)
    if publish is not None:
        publish(summary_message(report, files, settings.lang))
    return files


async def run(daemon: Source, publish: Publish | None = None) -> None:
    """Write each report when its time comes, for as long as the daemon runs."""
    done = 0.0  # the last slot written: a sleep that wakes early must not repeat it
    while True:
        settings = daemon.config.reports
        now = time.time()
        slot = (None if settings is None
                else next_slot(max(now, done), settings, daemon.config.schedule))
        if settings is None or slot is None or slot - now > RECHECK:
            await asyncio.sleep(RECHECK)
            continue
        await asyncio.sleep(max(0.0, slot - now))
        done = slot
        try:
            await asyncio.wait_for(write_report(daemon, settings, slot, publish), WRITE_TIMEOUT)
        except Exception:
            # A full disk or a bad directory must not stop the probing; the log says why.
            log.exception("report_failed", directory=settings.directory)
