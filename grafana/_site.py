"""One site: latency smoke, RTT heatmap, jitter, loss, MOS, status history, metadata, and
its TWAMP streams per direction."""

from __future__ import annotations

from grafana._panels import (
    DATASOURCE,
    Json,
    Query,
    Size,
    dashboard,
    heatmap,
    organize,
    override,
    stat,
    steps,
    table,
    timeseries,
    value_texts,
)
from grafana._vcmon import (
    DISTRICT_LINK,
    IS_SITE,
    LOOKS,
    MOS_RANGE,
    OVERVIEW_LINK,
    SITE_DASHBOARD,
    STATUS_MAPPINGS,
    THRESHOLD_STEPS,
    UNITS,
    district_variable,
    equals,
    labels,
    loss_ratio,
    named,
    site_variable,
    status_code,
    status_timeline,
)
from monitor.inventory.thresholds import THRESHOLD_NAMES
from monitor.status.health import Status

SITE = labels(IS_SITE)
# Smokeping-style bands from the window statistics every site exports (vcmon_site_rtt_seconds,
# one value per window step; the RTT histogram's buckets only come with the full series
# set, docs/metrics.md#series-per-site): the outer band from the window's fastest to its
# slowest reply, the inner one from the median to the 95th percentile. The histogram's
# buckets double in width, and percentiles interpolated in them drew a 41 ms link as 27-50 ms.
BANDS = (("min", "max"), ("median", "p95"))
# vcmon_site_info labels worth a technician's eye, in reading order.
INFO = ("name", "site", "address", "tier", "provision", "district", "parent", "contact_name",
        "contact_phone", "contractor", "contract_reference")


def _now() -> list[Json]:
    window = [Query(f"vcmon_site_rtt_seconds{labels(IS_SITE, equals('stat', 'avg'))}",
                    legend="rtt", instant=True),
              Query(f"vcmon_site_jitter_seconds{SITE}", legend="jitter", instant=True),
              Query(f"vcmon_site_loss_ratio{SITE}", legend="loss", instant=True),
              Query(f"vcmon_site_mos{SITE}", legend="mos", instant=True)]
    return [
        stat("Status", "The site's status now; a click opens its district.",
             [Query(named(status_code(IS_SITE), extra="district"), legend="{{name}}",
                    instant=True)], Size(5, 5),
             background=True, mappings=STATUS_MAPPINGS, thresholds=steps("green"),
             extra={"links": [DISTRICT_LINK, OVERVIEW_LINK]}),
        stat("Since", "When the site entered its current status.",
             [Query(f"1000 * vcmon_site_status_since_timestamp_seconds{SITE}", legend="since",
                    instant=True)], Size(4, 5), unit="dateTimeFromNow"),
        stat("Thresholds crossed", "Which limits the last evaluation found crossed: the "
             "reason a site is degraded.",
             [Query(f"vcmon_site_threshold_exceeded{SITE}", legend="{{threshold}}",
                    instant=True)], Size(6, 5), background=True,
             thresholds=steps("green"),
             mappings=value_texts([(0, "within", "green"), (1, "crossed", "red")])),
        stat("Window now", "Average RTT, jitter, loss and MOS over the site's window, "
             "coloured at vcmon's default thresholds.", window, Size(9, 5),
             overrides=[override(name, ("unit", UNITS[name]),
                                 ("thresholds", THRESHOLD_STEPS[name]))
                        for name in THRESHOLD_NAMES]),
    ]


def _smoke() -> Json:
    stats = ("min", "median", "p95", "max")
    queries = [Query(f"max(vcmon_site_rtt_seconds{labels(IS_SITE, equals('stat', stat))})",
                     legend=stat) for stat in stats]
    queries.append(Query(loss_ratio("site", IS_SITE), legend="loss"))
    bands = [override(high, ("custom.fillBelowTo", low),
                      ("custom.fillOpacity", 15 + 15 * i), ("custom.lineWidth", 0))
             for i, (low, high) in enumerate(BANDS)]
    edges = [override("min", ("custom.lineWidth", 0))]
    return timeseries(
        "Latency smoke", "RTT over the site's window as vcmon measures it: the light band "
        "spans the fastest to the slowest reply, the dark one the median to the 95th "
        "percentile, the line is the median; red bars are loss (right axis).",
        queries, Size(16, 10), unit=UNITS["rtt"], thresholds=THRESHOLD_STEPS["rtt"],
        extra={"color": {"mode": "fixed", "fixedColor": "blue"}},
        overrides=[*bands, *edges, override("median", ("custom.lineWidth", 2)),
                   override("loss", ("unit", UNITS["loss"]), ("min", 0), ("max", 1),
                            ("thresholds", THRESHOLD_STEPS["loss"]),
                            ("custom.thresholdsStyle", {"mode": "off"}),
                            ("custom.axisPlacement", "right"), ("custom.drawStyle", "bars"),
                            ("custom.fillOpacity", 80),
                            ("color", {"mode": "fixed", "fixedColor": "red"}))])


