"""HTTP endpoints: /metrics, /-/healthy, /-/ready."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

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
        app.router.add_get("/", self.index)
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
        started = time.perf_counter()
        body = generate_latest(self._daemon.registry)
        self._daemon.metrics.render_duration.observe(time.perf_counter() - started)
        response = web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
        # gzip only when the scraper asks for it (Prometheus does): 20k sites is megabytes.
        response.enable_compression()
        return response

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

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(
            text="<html><head><title>vcmon</title></head><body><h1>vcmon</h1>"
                 '<p><a href="/metrics">Metrics</a></p></body></html>',
            content_type="text/html")
