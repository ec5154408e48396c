"""The per-site part of /metrics, written straight to the text format.

At 20,000 sites that is about a million series: prometheus_client's family objects
took 8 s per scrape there, on the event loop. This renders the same series in one
pass, from a worker thread: it only reads the live state through C-level copies
(``list(deque)``, ``tuple(list)``), which are atomic under the GIL, so the event loop
keeps probing while a scrape is rendered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from monitor._textformat import families_text
from monitor._textformat import number as _num
from monitor.health import Status
from monitor.state import RTT_BUCKETS
from monitor.stats import in_window, summarize
from monitor.thresholds import THRESHOLD_NAMES

if TYPE_CHECKING:
    from monitor.health import HealthTracker
    from monitor.state import SiteState, SiteTable

_LE = [f'le="{bound!r}"' for bound in RTT_BUCKETS] + ['le="+Inf"']
_RTT_STATS = ("min", "avg", "max", "median", "p95", "stddev")
_STATUSES = tuple(Status)

# (name, type, help) in output order; a sample's name adds _total/_bucket/… to it.
FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("vcmon_site_info", "gauge", "Site metadata; join on site for names and addresses."),
    ("vcmon_site_up", "gauge",
     "1 if the site answered within its last down_after probes, 0 if not."),
    ("vcmon_probe_packets_sent", "counter",
     "Probe packets sent, counted when their outcome is known (reply, timeout, error)."),
    ("vcmon_probe_packets_received", "counter", "Probe packets answered in time."),
    ("vcmon_probe_errors", "counter",
     "Probes that ended in an ICMP error or could not be sent, by reason."),
    ("vcmon_probe_rtt_seconds", "histogram", "Round-trip time of answered probes."),
    ("vcmon_site_rtt_seconds", "gauge", "Round-trip time statistics over the site's window."),
    ("vcmon_site_jitter_seconds", "gauge",
     "Mean absolute difference of consecutive round-trip times over the window."),
    ("vcmon_site_loss_ratio", "gauge", "Share of the window's probes without a reply (0-1)."),
    ("vcmon_site_mos", "gauge", "Mean opinion score estimate (1-4.5) from the E-model."),
    ("vcmon_site_r_factor", "gauge", "E-model R-factor (0-93.2) over the window."),
    ("vcmon_site_window_packets", "gauge", "Probes resolved within the site's window."),
    ("vcmon_site_status", "gauge", "1 for the site's current status, 0 for the others."),
    ("vcmon_site_threshold_exceeded", "gauge",
     "1 if the last evaluation found the threshold crossed."),
    ("vcmon_site_upstream_down", "gauge", "1 if a site upstream of this one is down."),
    ("vcmon_site_unreachable_behind", "gauge", "Sites unreachable because this site is down."),
    ("vcmon_site_state_changes", "counter", "Status changes of the site."),
    ("vcmon_site_status_since_timestamp_seconds", "gauge",
     "When the site entered its current status (Unix time)."),
)


def render_sites(table: SiteTable, health: HealthTracker, now: float) -> str:
    """Every per-site family, in the Prometheus text format (version 0.0.4)."""
    out: dict[str, list[str]] = {name: [] for name, _, _ in FAMILIES}
    states: list[SiteState] = list(table.sites.values())
    healths = health.sites
    info, up, sent, received = (out["vcmon_site_info"], out["vcmon_site_up"],
                                out["vcmon_probe_packets_sent"],
                                out["vcmon_probe_packets_received"])
    errors, hist, rtt = (out["vcmon_probe_errors"], out["vcmon_probe_rtt_seconds"],
                         out["vcmon_site_rtt_seconds"])
    for state in states:
        labels = state.labels
        info.append(f"vcmon_site_info{{{state.info_labels}}} 1")
        if state.up is not None:
            up.append(f"vcmon_site_up{{{labels}}} {1 if state.up else 0}")
        sent.append(f"vcmon_probe_packets_sent_total{{{labels}}} {state.sent}")
        received.append(f"vcmon_probe_packets_received_total{{{labels}}} {state.received}")
        for reason, count in sorted(dict(state.errors).items()):
            errors.append(f'vcmon_probe_errors_total{{{labels},reason="{reason}"}} {count}')
        cumulative = 0
        for le, count in zip(_LE, tuple(state.bucket_counts), strict=True):
            cumulative += count
            hist.append(f"vcmon_probe_rtt_seconds_bucket{{{labels},{le}}} {cumulative}")
        hist.append(f"vcmon_probe_rtt_seconds_sum{{{labels}}} {_num(state.rtt_sum)}")
        hist.append(f"vcmon_probe_rtt_seconds_count{{{labels}}} {cumulative}")
        s = summarize(in_window(state.window.snapshot(), now, state.window.length))
        out["vcmon_site_window_packets"].append(f"vcmon_site_window_packets{{{labels}}} {s.sent}")
        for stat, value in zip(_RTT_STATS, (s.rtt_min, s.rtt_avg, s.rtt_max, s.rtt_median,
                                            s.rtt_p95, s.rtt_stddev), strict=True):
            if value is not None:
                rtt.append(f'vcmon_site_rtt_seconds{{{labels},stat="{stat}"}} {_num(value)}')
        for name, value in (("vcmon_site_jitter_seconds", s.jitter),
                            ("vcmon_site_loss_ratio", s.loss_ratio), ("vcmon_site_mos", s.mos),
                            ("vcmon_site_r_factor", s.r_factor)):
            if value is not None:
                out[name].append(f"{name}{{{labels}}} {_num(value)}")
        h = healths.get(state.site.id)
        if h is None:
            continue
        status, exceeded = h.status, h.exceeded
        for each in _STATUSES:
            out["vcmon_site_status"].append(
                f'vcmon_site_status{{{labels},status="{each.value}"}} {1 if each is status else 0}')
        for name in THRESHOLD_NAMES:
            out["vcmon_site_threshold_exceeded"].append(
                f'vcmon_site_threshold_exceeded{{{labels},threshold="{name}"}} '
                f"{1 if name in exceeded else 0}")
        out["vcmon_site_upstream_down"].append(
            f"vcmon_site_upstream_down{{{labels}}} {1 if status is Status.UNREACHABLE else 0}")
        out["vcmon_site_unreachable_behind"].append(
            f"vcmon_site_unreachable_behind{{{labels}}} {h.unreachable_behind}")
        out["vcmon_site_state_changes"].append(
            f"vcmon_site_state_changes_total{{{labels}}} {h.changes}")
        out["vcmon_site_status_since_timestamp_seconds"].append(
            f"vcmon_site_status_since_timestamp_seconds{{{labels}}} {_num(h.since)}")
    return families_text(FAMILIES, out)
