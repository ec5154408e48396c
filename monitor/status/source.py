"""The one view of a running instance that every sink reads: /metrics, MQTT, the JSON
API and board, the scheduled reports. The daemon is one; a test's stand-in is another.
A sink gets this, never the daemon itself, so it can read state but reach nothing else."""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from monitor.inventory import Config
from monitor.status.health import HealthTracker
from monitor.status.sites import SiteTable


class Source(Protocol):
    @property
    def config(self) -> Config:
        """The inventory in force (a reload swaps it)."""
        ...

    @property
    def table(self) -> SiteTable:
        """Each site's counters, window and up/down."""
        ...

    @property
    def health(self) -> HealthTracker:
        """Each site's status, reason and root cause; the service probes' state."""
        ...

    @property
    def ignored_packets(self) -> Counter[str]:
        """ICMP packets read that resolved no probe, by reason."""
        ...

    @property
    def receive_dropped(self) -> int:
        """Packets the kernel dropped because the ICMP sockets were full."""
        ...

    @property
    def skipped_cycles(self) -> int:
        """Probe cycles skipped because the loop stalled for over an interval."""
        ...

    @property
    def scheduler_sends(self) -> int:
        """Probes the scheduler sent."""
        ...