def _metadata() -> Json:
    return table(
        "Site", "From vcmon_site_info: the inventory's address, contact and contract.",
        [Query(f"vcmon_site_info{SITE}", instant=True)], Size(8, 10),
        transformations=[{"id": "labelsToFields", "options": {"mode": "rows",
                                                              "keepLabels": list(INFO)}}])


def _annotations() -> list[Json]:
    # One region per spell of trouble, in the status's colour, on every graph. `unknown`
    # lasts only until a site's first probe resolves: not worth a marker.
    return [{"name": status.value, "datasource": DATASOURCE, "enable": True, "hide": False,
             "iconColor": look.colour,
             "expr": f"vcmon_site_status{labels(IS_SITE, equals('status', status.value))} == 1"}
            for status, look in LOOKS.items() if status not in (Status.OK, Status.UNKNOWN)]


def build() -> Json:
    return dashboard(
        SITE_DASHBOARD, "vcmon: site", "One endpoint's link: latency, jitter, loss, MOS and "
        "status over time, with its inventory details.",
        variables=[district_variable(multi=True), site_variable(multi=False)],
        annotations=_annotations(),
        panels=[
            *_now(),
            _smoke(), _metadata(),
            heatmap("RTT heatmap", "Replies per histogram bucket in each interval. Only sites "
                    "with the full series set (inventory series: full:) export the buckets; the "
                    "others show one +Inf bucket.",
                    Query(f"sum by (le) (increase(vcmon_probe_rtt_seconds_bucket{SITE}"
                          "[$__rate_interval]))", legend="{{le}}", format="heatmap"),
                    Size(12, 9), unit=UNITS["rtt"]),
            timeseries("Jitter", "Mean absolute difference of consecutive RTTs over the "
                       "window; dashed: vcmon's threshold.",
                       [Query(f"vcmon_site_jitter_seconds{SITE}", legend="jitter")],
                       Size(12, 9), unit=UNITS["jitter"], thresholds=THRESHOLD_STEPS["jitter"]),
            timeseries("Loss", "Per interval from the counters, and over the window that "
                       "vcmon judges (it ignores a single lost packet); dashed: threshold.",
                       [Query(loss_ratio("site", IS_SITE), legend="per interval"),
                        Query(f"vcmon_site_loss_ratio{SITE}", legend="window")],
                       Size(12, 9), unit=UNITS["loss"], thresholds=THRESHOLD_STEPS["loss"],
                       extra={"min": 0, "max": 1}),
            timeseries("MOS", "E-model estimate over the window; below the dashed line the "
                       "site is degraded.",
                       [Query(f"vcmon_site_mos{SITE}", legend="MOS")], Size(12, 9),
                       unit=UNITS["mos"], thresholds=THRESHOLD_STEPS["mos"], extra=MOS_RANGE),
            status_timeline("Status", Size(24, 5), IS_SITE),
            *_path(),
            *_services(),
            *_streams(),
        ])


