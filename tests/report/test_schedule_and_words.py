"""Scheduled reports (when, which days, the files and the summary), the reports: section,
and the Vietnamese words for the daemon's reasons; no network."""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from monitor.inventory import Config, ConfigError, parse_config
from monitor.inventory.reports import ReportSettings
from monitor.report import i18n
from monitor.report.model import previous_slot
from monitor.report.writer import conference_days, next_slot, write_report
from monitor.status.health import HealthTracker
from monitor.status.sites import SiteTable
from probes import Outcome, ProbeResult
from tests.report.scenario import ZONE

INVENTORY = """
schedule:
  conferences:
    - {name: sang-27, start: "2026-03-27 07:30", end: "2026-03-27 11:30"}
    - {name: dem-28, start: "2026-03-28 22:00", end: "2026-03-29 01:00"}
reports: {times: ["14:45", "8:45"], directory: DIR, formats: [md, html, csv, json]}
sites:
  - {id: prov, name: Hội trường Tỉnh ủy, tier: province, address: 127.0.0.1}
  - {id: xa, name: UBND xã Lạc Vệ, tier: commune, parent: prov, address: 127.0.0.2}
"""


def _at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZONE).timestamp()


def _config(directory: Path) -> Config:
    return parse_config(INVENTORY.replace("DIR", str(directory)))


def test_reports_run_on_conference_days_at_the_configured_times(tmp_path: Path) -> None:
    config = _config(tmp_path)
    settings = config.reports
    assert settings is not None and settings.times == ["14:45", "08:45"]
    schedule = config.schedule
    assert sorted(map(str, conference_days(schedule))) == ["2026-03-27", "2026-03-28",
                                                           "2026-03-29"]
    assert next_slot(_at("2026-03-20 12:00"), settings, schedule) == _at("2026-03-27 08:45")
    assert next_slot(_at("2026-03-27 08:45"), settings, schedule) == _at("2026-03-27 14:45")
    assert next_slot(_at("2026-03-29 15:00"), settings, schedule) is None
    daily = settings.model_copy(update={"days": "daily"})
    assert next_slot(_at("2026-04-10 15:00"), daily, schedule) == _at("2026-04-11 08:45")


def test_a_report_covers_the_time_since_the_previous_one() -> None:
    times = ["08:45", "14:45"]
    assert previous_slot(_at("2026-03-27 08:45"), times, ZONE) == _at("2026-03-26 14:45")
    assert previous_slot(_at("2026-03-27 14:45"), times, ZONE) == _at("2026-03-27 08:45")
    assert previous_slot(_at("2026-03-27 09:30"), times, ZONE) == _at("2026-03-27 08:45")


@pytest.mark.parametrize(("times", "message"), [
    ("[14:45]", 'quote it: "14:45"'),
    ('["25:00"]', "is not a time of day"),
    ("[]", "at least 1 item"),
])
def test_bad_report_times_are_explained(times: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(INVENTORY.replace('["14:45", "8:45"]', times))
    assert message in str(caught.value)
    assert "reports.times" in str(caught.value)


@dataclass
class Stand:
    table: SiteTable
    health: HealthTracker
    config: Config


async def test_the_daemon_writes_every_format_and_publishes_a_summary(tmp_path: Path) -> None:
    config = _config(tmp_path / "reports")
    now = time.time()
    table, health = SiteTable(config), HealthTracker(config, now)
    for seq in range(4):
        table.record(ProbeResult("prov", "127.0.0.1", seq, now - 4 + seq, Outcome.REPLY, 0.01))
        table.record(ProbeResult("xa", "127.0.0.2", seq, now - 4 + seq, Outcome.TIMEOUT))
    # down from now - 2, confirmed after the hold that waits for an upstream outage
    health.update(table, now - 2, evaluate=True)
    health.update(table, now, evaluate=True)
    published: list[dict[str, Any]] = []
    assert config.reports is not None
    at = _at("2026-03-27 08:45")
    files = await write_report(Stand(table, health, config), config.reports, at,
                               published.append)
    names = sorted(Path(f).name for f in files)
    assert names == [f"vcmon-report-2026-03-27-0845.{ext}" for ext in ("csv", "html", "json",
                                                                       "md")]
    assert not list((tmp_path / "reports").glob("*.partial"))
    report = json.loads((tmp_path / "reports" / names[2]).read_text("utf-8"))
    assert report["counts"]["down"] == 1 and report["not_ready"] == ["xa"]
    assert report["history_available"] is False  # no prometheus: configured
    assert report["since"] == "2026-03-26T14:45:00+07:00"
    rows = list(csv.reader(io.StringIO(
        (tmp_path / "reports" / names[0]).read_text("utf-8-sig"))))
    assert rows[2][2] == "UBND xã Lạc Vệ" and rows[2][8] == "Mất kết nối"
    assert published == [{
        "at": "2026-03-27T08:45:00+07:00", "since": "2026-03-26T14:45:00+07:00",
        "counts": report["counts"], "history_available": False,
        "not_ready": [{"id": "xa", "name": "UBND xã Lạc Vệ", "district": "xa",
                       "status": "down", "reason": "no reply to the last 4 probes"}],
        "files": files, "to_act_on": report["to_act_on"], "maintenance": [], "demo": False,
        "short": published[0]["short"]}]
    # the chat-sized text rides along, so a bot can paste it as it is
    assert "✖ UBND xã Lạc Vệ: Mất kết nối" in published[0]["short"]


@pytest.mark.parametrize(("status", "reason", "vi"), [
    ("down", "no reply to the last 3 probes", "không trả lời 3 lần thăm dò liên tiếp"),
    ("unknown", "no probe has resolved yet", "chưa có kết quả thăm dò"),
    ("maintenance", "in a maintenance window", "trong thời gian bảo trì"),
    ("maintenance", "thay bộ định tuyến", "thay bộ định tuyến"),
    ("degraded", "jitter 41.2 ms > 30 ms, loss 3.0% > 1.0%",
     "jitter 41.2 ms > 30 ms, mất gói 3.0% > 1.0%"),
])
def test_the_daemons_reasons_in_vietnamese(status: str, reason: str, vi: str) -> None:
    record = {"status": status, "reason": reason, "root_cause": None}
    assert i18n.reason(record, "vi", {}) == vi
    assert i18n.reason(record, "en", {}) == reason


def test_the_reasons_health_gives_are_the_ones_translated() -> None:
    """If monitor.status.health rewords a reason, the Vietnamese must follow: this fails then."""
    config = parse_config(INVENTORY.replace("DIR", "/nonexistent"))
    now = time.time()
    table, health = SiteTable(config), HealthTracker(config, now)
    health.update(table, now, evaluate=False)
    unknown = health.sites["prov"].reason
    for seq in range(3):
        table.record(ProbeResult("prov", "127.0.0.1", seq, now + seq, Outcome.TIMEOUT))
    health.update(table, now + 3, evaluate=False)
    down = health.sites["prov"].reason
    for status, reason in (("unknown", unknown), ("down", down)):
        assert i18n.reason({"status": status, "reason": reason}, "vi", {}) != reason


def test_every_status_tier_and_provision_has_both_languages() -> None:
    from monitor.inventory.fields import Provision, Tier
    from monitor.status.records import STATUSES

    for lang in ("vi", "en"):
        assert all(i18n.status(s, lang) != s for s in STATUSES)
        assert all(i18n.tier(t, lang) != t for t in Tier.__args__)
        assert all(i18n.provision(p, lang) != p for p in Provision.__args__)
    assert ReportSettings().lang == "vi"
