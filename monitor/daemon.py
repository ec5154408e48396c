"""The daemon's lifecycle: startup, main loop, ordered and bounded shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter

import structlog
from prometheus_client import CollectorRegistry

from monitor import __version__
from monitor.config import Config, ProbeSettings
from monitor.health import HealthTracker, StateChange, Status
from monitor.http import HttpServer
from monitor.metrics import DaemonMetrics, SiteCollector
from monitor.scheduler import Scheduler, SendFn, Target
from monitor.state import SiteTable
from probes import KINDS
from probes.icmp import IcmpEngine

log = structlog.get_logger("vcmon.daemon")

# systemd's default stop timeout is 90 s, but operators expect an exporter to go in
# well under a second; anything still running after this is cancelled.
SHUTDOWN_GRACE = 1.5


class Daemon:
    def __init__(self, config: Config, *, listen: str | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.listen = listen or config.listen
        self.registry = registry if registry is not None else CollectorRegistry()
        self.table = SiteTable(config)
        self.health = HealthTracker(config, time.time())
        self.metrics = DaemonMetrics(self.registry)
        self.engines: dict[tuple[str, int], IcmpEngine] = {}
        self.scheduler = Scheduler(self.table.record,
                                   observe_lag=self.metrics.scheduler_lag.observe)
        self.registry.register(SiteCollector(self))
        self.http = HttpServer(self)
        self._stop: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def ignored_packets(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for engine in self.engines.values():
            total.update(engine.ignored)
        return total

    @property
    def skipped_cycles(self) -> int:
        return self.scheduler.skipped_cycles

    @property
    def scheduler_sends(self) -> int:
        return self.scheduler.sends

    @property
    def ready(self) -> bool:
        return self.scheduler.first_cycle_done.is_set()

    async def _engine_for(self, settings: ProbeSettings) -> SendFn:
        # One engine (one socket per family) per probe kind and payload size: the
        # payload is built once per engine, and all sites share the same few.
        key = (settings.kind, settings.payload_size)
        engine = self.engines.get(key)
        if engine is None:
            engine = KINDS[settings.kind](self.table.record, payload_size=settings.payload_size)
            await engine.start()
            self.engines[key] = engine
        return engine.send

    async def targets(self, config: Config) -> list[Target]:
        targets = []
        for site in config.sites:
            s = config.settings_for(site)
            targets.append(Target(
                site_id=site.id, address=site.address, send=await self._engine_for(s),
                interval=s.interval, timeout=s.timeout, burst=s.burst,
                burst_spacing=s.burst_spacing, resolve_interval=s.resolve_interval))
        return targets

    async def startup(self) -> None:
        self._stop = asyncio.Event()
        self.scheduler.set_targets(await self.targets(self.config))
        self._tasks.append(asyncio.create_task(self.scheduler.run(), name="scheduler"))
        self._tasks.append(asyncio.create_task(self._watch_health(), name="health"))
        await self.http.start(self.listen)
        modes = sorted({engine.mode for engine in self.engines.values()})
        log.info("started", version=__version__, sites=len(self.table), listen=self.listen,
                 source=self.config.source, icmp_socket=",".join(modes))

    async def _watch_health(self) -> None:
        """Re-derive every site's health once per tick; judge thresholds less often."""
        shortest = min(s.interval for s in map(self.config.settings_for, self.config.sites))
        # Down is noticed within one tick of the losses that make it: a second at the
        # default interval, faster for sites probed faster.
        tick = min(1.0, shortest)
        every = self.config.health.evaluate_every
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + tick
        next_evaluation = loop.time() + every
        while True:
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            next_tick += tick
            evaluate = loop.time() >= next_evaluation
            if evaluate:
                next_evaluation += every
            for change in self.health.update(self.table, time.time(), evaluate=evaluate):
                _log_change(change)

    def request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def main_loop(self) -> None:
        assert self._stop is not None, "startup() first"
        await self._stop.wait()

    async def shutdown(self) -> None:
        """Stop intake, then let in-flight work end within the grace time, then cancel."""
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True),
                                   SHUTDOWN_GRACE)
        self._tasks.clear()
        await self.http.stop()
        for engine in self.engines.values():
            await engine.close()
        self.engines.clear()
        log.info("stopped")

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            await self.startup()
            await self.main_loop()
        finally:
            await self.shutdown()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


def _log_change(change: StateChange) -> None:
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
