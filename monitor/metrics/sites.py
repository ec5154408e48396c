"""The per-site part of /metrics, written straight to the text format.

At 20,000 sites that is about a million series: prometheus_client's family objects
took 8 s per scrape there, on the event loop. This renders the same series in one
pass, in a forked child (``monitor.system.forked``) or, failing that, a worker thread: it
only reads the live state through snapshots that are atomic under the GIL (a window's
``state``, ``tuple(list)``), so the event loop keeps probing while a scrape is rendered.

Each family is written a thousand sites at a time, so a gzip scrape never holds the
~100 MB page in memory, and each site's lines of one family come from one call of a
template shared by every site (the histogram's 20 lines are one compiled f-string).

Series budget (docs/metrics.md#series-per-site): a site writes 20 series by default, its
RTT histogram only as ``+Inf``, sum and count (the mean RTT; the window statistics give
the smoke band), its status only as the one it is in, a threshold only when crossed, and
no R-factor, window packet count or upstream-down flag (its status says
``unreachable``). Sites named in the inventory's ``series: full:``
write every series: the histogram's 17 buckets and every status and threshold as 0 or 1.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from itertools import accumulate
from typing import TYPE_CHECKING

from monitor.inventory.thresholds import THRESHOLD_NAMES
from monitor.metrics.labels import site_info
from monitor.metrics.text import header
from monitor.status.health import Status, window_stats
from monitor.status.sites import RTT_BUCKETS
from monitor.status.window import WindowStats

if TYPE_CHECKING:
    from monitor.status.health import HealthTracker, SiteHealth
    from monitor.status.sites import SiteState, SiteTable

_LE = [f'le="{bound!r}"' for bound in RTT_BUCKETS] + ['le="+Inf"']
_RTT_STATS = ("min", "avg", "max", "median", "p95", "stddev")



def _compiled(params: list[str], lines: list[str]) -> Callable[..., str]:
    """A function of ``params`` that returns the f-string of ``lines``, joined.

    ``str.format`` parses its template again at every call; a compiled f-string does
    not (the histogram's 20 lines: 4.0 µs a site with format, 2.3 µs compiled). The
    source is made here from constants only.
    """
    source = f"def write({', '.join(params)}):\n    return f{chr(10).join(lines)!r}\n"
    namespace: dict[str, Callable[..., str]] = {}
    exec(source, namespace)
    return namespace["write"]


# The window's statistics to 9 significant digits: all that their float32 samples hold
# (RTTs to 1 part in 10⁷), in half the time of repr's 17 (0.05 s of a 20,000-site page).
# Counters and timestamps keep every digit.
_STAT = ".9g"

# Each writes one site's lines of a family: ``labels`` is the site's label text, the
# values follow. Literal braces doubled.
_COUNTS = [f"c{k}" for k in range(len(_LE))]
_hist_lines = _compiled(
    ["labels", *_COUNTS, "total"],
    [f"vcmon_probe_rtt_seconds_bucket{{{{{{labels}},{le}}}}} {{{c}}}"
     for c, le in zip(_COUNTS, _LE, strict=True)]
    + ["vcmon_probe_rtt_seconds_sum{{{labels}}} {total!r}",
       f"vcmon_probe_rtt_seconds_count{{{{{{labels}}}}}} {{{_COUNTS[-1]}}}"])
_rtt_lines = _compiled(
    ["labels", *_RTT_STATS],
    [f'vcmon_site_rtt_seconds{{{{{{labels}},stat="{stat}"}}}} {{{stat}:{_STAT}}}'
     for stat in _RTT_STATS])
_sum_count_lines = _compiled(
    ["labels", "count", "total"],
    ['vcmon_probe_rtt_seconds_bucket{{{labels},le="+Inf"}} {count}',
     "vcmon_probe_rtt_seconds_sum{{{labels}}} {total!r}",
     "vcmon_probe_rtt_seconds_count{{{labels}}} {count}"])
_status_lines = {
    status: _compiled(["labels"], [f'vcmon_site_status{{{{{{labels}},status="{each.value}"}}}} '
                                   f"{1 if each is status else 0}" for each in Status])
    for status in Status}
# the default: the status the site is in, alone
_status_line = {status: _compiled(["labels"], [
    f'vcmon_site_status{{{{{{labels}},status="{status.value}"}}}} 1']) for status in Status}
_EXCEEDED: dict[tuple[str, ...], Callable[[str], str]] = {}

_CHUNK = 1000

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


def _exceeded(crossed: tuple[str, ...]) -> Callable[[str], str]:
    lines = _EXCEEDED.get(crossed)
    if lines is None:
        lines = _EXCEEDED[crossed] = _compiled(["labels"], [
            f'vcmon_site_threshold_exceeded{{{{{{labels}},threshold="{name}"}}}} '
            f"{1 if name in crossed else 0}" for name in THRESHOLD_NAMES])
    return lines


# (label text, state, window statistics, health, whether it writes every series) of a site
Row = tuple[str, "SiteState", "WindowStats", "SiteHealth | None", bool]


def _info(rows: list[Row]) -> list[str]:
    # made at each scrape (see monitor.metrics.labels)
    return [f"vcmon_site_info{{{labels},{site_info(state.site, state.settings)}}} 1"
            for labels, state, _, _, _ in rows]


def _up(rows: list[Row]) -> list[str]:
    return [f"vcmon_site_up{{{labels}}} {1 if state.up else 0}"
            for labels, state, _, _, _ in rows if state.up is not None]


def _sent(rows: list[Row]) -> list[str]:
    return [f"vcmon_probe_packets_sent_total{{{labels}}} {state.sent}"
            for labels, state, _, _, _ in rows]


def _received(rows: list[Row]) -> list[str]:
    return [f"vcmon_probe_packets_received_total{{{labels}}} {state.received}"
            for labels, state, _, _, _ in rows]


def _errors(rows: list[Row]) -> list[str]:
    return [f'vcmon_probe_errors_total{{{labels},reason="{reason}"}} {count}'
            for labels, state, _, _, _ in rows if state.errors
            for reason, count in sorted(dict(state.errors).items())]


def _histogram(rows: list[Row]) -> list[str]:
    # a full site's histogram: its buckets' counts, then their sum
    return [_hist_lines(labels, *accumulate(h[:-1]), h[-1])
            if full and (h := state.histogram) is not None
            else _sum_count_lines(labels, state.received, state.rtt_sum)
            for labels, state, _, _, full in rows]


def _rtt(rows: list[Row]) -> list[str]:
    return [_rtt_lines(labels, s.rtt_min, s.rtt_avg, s.rtt_max, s.rtt_median, s.rtt_p95,
                 s.rtt_stddev) for labels, _, s, _, _ in rows if s.rtt_min is not None]


def _window_value(name: str, value: Callable[[WindowStats], float | None],
                  full_only: bool = False) -> Family:
    # always finite floats (or None, not written)
    def lines(rows: list[Row]) -> list[str]:
        return [f"{name}{{{labels}}} {v:{_STAT}}" for labels, _, s, _, full in rows
                if (full or not full_only) and (v := value(s)) is not None]
    return lines


def _window_packets(rows: list[Row]) -> list[str]:
    return [f"vcmon_site_window_packets{{{labels}}} {s.sent}"
            for labels, _, s, _, full in rows if full]


def _status(rows: list[Row]) -> list[str]:
    return [(_status_lines if full else _status_line)[h.status](labels)
            for labels, _, _, h, full in rows if h is not None]


def _threshold_exceeded(rows: list[Row]) -> list[str]:
    return [_exceeded(h.exceeded)(labels) if full else _crossed(h.exceeded, labels)
            for labels, _, _, h, full in rows if h is not None and (full or h.exceeded)]


def _crossed(crossed: tuple[str, ...], labels: str) -> str:
    return "\n".join(f'vcmon_site_threshold_exceeded{{{labels},threshold="{name}"}} 1'
                      for name in crossed)


def _upstream_down(rows: list[Row]) -> list[str]:
    # the same as vcmon_site_status{status="unreachable"}: only in the full set
    return [f"vcmon_site_upstream_down{{{labels}}} "
            f"{1 if h.status is Status.UNREACHABLE else 0}"
            for labels, _, _, h, full in rows if h is not None and full]


def _unreachable_behind(rows: list[Row]) -> list[str]:
    return [f"vcmon_site_unreachable_behind{{{labels}}} {h.unreachable_behind}"
            for labels, _, _, h, _ in rows if h is not None]


def _state_changes(rows: list[Row]) -> list[str]:
    return [f"vcmon_site_state_changes_total{{{labels}}} {h.changes}"
            for labels, _, _, h, _ in rows if h is not None]


def _status_since(rows: list[Row]) -> list[str]:
    # a clock reading: always a finite float
    return [f"vcmon_site_status_since_timestamp_seconds{{{labels}}} {h.since!r}"
            for labels, _, _, h, _ in rows if h is not None]


Family = Callable[[list[Row]], list[str]]
_WRITERS: dict[str, Family] = {
    "vcmon_site_info": _info,
    "vcmon_site_up": _up,
    "vcmon_probe_packets_sent": _sent,
    "vcmon_probe_packets_received": _received,
    "vcmon_probe_errors": _errors,
    "vcmon_probe_rtt_seconds": _histogram,
    "vcmon_site_rtt_seconds": _rtt,
    "vcmon_site_jitter_seconds": _window_value("vcmon_site_jitter_seconds", lambda s: s.jitter),
    "vcmon_site_loss_ratio": _window_value("vcmon_site_loss_ratio", lambda s: s.loss_ratio),
    "vcmon_site_mos": _window_value("vcmon_site_mos", lambda s: s.mos),
    "vcmon_site_r_factor": _window_value("vcmon_site_r_factor", lambda s: s.r_factor,
                                         full_only=True),
    "vcmon_site_window_packets": _window_packets,
    "vcmon_site_status": _status,
    "vcmon_site_threshold_exceeded": _threshold_exceeded,
    "vcmon_site_upstream_down": _upstream_down,
    "vcmon_site_unreachable_behind": _unreachable_behind,
    "vcmon_site_state_changes": _state_changes,
    "vcmon_site_status_since_timestamp_seconds": _status_since,
}


def render_site_chunks(table: SiteTable, health: HealthTracker, texts: dict[str, str],
                       now: float, full: Collection[str] = frozenset()) -> Iterator[str]:
    """Every per-site family, in the Prometheus text format (version 0.0.4), a family
    and a thousand sites at a time. ``texts``: the label texts by site id; ``full``: the
    ids of the sites that write every series (the others: the default budget)."""
    rows: list[Row] = []
    for state in list(table.sites.values()):
        site_id = state.site.id
        found = texts.get(site_id)
        if found is None:  # a site a reload added while this page was being written
            continue
        h = health.sites.get(site_id)
        rows.append((found, state, window_stats(state, h, now), h, site_id in full))
    for name, kind, text in FAMILIES:
        write = _WRITERS[name]
        yield header(name, kind, text)
        for start in range(0, len(rows), _CHUNK):
            lines = write(rows[start:start + _CHUNK])
            if lines:
                lines.append("")
                yield "\n".join(lines)


def render_sites(table: SiteTable, health: HealthTracker, texts: dict[str, str],
                 now: float, full: Collection[str] = frozenset()) -> str:
    """Every per-site family as one text (tests and small inventories)."""
    return "".join(render_site_chunks(table, health, texts, now, full))
