"""The MQTT publisher: live site states (retained), state-change events, daemon status.

The daemon hands it every ``StateChange`` without waiting; one long-lived task keeps a
connection to the broker (aiomqtt, one reused ``Client``, reconnecting with capped
exponential backoff and jitter) and sends, in this order after each (re)connect:
``online``, the current state of every site, then what queued up meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiomqtt import Client, MqttCodeError, MqttError, Will
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import CollectorRegistry, Counter, Gauge

from monitor.inventory.mqtt import MqttSettings, MqttSetupError
from monitor.mqtt.client import SafeClient
from monitor.mqtt.messages import (
    Topics,
    event_payload,
    measurement_payload,
    path_payload,
    state_payload,
)
from monitor.mqtt.queue import QUEUED_KINDS, Kind, OutboundQueue, Outgoing
from monitor.status.health import StateChange, Status, window_stats
from monitor.status.paths import path_record, verdict
from monitor.status.records import shared_causes
from monitor.status.source import Source

__all__ = ["MqttPublisher", "MqttSettings", "Source"]

log = structlog.get_logger("vcmon.mqtt")

# Publishes awaiting their PUBACK at once: paho's default in-flight limit, so that a
# reconnect republishing thousands of retained states is not one round trip per site.
WINDOW = 20
# A large inventory's measurements are built in slices, yielding to the probe loop.
SLICE = 256
# CONNACK reason codes (MQTT 5 numbering, which paho also uses for 3.1.1 refusals)
_BAD_CREDENTIALS = frozenset({4, 5, 134, 135})


class MqttMetrics:
    """The publisher's own health, on the daemon's registry."""

    def __init__(self, registry: CollectorRegistry, depth: Callable[[], int]) -> None:
        self.connected = Gauge("vcmon_mqtt_connected",
                               "1 while connected to the MQTT broker.", registry=registry)
        self.reconnects = Counter(
            "vcmon_mqtt_reconnects", "Connection attempts after a failed or lost connection.",
            registry=registry)
        self.publish_errors = Counter(
            "vcmon_mqtt_publish_errors",
            "Publishes that failed or lost their connection before the broker acknowledged "
            "them; queued messages among them are sent again.", registry=registry)
        self.published = Counter(
            "vcmon_mqtt_published", "Messages the broker acknowledged, by kind.", ["kind"],
            registry=registry)
        self.dropped = Counter(
            "vcmon_mqtt_dropped", "Messages dropped because the queue was full, by kind.",
            ["kind"], registry=registry)
        self.queue_depth = Gauge("vcmon_mqtt_queue_depth",
                                 "Events and measurements waiting for the broker.",
                                 registry=registry)
        self.queue_depth.set_function(depth)
        for kind in QUEUED_KINDS:
            self.dropped.labels(kind)


class MqttPublisher:
    def __init__(self, settings: MqttSettings, source: Source,
                 registry: CollectorRegistry) -> None:
        self.settings = settings
        self.topics = Topics(settings.prefix)
        self._source = source
        # Subscribers tell daemon restarts apart by run; seq restarts at 1 with each run.
        self.run_id = secrets.token_hex(8)
        self._seq = 0
        self._queue = OutboundQueue(settings.queue_size, self._count_drop)
        self.metrics = MqttMetrics(registry, lambda: len(self._queue))
        # Sites whose retained state must be (re)published, oldest first; coalesced, so
        # bounded by the inventory however often a site flaps.
        self._dirty: dict[str, None] = {}
        self._retained: set[str] = set()
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._flush_until = 0.0
        self._failures = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.connected = False

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._run(), name="mqtt"))
        if self.settings.measurements_every is not None:
            self._tasks.append(asyncio.create_task(self._sample(), name="mqtt-measurements"))

    def state_changed(self, change: StateChange) -> None:
        """Queue the event and mark the site's retained state stale; never waits."""
        self._seq += 1
        self._queue.put(Outgoing("event", self.topics.events,
                                 event_payload(change, self.run_id, self._seq), self.settings.qos))
        self._dirty[change.site.id] = None
        self._wake.set()

    def path_traced(self, site_id: str) -> None:
        """A trace of a site has ended: queue its ``path`` event unless it only learnt the
        baseline, and refresh the site's retained state, which carries the path."""
        health = self._source.health.sites.get(site_id)
        record = self._path(site_id)
        if health is None or record is None:
            return
        if record["trigger"] != "baseline":
            self._seq += 1
            payload = path_payload(health, record, record["diagnosis"], self.run_id,
                                   self._seq, time.time())
            self._queue.put(Outgoing("event", self.topics.events, payload, self.settings.qos))
        self._dirty[site_id] = None
        self._wake.set()

    def _path(self, site_id: str) -> dict[str, Any] | None:
        health = self._source.health
        path = health.paths.get(site_id)
        if path is None or path.last is None:
            return None  # most sites, at most resyncs: no pass over every site's health
        h = health.sites.get(site_id)
        bad = h is not None and h.status in (Status.DEGRADED, Status.DOWN)
        cause = shared_causes(health).get(site_id) if bad else None
        zone = self._source.config.schedule.zone
        record = path_record(path, cause, zone)
        if record is not None:
            record["diagnosis"] = verdict(path, cause, zone)
        return record

    def report_written(self, summary: dict[str, Any]) -> None:
        """Queue a readiness report's summary, retained so a late subscriber sees the last.

        It waits with the events: a report is as important to keep across an outage."""
        payload = json.dumps(summary, ensure_ascii=False).encode()
        self._queue.put(Outgoing("event", self.topics.reports, payload, self.settings.qos,
                                 retain=True))
        self._wake.set()

    def sites_changed(self) -> None:
        """A reload added or removed sites: publish the new ones, clear the removed."""
        self._resync()
        self._wake.set()

    async def stop(self, grace: float) -> None:
        """Flush events, publish ``offline`` and disconnect, all within ``grace`` seconds."""
        loop = asyncio.get_running_loop()
        # Half for what is queued, half for "offline" and the disconnect.
        self._flush_until = loop.time() + grace / 2
        self._closing.set()
        self._wake.set()
        for task in self._tasks[1:]:
            task.cancel()
        if self._tasks:
            done, _ = await asyncio.wait(self._tasks[:1], timeout=grace)
            if not done:
                log.warning("mqtt_stop_timed_out", unsent=len(self._queue),
                            hint="the broker did not acknowledge in time")
        for task in self._tasks:
            await _cancel(task)
        self._tasks.clear()

    def _count_drop(self, kind: Kind) -> None:
        self.metrics.dropped.labels(kind).inc()

    def _client(self) -> Client:
        s = self.settings
        return SafeClient(
            s.host, s.broker_port, identifier=s.identifier, username=s.username,
            password=s.password(), keepalive=round(s.keepalive),
            # A crash or a cut link leaves "offline" behind; a clean stop publishes it.
            will=Will(self.topics.status, b"offline", qos=s.qos, retain=True),
            tls_context=s.tls.context() if s.tls is not None else None)

    async def _run(self) -> None:
        client: Client | None = None
        while not self._closing.is_set():
            try:
                if client is None:
                    client = self._client()
                    # we keep up to WINDOW publishes in flight on purpose
                    client.pending_calls_threshold = WINDOW + 1
                await self._session(client)
                return
            except (MqttError, MqttSetupError) as exc:
                delay = self._failed(exc)
            except Exception:
                # A bug here must not end MQTT for the rest of the run: log it, start over.
                delay = self._failed(None)
                log.exception("mqtt_publisher_error", retry_in=round(delay, 2))
                client = None
            try:
                await asyncio.wait_for(self._closing.wait(), delay)
                return
            except TimeoutError:
                self.metrics.reconnects.inc()

    def _backoff(self) -> float:
        """Exponential, capped, with jitter: restarted brokers are not hit by every client
        in the same second ("equal jitter": between half and all of the step)."""
        s = self.settings
        step = min(s.reconnect_max, s.reconnect_initial * 2.0 ** min(self._failures - 1, 30))
        return step / 2 + random.uniform(0, step / 2)

    def _failed(self, exc: Exception | None) -> float:
        """Log why the connection failed or ended; the delay before the next attempt."""
        self._failures += 1
        delay = self._backoff()
        lost = self.connected
        self._set_connected(False)
        if exc is None:
            return delay
        s = self.settings
        # aiomqtt reports a dropped connection as "Disconnected during message iteration"
        # and keeps paho's reason ("The connection was lost.") as the cause.
        where = {"broker": f"{s.host}:{s.broker_port}", "reason": str(exc.__cause__ or exc),
                 "retry_in": round(delay, 2), "unsent": len(self._queue)}
        rc = exc.rc if isinstance(exc, MqttCodeError) else None
        code = rc.value if isinstance(rc, ReasonCode) else rc
        if code in _BAD_CREDENTIALS:
            secret = (f"the password in {s.password_file}" if s.password_file
                      else f"${s.password_env}" if s.password_env else "the broker's ACL")
            log.error("mqtt_credentials_rejected", username=s.username,
                      hint=f"check mqtt.username and {secret}", **where)
        elif isinstance(exc, MqttSetupError):
            log.error("mqtt_setup_failed", **where)
        elif lost:
            log.warning("mqtt_connection_lost", **where)
        else:
            hint = ("check mqtt.tls.ca_file and the name in the broker's certificate"
                    if "CERTIFICATE" in str(exc) else "is the broker running and reachable?")
            log.warning("mqtt_connect_failed", hint=hint, **where)
        return delay

    def _set_connected(self, connected: bool) -> None:
        self.connected = connected
        self.metrics.connected.set(1 if connected else 0)

    async def _session(self, client: Client) -> None:
        async with client:
            self._failures = 0
            self._set_connected(True)
            log.info("mqtt_connected", broker=f"{self.settings.host}:{self.settings.broker_port}",
                     client_id=client.identifier, tls=self.settings.tls is not None,
                     unsent=len(self._queue))
            # a demo says so where subscribers look first: it monitors no real site
            online = b"online demo" if self._source.config.demo else b"online"
            await self._publish(client, self._status(online))
            self._resync()
            await self._serve(client)
            await self._publish(client, self._status(b"offline"))
        self._set_connected(False)
        log.info("mqtt_disconnected", unsent=len(self._queue))

    def _status(self, text: bytes) -> Outgoing:
        return Outgoing("status", self.topics.status, text, self.settings.qos, retain=True)

    def _resync(self) -> None:
        """After a (re)connect the broker may have lost every retained state: send them all,
        and clear those of sites a reload removed."""
        current = list(self._source.health.sites)
        gone = self._retained.difference(current)
        self._dirty = dict.fromkeys([*gone, *current])

    async def _serve(self, client: Client) -> None:
        """Send until closing, then flush until the flush deadline; raise MqttError when
        the connection drops."""
        watch = asyncio.create_task(self._watch(client))
        drain = asyncio.create_task(self._drain(client))
        closing = asyncio.create_task(self._closing.wait())
        done: set[asyncio.Task[Any]]
        try:
            done, _ = await asyncio.wait((watch, drain, closing),
                                         return_when=asyncio.FIRST_COMPLETED)
            if done == {closing}:
                # A batch waiting for a slow broker must not hold "offline" back.
                loop = asyncio.get_running_loop()
                done, _ = await asyncio.wait((watch, drain), timeout=max(
                    0.0, self._flush_until - loop.time()), return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    log.warning("mqtt_flush_incomplete", unsent=len(self._queue))
        finally:
            for task in (watch, drain, closing):
                task.cancel()
            await asyncio.gather(watch, drain, closing, return_exceptions=True)
        for task in done:
            task.result()

    @staticmethod
    async def _watch(client: Client) -> None:
        # Nothing is subscribed: the iterator only ends, with MqttError, when the
        # connection drops, which a publish waiting for its PUBACK would not notice.
        async for _ in client.messages:
            pass

    async def _drain(self, client: Client) -> None:
        """Send what waits, most urgent first; once closing, return when it is all sent."""
        while True:
            self._wake.clear()
            closing = self._closing.is_set()
            if not await self._send_next(client, closing=closing):
                if closing:
                    return
                await self._wake.wait()

    async def _send_next(self, client: Client, *, closing: bool) -> bool:
        """Send one window of the most urgent messages; False when nothing is waiting."""
        if self._dirty:
            ids = list(self._dirty)[:WINDOW]
            for site_id in ids:
                del self._dirty[site_id]
            await self._publish_all(client, [self._state(site_id) for site_id in ids])
            return True
        # Measurements are for the live view: not worth delaying a stop for.
        kinds: tuple[Kind, ...] = ("event",) if closing else QUEUED_KINDS
        for kind in kinds:
            batch = self._queue.oldest(kind, WINDOW)
            if batch:
                try:
                    await self._publish_all(client, batch)
                finally:
                    self._queue.settle()
                return True
        return False

    def _state(self, site_id: str) -> Outgoing:
        topic = self.topics.state(site_id)
        health = self._source.health.sites.get(site_id)
        if health is None:
            # An empty retained message deletes the broker's copy (MQTT 3.1.1, 3.3.1.3).
            self._retained.discard(site_id)
            return Outgoing("state", topic, b"", self.settings.qos, retain=True)
        now = time.time()
        state = self._source.table.sites.get(site_id)
        stats = state.window.stats(now) if state is not None else None
        self._retained.add(site_id)
        path = self._path(site_id)
        streams = self._source.health.streams.of_site(site_id)
        return Outgoing("state", topic, state_payload(health, stats, now, path, streams),
                        self.settings.qos, retain=True)

    async def _publish_all(self, client: Client, batch: list[Outgoing]) -> None:
        # paho writes each PUBLISH when its task first runs, in creation order, so the
        # broker receives them in queue order; the acknowledgements come back in any order.
        tasks = [asyncio.create_task(self._publish(client, message)) for message in batch]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def _publish(self, client: Client, message: Outgoing) -> None:
        try:
            await client.publish(message.topic, message.payload, qos=message.qos,
                                 retain=message.retain)
        except (MqttError, asyncio.CancelledError):
            self.metrics.publish_errors.inc()
            raise
        message.acked = True
        self.metrics.published.labels(message.kind).inc()

    async def _sample(self) -> None:
        every = self.settings.measurements_every
        assert every is not None
        loop = asyncio.get_running_loop()
        due = loop.time() + every
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            # after a stall, the next period starts now instead of bursting to catch up
            due = max(due + every, loop.time())
            now = time.time()
            health = self._source.health
            for i, state in enumerate(list(self._source.table)):
                if i % SLICE == SLICE - 1:
                    await asyncio.sleep(0)
                site = state.site
                stats = window_stats(state, health.sites.get(site.id), now)
                self._queue.put(Outgoing(
                    "measurement", self.topics.measurements(site.id),
                    measurement_payload(site, stats, now, health.streams.of_site(site.id)),
                    qos=0))
            self._wake.set()


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait briefly: a client stuck disconnecting from a frozen broker
    gets a second cancellation, so that a stop stays bounded in time."""
    for _ in range(3):
        if task.done():
            break
        task.cancel()
        await asyncio.wait((task,), timeout=0.05)
    if task.done() and not task.cancelled():
        exc = task.exception()
        if exc is not None:
            log.error("mqtt_task_failed", task=task.get_name(), error=repr(exc))
