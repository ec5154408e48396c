"""``vcmon report`` against a running daemon and a real Prometheus that scraped it,
with states the test sets in its own network namespaces (see ``scenario``)."""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from html.parser import HTMLParser
from typing import Any

import pytest

from tests.netns import skip_unless_available
from tests.report.scenario import MAINTENANCE_REASON, PROMETHEUS, ZONE, Province, province

pytestmark = [skip_unless_available, pytest.mark.netns, pytest.mark.services]

EXPECTED = {"prov": "ok", "dist-a": "down", "a1": "unreachable", "a2": "unreachable",
            "a3": "unreachable", "dist-b": "ok", "b-ok": "ok", "b-slow": "degraded",
            "b-maint": "maintenance", "b-far": "down", "c-board": "ok"}
BEFORE = {**EXPECTED, "dist-a": "ok", "a1": "ok", "a2": "ok", "a3": "ok", "b-far": "ok"}
# Prometheus scrapes every second: this much history before the outage and during it.
UP_SECONDS = 14
DOWN_SECONDS = 9


@dataclass
class Run:
    lab: Province
    since: float  # a moment before the daemon started
    down_at: float  # when far namespaces A and B went silent
    at: float  # the reports' moment
    api: dict[str, Any]  # /api/v1/sites read right after the reports
    outputs: dict[str, str]  # "json-vi" → the report's text

    def report(self, *args: str, prometheus: str | None = PROMETHEUS) -> tuple[int, str, str]:
        argv = [sys.executable, "-m", "monitor.cli", "report", *args]
        if prometheus is not None:
            argv += ["--prometheus", prometheus]
        done = self.lab.run(argv)
        return done.returncode, done.stdout.decode("utf-8"), done.stderr.decode()


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, ZONE).isoformat(timespec="seconds")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("report-lab")
    with province(workdir, prometheus=True) as lab:
        since = lab.started - 1
        lab.wait_for(lambda: lab.statuses() == BEFORE, 20)
        time.sleep(max(0.0, lab.started + UP_SECONDS - time.time()))
        down_at = time.time()
        lab.silence("a")
        lab.silence("b")
        lab.wait_for(lambda: lab.statuses() == EXPECTED, 10)
        time.sleep(max(0.0, down_at + DOWN_SECONDS - time.time()))
        it = Run(lab, since, down_at, 0.0, {}, {})
        for fmt in ("json", "md", "html", "csv"):
            code, out, err = it.report("--format", fmt, "--since", _iso(since))
            assert code == 0, err
            it.outputs[f"{fmt}-vi"] = out
        code, out, err = it.report("--format", "json", "--lang", "en", "--since", _iso(since))
        assert code == 0, err
        it.outputs["json-en"] = out
        it.api = {s["id"]: s for s in lab.get("/api/v1/sites")["sites"]}
        it.at = datetime.fromisoformat(json.loads(it.outputs["json-vi"])["at"]).timestamp()
        (workdir / "report.html").write_text(it.outputs["html-vi"], encoding="utf-8")
        yield it


def test_counts_match_the_states_the_lab_set(run: Run) -> None:
    report = json.loads(run.outputs["json-vi"])
    assert report["counts"] == {"ok": 4, "degraded": 1, "down": 2, "unreachable": 3,
                                "unknown": 0, "maintenance": 1, "total": 11}
    assert report["by_tier"]["commune"] == {"ok": 2, "degraded": 1, "down": 0, "unreachable": 3,
                                            "unknown": 0, "maintenance": 1, "total": 7}
    district = {d["id"]: d["counts"] for d in report["by_district"]}
    assert district["dist-a"]["down"] == 1 and district["dist-a"]["unreachable"] == 3
    assert district["dist-b"]["ok"] == 3 and district["dist-b"]["total"] == 6
    assert report["by_provision"]["contract"]["down"] == 1
    assert report["by_provision"]["vnpt"]["total"] == 10
    assert {s["id"]: s["status"] for s in report["sites"]} == EXPECTED


def test_not_ready_list_and_reasons(run: Run) -> None:
    vi = {s["id"]: s for s in json.loads(run.outputs["json-vi"])["sites"]}
    en = {s["id"]: s for s in json.loads(run.outputs["json-en"])["sites"]}
    report = json.loads(run.outputs["json-vi"])
    assert sorted(report["not_ready"]) == sorted(k for k, v in EXPECTED.items() if v != "ok")
    assert vi["a1"]["reason_text"] == "tuyến trên Huyện ủy Tiên Du (dist-a) mất kết nối"
    assert en["a1"]["reason_text"] == "upstream site Huyện ủy Tiên Du (dist-a) is down"
    assert vi["dist-a"]["reason_text"].startswith("không trả lời ")
    assert vi["b-maint"]["reason_text"] == MAINTENANCE_REASON
    assert vi["b-slow"]["reason_text"].startswith("RTT ") and "> 0.001 ms" in vi["b-slow"][
        "reason_text"]
    assert vi["b-far"]["status_label"] == "Mất kết nối" and en["b-far"]["status_label"] == "Down"
    assert vi["b-far"]["contact"] == {"name": "Nguyễn Văn Bình", "phone": "0912 345 678",
                                      "email": None}
    # "since" is when the site went down, in the configured zone (+07:00)
    since = datetime.fromisoformat(vi["b-far"]["since"])
    assert since.utcoffset() is not None and since.utcoffset().total_seconds() == 7 * 3600
    assert run.down_at - 1 <= since.timestamp() <= run.down_at + 4


