"""Grafana 11 dashboard JSON, built from a few typed functions.

Every function returns plain JSON-ready dicts in the shape of the Grafana foundation
SDK's 11.6 types (tests/grafana/schema/ holds the JSON schema made from them). Panel
ids and grid positions are assigned by ``dashboard()``, so a builder only says how big
a panel is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Json = dict[str, Any]

GRID_WIDTH = 24
# Grafana 11.6 writes this; older 11.x load it unchanged, newer ones migrate it.
SCHEMA_VERSION = 41
# Every panel and query reads from the dashboard's datasource variable, never a fixed uid.
DATASOURCE: Json = {"type": "prometheus", "uid": "${datasource}"}
TAG = "vcmon"


@dataclass(frozen=True, slots=True)
class Query:
    """One PromQL target. ``instant`` for tables and current values, range otherwise."""

    expr: str
    legend: str = ""
    instant: bool = False
    format: Literal["time_series", "table", "heatmap"] = "time_series"


@dataclass(frozen=True, slots=True)
class Size:
    w: int
    h: int


def _targets(queries: Sequence[Query]) -> list[Json]:
    if len(queries) > 26:
        raise ValueError("a panel takes at most 26 queries (refId A to Z)")
    return [{"datasource": DATASOURCE, "refId": chr(ord("A") + i), "editorMode": "code",
             "expr": q.expr, "legendFormat": q.legend or "__auto", "range": not q.instant,
             "instant": q.instant, "format": q.format}
            for i, q in enumerate(queries)]


def steps(base: str, *above: tuple[float, str]) -> Json:
    """Absolute thresholds: ``base`` colour below the first value, then each (value, colour)."""
    return {"mode": "absolute",
            "steps": [{"color": base, "value": None},
                      *({"color": colour, "value": value} for value, colour in above)]}


def value_texts(entries: Iterable[tuple[int | str, str, str]]) -> list[Json]:
    """One value mapping: each (value, text, colour)."""
    options = {str(value): {"text": text, "color": colour, "index": i}
               for i, (value, text, colour) in enumerate(entries)}
    return [{"type": "value", "options": options}]


def link(title: str, url: str) -> Json:
    """A data link. The schema types field links as dashboard links, hence the extra keys."""
    return {"title": title, "url": url, "type": "link", "icon": "dashboard", "tooltip": title,
            "tags": [], "asDropdown": False, "targetBlank": False, "includeVars": False,
            "keepTime": True}


def override(field_name: str, *properties: tuple[str, Any]) -> Json:
    return {"matcher": {"id": "byName", "options": field_name},
            "properties": [{"id": key, "value": value} for key, value in properties]}


def organize(rename: dict[str, str], hide: Iterable[str] = ()) -> Json:
    """Rename columns, hide others, and keep ``rename``'s order first."""
    return {"id": "organize", "options": {
        "renameByName": rename, "excludeByName": dict.fromkeys(hide, True),
        "indexByName": {name: i for i, name in enumerate(rename)}}}


