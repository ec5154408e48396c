"""Conference readiness: is every endpoint ready, and if not, which one, since when, why."""

from __future__ import annotations

from grafana._panels import (
    Json,
    Query,
    Size,
    bargauge,
    dashboard,
    link,
    organize,
    override,
    row,
    stat,
    steps,
    table,
    value_texts,
)
from grafana._vcmon import (
    DISTRICT_DASHBOARD,
    DISTRICT_LINK,
    IN_DISTRICT,
    LOOKS,
    MOS_RANGE,
    NOT_JUDGED,
    SITE_LINK,
    STATUS_MAPPINGS,
    THRESHOLD_STEPS,
    UNITS,
    district_variable,
    equals,
    labels,
    named,
    status_code,
    status_counts,
)
from monitor.inventory.thresholds import THRESHOLD_NAMES
from monitor.status.health import Status

UID = "vcmon-overview"
# vcmon_conference_active and _preflight are 0/1 per session; 2·active + preflight tells
# the two phases apart in one value.
IN_SESSION, PREFLIGHT = 2, 1
NOT_OK = "(vcmon_site_status" + labels('status!="ok"', IN_DISTRICT) + " == 1)"
# What to act on: not ok, except the sites unreachable because a site upstream is down
# (that one is listed, with how many sites are behind it). From the status alone: the
# default series set has no vcmon_site_upstream_down (docs/metrics.md#series-per-site).
ACT_ON = ("(vcmon_site_status" + labels('status!~"ok|unreachable"', IN_DISTRICT) + " == 1)")


def _session() -> Json:
    return stat(
        "Conference session", "The session in progress, or the next one while its pre-flight "
        "window is open (inventory `schedule:`).",
        [Query(f"{IN_SESSION} * vcmon_conference_active + {PREFLIGHT} * vcmon_conference_preflight"
               " > 0", legend="{{conference}}", instant=True)],
        Size(6, 5), background=True, thresholds=steps("blue"),
        mappings=value_texts([(IN_SESSION, "in session", "green"),
                              (PREFLIGHT, "pre-flight", "blue")]),
        extra={"noValue": "none now or in pre-flight"})


def _ready() -> Json:
    return stat(
        "Ready", "Share of the selected sites that are ok. Pre-flight goal: 100 %; maintenance, "
        "unknown and every other status are not ready.",
        [Query(f"(sum(vcmon_site_status{labels(equals('status', Status.OK.value), IN_DISTRICT)})"
               f" or vector(0))\n  / count(vcmon_site_info{labels(IN_DISTRICT)})", legend="ready",
               instant=True)],
        Size(4, 5), unit="percentunit", background=True,
        thresholds=steps("red", (1, "green")), extra={"decimals": 1, "min": 0, "max": 1})


def _by_tier_and_provision() -> Json:
    queries = [Query(f"count by (tier, provision) (vcmon_site_info{labels(IN_DISTRICT)})",
                     instant=True, format="table")]
    # a status no site is in has no series: 0 for every tier and provision instead
    zeros = f"0 * count by (tier, provision) (vcmon_site_info{labels(IN_DISTRICT)})"
    queries += [Query(f"sum by (tier, provision) "
                      f"(vcmon_site_status{labels(equals('status', s.value), IN_DISTRICT)})\n"
                      f"  or {zeros}", instant=True, format="table") for s in LOOKS]
    columns = {"tier": "Tier", "provision": "Provision", "Value #A": "Sites"}
    columns |= {f"Value #{chr(ord('B') + i)}": s.value for i, s in enumerate(LOOKS)}
    return table(
        "Sites by tier and provision", "Telecom-provisioned (vnpt) and contracted sites of each "
        "tier, by status now.", queries, Size(10, 8),
        transformations=[{"id": "merge", "options": {}}, organize(columns, hide=["Time"])],
        overrides=[override(s.value, ("color", {"mode": "fixed", "fixedColor": look.colour}),
                            ("custom.cellOptions", {"type": "color-text"}))
                   for s, look in LOOKS.items()])


