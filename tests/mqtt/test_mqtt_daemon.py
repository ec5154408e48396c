"""The daemon with an ``mqtt:`` section, against a real Mosquitto on loopback.

Sites are 127.0.50.x on the host's loopback; the broker listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from monitor.daemon import Daemon
from monitor.inventory import load_config, parse_config
from monitor.inventory.schema import DEMO_SOURCE
from tests.conftest import free_port
from tests.mqtt.broker import Broker, skip_unless_mosquitto
from tests.mqtt.common import (
    config,
    daemon_for,
    inventory,
    payloads,
    running,
    sample,
    until,
)
from tests.mqtt.subscriber import Subscriber

pytestmark = [
    pytest.mark.services,
    skip_unless_mosquitto,
    pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMP sockets need root here"),
]


async def test_a_late_subscriber_sees_every_site_then_offline_after_a_clean_stop(
        tmp_path: Path) -> None:
    with Broker(tmp_path) as broker:
        daemon = daemon_for(config(broker.port, sites=5))
        async with running(daemon) as run:
            # the five unknown -> ok events are acknowledged after the states behind them
            await until(lambda: sample(daemon, "vcmon_mqtt_published_total", kind="event") == 5,
                        10, "five events")
            subscriber = Subscriber(tmp_path, broker.port, "vcmon/#")
            try:
                await until(lambda: len(subscriber.messages()) >= 6, 10, "retained messages")
                retained = [m for m in subscriber.messages() if m["retain"]]
                status = [m["payload"] for m in retained if m["topic"] == "vcmon/status"]
                assert status == ["online"]
                states = {m["topic"]: m for m in retained if m["topic"] != "vcmon/status"}
                assert sorted(states) == [f"vcmon/sites/s{n}/state" for n in range(1, 6)]
                for state in payloads(list(states.values())):
                    assert state["status"] == "ok", state
                    assert state["tier"] == "commune" and state["district"] == state["site"]
                    assert state["name"].startswith("Điểm cầu")
                    assert state["window"]["rtt_avg"] < 0.01 and state["window"]["received"] >= 1
                    assert state["since"].endswith("Z")
                assert sample(daemon, "vcmon_mqtt_connected") == 1
                assert await run.stop() < 1.5
                await until(lambda: subscriber.messages("vcmon/status")[-1]["payload"] == "offline",
                            5, "offline after a clean stop")
            finally:
                subscriber.close()


async def test_shutdown_stays_bounded_when_the_broker_stops_answering(tmp_path: Path) -> None:
    with Broker(tmp_path) as broker:
        subscriber = Subscriber(tmp_path, broker.port, "vcmon/status")
        daemon = daemon_for(config(broker.port, sites=2, mqtt="  keepalive: 5s\n"))
        try:
            await until(lambda: subscriber.subscriptions() == 1, 10, "the subscriber")
            async with running(daemon) as run:
                await until(lambda: sample(daemon, "vcmon_mqtt_connected") == 1, 10, "connected")
                # A frozen broker keeps the TCP connection open but acknowledges nothing:
                # neither the last events, nor "offline", nor the disconnect.
                broker.freeze()
                await asyncio.sleep(0.2)
                assert await run.stop() < 1.5
            # "offline" went out before the disconnect, so once the broker wakes up it
            # keeps "offline", not the "online" a bare disconnect (no Will) would leave.
            broker.thaw()
            await until(lambda: [m["payload"] for m in subscriber.messages()][-1:] == ["offline"],
                        10, "offline once the broker answers again")
        finally:
            subscriber.close()


async def test_a_broker_away_longer_than_the_queue_holds(tmp_path: Path) -> None:
    """Probing keeps its rate, the queue its bound, drops are counted, events kept;
    when the broker finally appears, everything that was kept is delivered."""
    broker = Broker(tmp_path)  # configured, not started: nothing listens on its port
    sites, interval, queue = 6, 0.05, 10
    daemon = daemon_for(config(broker.port, sites=sites, interval=f"{interval}s",
                               mqtt=f"  queue_size: {queue}\n  measurements_every: 1s\n"))
    try:
        async with running(daemon):
            await until(lambda: sample(daemon, "vcmon_mqtt_queue_depth") == sites, 5,
                        "the unknown -> ok events")
            sends, depths = daemon.scheduler.sends, []
            for _ in range(50):  # 2.5 s: two rounds of six measurements into four places
                depths.append(sample(daemon, "vcmon_mqtt_queue_depth"))
                await asyncio.sleep(0.05)
            rate = (daemon.scheduler.sends - sends) / 2.5
            assert rate >= 0.9 * sites / interval, rate
            assert max(depths) == queue
            assert sample(daemon, "vcmon_mqtt_dropped_total", kind="measurement") >= 8
            assert sample(daemon, "vcmon_mqtt_dropped_total", kind="event") == 0
            assert sample(daemon, "vcmon_mqtt_connected") == 0
            assert sample(daemon, "vcmon_mqtt_reconnects_total") >= 5

            broker.start()
            await until(lambda: sample(daemon, "vcmon_mqtt_published_total", kind="event")
                        == sites, 10, "the kept events")
            subscriber = Subscriber(tmp_path, broker.port, "vcmon/#")
            try:
                await until(lambda: any(m["topic"].endswith("/measurements")
                                        for m in subscriber.messages()), 5, "a measurement")
                states = [m for m in subscriber.messages() if m["topic"].endswith("/state")]
                assert len(states) == sites and all(m["retain"] for m in states)
                measurement = payloads([m for m in subscriber.messages()
                                        if m["topic"].endswith("/measurements")])[0]
                assert {"site", "at", "rtt_median", "rtt_p95", "jitter", "loss_ratio", "mos",
                        "sent", "received"} <= set(measurement)
            finally:
                subscriber.close()
    finally:
        broker.kill()


async def test_a_reload_publishes_new_sites_and_clears_removed_ones(tmp_path: Path) -> None:
    with Broker(tmp_path) as broker:
        path = tmp_path / "sites.yaml"
        path.write_text(inventory(broker.port, sites=3), encoding="utf-8")
        daemon = Daemon(load_config(path), config_path=str(path), registry=CollectorRegistry(),
                        listen=f"127.0.0.1:{free_port()}")
        async with running(daemon):
            await until(lambda: sample(daemon, "vcmon_mqtt_published_total", kind="event") == 3,
                        10, "three events")
            # s1 goes, s4 comes
            path.write_text(inventory(broker.port, sites=3, first=2), encoding="utf-8")
            assert await daemon.reload() == []
            await until(lambda: sample(daemon, "vcmon_mqtt_published_total", kind="event") == 4,
                        10, "the new site's first event")
            daemon.publisher.report_written({"at": "2026-03-27T08:45:00+07:00", "ready": 3})
            await until(lambda: sample(daemon, "vcmon_mqtt_published_total", kind="event") == 5,
                        10, "the report summary")
            subscriber = Subscriber(tmp_path, broker.port, "vcmon/#")
            try:
                await until(lambda: len(subscriber.messages()) >= 5, 10, "retained messages")
                retained = {m["topic"]: m["payload"] for m in subscriber.messages()
                            if m["retain"]}
                assert sorted(t for t in retained if t.startswith("vcmon/sites/")) == [
                    "vcmon/sites/s2/state", "vcmon/sites/s3/state", "vcmon/sites/s4/state"]
                assert json.loads(retained["vcmon/reports"]) == {
                    "at": "2026-03-27T08:45:00+07:00", "ready": 3}
            finally:
                subscriber.close()


async def test_a_demo_says_so_on_the_status_topic(tmp_path: Path) -> None:
    with Broker(tmp_path) as broker:
        demo = parse_config(inventory(broker.port, sites=2), DEMO_SOURCE)
        daemon = daemon_for(demo)
        async with running(daemon):
            await until(lambda: sample(daemon, "vcmon_mqtt_connected") == 1, 10, "connected")
            subscriber = Subscriber(tmp_path, broker.port, "vcmon/status")
            try:
                await until(lambda: len(subscriber.messages()) >= 1, 10, "the status")
                assert subscriber.messages()[-1]["payload"] == "online demo"
            finally:
                subscriber.close()
