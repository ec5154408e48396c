"""Accepting HTTP connections within bounds, whoever connects and however slowly.

aiohttp alone lets a connection that never finishes its request head stay open for an
hour (its keep-alive timeout), accepts as many connections as there are file
descriptors, and asyncio, once they are gone, logs every failed ``accept()``: 1,100 idle
connections at the default soft limit of 1,024 files took /metrics down and wrote
thousands of log lines a second. Here:

- a connection gets ``HEADER_TIMEOUT`` seconds to deliver its first request head (and
  TLS handshake), and aiohttp closes one kept alive ``IDLE_TIMEOUT`` seconds after a
  reply if no new request comes;
- at most ``limit`` connections are open (a quarter of the soft RLIMIT_NOFILE, at most
  ``MAX_CONNECTIONS``: the rest of the descriptors are the probes'). When they are all
  open, a newcomer takes the place of one not being answered (one that sent nothing
  first, then one whose request is not complete, then the one idle the longest); only
  when every one is being answered is the newcomer refused. So a flood of idle
  connections cannot keep a scrape out;
- a failed ``accept()`` (out of descriptors or memory) pauses accepting, 5 ms doubling
  up to 1 s as Go's net/http does, and is logged at most once a second with a count.

Each case is counted in ``vcmon_http_connections_refused_total`` by reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import resource
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CollectorRegistry, Counter, Gauge

from monitor.system.logs import request_peer

log = structlog.get_logger("vcmon.http")

# From connect to the end of the first request's head (TLS handshake included): a
# scraper sends it at once; a client that dribbles it (slowloris) is cut off.
HEADER_TIMEOUT = 10.0
# A kept-alive connection waits this long for its next request (Prometheus scrapes at
# most every minute by default and reconnects at no cost).
IDLE_TIMEOUT = 75.0
MAX_CONNECTIONS = 1024
# of the soft RLIMIT_NOFILE, one descriptor in this many may be an HTTP connection
FD_SHARE = 4
BACKLOG = 512
_PAUSE_FIRST, _PAUSE_MAX = 0.005, 1.0
# accept() failures that a pause may cure; others (ECONNABORTED: the client left
# before the accept) concern that one connection only
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# Refusals are logged at most this often (seconds), with what the interval saw.
_REFUSALS_LOGGED_EVERY = 60.0


def connection_limit() -> int:
    """How many connections may be open at once, from the soft limit on open files."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(8, min(MAX_CONNECTIONS, soft // FD_SHARE))


class ListenerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.refused = Counter(
            "vcmon_http_connections_refused",
            "HTTP connections closed unserved: full (every connection was being answered), "
            "evicted (idle the longest when a newcomer needed the place), header_timeout "
            "(no complete request head in time).", ["reason"], registry=registry)
        for reason in ("full", "evicted", "header_timeout"):
            self.refused.labels(reason)
        self.accept_errors = Counter(
            "vcmon_http_accept_errors",
            "accept() failures for want of file descriptors or memory.", registry=registry)
        self.open = Gauge("vcmon_http_connections", "HTTP connections open.",
                          registry=registry)
        self.limit = Gauge("vcmon_http_connections_limit",
                           "The most HTTP connections open at once.", registry=registry)


class Connection(asyncio.Protocol):
    """aiohttp's protocol for one connection, and its place among the open ones."""

    def __init__(self, listener: Listener, handler: RequestHandler, peer: str) -> None:
        self._listener = listener
        self.handler = handler
        self.peer = peer
        self.transport: asyncio.BaseTransport | None = None
        self.setup: asyncio.Task[Any] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.answering = 0
        self.answered = False
        self.spoke = False
        self.idle_since = time.monotonic()

    @contextlib.contextmanager
    def answering_request(self) -> Iterator[None]:
        """Around a request's handler: the connection is busy, and past its head."""
        self.answered = True
        self.answering += 1
        try:
            yield
        finally:
            self.answering -= 1
            self.idle_since = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        # aiohttp starts the connection's task here, which copies the context: what it
        # logs about this connection carries the peer (see monitor.system.logs)
        request_peer.set(self.peer)
        self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.spoke = True
        self.handler.data_received(data)

    def eof_received(self) -> None:
        self.handler.eof_received()

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._listener.forget(self)
        self.handler.connection_lost(exc)

    def close(self) -> None:
        """Closed by the listener: at once, unsent data and all."""
        if self.transport is not None:
            self.transport.abort()  # type: ignore[attr-defined]
        elif self.setup is not None:  # still in its TLS handshake
            self.setup.cancel()


