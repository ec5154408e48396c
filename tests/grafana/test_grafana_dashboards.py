"""The committed dashboards: generated from the code, valid Grafana 11.6 JSON, consistent."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from grafana.build import DASHBOARDS, DASHBOARDS_DIR, rendered
from monitor.inventory.thresholds import Thresholds

SCHEMA_DIR = Path(__file__).parent / "schema"
PROVISIONING = DASHBOARDS_DIR.parent / "provisioning"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# panel type → the SDK module whose Options (and FieldConfig, where it has one) it uses
PANEL_MODULES = {"stat": "stat", "timeseries": "timeseries", "table": "table",
                 "bargauge": "bargauge", "heatmap": "heatmap", "state-timeline": "statetimeline"}

Json = dict[str, Any]


def _schema(module: str) -> Json:
    loaded: Json = json.loads((SCHEMA_DIR / f"{module}.schema.json").read_text())
    return loaded


def _ref(module: str, definition: str) -> Json:
    return {"$ref": f"urn:grafana:{module}#/definitions/{definition}"}


def dashboard_validator() -> jsonschema.Draft7Validator:
    """The SDK's Dashboard schema, with its two open ends closed.

    The SDK types a panel's queries as an opaque ``Dataquery`` and its options as
    ``any``: here queries must be Prometheus queries, and each panel kind's options and
    custom field config must match that kind's schema.
    """
    dashboard = copy.deepcopy(_schema("dashboard"))
    definitions = dashboard["definitions"]
    definitions["Dataquery"] = _ref("prometheus", "dataquery")
    panel = definitions["Panel"]
    panel["properties"]["type"] = {"enum": sorted(PANEL_MODULES)}
    rules = []
    for kind, module in PANEL_MODULES.items():
        then: Json = {"properties": {"options": _ref(module, "Options")}}
        if "FieldConfig" in _schema(module)["definitions"]:
            then["properties"]["fieldConfig"] = {"properties": {"defaults": {"properties": {
                "custom": _ref(module, "FieldConfig")}}}}
        rules.append({"if": {"properties": {"type": {"const": kind}}}, "then": then})
    panel["allOf"] = rules
    resources = [(f"urn:grafana:{m}", Resource.from_contents(_schema(m), DRAFT7))
                 for m in {*PANEL_MODULES.values(), "prometheus"}]
    resources.append(("urn:grafana:dashboard", Resource.from_contents(dashboard, DRAFT7)))
    registry: Registry[Json] = Registry().with_resources(resources)
    return jsonschema.Draft7Validator(_ref("dashboard", "Dashboard"), registry=registry)


def committed() -> dict[str, Json]:
    return {name: json.loads((DASHBOARDS_DIR / name).read_text(encoding="utf-8"))
            for name in DASHBOARDS}


def panels(dashboard: Json) -> Iterator[Json]:
    for p in dashboard["panels"]:
        if p["type"] != "row":
            yield p


def test_committed_json_is_what_the_code_generates() -> None:
    on_disk = {p.name for p in DASHBOARDS_DIR.glob("*.json")}
    assert on_disk == set(DASHBOARDS), "grafana/dashboards/ has files no builder makes"
    for name, text in rendered().items():
        assert (DASHBOARDS_DIR / name).read_text(encoding="utf-8") == text, (
            f"grafana/dashboards/{name} is stale: run python -m grafana.build")


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_matches_grafana_schema(name: str) -> None:
    validator = dashboard_validator()
    errors = sorted(validator.iter_errors(committed()[name]), key=lambda e: list(e.path))
    # a panel is Panel or RowPanel: name the deepest reason, not "not valid under any"
    reasons = [jsonschema.exceptions.best_match([e]) for e in errors]
    assert not errors, "\n".join(
        f"{'/'.join(map(str, r.absolute_path))}: {r.message[:300]}" for r in reasons)


def test_the_schema_rejects_what_grafana_would_not_read() -> None:
    # the check is only worth something if these fail
    validator = dashboard_validator()
    good = committed()["site.json"]
    broken = [copy.deepcopy(good) for _ in range(4)]
    broken[0]["panels"][0]["options"]["textMode"] = "shout"
    broken[1]["panels"][0]["targets"][0]["exprr"] = "up"
    broken[2]["panels"][0]["type"] = "graph"
    broken[3]["templating"]["list"][1]["sort"] = 42
    assert validator.is_valid(good)
    for dashboard in broken:
        assert not validator.is_valid(dashboard)


def test_uids_and_panel_ids_are_unique() -> None:
    dashboards = committed().values()
    uids = [d["uid"] for d in dashboards]
    assert len(set(uids)) == len(uids)
    assert all(re.fullmatch(r"[a-z0-9-]{1,40}", uid) for uid in uids)
    for d in dashboards:
        ids = [p["id"] for p in d["panels"]]
        assert len(set(ids)) == len(ids), d["uid"]


def test_every_panel_reads_the_datasource_variable_with_ref_ids() -> None:
    for d in committed().values():
        for p in panels(d):
            where = f"{d['uid']} / {p['title']}"
            assert p["datasource"] == DATASOURCE, where
            assert p["targets"], where
            ref_ids = [t["refId"] for t in p["targets"]]
            assert len(set(ref_ids)) == len(ref_ids) and all(ref_ids), where
            assert all(t["datasource"] == DATASOURCE and t["expr"].strip()
                       for t in p["targets"]), where
        for a in d["annotations"]["list"]:
            if not a.get("builtIn"):
                assert a["datasource"] == DATASOURCE, a["name"]
        variables = {v["name"]: v for v in d["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert all(v["datasource"] == DATASOURCE for v in variables.values()
                   if v["type"] == "query")


def test_no_uid_is_hard_coded() -> None:
    for name, d in committed().items():
        text = json.dumps(d)
        found = set(re.findall(r'"uid": "([^"]*)"', text)) - {d["uid"], "${datasource}",
                                                             "-- Grafana --"}
        assert not found, f"{name} names datasource uids {found}"


def test_links_point_at_existing_dashboards() -> None:
    uids = {d["uid"] for d in committed().values()}
    for name, d in committed().items():
        for target in re.findall(r"/d/([a-z0-9-]+)", json.dumps(d)):
            assert target in uids, f"{name} links to missing dashboard {target}"


def _coloured_at(d: Json, metric: str) -> list[tuple[str, list[float]]]:
    """(panel title, threshold values) of every field showing ``metric``."""
    found = []
    for p in panels(d):
        exprs = [t["expr"] for t in p["targets"]]
        defaults = p["fieldConfig"]["defaults"]
        if all(metric in e for e in exprs) and "thresholds" in defaults:
            found.append((p["title"], [s["value"] for s in defaults["thresholds"]["steps"][1:]]))
    return found


@pytest.mark.parametrize(("metric", "limit"), [
    ("vcmon_site_jitter_seconds", Thresholds().jitter),
    ("vcmon_site_loss_ratio", Thresholds().loss),
    ("vcmon_site_mos", Thresholds().mos),
    ("rtt_seconds", Thresholds().rtt),
])
def test_colours_turn_at_vcmon_thresholds(metric: str, limit: float) -> None:
    shown = [found for d in committed().values() for found in _coloured_at(d, metric)]
    assert shown, f"no panel colours {metric}"
    for title, values in shown:
        assert values == [limit], f"{title}: thresholds {values}, vcmon's default is {limit}"


def test_provisioned_datasource_interval_is_the_scrape_interval() -> None:
    datasource = yaml.safe_load((PROVISIONING / "datasources" / "vcmon.yml").read_text())
    [source] = datasource["datasources"]
    assert source["type"] == "prometheus"
    assert source["uid"] == "vcmon"
    config = Path(__file__).parents[2] / "deploy" / "prometheus" / "prometheus.yml"
    if not config.exists():
        pytest.skip("deploy/prometheus/prometheus.yml has not landed in this checkout yet")
    prometheus = yaml.safe_load(config.read_text())
    [job] = [j for j in prometheus["scrape_configs"] if j["job_name"] == "vcmon"]
    interval = job.get("scrape_interval", prometheus["global"]["scrape_interval"])
    assert source["jsonData"]["timeInterval"] == interval


def test_dashboard_provider_loads_files() -> None:
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "vcmon.yml").read_text())
    [entry] = provider["providers"]
    assert entry["type"] == "file"
    assert Path(entry["options"]["path"]).is_absolute()


def test_the_district_dashboard_links_in_and_out() -> None:
    """overview → district → site → back: each hop is a link on a panel people click."""
    def urls(panel: Json) -> str:
        return json.dumps([panel.get("links", []),
                           panel["fieldConfig"]["defaults"].get("links", [])])

    def panel(name: str, title: str, kind: str = "stat") -> Json:
        [found] = [p for p in panels(committed()[name])
                   if p["title"] == title and p["type"] == kind]
        return found

    assert "/d/vcmon-district?" in urls(panel("overview.json", "${district:text}"))
    grid = panel("district.json", "Sites of the district")
    assert "/d/vcmon-site?" in urls(grid) and "/d/vcmon-overview?" in urls(grid)
    status = panel("site.json", "Status")
    assert "/d/vcmon-district?" in urls(status) and "/d/vcmon-overview?" in urls(status)
    # above the fold: the grid is in the district dashboard's first rows
    assert grid["gridPos"]["y"] < 10

