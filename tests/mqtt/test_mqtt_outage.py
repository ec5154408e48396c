"""The publisher on its own, fed state changes directly, across a real broker outage."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from monitor.inventory import Config
from monitor.mqtt.publisher import MqttPublisher
from monitor.status.health import HealthTracker, StateChange, Status
from monitor.status.sites import SiteTable
from tests.mqtt.broker import Broker, skip_unless_mosquitto
from tests.mqtt.common import (
    config,
    event_seqs,
    first_occurrences,
    until,
    until_blocking,
)
from tests.mqtt.subscriber import Subscriber

pytestmark = [pytest.mark.services, skip_unless_mosquitto]


@dataclass
class Source:
    """The daemon's state without its probes: these tests make the changes themselves."""

    table: SiteTable
    health: HealthTracker
    config: Config


def source_for(cfg: Config) -> Source:
    return Source(SiteTable(cfg), HealthTracker(cfg, time.time()), cfg)


def flip(source: Source, cfg: Config, count: int) -> list[StateChange]:
    """``count`` changes round the sites, each site alternating down and ok."""
    changes = []
    for i in range(count):
        site = cfg.sites[i % len(cfg.sites)]
        health = source.health.sites[site.id]
        after = Status.DOWN if health.status is not Status.DOWN else Status.OK
        changes.append(StateChange(site, health.status, after, f"flip {i}", time.time(), {}))
        health.status, health.since = after, time.time()
    return changes


async def test_events_queued_during_an_outage_arrive_in_order_after_it(tmp_path: Path) -> None:
    with Broker(tmp_path) as broker:
        cfg = config(broker.port, sites=3)
        assert cfg.mqtt is not None
        source = source_for(cfg)
        registry = CollectorRegistry()
        publisher = MqttPublisher(cfg.mqtt, source, registry)
        subscriber = Subscriber(tmp_path, broker.port, "vcmon/#")

        def events() -> list[dict[str, Any]]:
            return subscriber.messages("vcmon/events")

        try:
            await until(lambda: subscriber.subscriptions() == 1, 10, "the subscriber")
            publisher.start()
            for change in flip(source, cfg, 5):
                publisher.state_changed(change)
            await until(lambda: len(events()) == 5, 10, "the first five events")

            # Five events go out to a broker that is frozen, then dies: written to the
            # connection but never acknowledged, so they must be sent again.
            broker.freeze()
            for change in flip(source, cfg, 5):
                publisher.state_changed(change)
            await asyncio.sleep(0.2)
            assert publisher.queued == 5
            broker.kill()
            await until(lambda: not publisher.connected, 10, "the publisher to notice")
            for change in flip(source, cfg, 20):
                publisher.state_changed(change)
            assert publisher.queued == 25

            # Held on the event loop: the publisher cannot reconnect before the subscriber
            # is back, so everything the broker gets after the restart has a reader.
            broker.start()
            until_blocking(lambda: subscriber.subscriptions() == 2, 10, "resubscribed")
            await until(lambda: 30 in event_seqs(events()), 10, "every queued event")
            await until(lambda: publisher.queued == 0, 10, "an empty queue")

            seqs = event_seqs(events())
            assert first_occurrences(seqs) == list(range(1, 31)), seqs
            ids = {json.loads(m["payload"])["id"] for m in events()}
            assert ids == {f"{publisher.run_id}:{n}" for n in range(1, 31)}
            status = [m["payload"] for m in subscriber.messages("vcmon/status")]
            assert status == ["online", "online"]
            # after the restart, every site's state came again, as it is now
            states = {m["topic"]: json.loads(m["payload"])
                      for m in subscriber.messages() if "/sites/" in m["topic"]}
            for site in cfg.sites:
                assert states[f"vcmon/sites/{site.id}/state"]["status"] == (
                    source.health.sites[site.id].status.value)
            assert (registry.get_sample_value("vcmon_mqtt_reconnects_total") or 0) >= 1
            assert registry.get_sample_value("vcmon_mqtt_dropped_total", {"kind": "event"}) == 0
            await publisher.stop(1.0)
            await until(lambda: subscriber.messages("vcmon/status")[-1]["payload"] == "offline",
                        5, "offline")
        finally:
            await publisher.stop(1.0)
            subscriber.close()


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    cfg = config(1883, sites=1, mqtt="")
    assert cfg.mqtt is not None  # reconnect_initial 50 ms, reconnect_max 200 ms
    publisher = MqttPublisher(cfg.mqtt, source_for(cfg), CollectorRegistry())
    for failures, step in ((1, 0.05), (2, 0.1), (3, 0.2), (4, 0.2), (80, 0.2)):
        publisher._failures = failures
        delays = [publisher._backoff() for _ in range(200)]
        assert step / 2 <= min(delays) and max(delays) <= step
        assert max(delays) - min(delays) > step / 4, "jittered"
