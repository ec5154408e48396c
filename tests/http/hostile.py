"""Hostile HTTP clients for the daemon on 127.0.0.1, and a daemon process to aim them at.

Every client runs until a deadline and opens a bounded number of connections; nothing
is sent anywhere but 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import bcrypt

USER = "scraper"
PASSWORD = "mật-khẩu-bí-mật-42"
TOKEN = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
AUTH = {"Authorization": f"Basic {TOKEN}"}
# cost 4: every scrape of the tests checks it
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


def secrets_in(text: str) -> list[str]:
    """Credentials that ``text`` shows: the password, the token or a part of either, or
    any Authorization value."""
    found = [secret for secret in (PASSWORD, TOKEN, TOKEN[:12], TOKEN[-12:], "bí-mật")
             if secret in text]
    lowered = text.lower()
    at = lowered.find("authorization")
    while at >= 0:
        after = text[at + len("authorization"):at + len("authorization") + 40]
        value = after.lstrip("'\"\\: =")
        if value and not value.startswith("[redacted]") and "basic [redacted]" not in \
                value.lower():
            found.append(f"authorization{after}")
        at = lowered.find("authorization", at + 1)
    return found


def malformed_requests() -> list[bytes]:
    """Requests aiohttp refuses while parsing, each carrying the credentials."""
    auth = f"Authorization: Basic {TOKEN}\r\n".encode()
    return [
        # the Authorization line longer than aiohttp's limit of 8,190 bytes
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " +
        TOKEN.encode() * 400 + b"\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + auth + b"Bad\x01Header: 1\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\n" + auth + b"Host: x\r\nContent-Length: -5\r\n\r\n",
        b"GET /metrics HTTP/9.9\r\n" + auth + b"\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + auth,  # TLS to a plain port
        b"GET /metrics HTTP/1.1\r\n" + auth + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    ]


def raise_open_files(wanted: int) -> tuple[int, int]:
    """This process may open ``wanted`` files (for its many client sockets); the old
    limits, to restore."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return soft, hard


def daemon_process(config: Path, port: int, log: Path, open_files: int
                   ) -> subprocess.Popen[bytes]:
    """``vcmon run`` with a soft limit of ``open_files`` open files, its log in ``log``."""
    def limit() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, hard))

    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "run", "--config", str(config),
             "--listen", f"127.0.0.1:{port}", "--log-format", "json"],
            stdout=out, stderr=subprocess.STDOUT, preexec_fn=limit)


@dataclass
class Checks:
    """The answers of well-behaved requests: (path, seconds or None when it failed)."""

    answers: list[tuple[str, float | None]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def slowest(self) -> float:
        return max((s for _, s in self.answers if s is not None), default=0.0)

    def failed(self) -> list[str]:
        return [path for path, s in self.answers if s is None]


class Hostile:
    """Idle, slow and malformed clients, all against 127.0.0.1:``port`` until ``until``
    (a ``loop.time()``)."""

    def __init__(self, port: int, until: float) -> None:
        self.port = port
        self.until = until
        self.opened = 0
        self.malformed_sent = 0

    def _left(self) -> float:
        return self.until - asyncio.get_running_loop().time()

    def _connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex(("127.0.0.1", self.port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            return None
        self.opened += 1
        return sock

    async def idle(self, count: int) -> None:
        """``count`` connections that send nothing; those the server closes are opened
        again (each second, at most ``count`` a second)."""
        held: list[socket.socket] = []
        try:
            while self._left() > 0:
                alive = []
                for sock in held:
                    try:
                        gone = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
                    except BlockingIOError:
                        gone = False
                    except OSError:
                        gone = True
                    if gone:
                        sock.close()
                    else:
                        alive.append(sock)
                held = alive
                while len(held) < count and self._left() > 0:
                    for _ in range(min(100, count - len(held))):
                        sock = self._connect()
                        if sock is not None:
                            held.append(sock)
                    await asyncio.sleep(0.02)
                await asyncio.sleep(min(1.0, max(0.0, self._left())))
        finally:
            for sock in held:
                sock.close()

    async def slowloris(self, count: int) -> None:
        """``count`` clients that send a request head a few bytes a second, forever."""
        await asyncio.gather(*(self._one_slowloris() for _ in range(count)))

    async def _one_slowloris(self) -> None:
        while self._left() > 1:
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port), 2)
            except (OSError, TimeoutError):
                await asyncio.sleep(0.5)
                continue
            self.opened += 1
            try:
                writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
                             f"Authorization: Basic {TOKEN}\r\n".encode())
                while self._left() > 0 and not writer.is_closing():
                    await asyncio.sleep(1.0)
                    writer.write(b"X-a: b\r\n")
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    async def malformed(self, every: float = 0.05) -> None:
        """Malformed requests, one a connection, every ``every`` seconds."""
        requests = malformed_requests()
        while self._left() > 0:
            request = requests[self.malformed_sent % len(requests)]
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port), 2)
                self.opened += 1
                writer.write(request)
                await asyncio.wait_for(reader.read(4096), 2)
                writer.close()
                await writer.wait_closed()
            except (OSError, TimeoutError):
                pass
            self.malformed_sent += 1
            await asyncio.sleep(every)

    async def well_behaved(self, checks: Checks, every: float = 0.25) -> None:
        """/-/healthy and an authenticated /metrics, each on a new connection."""
        timeout = aiohttp.ClientTimeout(total=5)
        while self._left() > 0:
            for path, headers in (("/-/healthy", {}), ("/metrics", AUTH)):
                started = time.perf_counter()
                try:
                    async with aiohttp.ClientSession(
                            timeout=timeout, connector=aiohttp.TCPConnector(force_close=True)
                    ) as http, http.get(f"http://127.0.0.1:{self.port}{path}",
                                        headers=headers) as response:
                        await response.read()
                        ok = response.status == 200
                except (aiohttp.ClientError, TimeoutError) as exc:
                    checks.errors.append(f"{path}: {exc!r}")
                    ok = False
                checks.answers.append((path, time.perf_counter() - started if ok else None))
            await asyncio.sleep(every)


def log_lines(log: Path) -> Iterator[str]:
    yield from log.read_text(errors="replace").splitlines()