def panel(kind: str, title: str, description: str, queries: Sequence[Query], size: Size, *,
          options: Json, defaults: Json, overrides: Sequence[Json] = (),
          transformations: Sequence[Json] = (), repeat: str | None = None) -> Json:
    out: Json = {"type": kind, "title": title, "description": description,
                 "datasource": DATASOURCE, "gridPos": {"h": size.h, "w": size.w, "x": 0, "y": 0},
                 "targets": _targets(queries),
                 "fieldConfig": {"defaults": defaults, "overrides": list(overrides)},
                 "options": options}
    if transformations:
        out["transformations"] = list(transformations)
    if repeat is not None:
        out |= {"repeat": repeat, "repeatDirection": "h", "maxPerRow": GRID_WIDTH // size.w}
    return out


# one value per series: its last non-null one
LAST: Json = {"calcs": ["lastNotNull"], "fields": "", "values": False}


def _field(unit: str, thresholds: Json | None, mappings: list[Json] | None,
           extra: Json | None) -> Json:
    out: Json = {"unit": unit}
    if thresholds is not None:
        out["thresholds"] = thresholds
    if mappings is not None:
        out["mappings"] = mappings
    return out | (extra or {})


def stat(title: str, description: str, queries: Sequence[Query], size: Size, *,
         unit: str = "none", thresholds: Json | None = None, mappings: list[Json] | None = None,
         background: bool = False, names: bool = False, extra: Json | None = None,
         overrides: Sequence[Json] = (), repeat: str | None = None) -> Json:
    """Current values. ``background`` colours whole tiles; ``names`` shows series names
    instead of values (the status grid, where the colour is the value)."""
    options = {"graphMode": "none", "colorMode": "background" if background else "value",
               "justifyMode": "center", "textMode": "name" if names else "auto",
               "wideLayout": True, "showPercentChange": False, "reduceOptions": LAST,
               "percentChangeColorMode": "standard", "orientation": "auto"}
    defaults = _field(unit, thresholds, mappings, extra)
    defaults.setdefault("color", {"mode": "thresholds"})
    return panel("stat", title, description, queries, size, options=options, defaults=defaults,
                 overrides=overrides, repeat=repeat)


def timeseries(title: str, description: str, queries: Sequence[Query], size: Size, *,
               unit: str, thresholds: Json | None = None, extra: Json | None = None,
               overrides: Sequence[Json] = ()) -> Json:
    """Values over time; ``thresholds`` are drawn as dashed lines."""
    custom: Json = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 0,
                    "showPoints": "never", "spanNulls": False, "axisSoftMin": 0}
    if thresholds is not None:
        custom["thresholdsStyle"] = {"mode": "dashed"}
    defaults = _field(unit, thresholds, None, extra) | {"custom": custom}
    defaults.setdefault("color", {"mode": "palette-classic"})
    options = {"legend": {"displayMode": "table", "placement": "right", "showLegend": True,
                          "calcs": ["lastNotNull", "max"]},
               "tooltip": {"mode": "multi", "sort": "desc"}}
    return panel("timeseries", title, description, queries, size, options=options,
                 defaults=defaults, overrides=overrides)


def bargauge(title: str, description: str, query: Query, size: Size, *, unit: str,
             thresholds: Json, extra: Json | None = None) -> Json:
    """A ranking: one horizontal bar per series, coloured by the thresholds."""
    options = {"displayMode": "basic", "valueMode": "color", "namePlacement": "left",
               "showUnfilled": True, "sizing": "auto", "minVizWidth": 8, "minVizHeight": 16,
               "maxVizHeight": 300, "legend": {"displayMode": "list", "placement": "bottom",
                                              "showLegend": False, "calcs": []},
               "reduceOptions": LAST, "orientation": "horizontal"}
    defaults = _field(unit, thresholds, None, extra) | {"color": {"mode": "thresholds"}}
    return panel("bargauge", title, description, [query], size, options=options,
                 defaults=defaults)


def table(title: str, description: str, queries: Sequence[Query], size: Size, *,
          transformations: Sequence[Json], overrides: Sequence[Json] = (),
          sort_by: str | None = None, extra: Json | None = None) -> Json:
    options: Json = {"frameIndex": 0, "showHeader": True, "cellHeight": "sm"}
    if sort_by is not None:
        options["sortBy"] = [{"displayName": sort_by, "desc": True}]
    defaults = {"custom": {"align": "auto", "filterable": True, "inspect": False,
                           "cellOptions": {"type": "auto"}}} | (extra or {})
    return panel("table", title, description, queries, size, options=options, defaults=defaults,
                 overrides=overrides, transformations=transformations)


def heatmap(title: str, description: str, query: Query, size: Size, *, unit: str) -> Json:
    """Pre-bucketed counts (``format: heatmap``, one series per ``le``) drawn as they are."""
    options = {"calculate": False, "cellGap": 1, "showValue": "never",
               "color": {"mode": "scheme", "scheme": "Oranges", "fill": "dark-orange",
                         "scale": "exponential", "exponent": 0.5, "steps": 64,
                         "reverse": False},
               "yAxis": {"axisPlacement": "left", "unit": unit, "reverse": False},
               "rowsFrame": {"layout": "le"},
               "legend": {"show": True},
               "tooltip": {"mode": "single", "yHistogram": True, "showColorScale": False},
               "exemplars": {"color": "rgba(255,0,255,0.7)"},
               "filterValues": {"le": 1e-9}}
    return panel("heatmap", title, description, [query], size, options=options,
                 defaults={"custom": {"hideFrom": {"legend": False, "tooltip": False,
                                                   "viz": False},
                                      "scaleDistribution": {"type": "linear"}}})