class Listener:
    """Accepts on listening sockets for an aiohttp ``web.Server``, within the bounds above."""

    def __init__(self, server: web.Server, tls: ssl.SSLContext | None,
                 metrics: ListenerMetrics, limit: int | None = None) -> None:
        self._server = server
        self._tls = tls
        self._metrics = metrics
        self.limit = limit if limit is not None else connection_limit()
        metrics.limit.set(self.limit)
        # insertion order is the order of arrival
        self._open: dict[Connection, None] = {}
        metrics.open.set_function(lambda: len(self._open))
        self._tasks: list[asyncio.Task[None]] = []
        self._sockets: list[socket.socket] = []
        self._accept_failures = 0
        self._accept_logged = 0.0
        self._refusals: dict[str, int] = {}
        self._refusals_logged = -_REFUSALS_LOGGED_EVERY

    def start(self, sock: socket.socket) -> None:
        sock.listen(BACKLOG)
        self._sockets.append(sock)
        name = f"http accept {sock.getsockname()[:2]}"
        self._tasks.append(asyncio.get_running_loop().create_task(self._accept(sock), name=name))

    async def close(self) -> None:
        """Stop accepting; connections being set up are dropped (aiohttp closes the rest)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        for connection in list(self._open):
            if connection.transport is None:
                self._drop(connection)

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        pause = _PAUSE_FIRST
        while True:
            try:
                conn, address = await loop.sock_accept(sock)
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    continue
                self._accept_failed(exc)
                await asyncio.sleep(pause)
                pause = min(2 * pause, _PAUSE_MAX)
                continue
            pause = _PAUSE_FIRST
            self._admit(conn, str(address[0]))
            # sock_accept returns without yielding while the backlog holds connections:
            # let the ones admitted be read (and so be told from a silent flood) first
            await asyncio.sleep(0)

    def _accept_failed(self, exc: OSError) -> None:
        self._metrics.accept_errors.inc()
        self._accept_failures += 1
        now = time.monotonic()
        if now - self._accept_logged >= 1.0:
            log.error("http_accept_failed", problem=exc.strerror, failures=self._accept_failures,
                      connections=len(self._open), limit=self.limit,
                      hint="other parts of vcmon hold the file descriptors; raise LimitNOFILE=")
            self._accept_logged = now
            self._accept_failures = 0

    def _admit(self, conn: socket.socket, peer: str) -> None:
        if len(self._open) >= self.limit:
            # silent ones first (a flood's), then those never answered (whose request
            # is on its way, or dribbles in), then the one idle the longest
            idle = min((c for c in self._open if not c.answering),
                       key=lambda c: (c.answered, c.spoke, c.idle_since), default=None)
            if idle is None:
                conn.close()
                self._refused("full")
                return
            self._drop(idle)
            self._refused("evicted")
        loop = asyncio.get_running_loop()
        connection = Connection(self, self._server(), peer)
        self._open[connection] = None
        connection.timer = loop.call_later(HEADER_TIMEOUT, self._head_due, connection)
        connection.setup = loop.create_task(self._set_up(connection, conn))

    async def _set_up(self, connection: Connection, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(
                lambda: connection, conn, ssl=self._tls,
                ssl_handshake_timeout=HEADER_TIMEOUT if self._tls is not None else None)
        except (OSError, ssl.SSLError, asyncio.CancelledError):
            # a failed handshake is the client's business (aiohttp logs none either)
            conn.close()
            self.forget(connection)
        finally:
            connection.setup = None

    def _head_due(self, connection: Connection) -> None:
        connection.timer = None
        if not connection.answered and connection in self._open:
            self._drop(connection)
            self._refused("header_timeout")

    def _drop(self, connection: Connection) -> None:
        self.forget(connection)
        connection.close()

    def forget(self, connection: Connection) -> None:
        self._open.pop(connection, None)
        if connection.timer is not None:
            connection.timer.cancel()
            connection.timer = None

    def _refused(self, reason: str) -> None:
        self._metrics.refused.labels(reason).inc()
        self._refusals[reason] = self._refusals.get(reason, 0) + 1
        now = time.monotonic()
        if now - self._refusals_logged >= _REFUSALS_LOGGED_EVERY:
            log.warning("http_connections_refused", **self._refusals, limit=self.limit,
                        hint="many clients hold connections open without requests; the "
                             "metric vcmon_http_connections_refused_total counts them")
            self._refusals_logged = now
            self._refusals = {}
