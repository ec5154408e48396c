"""What vcmon's metrics look like on every dashboard: statuses, thresholds, selectors.

Colours and limits are derived from vcmon's own definitions (``Status``, the
``Thresholds`` defaults), so a dashboard turns red exactly where a site turns degraded.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import get_args

from grafana._panels import (
    Json,
    Query,
    Size,
    link,
    query_variable,
    stat,
    state_timeline,
    steps,
    value_texts,
)
from monitor.inventory import Tier
from monitor.inventory.thresholds import THRESHOLD_NAMES, Thresholds
from monitor.status.health import Status


@dataclass(frozen=True, slots=True)
class Look:
    # Severity order, higher is worse: the status grid colours a site by this number.
    code: int
    colour: str


LOOKS: dict[Status, Look] = {
    Status.OK: Look(0, "green"),
    Status.MAINTENANCE: Look(1, "blue"),
    Status.UNKNOWN: Look(2, "#8e8e8e"),
    Status.DEGRADED: Look(3, "orange"),
    Status.UNREACHABLE: Look(4, "purple"),
    Status.DOWN: Look(5, "red"),
}
if set(LOOKS) != set(Status):
    raise RuntimeError(f"grafana/_vcmon.py: give every status a colour in LOOKS; missing "
                       f"{sorted(set(Status) - set(LOOKS))}")

STATUS_MAPPINGS = value_texts((look.code, status.value, look.colour)
                              for status, look in LOOKS.items())

# One source of truth: the defaults vcmon judges sites by (monitor/inventory/thresholds.py).
DEFAULTS = Thresholds()
# degraded when RTT, jitter or loss is above the limit, or MOS below it
THRESHOLD_STEPS: dict[str, Json] = {
    "rtt": steps("green", (DEFAULTS.rtt, "red")),
    "jitter": steps("green", (DEFAULTS.jitter, "red")),
    "loss": steps("green", (DEFAULTS.loss, "red")),
    "mos": steps("red", (DEFAULTS.mos, "green")),
}
UNITS = {"rtt": "s", "jitter": "s", "loss": "percentunit", "mos": "none"}
if set(THRESHOLD_STEPS) != set(THRESHOLD_NAMES) or set(UNITS) != set(THRESHOLD_NAMES):
    raise RuntimeError("grafana/_vcmon.py: THRESHOLD_STEPS and UNITS must cover "
                       f"{THRESHOLD_NAMES}, the thresholds vcmon judges")
MOS_RANGE: Json = {"min": 1, "max": 4.5, "decimals": 2}

# Sites at the head of a district group: the province hall and the district-level points
# (a site's `district` label is its own id there).
GROUP_HEADS = ("province", "district")
if not set(GROUP_HEADS) <= set(get_args(Tier)):
    raise RuntimeError(f"grafana/_vcmon.py: GROUP_HEADS {GROUP_HEADS} are not all tiers")

IN_DISTRICT = 'district=~"$district"'
IS_SITE = 'site=~"$site"'
SITE_DASHBOARD = "vcmon-site"
# A click on a site opens its dashboard with the time range kept.
SITE_LINK = link("Open ${__field.labels.name}",
                 f"/d/{SITE_DASHBOARD}?var-datasource=${{datasource}}"
                 "&var-site=${__field.labels.site}&${__url_time_range}")


DISTRICT_DASHBOARD = "vcmon-district"
OVERVIEW_DASHBOARD = "vcmon-overview"
# overview → district → site → back: each hop keeps the data source and the time range.
DISTRICT_LINK = link("Open district ${__field.labels.district}",
                     f"/d/{DISTRICT_DASHBOARD}?var-datasource=${{datasource}}"
                     "&var-district=${__field.labels.district}&${__url_time_range}")
OVERVIEW_LINK = link("Back to the overview",
                     f"/d/{OVERVIEW_DASHBOARD}?var-datasource=${{datasource}}&${{__url_time_range}}")
# Down, unreachable and maintenance sites have panels of their own: a "worst links"
# list of them would be all 100 % loss and MOS 1, hiding the links still carrying a
# conference badly.
NOT_JUDGED = 'status=~"down|unreachable|maintenance"'


def labels(*matchers: str) -> str:
    return "{" + ", ".join(matchers) + "}"


def equals(label: str, value: str) -> str:
    return f'{label}="{value}"'


def named(expr: str, extra: str = "") -> str:
    """``expr`` (one series per site) with the site's name from vcmon_site_info."""
    wanted = ", ".join(n for n in ("name", extra) if n)
    return f"(\n{textwrap.indent(expr, '  ')}\n)\n* on(site) group_left({wanted}) vcmon_site_info"


