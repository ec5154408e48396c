"""A test's MQTT subscriber, as its own process: what a control-room display would see.

It subscribes with QoS 1, reconnects by itself when the broker comes back, and
writes every message as one JSON line to a file the test reads:
``{"topic": ..., "payload": ..., "retain": ...}``, and ``{"subscribed": N}`` after
its N-th SUBACK. Run inside a namespace with ``ip netns exec NS python subscriber.py``.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

Message = dict[str, Any]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topic", default="#")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    with Path(args.out).open("a", encoding="utf-8", buffering=1) as out:
        _subscribe(args.port, args.topic, lambda record: out.write(
            json.dumps(record, ensure_ascii=False) + "\n"))


def _subscribe(port: int, topic: str, write: Callable[[Message], object]) -> None:
    subscribed = 0

    def on_connect(client: mqtt.Client, *_: Any) -> None:
        client.subscribe(topic, qos=1)

    def on_subscribe(*_: Any) -> None:
        nonlocal subscribed
        subscribed += 1
        write({"subscribed": subscribed})

    def on_message(_client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        write({"topic": message.topic, "payload": message.payload.decode(),
               "retain": bool(message.retain)})

    client = mqtt.Client(CallbackAPIVersion.VERSION2, clean_session=True)
    client.on_connect, client.on_subscribe, client.on_message = (
        on_connect, on_subscribe, on_message)
    client.reconnect_delay_set(min_delay=0.02, max_delay=0.05)  # type: ignore[arg-type]
    signal.signal(signal.SIGTERM, lambda *_: client.disconnect())
    client.connect_async("127.0.0.1", port, keepalive=5)
    client.loop_forever(retry_first_connection=True)


class Subscriber:
    """The subscriber process and what it has written so far."""

    def __init__(self, folder: Path, port: int, topic: str = "#",
                 wrap: Sequence[str] = ()) -> None:
        self.out = folder / f"subscriber-{time.monotonic_ns()}.jsonl"
        self.out.touch()
        self.proc = subprocess.Popen(
            [*wrap, sys.executable, __file__, "--port", str(port), "--topic", topic,
             "--out", str(self.out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def records(self) -> list[Message]:
        text = self.out.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.endswith("}")]

    def messages(self, topic: str | None = None) -> list[Message]:
        return [r for r in self.records()
                if "topic" in r and (topic is None or r["topic"] == topic)]

    def subscriptions(self) -> int:
        return sum(1 for r in self.records() if "subscribed" in r)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


if __name__ == "__main__":
    main()
