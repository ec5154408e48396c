"""The outbound queue's bound and drop order, and the JSON docs/mqtt.md#topics documents."""

from __future__ import annotations

import json
from collections import Counter

from monitor.inventory import parse_config
from monitor.mqtt.messages import Topics, event_payload, state_payload, timestamp
from monitor.mqtt.queue import Kind, OutboundQueue, Outgoing
from monitor.status.health import HealthTracker, SiteHealth, StateChange, Status
from monitor.status.window import summarize


def message(kind: Kind, n: int) -> Outgoing:
    return Outgoing(kind, f"t/{kind}", str(n).encode(), qos=1)


def queue_of(limit: int) -> tuple[OutboundQueue, Counter[str]]:
    dropped: Counter[str] = Counter()
    return OutboundQueue(limit, lambda kind: dropped.update([kind])), dropped


def payloads(queue: OutboundQueue, kind: Kind) -> list[int]:
    return [int(m.payload) for m in queue.oldest(kind, 100)]


def test_a_full_queue_drops_the_oldest_measurement_first() -> None:
    queue, dropped = queue_of(4)
    for n in range(2):
        queue.put(message("measurement", n))
    for n in range(2):
        queue.put(message("event", n))
    queue.put(message("event", 2))
    queue.put(message("measurement", 2))
    assert payloads(queue, "measurement") == [2]
    assert payloads(queue, "event") == [0, 1, 2]
    assert dropped == {"measurement": 2}
    assert len(queue) == 4


def test_events_are_dropped_last_oldest_first() -> None:
    queue, dropped = queue_of(3)
    for n in range(3):
        queue.put(message("event", n))
    queue.put(message("measurement", 0))  # no room, and no measurement to make room
    queue.put(message("event", 3))
    assert payloads(queue, "event") == [1, 2, 3]
    assert payloads(queue, "measurement") == []
    assert dropped == {"measurement": 1, "event": 1}


def test_messages_leave_only_when_acknowledged_in_order() -> None:
    queue, _ = queue_of(10)
    batch = [message("event", n) for n in range(3)]
    for m in batch:
        queue.put(m)
    assert queue.oldest("event", 2) == batch[:2]
    batch[0].acked = batch[2].acked = True
    queue.settle()
    # the third was acknowledged, but the second was not: both are sent again
    assert payloads(queue, "event") == [1, 2]
    batch[1].acked = True
    queue.settle()
    assert len(queue) == 0


def test_a_dropped_message_in_flight_is_not_removed_twice() -> None:
    queue, _ = queue_of(3)
    first = [message("event", n) for n in range(3)]
    for m in first:
        queue.put(m)
    in_flight = queue.oldest("event", 2)
    queue.put(message("event", 3))  # drops event 0 while it is in flight
    for m in in_flight:
        m.acked = True
    queue.settle()
    assert payloads(queue, "event") == [2, 3]


INVENTORY = """\
sites:
  - {id: tinh, name: Hội trường Tỉnh ủy, tier: province, address: 127.10.0.1}
  - {id: tien-du, name: Huyện ủy Tiên Du, tier: district, parent: tinh, address: 127.10.1.1}
  - {id: lac-ve, name: UBND xã Lạc Vệ, tier: commune, parent: tien-du, address: 127.10.1.2}
"""


def test_event_and_state_documents() -> None:
    config = parse_config(INVENTORY)
    site = config.site("lac-ve")
    stats = summarize([(1.0, 0.040), (2.0, 0.045), (3.0, None)])
    change = StateChange(site, Status.OK, Status.DOWN, "no reply to the last 3 probes",
                         1774575065.12, {"rtt_avg": 0.0425, "loss_ratio": 1 / 3})
    event = json.loads(event_payload(change, "3f2a9c1e5b7d4a60", 42))
    assert event == {
        "id": "3f2a9c1e5b7d4a60:42", "run": "3f2a9c1e5b7d4a60", "seq": 42,
        "at": "2026-03-27T01:31:05.120Z", "site": "lac-ve", "name": "UBND xã Lạc Vệ",
        "tier": "commune", "district": "tien-du", "parent": "tien-du", "provision": "vnpt",
        "before": "ok", "after": "down", "reason": "no reply to the last 3 probes",
        "window": {"rtt_avg": 0.0425, "loss_ratio": 1 / 3},
    }
    health: SiteHealth = HealthTracker(config, 1774575000.0).sites["lac-ve"]
    state = json.loads(state_payload(health, stats, 1774575065.5))
    assert state == {
        "site": "lac-ve", "name": "UBND xã Lạc Vệ", "tier": "commune", "district": "tien-du",
        "parent": "tien-du", "provision": "vnpt", "status": "unknown",
        "reason": "no probe has resolved yet", "since": "2026-03-27T01:30:00.000Z",
        "window": {"rtt_avg": stats.rtt_avg, "jitter": stats.jitter,
                   "loss_ratio": stats.loss_ratio, "mos": stats.mos, "sent": 3, "received": 2},
        "updated": "2026-03-27T01:31:05.500Z",
    }
    assert state_payload(health, None, 0.0).count(b'"window":null') == 1


def test_topics_and_timestamps() -> None:
    topics = Topics("bn/vcmon")
    assert (topics.status, topics.events) == ("bn/vcmon/status", "bn/vcmon/events")
    assert topics.state("lac-ve") == "bn/vcmon/sites/lac-ve/state"
    assert topics.measurements("lac-ve") == "bn/vcmon/sites/lac-ve/measurements"
    assert timestamp(0) == "1970-01-01T00:00:00.000Z"


def test_state_and_measurements_carry_both_directions_of_a_stream() -> None:
    from monitor.mqtt.messages import measurement_payload
    from tests.status.test_streams import stream

    config = parse_config(INVENTORY.replace("address: 127.10.1.2}",
                                            "address: 127.10.1.2, probes: [{kind: twamp}]}"))
    tracker = HealthTracker(config, 1774575000.0)
    out: list[float | None] = [10.0] * 50
    out[9] = out[10] = None
    tracker.streams.record("lac-ve/twamp", 1774575060.0, stream(out, [10.0] * 50))
    streams = tracker.streams.of_site("lac-ve")
    stats = summarize([(1.0, 0.040), (2.0, 0.045)])
    for payload in (state_payload(tracker.sites["lac-ve"], stats, 1774575065.5, streams=streams),
                    measurement_payload(config.site("lac-ve"), stats, 1774575065.5, streams)):
        (document,) = json.loads(payload)["streams"]
        assert document["probe"] == "twamp" and document["dscp"] == 46
        assert document["last_stream_at"] == "2026-03-27T01:31:00.000Z"
        window = document["window"]
        assert (window["forward"]["lost"], window["reverse"]["lost"]) == (2, 0)
        assert window["forward"]["loss_ratio"] == 0.04
    assert "streams" not in json.loads(state_payload(tracker.sites["tinh"], stats, 1774575065.5))
