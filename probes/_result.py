"""The one record every probe kind produces."""

from __future__ import annotations

from collections.abc import Mapping
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
    # service probes: the host answered the connection with a reset (nothing listens)
    REFUSED = "refused"
    # service probes: the service answered, but not as it should (a rejected TLS
    # certificate, an HTTP error status, a reply that is not the protocol's)
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe packet, resolved: a reply, a timeout, an ICMP error or a send error.

    ``target`` is the caller's opaque key (the site id); probes never know about sites.
    ``sent_at`` is wall-clock seconds (``time.time()``) taken at ``sendto``.
    ``rtt`` is in seconds and set only for ``Outcome.REPLY``: for a service probe, the
    time the service took to answer (connect, handshake, response).
    ``values`` holds what a service probe found beyond that, by name (a SIP or HTTP
    status code, a certificate's expiry; for ``Outcome.FAILED``, ``reason``: a short
    name of what was wrong); packet probes leave it None.
    """

    target: str
    address: str
    seq: int
    sent_at: float
    outcome: Outcome
    rtt: float | None = None
    detail: str = ""
    values: Mapping[str, float | str] | None = None

    @property
    def received(self) -> bool:
        return self.outcome is Outcome.REPLY