def status_code(*matchers: str) -> str:
    """One series per site whose value is its status's ``Look.code``.

    A site exports the status it is in as 1 (with the full series set, the others as 0
    too), so the weighted sum is the current status's code.
    """
    terms = "\n  or ".join(
        f"vcmon_site_status{labels(equals('status', status.value), *matchers)} * {look.code}"
        for status, look in LOOKS.items())
    return f"sum by (site) (\n  {terms}\n)"


def loss_ratio(by: str, *matchers: str) -> str:
    """Loss from the counters over ``$__rate_interval`` (sent counts resolved probes only,
    so packets in flight are not lost); no value where nothing resolved."""
    sel = labels(*matchers)
    return (f"1 - sum by ({by}) (rate(vcmon_probe_packets_received_total{sel}"
            f"[$__rate_interval]))\n  / (sum by ({by}) (rate(vcmon_probe_packets_sent_total{sel}"
            f"[$__rate_interval])) > 0)")


def mean_rtt(by: str, *matchers: str) -> str:
    """Mean RTT of the replies in ``$__rate_interval``, from the histogram's sum and count."""
    sel = labels(*matchers)
    return (f"sum by ({by}) (rate(vcmon_probe_rtt_seconds_sum{sel}[$__rate_interval]))\n"
            f"  / (sum by ({by}) (rate(vcmon_probe_rtt_seconds_count{sel}[$__rate_interval]))"
            " > 0)")


def district_variable(*, multi: bool) -> Json:
    # Values are district ids, texts the district hall's name: repeated panels are
    # titled with the name (${district:text}).
    heads = "|".join(GROUP_HEADS)
    return query_variable(
        "district", "District",
        f'query_result(max by (district, name) (vcmon_site_info{{tier=~"{heads}"}}))',
        regex='/district="(?<value>[^"]+)".*name="(?<text>[^"]+)"/',
        multi=multi, include_all=multi)


def site_variable(*, multi: bool) -> Json:
    return query_variable(
        "site", "Site", f"query_result(max by (name, site) (vcmon_site_info{{{IN_DISTRICT}}}))",
        regex='/name="(?<text>[^"]+)".*site="(?<value>[^"]+)"/',
        multi=multi, include_all=multi)


def status_counts(size: Size, *matchers: str) -> Json:
    """Sites in each status: one value per status, in severity order, adding up to all."""
    # "or vector(0)": a status no site is in has no series (docs/metrics.md#series-per-site)
    queries = [Query(f"sum(vcmon_site_status{labels(equals('status', s.value), *matchers)})"
                     " or vector(0)", legend=s.value, instant=True) for s in LOOKS]
    return stat("Sites by status", "How many sites are in each status now. They add up to "
                "every site selected.", queries, size,
                background=True, thresholds=steps("#8e8e8e"),
                overrides=[{"matcher": {"id": "byName", "options": s.value},
                            "properties": [{"id": "color", "value": {
                                "mode": "fixed", "fixedColor": look.colour}}]}
                           for s, look in LOOKS.items()])


def status_timeline(title: str, size: Size, *matchers: str) -> Json:
    return state_timeline(
        title, "Each site's status over time; hover for the site's name and status.",
        Query(named(status_code(*matchers)), legend="{{name}}"), size,
        mappings=STATUS_MAPPINGS, extra={"links": [SITE_LINK]})
