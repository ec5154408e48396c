"""Prometheus config and rules: promtool's checks, the unit tests, and what they must cover."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import PROMETHEUS_DIR, run, tool

RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
UNIT_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.test.yml"))
ALERTS = PROMETHEUS_DIR / "rules" / "vcmon-alerts.yml"
INFO_JOIN = "group_left(name, address, contact_name, contact_phone)"


def promtool() -> str:
    return tool("promtool", "prometheus")


def alerting_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m|h)", duration)
    assert match, f"unexpected duration {duration!r}"
    value, unit = match.groups()
    return int(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def test_prometheus_config_is_valid() -> None:
    done = run([promtool(), "check", "config", "prometheus.yml"], cwd=PROMETHEUS_DIR)
    assert done.returncode == 0, done.stdout + done.stderr
    # the glob in rule_files must find both files, or the alerts silently go missing
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in done.stdout, done.stdout


def test_rule_files_are_valid_and_lint_clean() -> None:
    done = run([promtool(), "check", "rules", *map(str, RULE_FILES)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAILED" not in done.stdout + done.stderr


def test_rule_unit_tests_pass() -> None:
    assert UNIT_TESTS, "no unit tests under deploy/prometheus/tests"
    done = run([promtool(), "test", "rules", *map(str, UNIT_TESTS)])
    assert done.returncode == 0, done.stdout + done.stderr


def expected_alerts() -> list[tuple[str, list[dict[str, Any]]]]:
    """(alertname, exp_alerts) of every alert_rule_test in the unit tests."""
    found = []
    for path in UNIT_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                found.append((case["alertname"], case.get("exp_alerts") or []))
    return found


@pytest.mark.parametrize(("alertname", "severity"), sorted(
    {(rule["alert"], rule["labels"]["severity"]) for rule in alerting_rules()}))
def test_every_alert_rule_is_tested_firing_and_silent(alertname: str, severity: str) -> None:
    severities = [{alert["exp_labels"].get("severity") for alert in exp}
                  for name, exp in expected_alerts() if name == alertname]
    assert any(severity in s for s in severities), \
        f"no unit test expects {alertname} with severity {severity} to fire"
    if alertname != "Watchdog":  # always firing, by design
        assert any(severity not in s for s in severities), \
            f"no unit test expects {alertname} with severity {severity} to stay silent"


DOWN_ALERTS = ["VcmonProvinceDown", "VcmonDistrictUplinkDown", "VcmonSiteDown"]


def test_down_alerts_fire_at_the_first_evaluation_that_sees_down() -> None:
    """No `for:` ladder: vcmon itself never reports a child `down` just before or after
    its uplink's outage (the hold in monitor/status/health.py, tests/status/test_health.py), so
    every down alert fires at the first evaluation that sees `down`: a commune pages
    about 10-15 s after its link fails (tests/bench/bench_paging.py measures it)."""
    waits = {rule["alert"]: seconds(rule.get("for", "0s")) for rule in alerting_rules()}
    assert [waits[name] for name in DOWN_ALERTS] == [0, 0, 0]


def test_uplinks_are_evaluated_before_the_sites_behind_them() -> None:
    """Prometheus evaluates a group's rules in order and sends each rule's alerts after
    evaluating it: should a site and its uplink read `down` in the same scrape, the
    uplink's alert reaches Alertmanager first and inhibits the site's."""
    [links] = [g for g in yaml.safe_load(ALERTS.read_text())["groups"]
               if g["name"] == "vcmon-links"]
    order = [rule["alert"] for rule in links["rules"] if rule.get("alert") in DOWN_ALERTS]
    assert order == DOWN_ALERTS


def test_alerts_carry_what_routing_and_people_need() -> None:
    for rule in alerting_rules():
        name, labels, notes = rule["alert"], rule["labels"], rule["annotations"]
        assert labels["severity"] in {"page", "warning", "info", "none"}, name
        assert {"summary", "description", "runbook"} <= notes.keys(), name
        if "vcmon_site_" in rule["expr"]:
            # site, tier and district come with every per-site series; the join
            # brings the name, address and contact the summary and runbook use
            assert INFO_JOIN in " ".join(rule["expr"].split()), name
            assert {"address", "contact"} <= notes.keys(), name
            assert "$labels.name" in notes["summary"], name


def test_down_pages_always_and_quality_pages_only_in_session() -> None:
    in_session = ("max(vcmon_conference_active) == 1 "
                  "or max(vcmon_conference_preflight) == 1")
    for rule in alerting_rules():
        expr, severity = " ".join(rule["expr"].split()), rule["labels"]["severity"]
        if rule["alert"].endswith("Down"):
            assert severity == "page", rule["alert"]
            assert "conference" not in expr, rule["alert"]
        elif rule["alert"] in {"VcmonSiteDegraded", "VcmonSiteFlapping"}:
            assert (in_session in expr) == (severity == "page"), rule["alert"]


def test_unit_tests_load_the_shipped_rules() -> None:
    for path in UNIT_TESTS:
        rule_files = yaml.safe_load(path.read_text())["rule_files"]
        assert {(path.parent / f).resolve() for f in rule_files} <= set(RULE_FILES), path
