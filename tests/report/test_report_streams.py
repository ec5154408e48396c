"""A readiness report shows both directions of a degraded site's TWAMP stream beside its
ICMP figures, and says the direction in the reason, in Vietnamese and in English."""

from __future__ import annotations

import time

from monitor.report.model import Report
from monitor.report.render import markdown
from monitor.status.records import site_records, tallies
from tests.http.test_board_streams import _stand


def _report() -> Report:
    stand = _stand()
    now = time.time()
    records = site_records(stand.table, stand.health, stand.config, now)
    return Report(at=now, since=now - 3600, timezone="Asia/Ho_Chi_Minh", source="daemon",
                  sites=records, totals=tallies(records), generated=now)


def test_the_report_row_of_a_site_with_a_bad_way_back() -> None:
    report = _report()
    (row,) = [line for line in markdown(report, "vi").splitlines() if "(lac-ve)" in line]
    assert "chiều về jitter 4" in row  # the reason
    # ICMP's figures, then the stream's: loss / jitter / MOS per direction
    assert "; chiều đi: 0.0 % / 0." in row and "; chiều về: 0.0 % / 4" in row
    (row,) = [line for line in markdown(report, "en").splitlines() if "(lac-ve)" in line]
    assert "reverse jitter 4" in row
    assert "; forward: 0.0 % / 0." in row and "; reverse: 0.0 % / 4" in row


def test_a_site_without_a_stream_reads_as_before() -> None:
    report = _report()
    report.sites[0]["status"] = "degraded"
    report.totals = tallies(report.sites)  # the not-ready table lists from the tallies
    (row,) = [line for line in markdown(report, "en").splitlines() if "Tỉnh ủy (prov)" in line]
    assert "forward" not in row and "reverse" not in row
