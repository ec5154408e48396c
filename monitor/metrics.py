"""Prometheus exposition: site state rendered on scrape, daemon events as counters.

Per-site series carry ``site``, ``tier``, ``district`` and ``provision``; anything longer
(name, parent, address) lives on ``vcmon_site_info`` only, to be joined in PromQL.
Removed sites vanish by themselves because the collector renders the current table.
"""

from __future__ import annotations

import platform
from collections import Counter as _TallyCounter
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from monitor import __version__
from monitor.health import HealthTracker, SiteHealth, Status
from monitor.state import RTT_BUCKETS, SiteTable
from monitor.stats import WindowStats
from monitor.thresholds import THRESHOLD_NAMES

SITE_LABELS = ["site", "tier", "district", "provision"]
_BUCKET_BOUNDS = [repr(b) for b in RTT_BUCKETS] + ["+Inf"]
_RTT_STATS = ("min", "avg", "max", "median", "p95", "stddev")


def _rtt_values(s: WindowStats) -> tuple[float | None, ...]:
    return (s.rtt_min, s.rtt_avg, s.rtt_max, s.rtt_median, s.rtt_p95, s.rtt_stddev)


class StateSource(Protocol):
    """What the collector reads; the daemon, or a test's stand-in."""

    @property
    def table(self) -> SiteTable: ...

    @property
    def ignored_packets(self) -> _TallyCounter[str]: ...

    @property
    def skipped_cycles(self) -> int: ...

    @property
    def scheduler_sends(self) -> int: ...

    @property
    def health(self) -> HealthTracker: ...


