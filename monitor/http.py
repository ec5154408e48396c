"""HTTP endpoints: /metrics, /-/healthy, /-/ready, the JSON API and the status board."""

from __future__ import annotations

import asyncio
import time
import zlib
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from monitor.api import register_routes
from monitor.metrics import render_chunks

if TYPE_CHECKING:
    from monitor.daemon import Daemon


def split_listen(listen: str) -> tuple[str, int]:
    """'127.0.0.1:9470' or '[::1]:9470' → (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class HttpServer:
    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon
        self._runner: web.AppRunner | None = None
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/-/healthy", self.healthy)
        app.router.add_get("/-/ready", self.ready)
        app.router.add_post("/-/reload", self.reload)
        # the status board at / and the JSON API under /api/v1
        register_routes(app, daemon)
        self.app = app

    async def start(self, listen: str) -> None:
        host, port = split_listen(listen)
        # access_log=None: Prometheus scrapes every few seconds; those lines are noise.
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        gzipped = "gzip" in request.headers.get("Accept-Encoding", "")
        loop = asyncio.get_running_loop()
        # Rendering and compressing take long at scale: a worker thread, not the loop.
        body = await loop.run_in_executor(None, self._render, gzipped)
        headers = {"Content-Type": CONTENT_TYPE_LATEST}
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)

    def _render(self, gzipped: bool) -> bytes:
        started = time.perf_counter()
        daemon = self._daemon
        chunks = render_chunks(daemon, daemon.registry)
        if gzipped:
            # At 20,000 sites the page is ~100 MB of text: compressed a piece at a
            # time it is never whole in memory. Level 1 compresses it ~15x at a
            # fraction of the default level's time.
            packer = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            body = b"".join([*map(packer.compress, chunks), packer.flush()])
        else:
            body = b"".join(chunks)
        daemon.metrics.render_duration.observe(time.perf_counter() - started)
        return body

    async def healthy(self, request: web.Request) -> web.Response:
        return web.Response(text="vcmon is healthy.\n")

    async def ready(self, request: web.Request) -> web.Response:
        if self._daemon.ready:
            return web.Response(text="vcmon is ready.\n")
        return web.Response(status=503, text="vcmon is starting: first probe cycle not done.\n")

    async def reload(self, request: web.Request) -> web.Response:
        problems = await self._daemon.reload()
        if problems:
            text = "reload failed; still running the previous configuration:\n"
            return web.Response(status=400, text=text + "\n".join(problems) + "\n")
        return web.Response(text="reloaded\n")
