"""The JSON API over a state table fed with known probe results (no packets sent)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from monitor.http.api import register_routes
from monitor.inventory import Config, parse_config
from monitor.status.health import HealthTracker
from monitor.status.records import site_records, tallies, to_act_on
from monitor.status.sites import SiteTable
from probes import Outcome, ProbeResult
from tests.status.test_streams import stream

INVENTORY = """
health: {min_replies: 1, enter_after: 1}
schedule:
  maintenance:
    - {sites: [x-maint], start: "2000-01-01 00:00", end: "2100-01-01 00:00", reason: bảo trì}
sites:
  - {id: prov, name: Hội trường Tỉnh ủy, tier: province, address: 127.0.0.1}
  - {id: dist, name: Huyện ủy Tiên Du, tier: district, parent: prov, address: 127.0.0.2,
     contact: {name: Trần Thị Hà, phone: "0912"}}
  - {id: x-ok, name: UBND xã Lạc Vệ, tier: commune, parent: dist, address: 127.0.0.3}
  - {id: x-behind, name: UBND xã Lim, tier: commune, parent: dist, address: 127.0.0.4}
  - {id: x-maint, name: UBND xã Bằng An, tier: commune, parent: dist, address: 127.0.0.5}
  - {id: x-new, name: UBND xã Mới, tier: unit, parent: prov, address: 127.0.0.6,
     provision: contract, contract: {contractor: VNPT, reference: HĐ-1}}
