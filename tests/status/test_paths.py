"""Path state per site: baselines, path changes with the hop and time, shared causes,
and the records the sinks show. Pure logic over hand-made hop tables."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from monitor.status.paths import PathBook, path_record, verdict
from probes.trace import Hop, PathSnapshot, first_bad_hop

ZONE = ZoneInfo("Asia/Ho_Chi_Minh")
# 2026-03-27 08:12:00 in Hanoi
T0 = 1774573920.0
CORE, DISTRICT, OTHER = "10.0.0.1", "10.1.0.1", "10.9.0.1"


def snapshot(addresses: list[str | None], at: float = T0, lost: dict[int, int] | None = None,
             reached: bool = True) -> PathSnapshot:
    lost = lost or {}
    hops = tuple(
        Hop(ttl, address, 10, 10 - lost.get(ttl, 0), 0.002, 0.002 * ttl, 0.001, 0.004, 0.0005)
        if address is not None else Hop(ttl, None, 10, 0)
        for ttl, address in enumerate(addresses, 1))
    return PathSnapshot(addresses[-1] or "198.18.0.254", at, 2.0, 10, 10 * len(hops), hops,
                        reached, first_bad_hop(hops, reached=reached))


def lossy_from(ttl: int, addresses: list[str | None], at: float) -> PathSnapshot:
    return snapshot(addresses, at, {t: 4 for t in range(ttl, len(addresses) + 1)})


def test_the_first_clean_trace_is_the_baseline_and_a_lossy_one_is_not() -> None:
    book = PathBook()
    book.record("xa", "degraded", lossy_from(2, [CORE, DISTRICT, "10.2.0.9"], T0))
    path = book.get("xa")
    assert path is not None and path.baseline is None and path.last is not None
    book.record("xa", "baseline", snapshot([CORE, DISTRICT, "10.2.0.9"], T0 + 60))
    assert path.baseline is not None and path.baseline.started_at == T0 + 60
    assert path.change is None


def test_a_path_change_names_the_hop_where_it_diverges_and_since_when() -> None:
    book = PathBook()
    book.record("xa", "baseline", snapshot([CORE, DISTRICT, "10.2.0.9"], T0 - 3600))
    # re-routed through another district router: hop 2 differs, hop 1 and the end do not
    book.record("xa", "degraded", snapshot([CORE, OTHER, "10.2.0.9"], T0))
    path = book.get("xa")
    assert path is not None and path.change is not None
    assert (path.change.ttl, path.change.address, path.change.was) == (2, OTHER, DISTRICT)
    assert path.change.since == T0
    assert verdict(path, None, ZONE) == "path changed at hop 2 since 08:12"
    # still changed a minute later: the time stays that of the first trace that showed it
    book.record("xa", "requested", snapshot([CORE, OTHER, "10.2.0.9"], T0 + 60))
    assert path.change.since == T0
    # back on the baseline: the change is over
    book.record("xa", "requested", snapshot([CORE, DISTRICT, "10.2.0.9"], T0 + 120))
    assert path.change is None and verdict(path, None, ZONE) == ""


def test_silent_hops_are_no_evidence_of_a_change() -> None:
    book = PathBook()
    book.record("xa", "baseline", snapshot([CORE, None, "10.2.0.9"], T0 - 60))
    book.record("xa", "degraded", snapshot([CORE, DISTRICT, "10.2.0.9"], T0))
    path = book.get("xa")
    assert path is not None and path.change is None


def test_a_lasting_new_route_becomes_the_baseline_after_one_interval() -> None:
    book = PathBook()
    book.reconfigure({"xa"}, 3600.0)
    book.record("xa", "baseline", snapshot([CORE, DISTRICT, "10.2.0.9"], T0 - 7200))
    book.record("xa", "degraded", snapshot([CORE, OTHER, "10.2.0.9"], T0))
    book.record("xa", "baseline", snapshot([CORE, OTHER, "10.2.0.9"], T0 + 1800))
    path = book.get("xa")
    assert path is not None and path.change is not None
    book.record("xa", "baseline", snapshot([CORE, OTHER, "10.2.0.9"], T0 + 3600))
    assert path.change is None and path.baseline is not None
    assert path.baseline.hops[1].address == OTHER


def test_shared_cause_groups_the_bad_sites_behind_one_router() -> None:
    book = PathBook()
    behind = {f"xa-{i}": [CORE, DISTRICT, f"10.2.0.{i}"] for i in range(1, 4)}
    for site_id, addresses in behind.items():
        book.record(site_id, "degraded", lossy_from(2, addresses, T0))
    # a site bad at its own last mile, and one traced before it went bad
    book.record("other", "degraded", lossy_from(3, [CORE, OTHER, "10.3.0.1"], T0))
    book.record("stale", "degraded", lossy_from(2, [CORE, DISTRICT, "10.2.0.9"], T0 - 600))
    bad_since = {**dict.fromkeys(behind, T0 - 30), "other": T0 - 30, "stale": T0 - 60}
    causes = book.shared_causes(bad_since)
    assert [(c.address, c.sites) for c in causes] == [(DISTRICT, ("xa-1", "xa-2", "xa-3"))]
    assert causes[0].text == f"the link at hop {DISTRICT} explains 3 degraded sites"
    # a site that recovered is not in bad_since: the group shrinks below two and is gone
    assert book.shared_causes({"xa-1": T0 - 30}) == []


def test_record_carries_hops_bad_hop_change_and_cause() -> None:
    book = PathBook()
    book.record("xa", "baseline", snapshot([CORE, DISTRICT, "10.2.0.1"], T0 - 600))
    book.record("xa-2", "degraded", lossy_from(2, [CORE, DISTRICT, "10.2.0.2"], T0))
    path = book.record("xa", "degraded", lossy_from(2, [CORE, OTHER, "10.2.0.1"], T0))
    cause = book.shared_causes({"xa": T0 - 5})
    assert cause == []  # one site alone is no group
    record = path_record(path, None, ZONE)
    assert record is not None
    assert record["taken_at"] == "2026-03-27T08:12:00+07:00"
    assert record["trigger"] == "degraded" and record["reached"]
    assert [h["address"] for h in record["hops"]] == [CORE, OTHER, "10.2.0.1"]
    assert record["hops"][1]["loss_ratio"] == 0.4 and record["hops"][0]["loss_ratio"] == 0
    assert record["first_bad_hop"] == {"ttl": 2, "address": OTHER,
                                       "why": "loss 40 % from hop 2 on"}
    assert record["baseline_hops"] == [CORE, DISTRICT, "10.2.0.1"]
    assert record["changed"]["ttl"] == 2 and record["changed"]["was"] == DISTRICT
    assert record["shared_cause"] is None
    assert verdict(path, None, ZONE) == (f"first bad hop 2 ({OTHER}): loss 40 % from hop 2 "
                                        "on; path changed at hop 2 since 08:12")
    assert path_record(None, None, ZONE) is None and path_record(book.get("none"), None,
                                                                 ZONE) is None


def test_a_trace_that_could_not_start_changes_nothing_but_the_last() -> None:
    book = PathBook()
    book.record("xa", "baseline", snapshot([CORE, DISTRICT], T0 - 60))
    failed = PathSnapshot("xa.example.vn", T0, 0.0, 0, 0, (), False, None,
                          "cannot resolve xa.example.vn")
    path = book.record("xa", "degraded", failed)
    assert path.last is failed and path.change is None and path.baseline is not None
    record = path_record(path, None, ZONE)
    assert record is not None and record["error"] == "cannot resolve xa.example.vn"
    assert record["hops"] == [] and record["first_bad_hop"] is None


def test_a_reload_forgets_removed_sites() -> None:
    book = PathBook()
    book.record("kept", "baseline", snapshot([CORE], T0))
    book.record("gone", "baseline", snapshot([CORE], T0))
    book.reconfigure({"kept"}, 86400.0)
    assert set(book.sites) == {"kept"}
