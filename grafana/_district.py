"""One district: its uplink (the district-level site) and every site behind it."""

from __future__ import annotations

from grafana._panels import (
    Json,
    Query,
    Size,
    dashboard,
    organize,
    override,
    stat,
    steps,
    table,
    timeseries,
    value_texts,
)
from grafana._vcmon import (
    IN_DISTRICT,
    IS_SITE,
    LOOKS,
    OVERVIEW_LINK,
    SITE_LINK,
    STATUS_MAPPINGS,
    THRESHOLD_STEPS,
    UNITS,
    district_variable,
    equals,
    labels,
    loss_ratio,
    mean_rtt,
    named,
    site_variable,
    status_code,
    status_counts,
    status_timeline,
)
from monitor.status.health import Status

UID = "vcmon-district"
# The district-level site's id is the district's id: `site` equal to `$district`.
UPLINK = 'site=~"$district"'
UPLINK_DOWN = f"(vcmon_site_status{labels(UPLINK, equals('status', 'down'))} == 1)"
# What the uplink's RTT reads while it is down: no RTT is not "No data"
DOWN_VALUE = -1


def _uplink() -> list[Json]:
    return [
        stat("Uplink status", "The district-level site, which every site behind it reaches "
             "the province through.", [Query(named(status_code(UPLINK)), legend="{{name}}",
                                              instant=True)],
             Size(4, 5), background=True, mappings=STATUS_MAPPINGS, thresholds=steps("green"),
             extra={"links": [SITE_LINK]}),
        stat("Uplink RTT", "Average round-trip time over the uplink's window; \"down\" "
             "while the uplink answers no probe.",
             [Query(f"vcmon_site_rtt_seconds{labels(UPLINK, equals('stat', 'avg'))}\n"
                    f"  unless on(site) {UPLINK_DOWN}\nor\n{DOWN_VALUE} * {UPLINK_DOWN}",
                    legend="RTT", instant=True)],
             Size(4, 5), unit=UNITS["rtt"], thresholds=THRESHOLD_STEPS["rtt"],
             mappings=value_texts([(DOWN_VALUE, "down", "red")])),
        stat("Uplink loss", "Loss over the uplink's window.",
             [Query(f"vcmon_site_loss_ratio{labels(UPLINK)}", legend="loss", instant=True)],
             Size(4, 5), unit=UNITS["loss"], thresholds=THRESHOLD_STEPS["loss"]),
        stat("Unreachable", "Sites of the district that are unreachable because a site "
             "upstream of them (usually this uplink) is down.",
             [Query(f"sum({_unreachable(IN_DISTRICT)}) or vector(0)",
                    legend="unreachable", instant=True)],
             Size(4, 5), thresholds=steps("green", (1, "purple"))),
        status_counts(Size(8, 5), IN_DISTRICT),
        _status_grid(),
    ]


def _status_grid() -> Json:
    # Above the fold: the first thing a technician looks for is which tile is red.
    grid = stat(
        "Sites of the district", "Every site of the district, coloured by status; a click "
        "opens the site.", [Query(named(status_code(IN_DISTRICT)), legend="{{name}}",
                                  instant=True)],
        Size(24, 7), background=True, names=True, mappings=STATUS_MAPPINGS,
        thresholds=steps(LOOKS[Status.UNKNOWN].colour), extra={"links": [SITE_LINK]})
    grid["links"] = [OVERVIEW_LINK]
    return grid
def _unreachable(*matchers: str) -> str:
    """Sites unreachable because of an upstream site: their status says so."""
    return f"vcmon_site_status{labels(equals('status', 'unreachable'), *matchers)}"


def _unreachable_table() -> Json:
    return table(
        "Unreachable because of an upstream site",
        "Sites whose own link cannot be judged because a site between them and the "
        "province is down; the upstream column is their direct parent.",
        [Query(named(f"{_unreachable(IN_DISTRICT, IS_SITE)} == 1",
                     extra="parent"), instant=True, format="table")],
        Size(24, 8),
        transformations=[organize({"name": "Site", "site": "Id", "parent": "Upstream",
                                   "tier": "Tier", "provision": "Provision"},
                                  hide=["Time", "Value", "district", "instance", "job",
                                        "status"])],
        overrides=[override("Site", ("links", [SITE_LINK]))])


def build() -> Json:
    return dashboard(
        UID, "vcmon: district", "A district's uplink and every site behind it.",
        variables=[district_variable(multi=False), site_variable(multi=True)],
        panels=[
            *_uplink(),
            timeseries("RTT by site", "Mean round-trip time of the replies in each interval "
                       "(from the histogram); the dashed line is vcmon's RTT threshold.",
                       [Query(named(mean_rtt("site", IN_DISTRICT, IS_SITE)),
                              legend="{{name}}")],
                       Size(12, 10), unit=UNITS["rtt"], thresholds=THRESHOLD_STEPS["rtt"],
                       extra={"links": [SITE_LINK]}),
            timeseries("Loss by site", "Share of probes without a reply in each interval "
                       "(from the counters); the dashed line is vcmon's loss threshold.",
                       [Query(named(loss_ratio("site", IN_DISTRICT, IS_SITE)),
                              legend="{{name}}")],
                       Size(12, 10), unit=UNITS["loss"], thresholds=THRESHOLD_STEPS["loss"],
                       extra={"links": [SITE_LINK], "min": 0, "max": 1}),
            status_timeline("Status of every site", Size(24, 12), IN_DISTRICT, IS_SITE),
            _unreachable_table(),
        ])