class SiteCollector(Collector):
    """Renders every site's counters, histogram and window statistics at scrape time."""

    def __init__(self, source: StateSource) -> None:
        # Read through the source at each scrape: a reload that swaps the table
        # needs no re-registration.
        self._source = source

    def collect(self) -> Iterator[Metric]:
        table = self._source.table
        now = table.clock()
        info = GaugeMetricFamily(
            "vcmon_site_info", "Site metadata; join on site for names and addresses.",
            labels=[*SITE_LABELS, "name", "parent", "address", "contact_name", "contact_phone",
                    "contractor", "contract_reference"])
        up = GaugeMetricFamily(
            "vcmon_site_up",
            "1 if the site answered within its last down_after probes, 0 if not.",
            labels=SITE_LABELS)
        sent = CounterMetricFamily(
            "vcmon_probe_packets_sent",
            "Probe packets sent, counted when their outcome is known (reply, timeout, error).",
            labels=SITE_LABELS)
        received = CounterMetricFamily(
            "vcmon_probe_packets_received", "Probe packets answered in time.", labels=SITE_LABELS)
        errors = CounterMetricFamily(
            "vcmon_probe_errors",
            "Probes that ended in an ICMP error or could not be sent, by reason.",
            labels=[*SITE_LABELS, "reason"])
        hist = HistogramMetricFamily(
            "vcmon_probe_rtt_seconds", "Round-trip time of answered probes.", labels=SITE_LABELS)
        rtt = GaugeMetricFamily(
            "vcmon_site_rtt_seconds", "Round-trip time statistics over the site's window.",
            labels=[*SITE_LABELS, "stat"])
        jitter = GaugeMetricFamily(
            "vcmon_site_jitter_seconds",
            "Mean absolute difference of consecutive round-trip times over the window.",
            labels=SITE_LABELS)
        loss = GaugeMetricFamily(
            "vcmon_site_loss_ratio", "Share of the window's probes without a reply (0-1).",
            labels=SITE_LABELS)
        mos = GaugeMetricFamily(
            "vcmon_site_mos", "Mean opinion score estimate (1-4.5) from the E-model.",
            labels=SITE_LABELS)
        rfactor = GaugeMetricFamily(
            "vcmon_site_r_factor", "E-model R-factor (0-93.2) over the window.",
            labels=SITE_LABELS)
        window_sent = GaugeMetricFamily(
            "vcmon_site_window_packets", "Probes resolved within the site's window.",
            labels=SITE_LABELS)
        health = _HealthFamilies()
        sites_health = self._source.health.sites
        for state in table:
            site = state.site
            labels = [site.id, site.tier, site.district or site.id, site.provision]
            contact, contract = site.contact, site.contract
            info.add_metric([*labels, site.name, site.parent or "", site.address,
                             (contact and contact.name) or "", (contact and contact.phone) or "",
                             (contract and contract.contractor) or "",
                             (contract and contract.reference) or ""], 1)
            site_health = sites_health.get(site.id)
            if site_health is not None:
                health.add(labels, site_health)
            if state.up is not None:
                up.add_metric(labels, 1 if state.up else 0)
            sent.add_metric(labels, state.sent)
            received.add_metric(labels, state.received)
            for reason, count in sorted(state.errors.items()):
                errors.add_metric([*labels, reason], count)
            cumulative, buckets = 0, []
            for bound, count in zip(_BUCKET_BOUNDS, state.bucket_counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            hist.add_metric(labels, buckets, state.rtt_sum)
            s = state.window.stats(now)
            window_sent.add_metric(labels, s.sent)
            for stat, value in zip(_RTT_STATS, _rtt_values(s), strict=True):
                if value is not None:
                    rtt.add_metric([*labels, stat], value)
            for family, value in ((jitter, s.jitter), (loss, s.loss_ratio), (mos, s.mos),
                                  (rfactor, s.r_factor)):
                if value is not None:
                    family.add_metric(labels, value)
        sites = GaugeMetricFamily("vcmon_sites_configured", "Sites in the inventory, by tier.",
                                  labels=["tier", "provision"])
        tally = _TallyCounter((st.site.tier, st.site.provision) for st in table)
        for (tier, provision), count in sorted(tally.items()):
            sites.add_metric([tier, provision], count)
        ignored = CounterMetricFamily(
            "vcmon_icmp_packets_ignored",
            "ICMP packets read and ignored: not ours, late, duplicate, malformed.",
            labels=["reason"])
        for reason, count in sorted(self._source.ignored_packets.items()):
            ignored.add_metric([reason], count)
        skipped = CounterMetricFamily(
            "vcmon_scheduler_skipped_cycles",
            "Probe cycles skipped because the daemon was stalled for over an interval.",
            value=self._source.skipped_cycles)
        sends = CounterMetricFamily(
            "vcmon_scheduler_sends", "Probes the scheduler sent; a flat rate means a stalled loop.",
            value=self._source.scheduler_sends)
        active = GaugeMetricFamily("vcmon_conference_active",
                                   "1 while the conference session is on.", labels=["conference"])
        preflight = GaugeMetricFamily(
            "vcmon_conference_preflight",
            "1 during the pre-flight window before the session starts.", labels=["conference"])
        for name, is_active, is_preflight in self._source.health.conference_phases(now):
            active.add_metric([name], 1 if is_active else 0)
            preflight.add_metric([name], 1 if is_preflight else 0)
        yield from (info, up, sent, received, errors, hist, rtt, jitter, loss, mos, rfactor,
                    window_sent, *health.families(), sites, ignored, skipped, sends, active,
                    preflight)


class _HealthFamilies:
    """The health series of every site, filled one site at a time."""

    def __init__(self) -> None:
        self.status = GaugeMetricFamily(
            "vcmon_site_status", "1 for the site's current status, 0 for the others.",
            labels=[*SITE_LABELS, "status"])
        self.exceeded = GaugeMetricFamily(
            "vcmon_site_threshold_exceeded",
            "1 if the last evaluation found the threshold crossed.",
            labels=[*SITE_LABELS, "threshold"])
        self.upstream_down = GaugeMetricFamily(
            "vcmon_site_upstream_down", "1 if a site upstream of this one is down.",
            labels=SITE_LABELS)
        self.behind = GaugeMetricFamily(
            "vcmon_site_unreachable_behind",
            "Sites unreachable because this site is down.", labels=SITE_LABELS)
        self.changes = CounterMetricFamily(
            "vcmon_site_state_changes", "Status changes of the site.", labels=SITE_LABELS)
        self.since = GaugeMetricFamily(
            "vcmon_site_status_since_timestamp_seconds",
            "When the site entered its current status (Unix time).", labels=SITE_LABELS)

    def add(self, labels: list[str], h: SiteHealth) -> None:
        for status in Status:
            self.status.add_metric([*labels, status.value], 1 if h.status is status else 0)
        for name in THRESHOLD_NAMES:
            self.exceeded.add_metric([*labels, name], 1 if name in h.exceeded else 0)
        self.upstream_down.add_metric(labels, 1 if h.status is Status.UNREACHABLE else 0)
        self.behind.add_metric(labels, h.unreachable_behind)
        self.changes.add_metric(labels, h.changes)
        self.since.add_metric(labels, h.since)

    def families(self) -> tuple[Metric, ...]:
        return (self.status, self.exceeded, self.upstream_down, self.behind, self.changes,
                self.since)


class DaemonMetrics:
    """The daemon's own events, on an injectable registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        build = GaugeMetricFamily("vcmon_build_info", "vcmon version and Python runtime.",
                                  labels=["version", "python"])
        build.add_metric([__version__, platform.python_version()], 1)
        self._build = build
        registry.register(_Constant(build))
        self.scheduler_lag = Histogram(
            "vcmon_scheduler_lag_seconds",
            "How late the sender woke for the earliest probe due, per wake-up.",
            buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=registry)
        self.reload_successful = Gauge(
            "vcmon_config_last_reload_successful",
            "1 if the last configuration load succeeded, 0 if it was rejected.",
            registry=registry)
        self.reload_success_time = Gauge(
            "vcmon_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully (Unix time).",
            registry=registry)
        self.reloads = Counter(
            "vcmon_config_reloads", "Configuration reloads, by result.", ["result"],
            registry=registry)
        self.render_duration = Histogram(
            "vcmon_metrics_render_seconds", "Time to render /metrics.",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5), registry=registry)


    def config_loaded(self, *, success: bool) -> None:
        self.reload_successful.set(1 if success else 0)
        if success:
            self.reload_success_time.set_to_current_time()
        self.reloads.labels(result="success" if success else "failure").inc()


class _Constant(Collector):
    def __init__(self, metric: Metric) -> None:
        self._metric = metric

    def collect(self) -> Iterator[Metric]:
        yield self._metric
