"""One site: latency smoke, RTT heatmap, jitter, loss, MOS, status history, metadata."""

from __future__ import annotations

from grafana._panels import (
    DATASOURCE,
    Json,
    Query,
    Size,
    dashboard,
    heatmap,
    override,
    stat,
    steps,
    table,
    timeseries,
    value_texts,
)
from grafana._vcmon import (
    IS_SITE,
    LOOKS,
    MOS_RANGE,
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
# Smokeping-style bands from the window statistics every site exports (the RTT
# histogram's buckets only come with the full series set, docs/metrics.md#series-per-site):
# the outer band from the fastest to the slowest reply, the inner one median to p95.
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
        stat("Status", "The site's status now.",
             [Query(named(status_code(IS_SITE)), legend="{{name}}", instant=True)], Size(5, 5),
             background=True, mappings=STATUS_MAPPINGS, thresholds=steps("green")),
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
    queries = [Query(f"vcmon_site_rtt_seconds{labels(IS_SITE, equals('stat', stat))}",
                     legend=stat) for stat in stats]
    queries.append(Query(loss_ratio("site", IS_SITE), legend="loss"))
    bands = [override(high, ("custom.fillBelowTo", low),
                      ("custom.fillOpacity", 15 + 15 * i), ("custom.lineWidth", 0))
             for i, (low, high) in enumerate(BANDS)]
    edges = [override(low, ("custom.lineWidth", 0)) for low, _ in BANDS if low != "median"]
    return timeseries(
        "Latency smoke", "RTT over the site's window (vcmon_site_rtt_seconds): the light band "
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
            *_services(),
        ])


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
