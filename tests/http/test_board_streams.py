"""The status board shows both directions of a site's TWAMP stream, in real headless
Chromium: a site with a clean way out and a jittery way back reads as such, in the
problem list and in its tile's title, in Vietnamese and in English."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from monitor.http.api import register_routes
from monitor.inventory import Config, parse_config
from monitor.status.health import HealthTracker
from monitor.status.sites import SiteTable
from probes import Outcome, ProbeResult
from tests.conftest import free_port
from tests.http.cdp import Browser, chromium_binary
from tests.status.test_streams import stream, uniform

pytestmark = pytest.mark.skipif(chromium_binary() is None, reason="needs Debian's chromium")

INVENTORY = """
defaults: {interval: 1s, window: 60s}
health: {evaluate_every: 1s, enter_after: 1, leave_after: 1, min_replies: 3}
sites:
  - {id: prov, name: Hội trường Tỉnh ủy, tier: province, address: 127.0.0.1}
  - {id: lac-ve, name: UBND xã Lạc Vệ, tier: commune, parent: prov, address: 127.0.0.3,
     probes: [{kind: twamp}]}
"""


@dataclass
class Stand:
    table: SiteTable
    health: HealthTracker
    config: Config


def _stand() -> Stand:
    config = parse_config(INVENTORY)
    now = time.time()
    table, health = SiteTable(config), HealthTracker(config, now - 30)
    rng = random.Random(5)
    for second in range(20):
        at = now - 20 + second
        for site in ("prov", "lac-ve"):
            table.record(ProbeResult(site, "127.0.0.1", second, at, Outcome.REPLY, 0.012))
        if second % 5 == 0:
            # the way out clean; the way back ±67.5 ms: 45 ms of jitter
            health.streams.record("lac-ve/twamp", at, stream(
                uniform(50, 10, 0.5, rng), uniform(50, 80, 67.5, rng)))
    health.update(table, now, evaluate=True)
    return Stand(table, health, config)


@pytest.fixture(scope="module")
def board() -> Iterator[str]:
    stand = _stand()
    port = free_port()
    loop = asyncio.new_event_loop()
    app = web.Application()
    register_routes(app, stand)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def test_the_board_shows_a_clean_way_out_and_a_bad_way_back(board: str, tmp_path: Path) -> None:
    with Browser() as browser:
        browser.open(board)
        browser.wait_for("document.querySelectorAll('#problems li').length > 0", 10)
        problems = browser.evaluate("document.getElementById('problems').innerText")
        assert "UBND xã Lạc Vệ — Suy giảm" in problems
        assert "chiều về jitter 4" in problems  # the reason, in Vietnamese
        stream = browser.evaluate("document.querySelector('#problems small.stream').innerText")
        out, back = stream.split(" · ")
        assert out.startswith("chiều đi: jitter 0.") and out.endswith("mất gói 0.0%")
        assert back.startswith("chiều về: jitter 4")
        title = browser.evaluate("document.querySelector('.tile[data-site=\"lac-ve\"]').title")
        assert "chiều đi: jitter" in title and "chiều về: jitter" in title
        browser.screenshot(tmp_path / "board-reverse-jitter.png")
        assert browser.errors() == []
        browser.open(board + "?lang=en")
        browser.wait_for("document.querySelectorAll('#problems li').length > 0", 10)
        problems = browser.evaluate("document.getElementById('problems').innerText")
        assert "reverse jitter 4" in problems
        assert "forward: jitter 0." in problems and "reverse: jitter 4" in problems
    assert (tmp_path / "board-reverse-jitter.png").stat().st_size > 10_000