"""


@dataclass
class Stand:
    """What the API reads from the daemon, fed by hand."""

    table: SiteTable
    health: HealthTracker
    config: Config


def _stand() -> Stand:
    config = parse_config(INVENTORY)
    now = time.time()
    table, health = SiteTable(config), HealthTracker(config, now)
    for seq in range(6):
        sent = now - 6 + seq
        for site in ("prov", "x-ok", "x-behind", "x-maint"):
            table.record(ProbeResult(site, "127.0.0.1", seq, sent, Outcome.REPLY, 0.012))
        # the district stops answering after two replies: down, x-behind unreachable
        outcome = Outcome.REPLY if seq < 2 else Outcome.TIMEOUT
        table.record(ProbeResult("dist", "127.0.0.2", seq, sent, outcome,
                                 0.02 if seq < 2 else None))
    # down from now - 2, confirmed after the hold that waits for an upstream outage
    health.update(table, now - 2, evaluate=True)
    health.update(table, now, evaluate=True)
    return Stand(table, health, config)


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    register_routes(app, _stand())
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


async def _get(client: TestClient[web.Request, web.Application], path: str,
               status: int = 200) -> Any:
    response = await client.get(path)
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


async def test_sites_carry_state_reason_since_window_and_metadata(
        client: TestClient[web.Request, web.Application]) -> None:
    body = await _get(client, "/api/v1/sites")
    sites = {s["id"]: s for s in body["sites"]}
    assert list(sites) == ["prov", "dist", "x-ok", "x-behind", "x-maint", "x-new"]
    assert {k: s["status"] for k, s in sites.items()} == {
        "prov": "ok", "dist": "down", "x-ok": "unreachable", "x-behind": "unreachable",
        "x-maint": "maintenance", "x-new": "unknown"}
    dist = sites["dist"]
    assert dist["reason"] == "no reply to the last 4 probes"
    assert dist["unreachable_behind"] == 2
    assert dist["contact"] == {"name": "Trần Thị Hà", "phone": "0912", "email": None}
    assert dist["window"]["sent"] == 6 and dist["window"]["received"] == 2
    assert dist["window"]["loss_ratio"] == pytest.approx(4 / 6)
    assert dist["counters"] == {"sent": 6, "received": 2}
    assert sites["x-behind"]["root_cause"] == "dist"
    assert sites["x-behind"]["district_name"] == "Huyện ủy Tiên Du"
    assert sites["x-maint"]["reason"] == "bảo trì"
    assert sites["prov"]["window"]["rtt_avg"] == pytest.approx(0.012)
    assert sites["prov"]["since"].endswith("+07:00")  # the schedule's default zone
    assert sites["x-new"]["contract"] == {"contractor": "VNPT", "reference": "HĐ-1"}
    assert sites["x-new"]["window"]["loss_ratio"] is None


async def test_one_site_and_an_unknown_one(
        client: TestClient[web.Request, web.Application]) -> None:
    site = await _get(client, "/api/v1/sites/x-ok")
    assert site["name"] == "UBND xã Lạc Vệ"
    missing = await _get(client, "/api/v1/sites/nowhere", status=404)
    assert "nowhere" in missing["error"]


async def test_summary_counts(client: TestClient[web.Request, web.Application]) -> None:
    body = await _get(client, "/api/v1/summary")
    assert body["counts"] == {"ok": 1, "degraded": 0, "down": 1, "unreachable": 2,
                              "unknown": 1, "maintenance": 1, "total": 6}
    assert body["by_tier"]["commune"]["unreachable"] == 2
    assert body["by_provision"]["contract"] == {"ok": 0, "degraded": 0, "down": 0,
                                                "unreachable": 0, "unknown": 1,
                                                "maintenance": 0, "total": 1}
    assert [d["id"] for d in body["by_district"]] == ["prov", "dist", "x-new"]  # no district above
    assert body["timezone"] == "Asia/Ho_Chi_Minh"
    assert body["report_times"] == ["08:45", "14:45"]


async def test_summary_folds_an_outage_behind_its_root_cause(
        client: TestClient[web.Request, web.Application]) -> None:
    """One down district reads as one line with its count; the unreachable sites behind
    it are folded under it, maintenance is its own list, not something to act on."""
    body = await _get(client, "/api/v1/summary")
    lines = [(a["id"], a["status"], a["behind"], a["behind_sites"]) for a in body["to_act_on"]]
    assert lines == [("dist", "down", 2, ["x-ok", "x-behind"]), ("x-new", "unknown", 0, [])]
    assert [m["id"] for m in body["maintenance"]] == ["x-maint"]
    assert {d["id"]: d["to_act_on"] for d in body["by_district"]} == \
        {"prov": 0, "dist": 1, "x-new": 1}
    assert body["demo"] is False


def test_degraded_links_come_right_after_the_root_causes() -> None:
    records = [
        {"id": i, "name": i, "tier": tier, "district": "d", "district_name": "D",
         "status": status, "reason": "", "since": None, "root_cause": root,
         "unreachable_behind": 0}
        for i, tier, status, root in [
            ("c1", "commune", "degraded", None), ("d", "district", "down", None),
            *[(f"u{k}", "commune", "unreachable", "d") for k in range(19)],
            ("far", "commune", "unreachable", "other-shard"), ("p", "province", "ok", None)]]
    assert [(a["id"], a["behind"]) for a in to_act_on(records)] == \
        [("d", 19), ("far", 0), ("c1", 0)]


async def test_board_and_openapi_are_served(
        client: TestClient[web.Request, web.Application]) -> None:
    board = await client.get("/")
    assert board.status == 200 and board.content_type == "text/html"
    text = await board.text()
    assert "/api/v1/sites" in text and "Tình trạng điểm cầu" in text
    # no external assets: works on a control-room PC without Internet
    assert "http://" not in text and "https://" not in text and "src=" not in text
    spec = await client.get("/api/v1/openapi.yaml")
    assert yaml.safe_load(await spec.text())["openapi"].startswith("3.")


def test_openapi_lists_exactly_the_fields_served() -> None:
    """The documented fields are the served ones: a new field must be documented."""
    spec = yaml.safe_load(
        resources.files("monitor").joinpath("data/openapi.yaml").read_text("utf-8"))
    schemas = spec["components"]["schemas"]
    stand = _stand()
    record = site_records(stand.table, stand.health, stand.config, time.time())[0]
    assert set(schemas["Site"]["required"]) == set(record) == set(schemas["Site"]["properties"])
    assert set(schemas["Window"]["required"]) == set(record["window"])
    summary_keys = set(tallies([record])) | {"generated_at", "timestamp", "timezone",
                                              "report_times", "conferences", "demo"}
    assert set(schemas["Summary"]["required"]) == summary_keys


def test_stream_records_list_exactly_the_documented_fields() -> None:
    """A site's TWAMP stream in its record: both directions, as openapi.yaml says."""
    spec = yaml.safe_load(
        resources.files("monitor").joinpath("data/openapi.yaml").read_text("utf-8"))
    schemas = spec["components"]["schemas"]
    config = parse_config(INVENTORY.replace(
        "address: 127.0.0.3}", "address: 127.0.0.3, probes: [{kind: twamp}]}"))
    now = time.time()
    table, health = SiteTable(config), HealthTracker(config, now)
    back: list[float | None] = [10.0] * 50
    back[7] = None
    health.streams.record("x-ok/twamp", now - 1, stream([10.0] * 50, back))
    records = {r["id"]: r for r in site_records(table, health, config, now)}
    assert records["prov"]["streams"] == []
    (document,) = records["x-ok"]["streams"]
    assert set(document) == set(schemas["Stream"]["required"])
    assert (document["probe"], document["reflector"], document["port"], document["dscp"]) == (
        "twamp", "127.0.0.3", 862, 46)
    window = document["window"]
    assert set(window) == set(schemas["StreamWindow"]["required"])
    for direction in ("forward", "reverse"):
        assert set(window[direction]) == set(schemas["Direction"]["required"])
    assert (window["forward"]["lost"], window["reverse"]["lost"]) == (0, 1)
    assert document["last_stream_at"].startswith("20")


