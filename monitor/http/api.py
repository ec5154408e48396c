"""The JSON API (``/api/v1/…``) and the status board (``/``): what people and scripts read.

Field names are a contract, written down in ``monitor/data/openapi.yaml``: add fields,
never rename or remove one. Times are ISO 8601 in the schedule's time zone, with the
Unix time beside them for scripts; measurements are in base units (seconds, ratios).
"""

from __future__ import annotations

import asyncio
import json
import pickle
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import structlog
from aiohttp import hdrs, web

from monitor.http.encoding import accepts_gzip, inflated
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


async def _in_child(what: str, produce: Callable[[], bytes]) -> bytes | None:
    """``produce()`` in a forked child, or None (logged) if no child could do it."""
    # taken in pieces on the event loop as the pipe fills: without a sink, a reading
    # thread would hand the GIL back and forth with the loop for each piece
    pieces: list[bytes] = []

    async def keep(piece: bytes) -> None:
        pieces.append(piece)

    try:
        await forked.run_in_child(produce, what, sink=keep)
    except (forked.ChildFailed, OSError) as exc:
        log.warning("api_page_fallback", page=what, problem=str(exc),
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

    async def _page(self, name: str) -> bytes:
        """The ``sites`` or ``summary`` page as gzipped JSON, computed at most once a
        second however many read it, both from one computation of every site's record.

        Milliseconds at the province's 240 sites, in a worker thread; most of a second at
        20,000, in a forked child, because a thread would take that second from the probe
        loop through the GIL (measured at 20,000 sites read every 5 s: 88 % of the probes
        sent, one probe cycle in eight skipped). The board reads both pages at once: one
        child makes both (the summary alone took another 0.5 s of records). Kept gzipped:
        the 17 MB of the sites page at 20,000 sites is ~2 MB so, and held by the daemon
        for its second (as text, with its copies, it raised the daemon's peak RSS by
        35 MB).
        """
        async with self._computing:
            now = time.time()
            hit = self._cached.get(name)
            if hit is not None and now - hit[0] < _CACHE_SECONDS:
                return hit[1]

            def produce() -> bytes:
                # both pages through one pipe (this process's own child wrote them)
                return pickle.dumps(self._pages(now))

            loop = asyncio.get_running_loop()
            body = None
            if len(self._source.table.sites) > forked.CHILD_ABOVE_SITES:
                body = await _in_child("API pages", produce)
            if body is None:
                body = await loop.run_in_executor(None, produce)
            pages: dict[str, bytes] = pickle.loads(body)
            for each, page in pages.items():
                self._cached[each] = (now, page)
                # not kept past its second
                loop.call_later(_CACHE_SECONDS, self._forget, each, now)
            return pages[name]

    def _pages(self, now: float) -> dict[str, bytes]:
        records = self._records(now)
        documents = {"sites": {**self._envelope(now), "sites": records},
                     "summary": summary(records, self._source.config, now)}
        return {name: forked.pack([_dumps(document).encode()], gzipped=True)
                for name, document in documents.items()}

    async def _answer(self, request: web.Request, name: str) -> web.StreamResponse:
        """A page, gzipped if the client takes it, else inflated as it is sent."""
        body = await self._page(name)
        headers = {hdrs.CONTENT_TYPE: "application/json; charset=utf-8",
                   hdrs.VARY: hdrs.ACCEPT_ENCODING}
        if accepts_gzip(request.headers.get(hdrs.ACCEPT_ENCODING, "")):
            headers[hdrs.CONTENT_ENCODING] = "gzip"
            return web.Response(body=body, headers=headers)
        if request.method == hdrs.METH_HEAD:
            return web.Response(headers=headers)
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        for text in inflated(body):
            await response.write(text)
        await response.write_eof()
        return response

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

    async def sites(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "sites")

    async def site(self, request: web.Request) -> web.Response:
        site_id = request.match_info["site_id"]
        d = self._source
        state = d.table.sites.get(site_id)
        if state is None:
            return _json({"error": f"no site with id {site_id!r} in the inventory"},
                         status=404)
        return _json(site_record(state, d.health.sites.get(site_id), d.config, d.health,
                                 time.time()))

    async def summary(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "summary")

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