def state_timeline(title: str, description: str, query: Query, size: Size, *,
                   mappings: list[Json], extra: Json | None = None) -> Json:
    options = {"showValue": "never", "rowHeight": 0.9, "mergeValues": True,
               "alignValue": "left",
               "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True,
                          "calcs": []},
               "tooltip": {"mode": "single", "sort": "none"}}
    defaults = _field("none", None, mappings, extra) | {
        "color": {"mode": "thresholds"}, "thresholds": steps("green"),
        "custom": {"fillOpacity": 80, "lineWidth": 0}}
    return panel("state-timeline", title, description, [query], size, options=options,
                 defaults=defaults)


def row(title: str) -> Json:
    return {"type": "row", "title": title, "collapsed": False, "panels": [],
            "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": 0}, "id": 0}


def _place(panels: Sequence[Json]) -> list[Json]:
    """Number the panels and flow them left to right, top to bottom."""
    placed, x, y, line_height = [], 0, 0, 0
    for number, p in enumerate(panels, start=1):
        grid = p["gridPos"]
        if p["type"] == "row" or x + grid["w"] > GRID_WIDTH:
            x, y, line_height = 0, y + line_height, 0
        placed.append(p | {"id": number, "gridPos": grid | {"x": x, "y": y}})
        x, line_height = x + grid["w"], max(line_height, grid["h"])
        # A row header and a repeated panel (Grafana lays out the copies) end the line.
        if p["type"] == "row" or "repeat" in p:
            x = GRID_WIDTH
    return placed


def datasource_variable() -> Json:
    # Preselects the datasource provisioned from grafana/provisioning/ (name "vcmon");
    # Grafana falls back to the first Prometheus datasource where there is none.
    return {"type": "datasource", "name": "datasource", "label": "Prometheus",
            "query": "prometheus", "current": {"text": "vcmon", "value": "vcmon"},
            "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1,
            "regex": "", "skipUrlSync": False}


def query_variable(name: str, label: str, query: str, *, multi: bool, regex: str = "",
                   include_all: bool = False) -> Json:
    """Values from the metrics, refreshed with the time range so new sites appear."""
    out: Json = {"type": "query", "name": name, "label": label, "datasource": DATASOURCE,
                 "query": query, "regex": regex, "refresh": 2, "sort": 1, "multi": multi,
                 "includeAll": include_all, "hide": 0, "options": [], "skipUrlSync": False}
    if include_all:
        out["current"] = {"text": ["All"], "value": ["$__all"]}
    return out


def dashboard(uid: str, title: str, description: str, *, variables: Sequence[Json],
              panels: Sequence[Json], annotations: Sequence[Json] = (),
              time_from: str = "now-3h") -> Json:
    builtin = {"name": "Annotations & Alerts", "builtIn": 1, "enable": True, "hide": True,
               "iconColor": "rgba(0, 211, 255, 1)", "type": "dashboard",
               "datasource": {"type": "grafana", "uid": "-- Grafana --"}}
    return {
        "uid": uid, "title": title, "description": description, "tags": [TAG],
        "editable": True, "graphTooltip": 1, "timezone": "browser", "fiscalYearStartMonth": 0,
        "liveNow": False, "refresh": "10s", "schemaVersion": SCHEMA_VERSION, "version": 1,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {"refresh_intervals": ["5s", "10s", "30s", "1m", "5m"]},
        # Every vcmon dashboard links to the others, carrying the selected district and site.
        "links": [{"title": "vcmon", "type": "dashboards", "tags": [TAG], "asDropdown": False,
                   "icon": "external link", "tooltip": "", "targetBlank": False,
                   "includeVars": True, "keepTime": True}],
        "annotations": {"list": [builtin, *annotations]},
        "templating": {"list": [datasource_variable(), *variables]},
        "panels": _place(panels),
    }