async def test_a_large_inventorys_pages_come_from_a_forked_child_and_match(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Above ``CHILD_ABOVE_SITES`` the sites and summary pages are computed in a forked
    child (off the probe loop's GIL), both by one child, and say what the worker
    thread's pages say; a second read within the second is served from the cache,
    without another child."""
    import monitor.system.forked

    children: list[str] = []
    run_in_child = monitor.system.forked.run_in_child

    async def counted(produce: Any, what: str, **kw: Any) -> bytes:
        children.append(what)
        return await run_in_child(produce, what, **kw)

    async def pages() -> tuple[Any, Any]:
        app = web.Application()
        register_routes(app, stand)
        async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
            sites = await _get(test_client, "/api/v1/sites")
            assert await _get(test_client, "/api/v1/sites") == sites
            return sites, await _get(test_client, "/api/v1/summary")

    stand = _stand()
    threaded = await pages()
    assert children == []
    monkeypatch.setattr(monitor.system.forked, "run_in_child", counted)
    monkeypatch.setattr(monitor.system.forked, "CHILD_ABOVE_SITES", 0)
    in_child = await pages()
    assert children == ["API pages"]
    for before, after in zip(threaded, in_child, strict=True):
        for document in (before, after):
            document.pop("generated_at")
            document.pop("timestamp")
        if "sites" in before:  # window statistics are of the moment each page was made
            for record in (*before["sites"], *after["sites"]):
                record.pop("window")
        assert after == before


@pytest.mark.parametrize("path", ["/api/v1/sites", "/api/v1/summary"])
async def test_a_client_without_gzip_gets_the_same_page_as_text(
        client: TestClient[web.Request, web.Application], path: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The pages are kept gzipped; a client that does not take gzip gets them inflated,
    a piece at a time (pieces made small here so that there are many)."""
    import monitor.http.encoding

    gzipped = await client.get(path, headers={"Accept-Encoding": "gzip"})
    assert gzipped.headers["Content-Encoding"] == "gzip"
    assert gzipped.headers["Vary"] == "Accept-Encoding"
    document = await gzipped.json()
    pieces: list[int] = []
    inflated = monitor.http.encoding.inflated

    def small(body: bytes, piece: int = 0) -> Any:
        for text in inflated(body, 100):
            pieces.append(len(text))
            yield text

    monkeypatch.setattr("monitor.http.api.inflated", small)
    for refusing in ("identity", "gzip;q=0"):
        plain = await client.get(path, headers={"Accept-Encoding": refusing},
                                 auto_decompress=False)
        assert plain.status == 200
        assert "Content-Encoding" not in plain.headers
        assert plain.content_type == "application/json"
        assert json.loads(await plain.read()) == document  # same second: the cached page
    assert len(pieces) > 2 and max(pieces) <= 100
    head = await client.head(path, headers={"Accept-Encoding": "identity"})
    assert head.status == 200 and await head.read() == b""
