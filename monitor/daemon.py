"""The daemon's lifecycle: startup, main loop, ordered and bounded shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import Counter

import structlog
from prometheus_client import CollectorRegistry

from monitor import __version__
from monitor.http.server import HttpServer
from monitor.inventory import Config, ConfigError, Site, default_config
from monitor.inventory.isolated import load_config_isolated_async, prepare_fallback
from monitor.inventory.mqtt import MqttSetupError
from monitor.inventory.secrets import check_reloaded, warn_exposed_secrets
from monitor.inventory.shard import Shard
from monitor.metrics.instance import DaemonCollector, DaemonMetrics
from monitor.metrics.page import SitePage
from monitor.metrics.paths import DiagnosisCollector
from monitor.mqtt.publisher import MqttPublisher
from monitor.probing.diagnosis import DiagnosisRunner, Outcome, TraceRequest
from monitor.probing.plan import ProbePlan, probe_rate
from monitor.probing.scheduler import Scheduler, Target
from monitor.probing.services import ServiceRunner
from monitor.probing.streams import StreamRunner
from monitor.report import writer as report_writer
from monitor.status.health import HealthTracker, StateChange, Status
from monitor.status.paths import verdict
from monitor.status.records import shared_causes
from monitor.status.sites import SiteTable
from monitor.status.watch import watch_health
from monitor.system.garbage import collector_paused, settle
from monitor.system.privileges import capability_names, drop_privileges
from monitor.system.sdnotify import Notifier
from probes.trace import PathSnapshot

log = structlog.get_logger("vcmon.daemon")

# systemd's default stop timeout is 90 s, but operators expect an exporter to go in
# seconds; in-flight probes get this long to resolve, anything still running after
# it is cancelled.
SHUTDOWN_GRACE = 1.0
# Flushing queued events, "offline" and the disconnect run alongside the grace above,
# so that a dead broker cannot make a stop take longer.
MQTT_STOP_GRACE = 1.0
# The ICMP sockets should hold at least this long of replies unread (see _check_buffer):
# Debian's default net.core.rmem_max grants ~415 replies, 21 ms at 20,000 sites.
BUFFER_SECONDS = 0.25


class Daemon:
    def __init__(self, config: Config, *, config_path: str | None = None,
                 listen: str | None = None, registry: CollectorRegistry | None = None,
                 notifier: Notifier | None = None, shard: Shard | None = None) -> None:
        # --shard: wins over the file's shard:, at start and at every reload
        self.shard_override = shard
        config = self._sharded(config)
        self.config = config
        # None: the embedded inventory, which a reload reads again.
        self.config_path = config_path
        self.notifier = notifier if notifier is not None else Notifier()
        # held while a read inventory is checked and swapped in, never while one is read
        self._reload_lock = asyncio.Lock()
        self._reading: asyncio.Future[Config] | None = None
        self._generation = 0
        self.listen = listen or config.listen
        self.registry = registry if registry is not None else CollectorRegistry()
        self.table = SiteTable(config)
        self.health = HealthTracker(config, time.time())
        self.metrics = DaemonMetrics(self.registry)
        self.plan = ProbePlan(self.table.record)
        self.scheduler = Scheduler(self.table.record,
                                   observe_lag=self.metrics.scheduler_lag.observe)
        # tcp, tls, sip, http (and second ICMP) probes: a scheduler of their own
        self.services = ServiceRunner(self.health.services.record)
        # path traces when a site goes bad, on request, and for baselines
        self.diagnosis = DiagnosisRunner(self._path_traced, config.diagnosis)
        self.registry.register(DiagnosisCollector(self.diagnosis))
        # TWAMP-light streams (twamp probes): a scheduler and a sender of their own
        self.streams = StreamRunner(self.health.streams.record, self.health.services.record)
        self.health.streams.ignored = self.streams.ignored
        self.registry.register(DaemonCollector(self))
        self.page = SitePage(self)
        self.http = HttpServer(self, self, self.page, self.metrics)
        self._stop: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[list[str]]] = set()
        self.publisher: MqttPublisher | None = None

    def _sharded(self, config: Config) -> Config:
        if self.shard_override is None:
            return config
        return config.model_copy(update={"shard": self.shard_override})

    @property
    def ignored_packets(self) -> Counter[str]:
        return self.plan.ignored_packets

    @property
    def receive_dropped(self) -> int:
        return self.plan.receive_dropped

    @property
    def skipped_cycles(self) -> int:
        return self.scheduler.skipped_cycles

    @property
    def scheduler_sends(self) -> int:
        return self.scheduler.sends

    @property
    def ready(self) -> bool:
        return self.scheduler.first_cycle_done.is_set()

    async def startup(self) -> None:
        self._stop = asyncio.Event()
        # Every socket that needs privileges first (ICMP, the listener), then none are
        # kept: nothing else may run before (a thread would keep root's capabilities).
        targets = await self.plan.targets(self.config)
        self._check_buffer(targets)
        await self.http.start(self.listen)
        if self.config.user is not None:  # about to switch user: see prepare_fallback
            prepare_fallback()
        _least_privilege(self.config, self.plan.modes)
        if self.config.mqtt is not None:
            # Started before the health task, so that the first state changes are queued;
            # it connects in the background and never holds up the start.
            self.publisher = MqttPublisher(self.config.mqtt, self, self.registry)
            self.publisher.start()
        self.scheduler.set_targets(targets)
        self._tasks.append(asyncio.create_task(self.scheduler.run(), name="scheduler"))
        self.services.scheduler.set_targets(await self.services.targets(self.config))
        self._tasks.append(asyncio.create_task(self.services.scheduler.run(), name="services"))
        # A ping socket sees only its own answers, a raw one every ICMP packet of the host:
        # where the engines could open ping sockets, traces use them too.
        self.diagnosis.mode = "dgram" if "dgram" in self.plan.modes else "auto"
        self.diagnosis.configure(self.config.diagnosis, self._trace_targets())
        self._tasks.append(asyncio.create_task(self.diagnosis.run(), name="diagnosis"))
        await self.streams.open_senders(self.config)
        self.streams.scheduler.set_targets(self.streams.targets(self.config))
        self._tasks.append(asyncio.create_task(self.streams.scheduler.run(), name="streams"))
        health = watch_health(self, self._state_changed)
        self._tasks.append(asyncio.create_task(health, name="health"))
        publish = self.publisher.report_written if self.publisher is not None else None
        self._tasks.append(asyncio.create_task(report_writer.run(self, publish), name="reports"))
        self.metrics.config_loaded(success=True)
        modes = sorted(set(self.plan.modes))
        log.info("started", version=__version__, sites=len(self.table), listen=self.listen,
                 source=self.config.source, icmp_socket=",".join(modes),
                 shard=str(self.config.shard or "-"), upstream=len(self.table.upstream))
        if self.notifier.watchdog_interval:
            self._tasks.append(asyncio.create_task(self._feed_watchdog(), name="watchdog"))

    async def reload(self) -> list[str]:
        """Re-read the inventory; apply it if valid. Returns the problems ([] = applied).

        All or nothing: whatever the new inventory needs (engines and their sockets,
        service probes, the MQTT password and TLS files) is opened before anything is
        swapped, and a failure leaves the running configuration exactly as it was. A
        reload whose file is still being read when another is asked for is given up,
        so a file that stalls never holds up the reload of the corrected one."""
        self._generation += 1
        generation = self._generation
        if self._reading is not None:
            self._reading.cancel()
        self.notifier.reloading()
        try:
            return await self._reload(generation)
        except Exception as exc:  # a bug: the running configuration stays, and says why
            log.exception("reload_failed", source=self.config_path or "<embedded>",
                          reason=f"{type(exc).__name__}: {exc}", keeping=self.config.source)
            self.metrics.config_loaded(success=False)
            return [f"the reload failed ({type(exc).__name__}: {exc}); "
                    "the previous configuration stays in force"]
        finally:
            self.notifier.ready()

    async def _read(self) -> Config:
        path = self.config_path
        # Parsing tens of thousands of sites takes seconds and holds the GIL: in a
        # child process, never on (or beside) the probe loop.
        return self._sharded(default_config() if path is None
                             else await load_config_isolated_async(path))

    def _refused(self, reason: str, problems: int = 1) -> None:
        log.error("reload_failed", source=self.config_path or "<embedded>", reason=reason,
                  problems=problems, keeping=self.config.source)
        self.metrics.config_loaded(success=False)

    async def _reload(self, generation: int) -> list[str]:
        reading = asyncio.ensure_future(self._read())
        self._reading = reading
        try:
            config = await reading
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("config_problem", file=problem.file, line=problem.line,
                          field=problem.field, problem=problem.message)
            self._refused("the inventory has problems", len(exc.problems))
            return [str(problem) for problem in exc.problems]
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this reload's caller went away, not a newer reload
            config = None
        finally:
            if self._reading is reading:
                self._reading = None
        if config is None or generation != self._generation:
            reason = "a newer reload was asked for while this one read the file"
            self._refused(reason)
            return [f"{reason}; that one decides"]
        async with self._reload_lock:
            return await self._apply(config)

    async def _apply(self, config: Config) -> list[str]:
        check_reloaded(self.config, config)
        if config.listen != self.config.listen:
            log.warning("listen_unchanged", listen=self.listen, requested=config.listen,
                        hint="the listen address changes on restart, not on reload")
        # Everything that can fail, before anything is swapped.
        try:
            _check_mqtt(config)
            planned = await self.plan.prepare(config)
        except (OSError, MqttSetupError) as exc:
            reason = str(exc)
            if isinstance(exc, OSError) and self.config.user is not None:
                reason += ("; vcmon gave up its privileges at start and may not open such a "
                           "socket any more: restart it to apply this inventory")
            self._refused(reason)
            return [reason]
        try:
            services = await self.services.prepare(config)
        except OSError as exc:
            await planned.discard()
            self._refused(str(exc))
            return [str(exc)]
        try:
            await self.streams.open_senders(config)
        except OSError as exc:
            await services.discard()
            await planned.discard()
            self._refused(str(exc))
            return [str(exc)]
        # From here on nothing can fail (nor wait): the swap is whole.
        before = set(self.table.sites)
        with collector_paused():
            # Table first, so that results of new sites have somewhere to go.
            self.table.reconfigure(config)
            self.health.reconfigure(config, time.time())
            self.page.reconfigure()
            planned.commit()
            self.scheduler.set_targets(planned.targets)
            self._check_buffer(planned.targets)
            services.commit()
            self.services.scheduler.set_targets(services.targets)
            self.streams.scheduler.set_targets(self.streams.targets(config))
            self.config = config
            self.diagnosis.configure(config.diagnosis, self._trace_targets())
        settle()
        self.metrics.config_loaded(success=True)
        if self.publisher is not None:
            self.publisher.sites_changed()
        after = set(self.table.sites)
        log.info("reloaded", source=config.source, sites=len(after),
                 added=len(after - before), removed=len(before - after))
        return []

    def _check_buffer(self, targets: list[Target]) -> None:
        """Warn when the ICMP sockets hold less than ``BUFFER_SECONDS`` of replies: a
        scrape's fork or a reload that holds the loop that long would lose replies, and
        they would read as packet loss."""
        rate = probe_rate(targets)
        seconds = self.plan.buffer_seconds(rate)
        if seconds < BUFFER_SECONDS:
            log.warning("socket_buffer_small", holds_s=round(seconds, 3),
                        probes_per_s=round(rate),
                        hint="the kernel caps the receive buffer at net.core.rmem_max; "
                             "raise it to 8388608 (deploy/sysctl.d/61-vcmon-buffer.conf) "
                             "and restart vcmon")

    async def _feed_watchdog(self) -> None:
        """WATCHDOG=1 only while the schedule is being kept: a stalled loop gets restarted."""
        interval = self.notifier.watchdog_interval
        assert interval is not None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval / 2)
            behind = self.scheduler.behind(loop.time())
            if behind < interval / 2 and not self._tasks[0].done():
                self.notifier.watchdog()
            else:
                log.error("probe_loop_stalled", behind_s=round(behind, 3))

    def _state_changed(self, change: StateChange) -> None:
        if self.publisher is not None:
            self.publisher.state_changed(change)
        if change.after is Status.DEGRADED:
            self.diagnosis.request(change.site.id, change.site.address, "degraded")
        elif change.after is Status.DOWN:
            self.diagnosis.request(change.site.id, change.site.address, "down")

    def _trace_targets(self) -> list[Site]:
        return [state.site for state in self.table.sites.values()]

    def request_trace(self, site_id: str) -> Outcome | None:
        """An operator's trace of one site now (POST /api/v1/sites/{id}/trace); None: no
        such site here."""
        state = self.table.sites.get(site_id)
        if state is None:
            return None
        return self.diagnosis.request(site_id, state.site.address, "requested")

    def _path_traced(self, request: TraceRequest, snapshot: PathSnapshot) -> None:
        path = self.health.paths.record(request.site_id, request.reason, snapshot)
        if request.reason == "baseline" and path.change is None:
            log.debug("path_traced", site=request.site_id, trigger=request.reason,
                      hops=len(snapshot.hops), packets=snapshot.packets)
            return
        cause = shared_causes(self.health).get(request.site_id)
        bad = snapshot.bad_hop
        emit = log.warning if bad is not None or path.change is not None else log.info
        emit(
            "path_traced", site=request.site_id, trigger=request.reason,
            target=snapshot.target, hops=len(snapshot.hops), reached=snapshot.reached,
            first_bad_hop=bad.ttl if bad else None,
            first_bad_address=bad.address if bad else None, error=snapshot.error,
            diagnosis=verdict(path, cause, self.config.schedule.zone) or "no bad hop")
        if self.publisher is not None:
            self.publisher.path_traced(request.site_id)

    def request_stop(self) -> None:
        if self._stop is None:
            return
        if self._stop.is_set():
            # A second Ctrl-C: the operator does not want to wait for the grace time.
            log.warning("forced_exit")
            os._exit(130)
        self._stop.set()

    async def main_loop(self) -> None:
        assert self._stop is not None, "startup() first"
        await self._stop.wait()

    async def shutdown(self) -> None:
        """Stop intake, then let in-flight work end within the grace time, then cancel."""
        self.notifier.stopping()
        for task in self._tasks:
            task.cancel()
        publisher_stopped = None
        if self.publisher is not None:
            publisher_stopped = asyncio.create_task(self.publisher.stop(MQTT_STOP_GRACE))
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True),
                                   SHUTDOWN_GRACE)
        self._tasks.clear()
        # Replies already on their way still count; waiting is bounded by the grace.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SHUTDOWN_GRACE
        while self.plan.pending and loop.time() < deadline:  # noqa: ASYNC110 -- engines expose a count, not an event
            await asyncio.sleep(0.02)
        await self.http.stop()
        await self.services.close()
        await self.streams.close()
        await self.plan.close()
        if publisher_stopped is not None:
            await publisher_stopped
        log.info("stopped")

    def _on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload(), name="reload")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        try:
            with collector_paused():
                await self.startup()
            settle()
            stop = loop.create_task(self.main_loop())
            first_cycle = loop.create_task(self.scheduler.first_cycle_done.wait())
            await asyncio.wait((stop, first_cycle), return_when=asyncio.FIRST_COMPLETED)
            if first_cycle.done():
                # Every site has had its first probe and /metrics is serving; the
                # per-site state the first round made (destinations, windows) lives
                # as long as the tables, so it leaves the collector's sight too.
                settle()
                self.notifier.ready(f"probing {len(self.table)} sites")
            else:
                first_cycle.cancel()
            await stop
        finally:
            await self.shutdown()
            for sig in signals:
                loop.remove_signal_handler(sig)
            self.notifier.close()


def _check_mqtt(config: Config) -> None:
    """The MQTT password and TLS files of ``config`` can be read (``MqttSetupError``)."""
    settings = config.mqtt
    if settings is None:
        return
    settings.password()
    if settings.tls is not None:
        settings.tls.context()


def _least_privilege(config: Config, engine_modes: list[str]) -> None:
    """The daemon's hook once its sockets are open: become ``user:`` if one is set."""
    warn_exposed_secrets(config)
    identity = config.identity
    if identity is None:
        if os.geteuid() == 0:
            log.warning("running_as_root", hint="set user: (and group:) in the inventory to "
                        "run unprivileged once the sockets are open")
        return
    status = drop_privileges(identity, engine_modes)
    log.info("privileges_dropped", user=identity.user, uid=identity.uid, gid=identity.gid,
             capabilities=capability_names(int(status["CapEff"], 16)) or "none",
             no_new_privs=status["NoNewPrivs"] == "1")
