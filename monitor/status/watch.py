"""The health loop: every site's status re-derived once per tick, thresholds judged for a
share of the sites at each tick so that the work is spread rather than bunched."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

import structlog

from monitor.status.health import StateChange, Status
from monitor.status.source import Source

log = structlog.get_logger("vcmon.daemon")


class Judging:
    """Which sites to judge at each tick: every site once per ``evaluate_every``."""

    def __init__(self) -> None:
        self._cursor = 0

    def share(self, ids: list[str], tick: float, evaluate_every: float) -> set[str]:
        share = math.ceil(len(ids) * tick / evaluate_every)
        judge = set((ids + ids)[self._cursor:self._cursor + share]) if ids else set()
        self._cursor = (self._cursor + share) % max(1, len(ids))
        return judge


async def watch_health(source: Source, on_change: Callable[[StateChange], None]) -> None:
    """Re-derive every site's health once per tick; log and hand on each change."""
    config = source.config
    shortest = min(s.interval for s in map(config.settings_for, config.sites))
    # Down is noticed within one tick of the losses that make it: a second at the
    # default interval, faster for sites probed faster.
    tick = min(1.0, shortest)
    loop = asyncio.get_running_loop()
    next_tick = loop.time() + tick
    judging = Judging()
    while True:
        await asyncio.sleep(max(0.0, next_tick - loop.time()))
        next_tick += tick
        health = source.health
        judge = judging.share(list(health.sites), tick, source.config.health.evaluate_every)
        for changes in health.steps(source.table, time.time(), judge):
            for change in changes:
                log_change(change)
                on_change(change)
            await asyncio.sleep(0)  # let due probes go out between chunks


def log_change(change: StateChange) -> None:
    site = change.site
    if change.before is Status.UNKNOWN and change.after is Status.OK:
        emit = log.debug  # every site does this once at start: not news
    elif change.after in (Status.DOWN, Status.DEGRADED):
        emit = log.warning
    else:
        emit = log.info
    emit("state_change", site=site.id, name=site.name, tier=site.tier, district=site.district,
         before=change.before.value, after=change.after.value, reason=change.reason,
         **change.measurements)
