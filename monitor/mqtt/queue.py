"""What waits for the broker: bounded, oldest measurements dropped first, events last.

A message leaves the queue only when the broker has acknowledged it, so a message
published into a connection that then dies is sent again after the reconnect.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

# event and measurement wait in the queue; state and status are rebuilt from the
# daemon's current state instead, so they never pile up.
Kind = Literal["event", "measurement", "state", "status"]
QUEUED_KINDS: tuple[Kind, ...] = ("event", "measurement")


@dataclass(slots=True, eq=False)
class Outgoing:
    kind: Kind
    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    acked: bool = False


class OutboundQueue:
    """Events and measurements waiting for the broker, at most ``limit`` of them."""

    def __init__(self, limit: int, dropped: Callable[[Kind], None]) -> None:
        self.limit = limit
        self._dropped = dropped
        self._waiting: dict[Kind, deque[Outgoing]] = {kind: deque() for kind in QUEUED_KINDS}

    def __len__(self) -> int:
        return sum(map(len, self._waiting.values()))

    def depth(self, kind: Kind) -> int:
        return len(self._waiting[kind])

    def put(self, message: Outgoing) -> None:
        """Queue ``message``; when full, drop the oldest measurement, else the oldest event.

        A measurement that finds the queue full of events is dropped itself: the
        events are what subscribers reconcile on, the next measurement is minutes away.
        """
        if len(self) >= self.limit:
            measurements = self._waiting["measurement"]
            if measurements:
                measurements.popleft()
                self._dropped("measurement")
            elif message.kind == "measurement":
                self._dropped("measurement")
                return
            else:
                self._waiting["event"].popleft()
                self._dropped("event")
        self._waiting[message.kind].append(message)

    def oldest(self, kind: Kind, count: int) -> list[Outgoing]:
        """The ``count`` oldest messages of ``kind``, left in the queue until acknowledged."""
        return list(itertools.islice(self._waiting[kind], count))

    def settle(self) -> None:
        """Remove acknowledged messages from the front; the rest are sent again."""
        for waiting in self._waiting.values():
            while waiting and waiting[0].acked:
                waiting.popleft()
