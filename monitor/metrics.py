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

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from monitor import __version__
from monitor.state import RTT_BUCKETS, SiteTable
from monitor.stats import WindowStats

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
            labels=[*SITE_LABELS, "name", "parent", "address"])
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
        for state in table:
            site = state.site
            labels = [site.id, site.tier, site.district or site.id, site.provision]
            info.add_metric([*labels, site.name, site.parent or "", site.address], 1)
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
        yield from (info, up, sent, received, errors, hist, rtt, jitter, loss, mos, rfactor,
                    window_sent, sites, ignored, skipped)


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
        self.render_duration = Histogram(
            "vcmon_metrics_render_seconds", "Time to render /metrics.",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5), registry=registry)


class _Constant(Collector):
    def __init__(self, metric: Metric) -> None:
        self._metric = metric

    def collect(self) -> Iterator[Metric]:
        yield self._metric
