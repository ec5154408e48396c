"""The one record every probe kind produces."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    REPLY = "reply"
    TIMEOUT = "timeout"
    # ICMP errors that a router or the target sent back for one of our probes
    UNREACHABLE = "unreachable"
    TTL_EXCEEDED = "ttl_exceeded"
    # the kernel refused the send (no route, buffer full, ...)
    SEND_ERROR = "send_error"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe packet, resolved: a reply, a timeout, an ICMP error or a send error.

    ``target`` is the caller's opaque key (the site id); probes never know about sites.
    ``sent_at`` is wall-clock seconds (``time.time()``) taken at ``sendto``.
    ``rtt`` is in seconds and set only for ``Outcome.REPLY``.
    """

    target: str
    address: str
    seq: int
    sent_at: float
    outcome: Outcome
    rtt: float | None = None
    detail: str = ""

    @property
    def received(self) -> bool:
        return self.outcome is Outcome.REPLY
