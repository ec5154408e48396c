"""The JSON API (``/api/v1/…``) and the status board (``/``): what people and scripts read.

Field names are a contract, written down in ``monitor/data/openapi.yaml``: add fields,
never rename or remove one. Times are ISO 8601 in the schedule's time zone, with the
Unix time beside them for scripts; measurements are in base units (seconds, ratios).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import structlog
from aiohttp import web

from monitor.status.health import Status
from monitor.status.records import iso, site_record, site_records, summary
from monitor.status.source import Source
from monitor.system import forked

log = structlog.get_logger("vcmon.http")

PREFIX = "/api/v1"
STATUSES = tuple(status.value for status in Status)
# A control room may run several board screens; they share one computation per second.
_CACHE_SECONDS = 1.0


def _dumps(payload: object) -> str:
    # ensure_ascii=False: Vietnamese names stay readable in curl and logs.
    return json.dumps(payload, ensure_ascii=False)


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(text=_dumps(payload), status=status,
                        content_type="application/json", charset="utf-8")


async def _in_child(name: str, produce: Callable[[], bytes]) -> bytes | None:
    """``produce()`` in a forked child, or None (logged) if no child could do it."""
    # taken in pieces on the event loop as the pipe fills: without a sink, a reading
    # thread would hand the GIL back and forth with the loop for each piece of ~10 MB
    pieces: list[bytes] = []

    async def keep(piece: bytes) -> None:
        pieces.append(piece)

    try:
        await forked.run_in_child(produce, f"{name} page", sink=keep)
    except (forked.ChildFailed, OSError) as exc:
        log.warning("api_page_fallback", page=name, problem=str(exc),
                    hint="computed in a thread instead")
        return None
    return b"".join(pieces)


class Api:
    """Handlers over an instance's table, health and configuration (its ``Source``)."""

    def __init__(self, source: Source) -> None:
        self._source = source
        self._computing = asyncio.Lock()
        self._cached: dict[str, tuple[float, bytes]] = {}
        data = resources.files("monitor").joinpath("data")
        self._board = data.joinpath("board.html").read_text("utf-8")
        self._openapi = data.joinpath("openapi.yaml").read_text("utf-8")

    async def _page(self, name: str, build: Callable[[float], object]) -> bytes:
        """``build(now)`` as JSON, computed at most once a second however many read it.

        Every site's record and window statistics: milliseconds at the province's 240
        sites, in a worker thread; over a second and ~10 MB of JSON at 20,000, in a
        forked child, because a thread would take that second from the probe loop
        through the GIL (measured at 20,000 sites read every 5 s: 88 % of the probes
        sent, one probe cycle in eight skipped).
        """
        async with self._computing:
            now = time.time()
            hit = self._cached.get(name)
            if hit is not None and now - hit[0] < _CACHE_SECONDS:
                return hit[1]

            def produce() -> bytes:
                return _dumps(build(now)).encode()

            loop = asyncio.get_running_loop()
            body = None
            if len(self._source.table.sites) > forked.CHILD_ABOVE_SITES:
                body = await _in_child(name, produce)
            if body is None:
                body = await loop.run_in_executor(None, produce)
            self._cached[name] = (now, body)
            # not kept past its second: the sites page is ~10 MB at 20,000 sites
            loop.call_later(_CACHE_SECONDS, self._forget, name, now)
            return body

    def _forget(self, name: str, computed: float) -> None:
        hit = self._cached.get(name)
        if hit is not None and hit[0] == computed:
            del self._cached[name]

    def _records(self, now: float) -> list[dict[str, Any]]:
        d = self._source
        return site_records(d.table, d.health, d.config, now)

    def _envelope(self, now: float) -> dict[str, Any]:
        zone = self._source.config.schedule.zone
        return {"generated_at": iso(now, zone), "timestamp": now}

    async def sites(self, request: web.Request) -> web.Response:
        body = await self._page(
            "sites", lambda now: {**self._envelope(now), "sites": self._records(now)})
        return web.Response(body=body, content_type="application/json", charset="utf-8")

    async def site(self, request: web.Request) -> web.Response:
        site_id = request.match_info["site_id"]
        d = self._source
        state = d.table.sites.get(site_id)
        if state is None:
            return _json({"error": f"no site with id {site_id!r} in the inventory"},
                         status=404)
        return _json(site_record(state, d.health.sites.get(site_id), d.config, d.health,
                                 time.time()))

    async def summary(self, request: web.Request) -> web.Response:
        body = await self._page(
            "summary", lambda now: summary(self._records(now), self._source.config, now))
        return web.Response(body=body, content_type="application/json", charset="utf-8")

    async def board(self, request: web.Request) -> web.Response:
        return web.Response(text=self._board, content_type="text/html", charset="utf-8")

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(text=self._openapi, content_type="application/yaml",
                            charset="utf-8")


def register_routes(app: web.Application, source: Source) -> None:
    """The board at ``/`` and the JSON API under ``/api/v1``."""
    api = Api(source)
    app.router.add_get("/", api.board)
    app.router.add_get(f"{PREFIX}/sites", api.sites)
    app.router.add_get(f"{PREFIX}/sites/{{site_id}}", api.site)
    app.router.add_get(f"{PREFIX}/summary", api.summary)
    app.router.add_get(f"{PREFIX}/openapi.yaml", api.openapi)
