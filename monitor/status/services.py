"""Service probes of the sites (``probes:``): what each has found.

Each probe of a site is keyed ``<site>/<probe name>`` (``monitor.probing.services``)
and resolves to one ``ProbeResult`` at a time, which ``ServiceTable.record`` takes. A
probe is ``up`` again after ``recover_after`` answers in a row and down after its
``down_after`` failures in a row; health reads that, so one lost answer never makes a
site degraded.
"""

from __future__ import annotations

from collections.abc import Iterator

import structlog

from monitor.inventory import Config, ServiceProbe, Site
from monitor.inventory.selection import owned_sites
from monitor.probing.services import key_of
from probes import Outcome, ProbeResult

log = structlog.get_logger("vcmon.services")


class ServiceState:
    """What one service probe of one site has found."""

    __slots__ = ("attempts", "cert_not_after", "consecutive_failed", "consecutive_ok", "detail",
                 "duration", "failures", "handshake", "site", "spec", "status_code", "success",
                 "up")

    def __init__(self, site: Site, spec: ServiceProbe) -> None:
        self.attempts = 0
        self.failures: dict[str, int] = {}
        self.success: bool | None = None
        self.up: bool | None = None
        self.consecutive_failed = 0
        self.consecutive_ok = 0
        self.duration: float | None = None
        self.status_code: float | None = None
        self.cert_not_after: float | None = None
        self.handshake: float | None = None
        self.detail = ""
        self.configure(site, spec)

    def configure(self, site: Site, spec: ServiceProbe) -> None:
        self.site, self.spec = site, spec

    def record(self, result: ProbeResult, recover_after: int) -> None:
        self.attempts += 1
        self.detail = result.detail
        values = result.values or {}
        if isinstance(code := values.get("status_code"), int | float):
            self.status_code = code
        if isinstance(expiry := values.get("cert_not_after"), float):
            self.cert_not_after = expiry
        if isinstance(handshake := values.get("handshake_seconds"), float):
            self.handshake = handshake
        if result.outcome is Outcome.REPLY:
            self.success, self.duration = True, result.rtt
            self.consecutive_ok += 1
            self.consecutive_failed = 0
            if self.up is None or self.consecutive_ok >= recover_after:
                self.up = True
            return
        reason = values.get("reason") if result.outcome is Outcome.FAILED else None
        reason = str(reason or result.outcome.value)
        self.failures[reason] = self.failures.get(reason, 0) + 1
        self.success = False
        self.consecutive_failed += 1
        self.consecutive_ok = 0
        if self.consecutive_failed >= self.spec.down_after:
            self.up = False


class ServiceTable:
    """Every site's service probes, keyed ``<site>/<probe>``; kept across reloads."""

    def __init__(self, config: Config) -> None:
        self.probes: dict[str, ServiceState] = {}
        self._by_site: dict[str, list[ServiceState]] = {}
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        """Kept probes keep their counters; removed ones vanish from /metrics."""
        self.recover_after = config.health.recover_after
        probes: dict[str, ServiceState] = {}
        by_site: dict[str, list[ServiceState]] = {}
        # another shard's sites are its to check, upstream ones included
        for site in owned_sites(config):
            for spec in config.services_for(site):
                key = key_of(site.id, spec.label)
                state = self.probes.get(key)
                if state is None or state.spec.kind != spec.kind:
                    state = ServiceState(site, spec)
                else:
                    state.configure(site, spec)
                probes[key] = state
                by_site.setdefault(site.id, []).append(state)
        self.probes, self._by_site = probes, by_site

    def record(self, result: ProbeResult) -> None:
        state = self.probes.get(result.target)
        if state is not None:  # else a probe of a site or probe a reload removed
            state.record(result, self.recover_after)

    def failing(self, site_id: str) -> list[ServiceState]:
        """The site's probes that are down (``down_after`` failures in a row)."""
        return [state for state in self._by_site.get(site_id, ()) if state.up is False]

    def __iter__(self) -> Iterator[ServiceState]:
        return iter(self.probes.values())


def describe_failing(failing: list[ServiceState]) -> str:
    """The health reason of a site whose services fail: starts with "service"."""
    parts = [f"{s.spec.label} failed {s.consecutive_failed} times in a row ({s.detail})"
             for s in failing]
    return "service " + "; ".join(parts)
