"""The short report for a chat message, the Vietnamese report without English, and a
history that covers part of the period, on the embedded inventory with one district
down (19 sites behind it) and 10 degraded links: records built by hand, no packets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from monitor.inventory import Config, default_config
from monitor.report.model import Report, build
from monitor.report.render import markdown, page
from monitor.report.short import short
from tests.http.cdp import Browser, chromium_binary

AT = 1_774_575_900.0  # 2026-03-27 08:45 +07:00
DOWN = "bn-yenphong"


def _record(config: Config, site_id: str, status: str, reason: str,
            root: str | None = None, behind: int = 0) -> dict[str, Any]:
    site = config.site(site_id)
    district = site.district or site.id
    return {"id": site.id, "name": site.name, "tier": site.tier, "parent": site.parent,
            "district": district, "district_name": config.site(district).name,
            "provision": site.provision, "address": site.address, "contact": None,
            "status": status, "reason": reason, "since": None, "since_timestamp": AT - 600,
            "root_cause": root, "unreachable_behind": behind,
            "window": {"loss_ratio": 0.0, "rtt_avg": 0.04, "jitter": 0.002, "mos": 4.3}}


def _conference_day(*, demo: bool = False) -> Report:
    config = default_config()
    behind = [s.id for s in config.sites if s.parent == DOWN]
    degraded = [s.id for s in config.sites
                if s.tier == "commune" and s.parent not in (DOWN, None)][:10]
    records = []
    for site in config.sites:
        if site.id == DOWN:
            records.append(_record(config, site.id, "down", "no reply to the last 7 probes",
                                   behind=len(behind)))
        elif site.id in behind:
            records.append(_record(config, site.id, "unreachable",
                                   f"upstream site {DOWN} is down", root=DOWN))
        elif site.id in degraded:
            records.append(_record(config, site.id, "degraded",
                                   "RTT 160.0 ms > 150 ms; service sip failed 3 times in a "
                                   "row (timeout)"))
        else:
            records.append(_record(config, site.id, "ok", ""))
    return build(records, at=AT, since=AT - 18 * 3600, timezone="Asia/Ho_Chi_Minh",
                 source="daemon", generated=AT, demo=demo)


def test_the_short_report_is_a_chat_message() -> None:
    report = _conference_day()
    text = short(report, "vi")
    lines = text.splitlines()
    assert len(lines) <= 20  # 240 sites, one outage, 10 degraded links
    assert "Toàn tỉnh: 210/240 sẵn sàng; Mất kết nối 1, Mất do tuyến trên 19, Suy giảm 10" \
        in text
    assert "Cấp xã " in text and "VNPT đảm bảo" in text  # by tier and by provision
    root = [line for line in lines if "Yên Phong" in line]
    assert root == ["✖ Hội trường Huyện ủy Yên Phong: Mất kết nối, 19 điểm cầu phía sau "
                    "mất kết nối theo"]
    assert sum(line.startswith("▲ ") for line in lines) == 10
    assert "dịch vụ sip lỗi 3 lần liên tiếp" in text
    assert "Không có số liệu lịch sử: chưa chỉ định máy chủ Prometheus" in text


def test_the_full_report_lists_an_outage_once() -> None:
    report = _conference_day()
    text = markdown(report, "vi")
    table = text.split("## Các điểm cầu chưa sẵn sàng")[1].split("## ")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "(bn-" in line]
    assert len(rows) == 11  # the district once, its 19 sites folded under it, 10 degraded
    assert "19 điểm cầu phía sau mất kết nối theo: " in table


# Words of the daemon's and the libraries' English that must not reach a Vietnamese reader.
ENGLISH = re.compile(r"\b(no|reply|probes?|upstream|service|failed|times|row|given|"
                     r"cannot|read|report|covers|present|only|Current|state|answered)\b")


def test_the_vietnamese_report_has_no_english() -> None:
    report = _conference_day(demo=True)
    report.prometheus = "http://127.0.0.1:1"
    report.history_unreadable = True
    report.history_note = ("cannot read http://127.0.0.1:1/api/v1/query: Cannot connect: "
                           "the report covers the present only")
    for text in (markdown(report, "vi"), short(report, "vi")):
        found = ENGLISH.findall(text)
        assert found == [], found
    text = markdown(report, "vi")
    assert "không đọc được số liệu từ Prometheus (http://127.0.0.1:1)" in text
    assert "đọc trực tiếp từ phần mềm giám sát vcmon" in text  # what "current state" is
    assert "DEMO: số liệu mô phỏng" in text and "DEMO: số liệu mô phỏng" in short(report, "vi")
    assert "DEMO" not in markdown(_conference_day(), "vi")


def test_a_history_that_starts_late_says_so() -> None:
    report = _conference_day()
    report.history = {}
    report.covered = (AT - 3600, AT)  # Prometheus started an hour ago
    text = page(report, "vi")
    assert "Số liệu lịch sử chỉ có từ 07:45 27/03/2026 đến 08:45 27/03/2026" in text
    assert "Số liệu lịch sử chỉ có từ 07:45 27/03 đến 08:45 27/03" in short(report, "vi")
    report.covered = (report.since + 5, AT)  # the whole period
    assert "chỉ có từ" not in page(report, "vi")


@pytest.mark.skipif(chromium_binary() is None, reason="needs Debian's chromium")
def test_the_printed_report_shows_an_outage_as_one_row(tmp_path: Path) -> None:
    """The HTML report as Chromium lays it out: one coloured row for the down district,
    the ten degraded links after it, no row for the 19 sites behind it."""
    page_file = tmp_path / "bao-cao.html"
    page_file.write_text(page(_conference_day(), "vi"), encoding="utf-8")
    with Browser() as browser:
        browser.open(page_file.as_uri())
        browser.wait_for("document.querySelectorAll('table').length", 10)
        rows = browser.evaluate(
            "[...document.querySelectorAll('table')[3].querySelectorAll('tbody tr')]"
            ".map(r => [r.className, r.cells[1].innerText])")
        browser.screenshot(tmp_path / "report-district-down.png")
        assert browser.errors() == []
    assert [cls for cls, _ in rows] == ["s-down"] + ["s-degraded"] * 10
    assert rows[0][1] == "Hội trường Huyện ủy Yên Phong (bn-yenphong)"
