"""This instance's own series: the daemon-wide values read at scrape time (sites
configured, packets ignored, conference phases, shard) and its events as counters and
histograms (reloads, scheduler lag, render time) on an injectable registry."""

from __future__ import annotations

import platform
from bisect import bisect_left
from collections import Counter as _TallyCounter
from collections.abc import Iterator
from itertools import accumulate

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from monitor import __version__
from monitor.status.source import Source


class DaemonCollector(Collector):
    """The daemon-wide values read at scrape time (the per-site ones: ``exposition``)."""

    def __init__(self, source: Source) -> None:
        # Read through the source at each scrape: a reload that swaps the table
        # needs no re-registration.
        self._source = source

    def collect(self) -> Iterator[Metric]:
        source = self._source
        sites = GaugeMetricFamily(
            "vcmon_sites_configured",
            "Sites this instance owns (all of the inventory unless sharded), by tier.",
            labels=["tier", "provision"])
        tally = _TallyCounter((st.site.tier, st.site.provision)
                              for st in list(source.table.sites.values()))
        for (tier, provision), count in sorted(tally.items()):
            sites.add_metric([tier, provision], count)
        ignored = CounterMetricFamily(
            "vcmon_icmp_packets_ignored",
            "ICMP packets read that resolved no probe, by reason (docs/probing.md#how-it-probes).",
            labels=["reason"])
        for reason, count in sorted(source.ignored_packets.items()):
            ignored.add_metric([reason], count)
        dropped = CounterMetricFamily(
            "vcmon_icmp_receive_dropped",
            "ICMP packets the kernel dropped because vcmon's socket was full (it read too "
            "late): replies among them were counted as lost; 0 while the network alone "
            "explains the loss.", value=source.receive_dropped)
        skipped = CounterMetricFamily(
            "vcmon_scheduler_skipped_cycles",
            "Probe cycles skipped because the daemon was stalled for over an interval.",
            value=source.skipped_cycles)
        sends = CounterMetricFamily(
            "vcmon_scheduler_sends", "Probes the scheduler sent; a flat rate means a stalled loop.",
            value=source.scheduler_sends)
        active = GaugeMetricFamily("vcmon_conference_active",
                                   "1 while the conference session is on.", labels=["conference"])
        preflight = GaugeMetricFamily(
            "vcmon_conference_preflight",
            "1 during the pre-flight window before the session starts.", labels=["conference"])
        for name, is_active, is_preflight in source.health.conference_phases(
                source.table.clock()):
            active.add_metric([name], 1 if is_active else 0)
            preflight.add_metric([name], 1 if is_preflight else 0)
        starts = GaugeMetricFamily(
            "vcmon_conference_start_timestamp_seconds",
            "When the session starts (Unix time): dashboards show the next one.",
            labels=["conference"])
        ends = GaugeMetricFamily("vcmon_conference_end_timestamp_seconds",
                                 "When the session ends (Unix time).", labels=["conference"])
        schedule = source.health.config.schedule
        for conference in schedule.conferences:
            start, end = conference.bounds(schedule.zone)
            starts.add_metric([conference.name], start.timestamp())
            ends.add_metric([conference.name], end.timestamp())
        demo = GaugeMetricFamily(
            "vcmon_demo",
            "1 while vcmon runs the embedded demo inventory (vcmon run --demo), not real sites.",
            value=1 if source.health.config.demo else 0)
        yield from (sites, *_shard_families(source), ignored, dropped, skipped, sends, active,
                    preflight, starts, ends, demo)


def _shard_families(source: Source) -> tuple[Metric, Metric]:
    shard = source.health.config.shard
    info = GaugeMetricFamily(
        "vcmon_shard_info", "This instance's shard of the inventory: index of count.",
        labels=["index", "count"])
    info.add_metric([str(shard.index), str(shard.count)] if shard else ["0", "1"], 1)
    upstream = GaugeMetricFamily(
        "vcmon_sites_upstream",
        "Other shards' sites probed here only for the root cause of this shard's sites; "
        "their series come from their own shard.", value=len(source.table.upstream))
    return info, upstream


class DaemonMetrics:
    """The daemon's own events, on an injectable registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        build = GaugeMetricFamily("vcmon_build_info", "vcmon version and Python runtime.",
                                  labels=["version", "python"])
        build.add_metric([__version__, platform.python_version()], 1)
        self._build = build
        registry.register(_Constant(build))
        # process_cpu_seconds_total, process_resident_memory_bytes, open fds …
        ProcessCollector(registry=registry)
        self.scheduler_lag = PlainHistogram(
            "vcmon_scheduler_lag_seconds",
            "How late the sender woke for the earliest probe due, per wake-up.",
            (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
        registry.register(self.scheduler_lag)
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
            "vcmon_metrics_render_seconds",
            "Time to render and compress /metrics (in a worker thread).",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5), registry=registry)

    def config_loaded(self, *, success: bool) -> None:
        self.reload_successful.set(1 if success else 0)
        if success:
            self.reload_success_time.set_to_current_time()
        self.reloads.labels(result="success" if success else "failure").inc()


class PlainHistogram(Collector):
    """A histogram observed on the probe path: plain numbers, read at scrape time.

    prometheus_client's ``Histogram.observe`` takes a lock and updates a value object per
    bucket on every call; the sender observes once per wake-up, hundreds of times a
    second, and only the loop thread observes. Rendered with the same name and buckets.
    """

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = buckets
        self._counts = [0] * (len(buckets) + 1)  # the last one: above every bound (+Inf)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        # ``le`` buckets: a value equal to a bound counts in that bound's bucket.
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def collect(self) -> Iterator[Metric]:
        counts = tuple(self._counts)  # one snapshot: the render may run in a thread
        cumulative = list(accumulate(counts))
        family = HistogramMetricFamily(self._name, self._documentation)
        family.add_metric(
            [], [*((f"{b!r}", c) for b, c in zip(self._bounds, cumulative, strict=False)),
                 ("+Inf", cumulative[-1])], self._sum)
        yield family


class _Constant(Collector):
    def __init__(self, metric: Metric) -> None:
        self._metric = metric

    def collect(self) -> Iterator[Metric]:
        yield self._metric
