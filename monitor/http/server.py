"""HTTP endpoints: /metrics, /-/healthy, /-/ready, the JSON API and the status board."""

from __future__ import annotations

import asyncio
import base64
import itertools
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import structlog
from aiohttp import HttpVersion11, hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from monitor.http.api import register_routes
from monitor.http.encoding import accepts_gzip
from monitor.http.listener import IDLE_TIMEOUT, Connection, Listener, ListenerMetrics
from monitor.inventory.web import WebUsers
from monitor.metrics.instance import DaemonMetrics
from monitor.metrics.page import SitePage
from monitor.status.source import Source
from monitor.system import forked
from monitor.system.forked import ChildFailed, pack, run_in_child, send_chunked

# /metrics goes to the socket in pieces of this size (bytes)
_SEND_PIECE = 256 << 10


class Lifecycle(Protocol):
    """What the /-/ endpoints may ask of the instance: nothing else of the daemon."""

    @property
    def ready(self) -> bool:
        """Every site has had its first probe."""
        ...

    async def reload(self) -> list[str]:
        """Re-read the inventory; the problems, or [] when it was applied."""
        ...

    def request_trace(self, site_id: str) -> str | None:
        """Ask for a path trace of one site now: what became of the request (queued,
        already queued, running, disabled), or None when no such site is probed here."""
        ...

