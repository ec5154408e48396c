"""``vcmon run`` in a network namespace, a broker that dies mid-run, and a subscriber.

The namespace holds the daemon, its sites (127.0.60.x on the namespace's own
loopback), the broker and the subscriber, so nothing leaves it. Sites go down and
come back when the test makes the namespace's kernel ignore pings
(``net.ipv4.icmp_echo_ignore_all``), which is a state change per site each time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import netns
from tests.conftest import free_port
from tests.mqtt.broker import Broker, skip_unless_mosquitto
from tests.mqtt.common import event_seqs, first_occurrences, until_blocking
from tests.mqtt.subscriber import Subscriber

pytestmark = [pytest.mark.services, pytest.mark.netns, skip_unless_mosquitto,
              netns.skip_unless_available]

SITES = 4
CYCLES = 3  # down and back: two changes per site per cycle


def inventory(port: int) -> str:
    rows = "".join(f"  - {{id: s{n}, name: Điểm cầu {n}, tier: commune, address: 127.0.60.{n}}}\n"
                   for n in range(1, SITES + 1))
    return ("defaults: {interval: 50ms, timeout: 100ms, down_after: 2}\n"
            "health: {recover_after: 1}\n"
            f"mqtt:\n  host: 127.0.0.1\n  port: {port}\n  prefix: bn/vcmon\n"
            "  reconnect_initial: 50ms\n  reconnect_max: 200ms\n"
            f"sites:\n{rows}")


@pytest.fixture
def namespace() -> Iterator[netns.NetNamespace]:
    with netns.NetNamespace("vcmon-mqtt") as ns:
        assert ns.route_device("127.0.60.1") == "lo"
        yield ns


def scrape(ns: netns.NetNamespace, port: int) -> dict[str, float]:
    """Sums of each sample name on the daemon's /metrics (read from inside the namespace)."""
    with ns.entered(), urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                              timeout=5) as response:
        text = response.read().decode()
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            sums[s.name] = sums.get(s.name, 0.0) + s.value
    return sums


def test_every_event_of_a_broker_outage_arrives_in_order(
        tmp_path: Path, namespace: netns.NetNamespace) -> None:
    ns, wrap = namespace, namespace.command([])
    broker = Broker(tmp_path, wrap=wrap)
    config = tmp_path / "sites.yaml"
    config.write_text(inventory(broker.port))
    listen = free_port()
    log = tmp_path / "vcmon.log"
    subscriber = daemon = None
    try:
        broker.start()
        subscriber = Subscriber(tmp_path, broker.port, "bn/vcmon/#", wrap=wrap)
        until_blocking(lambda: subscriber.subscriptions() == 1, 10, "the subscriber")
        with log.open("wb") as log_file:
            daemon = subprocess.Popen(
                [*wrap, sys.executable, "-m", "monitor.cli", "run", "--config", str(config),
                 "--listen", f"127.0.0.1:{listen}", "--log-format", "json"],
                stdout=subprocess.DEVNULL, stderr=log_file)

        def events() -> list[dict[str, Any]]:
            assert subscriber is not None
            return subscriber.messages("bn/vcmon/events")

        def metrics() -> dict[str, float]:
            return scrape(ns, listen)

        def status() -> list[str]:
            assert subscriber is not None
            return [m["payload"] for m in subscriber.messages("bn/vcmon/status")]

        until_blocking(lambda: len(events()) == SITES, 20, "every site's first event")

        broker.kill()
        until_blocking(lambda: metrics()["vcmon_mqtt_connected"] == 0, 10, "a lost broker")

        def changes() -> float:
            return metrics()["vcmon_site_state_changes_total"]

        def reached(target: float) -> Callable[[], bool]:
            return lambda: changes() >= target

        for _ in range(CYCLES):
            for ignore in ("1", "0"):  # every site down, then every site back
                target = changes() + SITES
                ns.sysctl("net.ipv4.icmp_echo_ignore_all", ignore)
                until_blocking(reached(target), 10, "every site to change")
        total = changes()
        assert total - SITES >= 20 and metrics()["vcmon_mqtt_queue_depth"] == total - SITES

        # Frozen, the daemon cannot reconnect before the subscriber is back, so
        # everything the new broker gets has a reader.
        os.kill(daemon.pid, signal.SIGSTOP)
        try:
            broker.start()
            until_blocking(lambda: subscriber.subscriptions() == 2, 10, "resubscribed")
        finally:
            os.kill(daemon.pid, signal.SIGCONT)
        until_blocking(lambda: total in event_seqs(events()), 20, "every queued event")

        seqs = event_seqs(events())
        assert first_occurrences(seqs) == list(range(1, int(total) + 1)), seqs
        runs = {json.loads(m["payload"])["run"] for m in events()}
        assert len(runs) == 1
        assert status() == ["online", "online"]
        states = {m["topic"]: json.loads(m["payload"]) for m in subscriber.messages()
                  if m["topic"].endswith("/state")}
        assert {s["status"] for s in states.values()} == {"ok"} and len(states) == SITES

        # A crash: no clean disconnect, so the broker publishes the Will.
        daemon.kill()
        daemon.wait(10)
        until_blocking(lambda: status()[-1:] == ["offline"], 30, "the Will")
        text = log.read_text()
        assert "Traceback" not in text
        assert '"event": "mqtt_connection_lost"' in text
    finally:
        if daemon is not None and daemon.poll() is None:
            os.kill(daemon.pid, signal.SIGCONT)
            daemon.kill()
            daemon.wait(10)
        if subscriber is not None:
            subscriber.close()
        broker.kill()
