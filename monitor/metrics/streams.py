"""The TWAMP streams' part of /metrics, in the text format.

Window figures are gauges over the site's statistics window, as the ICMP ones are;
where a figure belongs to one direction of the path it carries ``direction``
(``forward``: to the site, ``reverse``: back). One-way delay appears only while the
reflector says its clock is synchronised: without sync it would be the clock offset.
The labels are the probe's (``site`` … ``probe``), shared with ``vcmon_probe_*``.
"""

from __future__ import annotations

from monitor.metrics.labels import Texts
from monitor.metrics.text import families_text
from monitor.metrics.text import number as _num
from monitor.status.streams import DIRECTIONS, StreamTable

# (name, type, help) in output order, as in ``monitor.metrics.sites``.
FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("vcmon_stream_rtt_seconds", "gauge",
     "Mean round trip of the window's stream packets, the reflector's own time taken out."),
    ("vcmon_stream_jitter_seconds", "gauge",
     "Mean |IPDV| of consecutive stream packets over the window, per direction (RFC 3393; "
     "the ICMP jitter's definition, one direction at a time)."),
    ("vcmon_stream_interarrival_jitter_seconds", "gauge",
     "RFC 3550 interarrival jitter of the window's streams, per direction."),
    ("vcmon_stream_ipdv_p95_seconds", "gauge",
     "Highest 95th percentile of |IPDV| of a stream in the window, per direction."),
    ("vcmon_stream_loss_ratio", "gauge",
     "Share of the window's stream packets lost in this direction (the reflector's "
     "sequence numbers tell them apart)."),
    ("vcmon_stream_mos", "gauge",
     "E-model MOS of a media flow in this direction: the stream's RTT with this "
     "direction's jitter and loss."),
    ("vcmon_stream_one_way_delay_seconds", "gauge",
     "Mean one-way delay per direction; only while the reflector's clock is synchronised."),
    ("vcmon_stream_reordered", "gauge", "Stream packets reordered in the window, per direction."),
    ("vcmon_stream_duplicates", "gauge", "Duplicated stream packets in the window, per direction."),
    ("vcmon_stream_longest_loss_burst", "gauge",
     "Longest run of consecutive stream packets lost in the window."),
    ("vcmon_stream_packets_sent", "counter", "Stream packets sent, counted when resolved."),
    ("vcmon_stream_packets_received", "counter", "Stream packets whose reply came in time."),
    ("vcmon_stream_packets_lost", "counter",
     "Stream packets lost, by direction; unattributed: before a stream's first reply or "
     "after its last, where no reflector number tells the direction."),
    ("vcmon_stream_replies_ignored", "counter",
     "Datagrams the stream sender read that answered none of its packets, by reason: "
     "malformed, foreign (no stream of ours talks to that address and port), unmatched, "
     "late (past the packet's timeout), duplicate."),
)


def render_streams(table: StreamTable, texts: dict[str, Texts], now: float) -> str:
    """The stream families in the text format; read-only, like ``render_services``."""
    out: dict[str, list[str]] = {name: [] for name, _, _ in FAMILIES}
    for key, state in list(table.probes.items()):
        found = texts.get(key)
        if found is None:  # a probe a reload added while this page was being written
            continue
        labels = found[0]
        out["vcmon_stream_packets_sent"].append(
            f"vcmon_stream_packets_sent_total{{{labels}}} {state.sent}")
        out["vcmon_stream_packets_received"].append(
            f"vcmon_stream_packets_received_total{{{labels}}} {state.received}")
        for direction, count in state.lost.items():
            out["vcmon_stream_packets_lost"].append(
                f'vcmon_stream_packets_lost_total{{{labels},direction="{direction}"}} {count}')
        stats = state.current_stats(now)
        if stats is None:
            continue
        if stats.rtt_avg is not None:
            out["vcmon_stream_rtt_seconds"].append(
                f"vcmon_stream_rtt_seconds{{{labels}}} {_num(stats.rtt_avg)}")
        out["vcmon_stream_longest_loss_burst"].append(
            f"vcmon_stream_longest_loss_burst{{{labels}}} {stats.longest_loss_burst}")
        for direction in DIRECTIONS:
            d = stats.direction(direction)
            tagged = f'{labels},direction="{direction}"'
            for name, value in (("vcmon_stream_jitter_seconds", d.jitter),
                                ("vcmon_stream_interarrival_jitter_seconds", d.jitter_rfc3550),
                                ("vcmon_stream_ipdv_p95_seconds", d.ipdv_p95),
                                ("vcmon_stream_loss_ratio", d.loss_ratio),
                                ("vcmon_stream_mos", d.mos),
                                ("vcmon_stream_one_way_delay_seconds", d.delay),
                                ("vcmon_stream_duplicates", d.duplicates)):
                if value is not None:
                    out[name].append(f"{name}{{{tagged}}} {_num(value)}")
            out["vcmon_stream_reordered"].append(
                f"vcmon_stream_reordered{{{tagged}}} {d.reordered}")
    for reason, count in sorted(table.ignored.items()):
        out["vcmon_stream_replies_ignored"].append(
            f'vcmon_stream_replies_ignored_total{{reason="{reason}"}} {count}')
    return families_text(FAMILIES, out)
