"""The readiness report's cause column names where a bad site's path breaks."""

from __future__ import annotations

import time

import pytest

from monitor.report.model import build
from monitor.report.render import render
from monitor.status.records import site_records
from probes.trace import Hop, PathSnapshot, first_bad_hop
from tests.http.test_api import _stand

CORE, DISTRICT = "10.0.0.1", "10.1.0.1"


def lossy_at_hop_2(at: float) -> PathSnapshot:
    hops = (Hop(1, CORE, 10, 10, 0.001, 0.001, 0.001, 0.001, 0.0),
            Hop(2, DISTRICT, 10, 6, 0.002, 0.002, 0.002, 0.002, 0.0),
            Hop(3, "127.0.0.2", 10, 6, 0.003, 0.003, 0.003, 0.003, 0.0))
    return PathSnapshot("127.0.0.2", at, 2.0, 10, 30, hops, True, first_bad_hop(hops))


@pytest.mark.parametrize(("lang", "expected"), [
    # the cause follows the reason; the sites cut off behind the district come after it
    ("en", f" probes; first bad hop 2 ({DISTRICT}): loss 40 % from hop 2 on; "),
    ("vi", f" lần thăm dò liên tiếp; chặng lỗi đầu tiên: 2 ({DISTRICT}); "),
])
def test_a_down_sites_cause_names_its_first_bad_hop(lang: str, expected: str) -> None:
    stand = _stand()
    now = time.time()
    stand.health.paths.record("dist", "down", lossy_at_hop_2(now))
    # a site that is not degraded or down keeps its plain reason, whatever its last trace
    stand.health.paths.record("x-ok", "requested", lossy_at_hop_2(now))
    records = site_records(stand.table, stand.health, stand.config, now)
    report = build(records, at=now, since=now - 3600, timezone="Asia/Ho_Chi_Minh",
                   source="test", generated=now)
    text = render(report, "md", lang)  # type: ignore[arg-type]
    rows = [line for line in text.splitlines() if "Huyện ủy Tiên Du" in line and "|" in line]
    assert any(expected in row for row in rows), rows
    assert not any("chặng" in line or "bad hop" in line
                   for line in text.splitlines() if "(x-ok)" in line)