log = structlog.get_logger("vcmon.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_CHALLENGE = {hdrs.WWW_AUTHENTICATE: 'Basic realm="vcmon", charset="UTF-8"'}


def split_listen(listen: str) -> tuple[str, int]:
    """'127.0.0.1:9470' or '[::1]:9470' → (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def listening_sockets(listen: str) -> list[socket.socket]:
    """Bound, listening sockets for every address ``listen`` names.

    Opened here rather than by asyncio, whose name lookup runs in a worker thread:
    the sockets must exist, and no thread yet, when privileges are dropped.
    """
    host, port = split_listen(listen)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # "localhost" binds ::1 and 127.0.0.1 apart
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    """``(user, password)`` of an ``Authorization: Basic …`` header (RFC 7617), else None."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


class HttpServer:
    def __init__(self, source: Source, lifecycle: Lifecycle, page: SitePage,
                 metrics: DaemonMetrics) -> None:
        self._source = source
        self._lifecycle = lifecycle
        self._page = page
        self._metrics = metrics
        self._runner: web.AppRunner | None = None
        self._rendering = asyncio.Lock()
        # One thread for bcrypt: a flood of wrong passwords takes one core, never the
        # event loop, and remembered logins do not queue behind it.
        self._bcrypt = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vcmon-bcrypt")
        self._listener: Listener | None = None
        self._listener_metrics = ListenerMetrics(metrics.registry)
        app = web.Application(middlewares=[self._answering, self._authenticate])
        app.router.add_get("/metrics", self.metrics)
        # Health checks of load balancers and container engines carry no credentials;
        # these two say only "healthy" or "ready" (TLS still applies to them).
        self._open = {app.router.add_get("/-/healthy", self.healthy).resource,
                      app.router.add_get("/-/ready", self.ready).resource}
        app.router.add_post("/-/reload", self.reload)
        # changes what the instance does (it sends packets): protected like /-/reload
        app.router.add_post("/api/v1/sites/{site_id}/trace", self.trace)
        # the status board at / and the JSON API under /api/v1
        register_routes(app, source)
        app.on_response_prepare.append(self._add_headers)
        self.app = app

    async def start(self, listen: str) -> None:
        """Bind the listener; it serves once the event loop runs."""
        web_settings = self._source.config.web
        if web_settings.users is not None and web_settings.tls is None:
            log.warning("basic_auth_without_tls", listen=listen,
                        hint="passwords cross the network in clear text; set "
                             "tls_server_config in the web configuration file")
        sockets = listening_sockets(listen)
        # access_log=None: Prometheus scrapes every few seconds; those lines are noise.
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                     keepalive_timeout=IDLE_TIMEOUT)
        await self._runner.setup()
        assert self._runner.server is not None, "set up just now"
        # accepting within bounds (monitor.http.listener) rather than aiohttp's sites
        self._listener = Listener(self._runner.server, web_settings.tls, self._listener_metrics)
        for sock in sockets:
            self._listener.start(sock)

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._bcrypt.shutdown(wait=False, cancel_futures=True)

    @web.middleware
    async def _answering(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # a connection being answered is never closed to make room for another
        transport = request.transport
        connection = transport.get_protocol() if transport is not None else None
        if not isinstance(connection, Connection):
            return await handler(request)
        with connection.answering_request():
            return await handler(request)

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # The users of the configuration in force: a reload changes them.
        users = self._source.config.web.users
        if users is None or request.match_info.route.resource in self._open:
            return await handler(request)
        if await self._logged_in(users, request.headers.get(hdrs.AUTHORIZATION)):
            return await handler(request)
        # No user name in the log: people type their password into it by mistake.
        log.debug("http_login_refused", peer=request.remote, path=request.path)
        raise web.HTTPUnauthorized(headers=_CHALLENGE, text="401 Unauthorized\n")

    async def _logged_in(self, users: WebUsers, header: str | None) -> bool:
        login = _basic_credentials(header)
        if login is None:
            return False
        if users.remembered(*login):
            return True
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._bcrypt, users.verify, *login)

    async def _add_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(self._source.config.web.headers)

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        gzipped = accepts_gzip(request.headers.get(hdrs.ACCEPT_ENCODING, ""))
        started = time.perf_counter()
        headers = {"Content-Type": CONTENT_TYPE_LATEST}
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        # In chunked encoding, written by the render child straight to the client where
        # it can (see _handed_over), else passed on as it comes from the child (6 MB
        # gzipped at 20,000 sites, which this process would otherwise hold at every
        # scrape).
        if request.method == hdrs.METH_HEAD:
            # the headers alone (aiohttp would send a streamed body even to HEAD)
            return web.Response(headers=headers)
        response = web.StreamResponse(headers=headers)

        async def send(piece: bytes) -> None:
            if not response.prepared:
                await response.prepare(request)
            await response.write(piece)

        async with self._rendering:  # one render at a time, however many scrapers
            # The daemon-wide metrics here (their collectors take locks); the sites'
            # thousands of series in a forked child, off the probe loop's GIL.
            tail = generate_latest(self._metrics.registry)

            def page() -> Iterator[bytes]:
                return itertools.chain(self._page.chunks(), [tail])

            async def in_thread() -> None:
                loop = asyncio.get_running_loop()
                body = await loop.run_in_executor(None, pack, page(), gzipped)
                for start in range(0, len(body), _SEND_PIECE):
                    await send(body[start:start + _SEND_PIECE])

            if len(self._source.table.sites) <= forked.CHILD_ABOVE_SITES:
                await in_thread()
            else:
                fd = await _handed_over(request, response)
                try:
                    if fd is not None:
                        await run_in_child(lambda: send_chunked(fd, page(), gzipped), "render")
                    else:
                        await run_in_child(lambda: pack(page(), gzipped), "render", sink=send)
                except (ChildFailed, OSError) as exc:
                    if response.prepared:
                        # part of the page is out: this scrape fails, the next starts afresh
                        log.error("metrics_render_failed", problem=str(exc))
                        raise
                    log.warning("metrics_render_fallback", problem=str(exc),
                                hint="rendered in a thread instead")
                    await in_thread()
        self._metrics.render_duration.observe(time.perf_counter() - started)
        if not response.prepared:  # an empty page
            await response.prepare(request)
        await response.write_eof()
        return response

    async def healthy(self, request: web.Request) -> web.Response:
        return web.Response(text="vcmon is healthy.\n")

    async def ready(self, request: web.Request) -> web.Response:
        if self._lifecycle.ready:
            return web.Response(text="vcmon is ready.\n")
        return web.Response(status=503, text="vcmon is starting: first probe cycle not done.\n")

    async def reload(self, request: web.Request) -> web.Response:
        if not self._source.config.web.enable_lifecycle:
            return web.Response(status=403, text="POST /-/reload is disabled (web: "
                                "enable_lifecycle: false); send SIGHUP instead, e.g. "
                                "systemctl reload vcmon\n")
        problems = await self._lifecycle.reload()
        if problems:
            text = "reload failed; still running the previous configuration:\n"
            return web.Response(status=400, text=text + "\n".join(problems) + "\n")
        return web.Response(text="reloaded\n")

    async def trace(self, request: web.Request) -> web.Response:
        """POST /api/v1/sites/{site_id}/trace: 202 and the outcome; the path shows in the
        site's record (``path``) once the trace has run."""
        site_id = request.match_info["site_id"]
        if not self._source.config.web.enable_lifecycle:
            return web.json_response(
                {"error": "POST requests are disabled (web: enable_lifecycle: false); "
                 f"run vcmon trace {site_id} on the monitor instead"}, status=403)
        outcome = self._lifecycle.request_trace(site_id)
        if outcome is None:
            return web.json_response(
                {"error": f"no site with id {site_id!r} is probed by this instance"}, status=404)
        if outcome == "disabled":
            return web.json_response(
                {"error": "diagnosis is off (diagnosis: enabled: false in the inventory)"},
                status=409)
        return web.json_response({"site": site_id, "outcome": outcome}, status=202)


async def _handed_over(request: web.Request, response: web.StreamResponse) -> int | None:
    """The client socket's descriptor, for the render child to write the page to
    itself, once the response's headers are out and nothing of this process is left to
    send; None where the page goes through this process instead: HTTP/1.0 (no
    chunks), TLS (the child has no TLS state), or a client that has not
    taken the headers yet."""
    transport = request.transport
    if (request.version < HttpVersion11 or transport is None
            or transport.get_extra_info("sslcontext") is not None):
        return None
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(b"")  # sends the headers
    if transport.is_closing() or transport.get_write_buffer_size():
        return None
    return int(sock.fileno())