def test_history_agrees_with_the_daemons_counters(run: Run) -> None:
    sites = {s["id"]: s for s in json.loads(run.outputs["json-vi"])["sites"]}
    report = json.loads(run.outputs["json-vi"])
    assert report["history_available"] is True
    for site_id in ("prov", "b-ok", "dist-b"):
        h = sites[site_id]["history"]
        assert h["availability"] == pytest.approx(1.0, abs=0.005), site_id
        assert h["worst_loss"] == 0
        assert h["worst_rtt"] < 0.001  # loopback
    for site_id in ("b-far", "dist-a"):
        h, counters = sites[site_id]["history"], run.api[site_id]["counters"]
        # Prometheus covers the daemon's whole life, so its increase() must agree with the
        # daemon's own counters, and with the time the site was up. Over some 20 one-second
        # scrapes, increase()'s extrapolation at both ends and the scrape lag move the
        # ratio by up to ~0.1 (0.09 seen on a busy machine).
        assert h["availability"] == pytest.approx(counters["received"] / counters["sent"],
                                                  abs=0.15), site_id
        up_share = (run.down_at - run.lab.started) / (run.at - run.lab.started)
        assert h["availability"] == pytest.approx(up_share, abs=0.15), site_id
        assert h["worst_loss"] >= 0.5
        assert h["changes"] >= 1
        assert 0.2 < h["not_ready"] < 0.7
    lowest = report["lowest_ready"]
    assert lowest["count"] == 4
    assert datetime.fromisoformat(lowest["at"]).timestamp() >= run.down_at - 2


def test_a_past_moment_reads_the_states_from_prometheus(run: Run) -> None:
    before = _iso(run.down_at - 5)  # > NOW_TOLERANCE ago
    code, out, err = run.report("--format", "json", "--at", before, "--since", _iso(run.since))
    assert code == 0, err
    report = json.loads(out)
    assert report["source"] == "prometheus"
    assert {s["id"]: s["status"] for s in report["sites"]} == BEFORE
    code, _, err = run.report("--format", "json", "--at", before, prometheus=None)
    assert code == 1 and "--prometheus" in err


def test_without_prometheus_the_report_says_so(run: Run) -> None:
    code, out, err = run.report("--format", "json", prometheus=None)
    assert code == 0, err
    report = json.loads(out)
    assert report["history_available"] is False
    assert "Prometheus" in report["history_note"]
    assert report["counts"]["down"] == 2
    code, out, err = run.report("--format", "md", prometheus="http://127.0.0.1:1")
    assert code == 0, err
    assert "Không có số liệu lịch sử" in out and \
        "không đọc được số liệu từ Prometheus (http://127.0.0.1:1)" in out
    assert "cannot read" not in out  # the library's English stays out of the Vietnamese


def test_csv_opens_with_vietnamese_intact(run: Run) -> None:
    text = run.outputs["csv-vi"]
    assert text.startswith("\ufeff")  # Excel reads UTF-8 only with the byte-order mark
    rows = list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"))))
    assert len(rows) == 11
    by_id = {row["Mã"]: row for row in rows}
    assert by_id["b-far"]["Trạng thái"] == "Mất kết nối"
    assert by_id["b-far"]["Điểm cầu"] == "Đảng ủy Quân sự huyện Quế Võ"
    assert by_id["a2"]["Trạng thái"] == "Mất do tuyến trên"
    assert float(by_id["b-ok"]["Khả dụng (%)"]) == pytest.approx(100, abs=0.5)
    assert 20 < float(by_id["b-far"]["Khả dụng (%)"]) < 80


class _Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.external: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.external.append(value)
        if tag in ("link", "img", "script"):
            self.external.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_html_is_one_self_contained_page(run: Run) -> None:
    text = run.outputs["html-vi"]
    parser = _Tables()
    parser.feed(text)
    parser.close()
    assert parser.external == []  # no external assets: prints and mails as one file
    assert "size: A4" in text
    totals, _, _, not_ready, history = parser.tables
    assert totals[1][0] == "Toàn tỉnh" and totals[1][1] == "4"  # ready, overall
    # dist-a once with its three communes folded under it, b-far, b-slow, b-maint
    assert [row[1].rsplit("(", 1)[1].rstrip(")") for row in not_ready[1:]] == \
        ["dist-a", "b-far", "b-slow", "b-maint"]
    assert "3 điểm cầu phía sau mất kết nối theo: UBND xã Lạc Vệ" in not_ready[1][6]
    assert any("Nguyễn Văn Bình, 0912 345 678" in row for row in not_ready)
    troubled = {row[1].rsplit("(", 1)[1].rstrip(")") for row in history[1:]}
    assert {"b-far", "dist-a", "a1"} <= troubled and "b-ok" not in troubled


def test_the_short_form_names_the_outage_once(run: Run) -> None:
    code, out, err = run.report("--format", "short", "--since", _iso(run.since))
    assert code == 0, err
    assert "Toàn tỉnh: 4/11 sẵn sàng; Mất kết nối 2, Mất do tuyến trên 3, Suy giảm 1" in out
    assert "✖ Huyện ủy Tiên Du: Mất kết nối, 3 điểm cầu phía sau mất kết nối theo" in out
    assert "UBND xã Lạc Vệ" not in out
    assert "⚒ UBND xã Bằng An" in out
    assert len(out.splitlines()) <= 12


def test_markdown_has_every_section(run: Run) -> None:
    text = run.outputs["md-vi"]
    for heading in ("# Báo cáo nhanh", "## Theo đơn vị cấp huyện", "## Các điểm cầu chưa sẵn sàng",
                    "## Chất lượng đường truyền"):
        assert heading in text
    assert "| Huyện ủy Tiên Du | Huyện ủy Tiên Du (dist-a) |" in text
