"""Every dashboard query, run against a real Prometheus that scraped vcmon on conference day.

``vcmon lab up --config <embedded inventory> --profile conference-day`` builds the 240
embedded sites as far sites on a test-only lab (its own name, a /24 of 198.19.64.0/18,
RFC 2544): one district uplink down with its communes behind it, ~5 % of the communes
degraded (jitter 40 ms, loss 3 %), the others healthy at their tier's RTT. vcmon probes
the lab's inventory (after the lab's own route check) and Prometheus (Debian's binary)
scrapes it every second, both on 127.0.0.1. The test adds what the scenario does not
have: a jitter threshold between the healthy and the degraded links, one commune made
unsendable by a ``prohibit`` route (down, with probe errors), one district in
maintenance, one session on and the next one in pre-flight. Each panel query then runs
the way Grafana would send it, with the template variables replaced by real values.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from grafana.build import DASHBOARDS, DASHBOARDS_DIR
from monitor.inventory import load_config
from monitor.lab import netlab
from monitor.lab.netlab import Lab
from monitor.lab.state import LabState, read_state
from tests import netns
from tests.conftest import free_port, stop_process, wait_until

pytestmark = [
    pytest.mark.services, pytest.mark.netns, netns.skip_unless_available,
    pytest.mark.skipif(shutil.which("prometheus") is None,
                       reason="needs Debian's prometheus (tests/run.sh installs it)"),
]

Json = dict[str, Any]
REPO = Path(__file__).parents[2]
DEMO = REPO / "monitor" / "data" / "default-inventory.yaml"
# Grafana's $__rate_interval is max($__interval + scrape interval, 4 × scrape interval);
# scrapes here are 1 s apart, and a range query steps by $__interval.
MACROS = {"__rate_interval": "4s", "__interval": "1s", "__range": "1m"}
RANGE = 60
# Between the lab's healthy links (jitter ≤ 6 ms, which vcmon reads as ≤ 4 ms) and its
# degraded ones (± 60 ms, read as about 40 ms): those and only those are degraded.
JITTER_LIMIT = 0.012
# Shown on the dashboards, exported by the MQTT publisher (monitor/mqtt/publisher.py) only
# when the inventory has an mqtt: section (docs/mqtt.md#when-the-broker-is-away lists
# them). A query of them may return nothing; any other metric name must exist.
NOT_YET_EXPORTED = frozenset({
    "vcmon_mqtt_connected", "vcmon_mqtt_queue_depth", "vcmon_mqtt_published_total",
    "vcmon_mqtt_dropped_total", "vcmon_mqtt_reconnects_total",
    "vcmon_mqtt_publish_errors_total",
})


@dataclass
class Scenario:
    prometheus: str
    sites: list[Json]
    districts: list[str]  # the down uplink's, the maintained one, one with degraded communes
    expected: dict[str, list[str]]  # status → its sites, the district site first

    def api(self, endpoint: str, **params: str | float) -> Any:
        """A Prometheus HTTP API call; its ``data``."""
        url = (f"http://{self.prometheus}/api/v1/{endpoint}?"
               f"{urllib.parse.urlencode(params)}")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{params.get('query')!r}: {exc.read().decode()}") from None
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, *, instant: bool = True) -> list[Json]:
        if instant:
            result: list[Json] = self.api("query", query=expr)["result"]
            return result
        end = time.time()
        return list(self.api("query_range", query=expr, start=end - RANGE, end=end,
                             step=1)["result"])

    def value(self, expr: str) -> float:
        [sample] = self.query(expr)
        return float(sample["value"][1])


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
        return body


def _test_lab() -> Lab:
    """A lab named vcgf-XXXXXX on a random /24 of 198.19.64.0/18: never the user's
    vcmon-lab (whose addresses start at the bottom of 198.18.0.0/15), nor the /17 where
    tests/lab and tests/deploy make theirs."""
    block = 198 << 24 | 19 << 16 | (64 + secrets.randbelow(64)) << 8
    return Lab(name=f"vcgf-{secrets.token_hex(3)}",
               network=ipaddress.IPv4Network((block, 24)))


def _lab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "monitor.cli", "lab", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)


def _conference_day(document: Json, lab_inventory: Path, state: LabState
                    ) -> tuple[Json, list[str], dict[str, list[str]], str]:
    """The lab's inventory with what the scenario lacks; the districts of interest, who
    should be in which status, and the address that must not be sendable."""
    district_of = {site.id: site.district for site in load_config(str(lab_inventory)).sites}
    label = {site.id: site.profile.label for site in state.sites}
    [uplink] = [s for s, kind in label.items() if kind == "down"]
    degraded = [s for s, kind in label.items() if kind == "degraded"]
    districts = [s["id"] for s in document["sites"] if s["tier"] == "district"]
    troubled = {uplink} | {district_of[s] for s in degraded}
    maintained = next(d for d in districts if d not in troubled)
    mixed = next(d for d in districts if d in {district_of[s] for s in degraded})
    # a healthy commune whose probes cannot be sent: vcmon_probe_errors_total has data
    lost = next(s for s in state.sites if district_of[s.id] == mixed and s.id != mixed
                and label[s.id] not in ("down", "behind-down", "degraded"))
    now = datetime.now(UTC)

    def at(minutes: int) -> str:
        return (now + timedelta(minutes=minutes)).isoformat()

    document["defaults"]["down_after"] = 5  # 3 % independent loss: never 5 in a row
    # a service probe every site answers (the lab's responder echoes): the site
    # dashboard's service panels have data, and no healthy site turns degraded
    # and a TWAMP-light stream to every site (the lab reflects them): the site
    # dashboard's stream panels have data, per direction
    document["defaults"]["probes"] = [{"kind": "icmp", "name": "icmp-2", "interval": 1,
                                       "timeout": 1, "down_after": 5},
                                      {"kind": "twamp", "interval": 2, "timeout": 0.5,
                                       "packets": 10, "down_after": 5}]
    document["health"] = {"evaluate_every": 1, "enter_after": 2, "leave_after": 2,
                          "thresholds": {"jitter": JITTER_LIMIT}}
    document["schedule"] = {
        "conferences": [{"name": "phien-sang", "start": at(-10), "end": at(20)},
                        {"name": "phien-chieu", "start": at(30), "end": at(120)}],
        "maintenance": [{"districts": [maintained], "start": at(-5), "end": at(120),
                         "reason": "thay bộ định tuyến"}]}
    expected = {
        "down": [uplink, lost.id],
        "unreachable": state.behind(uplink),
        "degraded": degraded,
        "maintenance": [maintained, *(s for s, d in district_of.items()
                                      if d == maintained and s != maintained)],
    }
    return document, [uplink, maintained, mixed], expected, lost.address


def _prometheus_config(tmp: Path, vcmon: str) -> Path:
    rules = tmp / "rules.yml"
    # A rule of the test's own, so that ALERTS has firing series for the alerts table
    # (deploy/prometheus/rules/ is another part's, tested there).
    rules.write_text(yaml.safe_dump({"groups": [{"name": "grafana-test", "rules": [
        {"alert": "TestSiteDown", "expr": 'vcmon_site_status{status="down"} == 1',
         "labels": {"severity": "page"}}]}]}))
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                   "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": "vcmon",
                            "static_configs": [{"targets": [vcmon]}]}]}))
    return config


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    tmp = tmp_path_factory.mktemp("grafana")
    lab = _test_lab()
    lab_inventory = tmp / "lab-inventory.yaml"
    procs: list[subprocess.Popen[bytes]] = []
    prohibited: list[str] = []
    try:
        done = _lab("up", "--name", lab.name, "--network", str(lab.network), "--config",
                    str(DEMO), "--profile", "conference-day", "--inventory", str(lab_inventory))
        assert done.returncode == 0, done.stderr
        document, districts, expected, unsendable = _conference_day(
            yaml.safe_load(lab_inventory.read_text(encoding="utf-8")), lab_inventory,
            read_state(lab.run_dir / "state.json"))
        # the troubled sites' paths traced within the minute the scenario settles in
        document["diagnosis"] = {"cycles": 3, "max_concurrent": 8, "packets_per_second": 400}
        inventory = tmp / "inventory.yaml"
        inventory.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
        # A prohibit route in the lab's own /24: sending there fails, nothing leaves.
        netlab.run(["ip", "route", "add", "prohibit", f"{unsendable}/32"])
        prohibited.append(unsendable)
        # Before the first packet: every site leaves through the lab's own link, or
        # cannot be sent at all.
        netlab.check_routes(lab, [site["address"] for site in document["sites"]
                                  if site["address"] != unsendable])
        assert netlab.route_devices([unsendable]) == {}, unsendable
        vcmon, prometheus = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        with (tmp / "vcmon.log").open("wb") as vcmon_log, \
                (tmp / "prometheus.log").open("wb") as prometheus_log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "monitor.cli", "run", "--config", str(inventory),
                 "--listen", vcmon, "--log-format", "json"],
                cwd=REPO, stdout=subprocess.DEVNULL, stderr=vcmon_log))
            procs.append(subprocess.Popen(
                ["prometheus", f"--config.file={_prometheus_config(tmp, vcmon)}",
                 f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address={prometheus}",
                 "--log.level=warn"],
                stdout=subprocess.DEVNULL, stderr=prometheus_log))
        wait_until("vcmon and Prometheus ready",
              lambda: _get(f"http://{vcmon}/-/ready") and _get(
                  f"http://{prometheus}/-/ready"), 30, *procs)
        scn = Scenario(prometheus, document["sites"], districts, expected)

        def settled() -> bool:
            counts = {s: scn.value(f'sum(vcmon_site_status{{status="{s}"}})')
                      for s in expected}
            return (all(counts[s] == len(v) for s, v in expected.items())
                    and bool(scn.query('ALERTS{alertstate="firing"}'))
                    # a minute's history, minus what the range queries can spare
                    and scn.value('count_over_time(up{job="vcmon"}[1m])') >= 30)

        wait_until("the conference-day lab settled in Prometheus", settled, 90, *procs)
        yield scn
    finally:
        try:
            for proc in procs:
                stop_process(proc, 10.0)
            for address in prohibited:
                netlab.run(["ip", "route", "del", "prohibit", f"{address}/32"])
        finally:
            done = _lab("down", "--name", lab.name)
            assert done.returncode == 0, done.stderr
            assert not netlab.leftovers(lab), netlab.leftovers(lab)


def _grafana_regex(regex: str) -> re.Pattern[str]:
    """A Grafana variable regex (/…/ with JavaScript named groups) in Python."""
    return re.compile(regex.strip("/").replace("(?<", "(?P<"))


def _alternation(values: list[str]) -> str:
    # as Grafana formats a multi-value variable for Prometheus: escaped, then (a|b)
    escaped = [re.sub(r"([$^*+?.()|{}\[\]\\])", r"\\\\\1", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def substitute(expr: str, values: dict[str, str]) -> str:
    known = MACROS | values

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in known, f"no value for ${name} in {expr!r}"
        return known[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", one, expr)


def variable_values(scn: Scenario, variable: Json, values: dict[str, str]) -> list[
        tuple[str, str]]:
    """(value, text) of a query variable, computed the way Grafana does."""
    query = substitute(variable["query"], values)
    if match := re.fullmatch(r"label_values\((.+), (\w+)\)", query):
        found = [(v, v) for v in scn.api(f"label/{match.group(2)}/values",
                                         **{"match[]": match.group(1)})]
    else:
        match = re.fullmatch(r"query_result\((.+)\)", query, re.DOTALL)
        assert match, f"unknown variable query {query!r}"
        pattern = _grafana_regex(variable["regex"])
        found = []
        for sample in scn.query(match.group(1)):
            labels = dict(sample["metric"])
            text = labels.pop("__name__", "") + "{" + ",".join(
                f'{k}="{v}"' for k, v in labels.items()) + "}"
            text += f" {sample['value'][1]} {int(sample['value'][0] * 1000)}"
            groups = pattern.search(text)
            assert groups, f"{variable['regex']} does not match {text}"
            found.append((groups["value"], groups["text"]))
    return sorted(found, key=lambda pair: pair[1])


def dashboard(name: str) -> Json:
    loaded: Json = json.loads((DASHBOARDS_DIR / name).read_text(encoding="utf-8"))
    return loaded


def contexts(scn: Scenario, name: str) -> list[dict[str, str]]:
    """Variable values to run a dashboard's queries with: the sites and districts of
    every status, one at a time where the variable takes one value."""
    board = dashboard(name)
    variables = {v["name"]: v for v in board["templating"]["list"] if v["type"] == "query"}
    base: dict[str, str] = {}
    choices: list[dict[str, str]] = [{}]
    if "instance" in variables:
        base["instance"] = _alternation([v for v, _ in variable_values(
            scn, variables["instance"], {})])
    if "district" in variables:
        districts = [v for v, _ in variable_values(scn, variables["district"], {})]
        if variables["district"]["multi"]:
            base["district"] = _alternation(districts)
        else:
            assert set(scn.districts) <= set(districts)
            choices = [{"district": d} for d in scn.districts]
    if "site" in variables:
        wide = [c | {"site": _alternation([v for v, _ in variable_values(
            scn, variables["site"], base | c)])} for c in choices]
        if variables["site"]["multi"]:
            choices = wide
        else:
            troubled = {site for group in scn.expected.values() for site in group}
            ok = next(s["id"] for s in scn.sites if s["id"] not in troubled)
            sites = [ok, *(group[-1] for group in scn.expected.values())]
            choices = [c | {"site": site} for c in choices for site in sites]
    return [base | c for c in choices]


def queries(board: Json) -> Iterator[tuple[str, str, bool]]:
    """(where, expr, instant) of every panel target and annotation."""
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield f"{panel['title']} / {target['refId']}", target["expr"], target["instant"]
    for annotation in board["annotations"]["list"]:
        if "expr" in annotation:
            yield f"annotation {annotation['name']}", annotation["expr"], False


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_query_parses_and_returns_data(scenario: Scenario, name: str) -> None:
    names = set(scenario.api("label/__name__/values"))
    empty = []
    runs = contexts(scenario, name)
    for where, expr, instant in queries(dashboard(name)):
        results = [scenario.query(substitute(expr, values), instant=instant)
                   for values in runs]
        metrics = set(re.findall(r"\bvcmon_\w+", expr))
        unknown = metrics - names - NOT_YET_EXPORTED
        assert not unknown, f"{where}: Prometheus has no {sorted(unknown)}"
        if not any(results) and not metrics & NOT_YET_EXPORTED:
            empty.append(f"{where}: {expr}")
    assert not empty, "queries without data:\n" + "\n".join(empty)


def _panel(name: str, title: str) -> Json:
    [found] = [p for p in dashboard(name)["panels"] if p["title"] == title]
    return found


def test_status_grid_shows_every_site_once(scenario: Scenario) -> None:
    grid = _panel("overview.json", "${district:text}")
    assert grid["repeat"] == "district"
    variable = next(v for v in dashboard("overview.json")["templating"]["list"]
                    if v["name"] == "district")
    shown: list[str] = []
    for district, _ in variable_values(scenario, variable, {}):
        series = scenario.query(substitute(grid["targets"][0]["expr"], {"district": district}))
        assert all(s["metric"]["name"] for s in series)
        shown += [s["metric"]["site"] for s in series]
    assert len(shown) == len(set(shown)) == len(scenario.sites) == 240
    everything = {"district": _alternation([d for d, _ in variable_values(
        scenario, variable, {})])}
    assert len(scenario.query(substitute(grid["targets"][0]["expr"], everything))) == 240
    codes = {s["metric"]["site"]: s["value"][1]
             for s in scenario.query(substitute(grid["targets"][0]["expr"], everything))}
    by_text = {o["text"]: code for code, o in
               grid["fieldConfig"]["defaults"]["mappings"][0]["options"].items()}
    for status, sites in scenario.expected.items():
        assert {codes[site] for site in sites} == {by_text[status]}, status


def test_overview_counts_add_up_to_the_inventory(scenario: Scenario) -> None:
    [values] = contexts(scenario, "overview.json")
    counts = _panel("overview.json", "Sites by status")
    by_status = {t["legendFormat"]: scenario.value(substitute(t["expr"], values))
                 for t in counts["targets"]}
    assert sum(by_status.values()) == len(scenario.sites) == 240
    for status, sites in scenario.expected.items():
        assert by_status[status] == len(sites), status
    tiers = _panel("overview.json", "Sites by tier and provision")
    columns = [scenario.query(substitute(t["expr"], values)) for t in tiers["targets"]]
    assert {(s["metric"]["tier"], s["metric"]["provision"]) for s in columns[0]} >= {
        ("commune", "vnpt"), ("commune", "contract")}
    sites, *statuses = [sum(float(s["value"][1]) for s in column) for column in columns]
    assert sites == sum(statuses) == 240
    not_ok = _panel("overview.json", "Not ok now")
    rows = scenario.query(substitute(not_ok["targets"][0]["expr"], values))
    # the down uplink's communes are folded behind it: it is one row, with their count
    unreachable = scenario.expected["unreachable"]
    assert len(rows) == 240 - by_status["ok"] - len(unreachable)
    assert not {r["metric"]["site"] for r in rows} & set(unreachable)
    [behind] = [t for t in not_ok["targets"] if "unreachable_behind" in t["expr"]]
    uplink = scenario.expected["down"][0]
    counts = {r["metric"]["site"]: float(r["value"][1])
              for r in scenario.query(substitute(behind["expr"], values))}
    assert counts[uplink] == len(unreachable)
    since = {r["metric"]["site"]: float(r["value"][1]) / 1000 for r in rows}
    assert all(time.time() - 300 < t <= time.time() for t in since.values())
    ready = _panel("overview.json", "Ready")
    assert scenario.value(substitute(ready["targets"][0]["expr"], values)) == pytest.approx(
        by_status["ok"] / 240)


def test_worst_ten_rank_ten_named_sites(scenario: Scenario) -> None:
    [values] = contexts(scenario, "overview.json")
    for title in ("Loss", "Jitter", "RTT (window average)", "MOS"):
        series = scenario.query(substitute(_panel("overview.json", title)["targets"][0]["expr"],
                                           values))
        assert len(series) == 10, title
        assert all(s["metric"]["name"] for s in series), title
        # the sites with panels of their own stay out: no 100 % loss, no MOS 1
        out = {site for status in ("down", "unreachable", "maintenance")
               for site in scenario.expected[status]}
        assert not {s["metric"]["site"] for s in series} & out, title


def test_variables_list_every_district_and_site(scenario: Scenario) -> None:
    variables = {v["name"]: v for v in dashboard("site.json")["templating"]["list"]}
    districts = variable_values(scenario, variables["district"], {})
    labelled = {s["metric"]["district"] for s in scenario.query("vcmon_site_info")}
    assert {v for v, _ in districts} == labelled
    names = {s["id"]: s["name"] for s in scenario.sites}
    assert all(text == names[value] for value, text in districts)
    assert [t for _, t in districts] == sorted(t for _, t in districts)
    every = {"district": _alternation([v for v, _ in districts])}
    sites = variable_values(scenario, variables["site"], every)
    assert sorted(v for v, _ in sites) == sorted(names)


def test_site_metadata_has_every_label_it_shows(scenario: Scenario) -> None:
    metadata = _panel("site.json", "Site")
    # Prometheus drops empty labels: some site has a contact, some a contract
    every = {"site": _alternation([s["id"] for s in scenario.sites])}
    present = {label for series in scenario.query(substitute(metadata["targets"][0]["expr"],
                                                              every))
               for label in series["metric"]}
    kept = metadata["transformations"][0]["options"]["keepLabels"]
    assert set(kept) <= present, set(kept) - present


def test_the_smoke_band_is_the_spread_vcmon_measured(scenario: Scenario) -> None:
    """The site dashboard's smoke band against vcmon's own window statistics, for the
    healthy communes of the lab (RTT 15-60 ms, jitter a tenth of it): its edges and its
    median within 10 % of the RTT. Percentiles interpolated in the histogram's buckets,
    which double in width, drew a 41 ms link as 27-50 ms."""
    smoke = _panel("site.json", "Latency smoke")
    healthy = [s["id"] for s in scenario.sites if s["tier"] == "commune"
               and not any(s["id"] in sites for sites in scenario.expected.values())]
    assert len(healthy) > 100
    for site in healthy[::20]:
        window = {stat: scenario.value(f'vcmon_site_rtt_seconds{{site="{site}", '
                                       f'stat="{stat}"}}')
                  for stat in ("min", "median", "max")}
        drawn = {t["legendFormat"]: scenario.value(substitute(t["expr"], {"site": site}))
                 for t in smoke["targets"] if t["legendFormat"] != "loss"}
        rtt = window["median"]
        errors = {"low edge": min(drawn.values()) - window["min"],
                  "median": drawn["median"] - window["median"],
                  "high edge": max(drawn.values()) - window["max"]}
        assert all(abs(e) < 0.1 * rtt for e in errors.values()), (site, rtt, errors)


def test_a_down_uplink_reads_down_not_no_data(scenario: Scenario) -> None:
    rtt = _panel("district.json", "Uplink RTT")
    uplink = scenario.expected["down"][0]
    [sample] = scenario.query(substitute(rtt["targets"][0]["expr"], {"district": uplink}))
    value = sample["value"][1]
    texts = rtt["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert texts[str(int(float(value)))]["text"] == "down"
    healthy = next(d for d in scenario.districts if d != uplink
                   and d not in scenario.expected["maintenance"])
    [sample] = scenario.query(substitute(rtt["targets"][0]["expr"], {"district": healthy}))
    assert 0 < float(sample["value"][1]) < 0.1  # an RTT in seconds