def _path() -> list[Json]:
    # The site's last path trace (vcmon traces a site when it goes bad, on request, and
    # now and then for its baseline): one row per hop, the first bad hop beside it.
    hops = [Query(f"vcmon_path_hop_loss_ratio{SITE}", instant=True, format="table"),
            Query(f"vcmon_path_hop_rtt_seconds{SITE}", instant=True, format="table")]
    return [
        stat("First bad hop", "Where the last path trace found loss or added delay that "
             "persists to the site: hop index and address (* never answered). Nothing: no "
             "trace yet, or a clean path.",
             [Query(f"vcmon_path_first_bad_hop_info{SITE}", legend="hop {{hop}}: {{address}}",
                    instant=True)], Size(8, 9), background=True, names=True,
             thresholds=steps("red")),
        table("Last path", "Each hop of the site's last path trace: its loss and mean RTT "
              "over the trace's cycles. A hop that loses only its own answers while later "
              "hops are clean is a router rate-limiting them, not the fault.", hops,
              Size(16, 9),
              transformations=[{"id": "merge", "options": {}},
                               organize({"hop": "Hop", "address": "Address",
                                         "Value #A": "Loss", "Value #B": "Avg RTT"},
                                        hide=["Time", "site", "instance", "job"])],
              overrides=[override("Loss", ("unit", UNITS["loss"]),
                                  ("thresholds", THRESHOLD_STEPS["loss"]),
                                  ("custom.cellOptions", {"type": "color-text"})),
                         override("Avg RTT", ("unit", UNITS["rtt"])),
                         override("Hop", ("custom.width", 60))]),
    ]


def _streams() -> list[Json]:
    # the site's TWAMP-light streams (docs/twamp.md): each figure per direction, so a
    # clean way out and a bad way back show as two lines apart
    by_direction = "{{direction}} ({{probe}})"
    return [
        timeseries("Stream jitter per direction", "Mean |IPDV| of consecutive packets of "
                   "the EF-marked media stream over the window, forward (to the site) and "
                   "reverse (back); dashed: vcmon's jitter threshold, judged per direction.",
                   [Query(f"vcmon_stream_jitter_seconds{SITE}", legend=by_direction)],
                   Size(12, 8), unit=UNITS["jitter"], thresholds=THRESHOLD_STEPS["jitter"]),
        timeseries("Stream loss per direction", "Share of the stream's packets lost on the "
                   "way to the site and on the way back (the reflector's numbers tell them "
                   "apart); dashed: threshold.",
                   [Query(f"vcmon_stream_loss_ratio{SITE}", legend=by_direction)],
                   Size(12, 8), unit=UNITS["loss"], thresholds=THRESHOLD_STEPS["loss"],
                   extra={"min": 0, "max": 1}),
        timeseries("Stream MOS per direction", "E-model MOS of a media flow each way: the "
                   "stream's RTT with that direction's jitter and loss.",
                   [Query(f"vcmon_stream_mos{SITE}", legend=by_direction)], Size(12, 8),
                   unit=UNITS["mos"], thresholds=THRESHOLD_STEPS["mos"], extra=MOS_RANGE),
        timeseries("Stream RTT and longest loss burst", "The stream's round trip without the "
                   "reflector's own time, beside the ping's; bars: the longest run of "
                   "packets lost in the window (right axis).",
                   [Query(f"vcmon_stream_rtt_seconds{SITE}", legend="stream RTT ({{probe}})"),
                    Query(f"vcmon_site_rtt_seconds{labels(IS_SITE, equals('stat', 'avg'))}",
                          legend="ping RTT"),
                    Query(f"vcmon_stream_longest_loss_burst{SITE}",
                          legend="longest burst")],
                   Size(12, 8), unit=UNITS["rtt"],
                   overrides=[override("longest burst", ("unit", "none"),
                                       ("custom.axisPlacement", "right"),
                                       ("custom.drawStyle", "bars"))]),
    ]


def _services() -> list[Json]:
    # the site's `probes:` (SIP, H.323, HTTPS, a second ping …), by their probe label
    return [
        stat("Services", "The site's service probes: down after down_after failed probes "
             "in a row, which makes a site that answers ping degraded (reason service).",
             [Query(f"vcmon_probe_up{SITE}", legend="{{probe}}", instant=True)], Size(8, 8),
             background=True, thresholds=steps("green"),
             mappings=value_texts([(0, "down", "red"), (1, "up", "green")])),
        timeseries("Service response time", "How long each service probe's last answer "
                   "took: TCP connect, TLS handshake, SIP or HTTP response, echo RTT. "
                   "Compare a DSCP-marked probe with the site's unmarked ping here.",
                   [Query(f"vcmon_probe_duration_seconds{SITE}", legend="{{probe}}")],
                   Size(16, 8), unit="s"),
    ]
