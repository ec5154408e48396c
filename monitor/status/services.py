"""Service probes of the sites (``probes:``): their state, their series, and their runs.

Each probe of a site is keyed ``<site>/<probe name>`` (a site id holds no "/"), runs
on its own absolute schedule from a scheduler of its own, and resolves to one
``ProbeResult`` that ``ServiceTable.record`` takes. A probe is ``up`` again after
``recover_after`` answers in a row and down after its ``down_after`` failures in a
row; health reads that, so one lost answer never makes a site degraded.
"""

from __future__ import annotations

from collections.abc import Iterator

import structlog

from monitor._labels import SITE_LABELS, label_text
from monitor._textformat import families_text
from monitor._textformat import number as _num
from monitor.inventory import Config, ServiceProbe, Site
from monitor.inventory.shard import owned_sites
from probes import Outcome, ProbeResult

log = structlog.get_logger("vcmon.services")

# (name, type, help) in output order, as in ``monitor.exposition``.
FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("vcmon_probe_info", "gauge",
     "Service probes of a site: kind, port and DSCP, by probe name."),
    ("vcmon_probe_up", "gauge",
     "1 while the service answers, 0 after down_after failed probes in a row."),
    ("vcmon_probe_success", "gauge", "1 if the service's last probe got an answer, 0 if not."),
    ("vcmon_probe_duration_seconds", "gauge",
     "How long the last answered probe took: connect, handshake or response time."),
    ("vcmon_probe_attempts", "counter", "Service probes run, counted when they resolve."),
    ("vcmon_probe_failures", "counter",
     "Service probes without an answer, by reason: timeout, refused, unreachable, "
     "send_error, or what was wrong with the answer (cert_expired, http_status …)."),
    ("vcmon_probe_status_code", "gauge", "The status code of the last SIP or HTTP answer."),
    ("vcmon_tls_cert_expiry_seconds", "gauge",
     "Seconds until the TLS certificate expires (negative once expired)."),
    ("vcmon_tls_handshake_seconds", "gauge", "Time of the last TLS handshake."),
)


def key_of(site_id: str, probe: str) -> str:
    return f"{site_id}/{probe}"


class ServiceState:
    """What one service probe of one site has found."""

    __slots__ = ("attempts", "cert_not_after", "consecutive_failed", "consecutive_ok", "detail",
                 "duration", "failures", "handshake", "info_labels", "labels", "site", "spec",
                 "status_code", "success", "up")

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
        values = [site.id, site.tier, site.district or site.id, site.provision]
        self.labels = f'{label_text(SITE_LABELS, values)},probe="{spec.label}"'
        port = getattr(spec, "port", None)
        self.info_labels = (f'{self.labels},kind="{spec.kind}",port="{port or ""}",'
                            f'dscp="{spec.dscp or 0}"')

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


def render_services(table: ServiceTable, now: float) -> str:
    """The service probe families in the text format; read-only, like ``render_sites``."""
    out: dict[str, list[str]] = {name: [] for name, _, _ in FAMILIES}
    for state in list(table.probes.values()):
        labels = state.labels
        out["vcmon_probe_info"].append(f"vcmon_probe_info{{{state.info_labels}}} 1")
        if state.up is not None:
            out["vcmon_probe_up"].append(f"vcmon_probe_up{{{labels}}} {int(state.up)}")
        if state.success is not None:
            out["vcmon_probe_success"].append(
                f"vcmon_probe_success{{{labels}}} {int(state.success)}")
        out["vcmon_probe_attempts"].append(f"vcmon_probe_attempts_total{{{labels}}} "
                                           f"{state.attempts}")
        for reason, count in sorted(dict(state.failures).items()):
            out["vcmon_probe_failures"].append(
                f'vcmon_probe_failures_total{{{labels},reason="{reason}"}} {count}')
        for name, value in (("vcmon_probe_duration_seconds", state.duration),
                            ("vcmon_probe_status_code", state.status_code),
                            ("vcmon_tls_handshake_seconds", state.handshake)):
            if value is not None:
                out[name].append(f"{name}{{{labels}}} {_num(float(value))}")
        if state.cert_not_after is not None:
            out["vcmon_tls_cert_expiry_seconds"].append(
                f"vcmon_tls_cert_expiry_seconds{{{labels}}} {_num(state.cert_not_after - now)}")
    return families_text(FAMILIES, out)
