"""The JSON API (``/api/v1/…``) and the status board (``/``): what people and scripts read.

Field names are a contract, written down in ``monitor/data/openapi.yaml``: add fields,
never rename or remove one. Times are ISO 8601 in the schedule's time zone, with the
Unix time beside them for scripts; measurements are in base units (seconds, ratios).
"""

from __future__ import annotations

import asyncio
import json
import time
from importlib import resources
from typing import Any

from aiohttp import web

from monitor.status.health import Status
from monitor.status.records import iso, site_records, summary
from monitor.status.source import Source

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


class Api:
    """Handlers over an instance's table, health and configuration (its ``Source``)."""

    def __init__(self, source: Source) -> None:
        self._source = source
        self._cached: tuple[float, list[dict[str, Any]]] | None = None
        data = resources.files("monitor").joinpath("data")
        self._board = data.joinpath("board.html").read_text("utf-8")
        self._openapi = data.joinpath("openapi.yaml").read_text("utf-8")

    async def records(self) -> list[dict[str, Any]]:
        now = time.time()
        if self._cached is not None and now - self._cached[0] < _CACHE_SECONDS:
            return self._cached[1]
        d = self._source
        loop = asyncio.get_running_loop()
        # Window statistics of every site: milliseconds here, seconds at 20,000 sites.
        records = await loop.run_in_executor(None, site_records, d.table, d.health, d.config, now)
        self._cached = (now, records)
        return records

    def _envelope(self, now: float) -> dict[str, Any]:
        zone = self._source.config.schedule.zone
        return {"generated_at": iso(now, zone), "timestamp": now}

    async def sites(self, request: web.Request) -> web.Response:
        records = await self.records()
        payload = {**self._envelope(time.time()), "sites": records}
        # ~10 MB of JSON at 20,000 sites: encoded beside the probe loop, not on it
        text = await asyncio.get_running_loop().run_in_executor(None, _dumps, payload)
        return web.Response(text=text, content_type="application/json", charset="utf-8")

    async def site(self, request: web.Request) -> web.Response:
        site_id = request.match_info["site_id"]
        for record in await self.records():
            if record["id"] == site_id:
                return _json(record)
        return _json({"error": f"no site with id {site_id!r} in the inventory"}, status=404)

    async def summary(self, request: web.Request) -> web.Response:
        now = time.time()
        config = self._source.config
        return _json(summary(await self.records(), config, now))

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