def _not_ok() -> Json:
    since = named(f"1000 * vcmon_site_status_since_timestamp_seconds{labels(IN_DISTRICT)}\n"
                  f"  * on(site) group_left(status) {ACT_ON}", extra="parent")
    # a threshold not crossed has no series (docs/metrics.md#series-per-site): 0 then
    crossed = [f"max by (site) (vcmon_site_threshold_exceeded"
               f"{labels(equals('threshold', name), IN_DISTRICT)})\n  and on(site) {ACT_ON}\n"
               f"  or on(site) 0 * max by (site) {ACT_ON}"
               for name in THRESHOLD_NAMES]
    behind = (f"max by (site) (vcmon_site_unreachable_behind{labels(IN_DISTRICT)})\n"
              f"  and on(site) {ACT_ON}")
    queries = [Query(expr, instant=True, format="table")
               for expr in (since, *crossed, behind)]
    columns = {"name": "Site", "status": "Status", "Value #A": "Since", "parent": "Upstream",
               "district": "District", "site": "Id"}
    columns |= {f"Value #{chr(ord('B') + i)}": name for i, name in enumerate(THRESHOLD_NAMES)}
    columns[f"Value #{chr(ord('B') + len(THRESHOLD_NAMES))}"] = "Sites behind it"
    return table(
        "Not ok now", "Every selected site to act on: since when, and why. A down site "
        "appears once, with the number of sites unreachable behind it (they are not "
        "listed: the district dashboard has them); threshold columns say which limit the "
        "last evaluation crossed; `down` means no reply.", queries, Size(14, 8),
        transformations=[{"id": "merge", "options": {}},
                         organize(columns, hide=["Time", "instance", "job", "tier",
                                                 "provision"])],
        overrides=[override("Since", ("unit", "dateTimeFromNow")),
                   override("Status", ("mappings", value_texts(
                       (s.value, s.value, look.colour) for s, look in LOOKS.items())),
                            ("custom.cellOptions", {"type": "color-text"})),
                   override("Site", ("links", [SITE_LINK])),
                   *(override(name, ("mappings", value_texts([(1, "crossed", "red"),
                                                              (0, "", "transparent")])),
                                 ("custom.cellOptions", {"type": "color-background"}))
                     for name in THRESHOLD_NAMES)],
        sort_by="Since")


def _firing_alerts() -> Json:
    # A table of Prometheus's ALERTS series rather than the alert-list panel: that panel
    # needs Grafana-managed or ruler-backed rules, this works with any Prometheus that
    # evaluates vcmon's rules, and it runs through the same query tests as every panel.
    return table(
        "Firing alerts", "Alerts Prometheus is firing now (deploy/prometheus/rules/); "
        "Alertmanager pages from the same rules.",
        [Query('ALERTS{alertstate="firing"}', instant=True, format="table")], Size(24, 6),
        transformations=[organize({"alertname": "Alert", "severity": "Severity",
                                   "name": "Site name", "site": "Site", "district": "District"},
                                  hide=["Time", "Value", "__name__", "alertstate", "instance",
                                        "job"])],
        overrides=[override("Site", ("links", [SITE_LINK]))])


def _status_grid() -> Json:
    grid = stat(
        "${district:text}", "Every site of the district, coloured by status; the tile names "
        "the site, a click opens its dashboard; the title's link opens the district's.",
        [Query(named(status_code(IN_DISTRICT)), legend="{{name}}", instant=True)],
        Size(8, 8), background=True, names=True, mappings=STATUS_MAPPINGS,
        thresholds=steps(LOOKS[Status.UNKNOWN].colour),
        extra={"links": [SITE_LINK, DISTRICT_LINK]}, repeat="district")
    grid["links"] = [link("Open the district ${district:text}",
                          f"/d/{DISTRICT_DASHBOARD}?var-datasource=${{datasource}}"
                          "&var-district=${district}&${__url_time_range}")]
    return grid


def _worst(title: str, name: str, expr: str, *, best_first: bool = False) -> Json:
    rank = "bottomk" if best_first else "topk"
    judged = (f"{expr}\n  unless on(site) "
              f"(vcmon_site_status{labels(NOT_JUDGED, IN_DISTRICT)} == 1)")
    extra = MOS_RANGE if name == "mos" else {"min": 0}
    return bargauge(
        title, f"The 10 selected sites with the worst {name} over their window now; the "
        "colour turns at vcmon's default threshold. Down, unreachable and maintenance "
        "sites are left out (they have their own panels). A click opens the site.",
        Query(f"{rank}(10, {named(judged)})", legend="{{name}}", instant=True), Size(6, 10),
        unit=UNITS[name], thresholds=THRESHOLD_STEPS[name],
        extra=extra | {"links": [SITE_LINK]})


def build() -> Json:
    sel = labels(IN_DISTRICT)
    return dashboard(
        UID, "vcmon: conference readiness", "Is every endpoint ready, and if not, which one, "
        "since when and why.",
        variables=[district_variable(multi=True)],
        panels=[
            _session(), _ready(), status_counts(Size(14, 5), IN_DISTRICT),
            _by_tier_and_provision(), _not_ok(),
            _firing_alerts(),
            row("Status by district"), _status_grid(),
            row("Worst 10 links now"),
            _worst("Loss", "loss", f"vcmon_site_loss_ratio{sel}"),
            _worst("Jitter", "jitter", f"vcmon_site_jitter_seconds{sel}"),
            _worst("RTT (window average)", "rtt",
                   f"vcmon_site_rtt_seconds{labels(equals('stat', 'avg'), IN_DISTRICT)}"),
            _worst("MOS", "mos", f"vcmon_site_mos{sel}", best_first=True),
        ],
        time_from="now-1h")
