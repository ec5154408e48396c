"""A running daemon with known states (``tests/report/scenario``): the status board in
real headless Chromium, and the API fuzzed by schemathesis from the OpenAPI file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.http.cdp import Browser, chromium_binary
from tests.netns import skip_unless_available
from tests.report.scenario import DAEMON, SITES, Province, province

pytestmark = [skip_unless_available, pytest.mark.netns]

BEFORE = {s["id"]: "ok" for s in SITES} | {"b-slow": "degraded", "b-maint": "maintenance"}
# the tile's background as Chromium computes it, for the tile of site ``id``
BACKGROUND = ("getComputedStyle(document.querySelector('.tile[data-site=\"{}\"]'))"
              ".backgroundColor")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Province]:
    with province(tmp_path_factory.mktemp("api-lab"), prometheus=False) as p:
        p.wait_for(lambda: p.statuses() == BEFORE, 20)
        yield p


@pytest.mark.skipif(chromium_binary() is None, reason="needs Debian's chromium")
def test_board_shows_every_site_and_turns_a_tile_red(lab: Province, tmp_path: Path) -> None:
    with Browser(prefix=lab.hub.command([])) as browser:
        browser.open(f"{DAEMON}/")
        count = browser.wait_for("document.querySelectorAll('.tile[data-status]').length", 10)
        assert count == len(SITES)
        assert browser.evaluate("document.documentElement.lang") == "vi"
        assert browser.evaluate("document.getElementById('title').textContent") == \
            "Tình trạng điểm cầu"
        # every district is a group, in inventory order
        assert browser.evaluate(
            "[...document.querySelectorAll('section')].map(s => s.dataset.district)") == \
            ["prov", "dist-a", "dist-b"]
        ok_colour = browser.evaluate(BACKGROUND.format("c-board"))
        assert browser.evaluate(BACKGROUND.format("b-slow")) != ok_colour
        browser.screenshot(tmp_path / "board-all-up.png")
        lab.silence("c")
        browser.wait_for(
            "document.querySelector('.tile[data-site=\"c-board\"]').dataset.status == 'down'",
            15)
        down_colour = browser.evaluate(BACKGROUND.format("c-board"))
        assert down_colour != ok_colour
        assert down_colour == "rgb(224, 36, 36)"  # --down
        problems = browser.evaluate("document.getElementById('problems').innerText")
        assert "UBND xã Chi Lăng — Mất kết nối" in problems
        browser.screenshot(tmp_path / "board-c-board-down.png")
        assert browser.errors() == []
    assert (tmp_path / "board-c-board-down.png").stat().st_size > 10_000


@pytest.mark.skipif(chromium_binary() is None, reason="needs Debian's chromium")
def test_board_folds_a_district_outage_behind_its_uplink(lab: Province, tmp_path: Path) -> None:
    """One district down reads as one line with its count; the degraded link stays in
    the list; the badges count what needs a call and show maintenance apart."""
    lab.silence("a")
    lab.wait_for(lambda: lab.statuses()["a1"] == "unreachable"
                 and lab.statuses()["dist-a"] == "down", 20)
    with Browser(prefix=lab.hub.command([])) as browser:
        browser.open(f"{DAEMON}/")
        browser.wait_for("document.querySelector('#problems li[data-site=\"dist-a\"]') !== null",
                         10)
        browser.screenshot(tmp_path / "board-district-down.png")
        lines = browser.evaluate(
            "[...document.querySelectorAll('#problems > li')].map(li => li.dataset.site)")
        assert lines.count("dist-a") == 1
        assert not {"a1", "a2", "a3"} & set(lines)  # folded under their uplink
        assert "b-slow" in lines  # the degraded link is still on screen
        assert lines.index("dist-a") < lines.index("b-slow")
        dist_a = browser.evaluate(
            "document.querySelector('#problems li[data-site=\"dist-a\"]').innerText")
        assert "Huyện ủy Tiên Du — Mất kết nối" in dist_a
        assert "3 điểm cầu phía sau mất kết nối" in dist_a
        badge = "document.querySelector('section[data-district=\"{}\"] .{}').textContent"
        assert browser.evaluate(badge.format("dist-a", "bad")) == "✖ 1"
        statuses = lab.statuses()
        acting = sum(1 for s in SITES if s.get("parent") == "dist-b"
                     and statuses[s["id"]] in {"down", "degraded", "unknown"})
        assert browser.evaluate(badge.format("dist-b", "bad")) == f"✖ {acting}"
        assert browser.evaluate(badge.format("dist-b", "maint")) == "⚒ 1"
        assert "Bằng An" in browser.evaluate("document.getElementById('maintenance').innerText")
        # a real inventory: no demo banner
        assert browser.evaluate("document.body.classList.contains('is-demo')") is False
        assert browser.errors() == []


def test_english_board(lab: Province) -> None:
    if chromium_binary() is None:
        pytest.skip("needs Debian's chromium")
    with Browser(prefix=lab.hub.command([])) as browser:
        browser.open(f"{DAEMON}/?lang=en")
        browser.wait_for("document.querySelectorAll('.tile[data-status]').length", 10)
        assert browser.evaluate("document.getElementById('title').textContent") == \
            "Conference sites"
        assert browser.errors() == []


SCHEMA = schemathesis.openapi.from_path(
    str(resources.files("monitor").joinpath("data/openapi.yaml")))


@pytest.mark.parametrize("operation", [r.ok() for r in SCHEMA.get_all_operations()],
                         ids=lambda op: op.label)
def test_schemathesis_finds_no_server_error(lab: Province,
                                            operation: schemathesis.APIOperation) -> None:
    # Real site ids as well as random strings, so that the 200 branch is checked too.
    ids = st.sampled_from([s["id"] for s in SITES]) | st.text(max_size=80)
    strategy = operation.as_strategy(path_parameters={"site_id": ids}
                                     if "{site_id}" in operation.path else None)

    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def call(case: schemathesis.Case) -> None:
        with lab.hub.entered():
            # default checks: no 5xx, documented status, content type and response schema
            response = case.call_and_validate(base_url=DAEMON)
        if response.status_code == 200 and "{site_id}" in operation.path:
            assert json.loads(response.content)["id"] == case.path_parameters["site_id"]

    call()
