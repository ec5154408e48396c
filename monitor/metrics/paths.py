"""The path diagnosis part of /metrics: each traced site's last path, its first bad hop,
path changes and shared causes (rendered from ``monitor.status.paths`` at each scrape),
and the diagnosis runner's counters.

Series carry ``site`` only (plus ``hop`` and ``address`` where they describe one hop); the
site's tier, district and name are on ``vcmon_site_info``, joined on ``site`` in PromQL.
Only sites with a trace have series, and a trace covers at most 30 hops.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor.metrics.text import escape, families_text
from monitor.metrics.text import number as _num
from monitor.status.health import HealthTracker
from monitor.status.records import shared_causes

FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("vcmon_path_hops", "gauge", "Hops of the site's last path trace."),
    ("vcmon_path_reached", "gauge", "1 if the site's last path trace reached it, 0 if not."),
    ("vcmon_path_trace_timestamp_seconds", "gauge",
     "When the site's last path trace started (Unix time)."),
    ("vcmon_path_hop_loss_ratio", "gauge",
     "Loss of each hop of the site's last path trace (0-1); address \"*\": never answered."),
    ("vcmon_path_hop_rtt_seconds", "gauge",
     "Mean round-trip time of each answering hop of the site's last path trace."),
    ("vcmon_path_first_bad_hop_info", "gauge",
     "The first hop from which loss or added delay persists to the site: hop index and "
     "address (\"*\" when it never answered), 1 while the last trace names one."),
    ("vcmon_path_changed_timestamp_seconds", "gauge",
     "When the site's path left its baseline (Unix time), at hop index hop."),
    ("vcmon_path_shared_cause_sites", "gauge",
     "Degraded or down sites whose last traces all first go bad at this hop address."),
)


def render_paths(health: HealthTracker) -> str:
    """The path families in the text format; reads the path book, never waits."""
    out: dict[str, list[str]] = {name: [] for name, _, _ in FAMILIES}
    for site_id, path in list(health.paths.sites.items()):
        last = path.last
        if last is None:
            continue
        site = f'site="{escape(site_id)}"'
        out["vcmon_path_hops"].append(f"vcmon_path_hops{{{site}}} {len(last.hops)}")
        out["vcmon_path_reached"].append(f"vcmon_path_reached{{{site}}} {int(last.reached)}")
        out["vcmon_path_trace_timestamp_seconds"].append(
            f"vcmon_path_trace_timestamp_seconds{{{site}}} {_num(last.started_at)}")
        for hop in last.hops:
            labels = f'{site},hop="{hop.ttl}",address="{escape(hop.address or "*")}"'
            out["vcmon_path_hop_loss_ratio"].append(
                f"vcmon_path_hop_loss_ratio{{{labels}}} {_num(hop.loss)}")
            if hop.avg is not None:
                out["vcmon_path_hop_rtt_seconds"].append(
                    f"vcmon_path_hop_rtt_seconds{{{labels}}} {_num(hop.avg)}")
        bad = last.bad_hop
        if bad is not None:
            out["vcmon_path_first_bad_hop_info"].append(
                f'vcmon_path_first_bad_hop_info{{{site},hop="{bad.ttl}",'
                f'address="{escape(bad.address or "*")}"}} 1')
        if path.change is not None:
            out["vcmon_path_changed_timestamp_seconds"].append(
                f'vcmon_path_changed_timestamp_seconds{{{site},hop="{path.change.ttl}"}} '
                f"{_num(path.change.since)}")
    causes = {cause.address: len(cause.sites) for cause in shared_causes(health).values()}
    for address, count in sorted(causes.items()):
        out["vcmon_path_shared_cause_sites"].append(
            f'vcmon_path_shared_cause_sites{{address="{escape(address)}"}} {count}')
    return families_text(FAMILIES, out)


class DiagnosisCounts(Protocol):
    """What the diagnosis runner counts (``monitor.probing.diagnosis.DiagnosisRunner``)."""

    traces: Tally[str]
    packets: Tally[str]
    refused: Tally[str]

    @property
    def running(self) -> int: ...

    @property
    def queued(self) -> int: ...


class DiagnosisCollector(Collector):
    """The runner's counters, read at each scrape."""

    def __init__(self, runner: DiagnosisCounts) -> None:
        self._runner = runner

    def collect(self) -> Iterator[Metric]:
        runner = self._runner
        traces = CounterMetricFamily(
            "vcmon_diagnosis_traces", "Path traces finished, by what asked for them.",
            labels=["trigger"])
        packets = CounterMetricFamily(
            "vcmon_diagnosis_packets",
            "Echo requests sent by path traces, by what asked for them.", labels=["trigger"])
        for trigger in ("degraded", "down", "requested", "baseline"):
            traces.add_metric([trigger], runner.traces[trigger])
            packets.add_metric([trigger], runner.packets[trigger])
        refused = CounterMetricFamily(
            "vcmon_diagnosis_requests_refused",
            "Trace requests not run: spaced (the site was traced less than min_spacing "
            "ago), already queued, running, disabled.", labels=["outcome"])
        for outcome, count in sorted(runner.refused.items()):
            refused.add_metric([outcome], count)
        yield traces
        yield packets
        yield refused
        yield GaugeMetricFamily("vcmon_diagnosis_running", "Path traces running now.",
                                value=runner.running)
        yield GaugeMetricFamily("vcmon_diagnosis_queued", "Path traces waiting for a slot.",
                                value=runner.queued)
