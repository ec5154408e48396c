"""structlog set-up: JSON lines for journald and containers, readable text on a terminal."""

from __future__ import annotations

import logging
import re
import sys
import time
from contextvars import ContextVar
from typing import Literal

import structlog

LogFormat = Literal["auto", "json", "console"]

# Values no log line may carry, whatever a caller passes: a last line of defence.
_SECRET_KEYS = frozenset({"password", "passwd", "secret", "token", "authorization",
                          "password_hash", "basic_auth_users"})


def redact_secrets(
    logger: object, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    for key in _SECRET_KEYS & event.keys():
        event[key] = "[redacted]"
    return event


# The client of the HTTP connection whose task logs (set by the HTTP listener).
request_peer: ContextVar[str] = ContextVar("request_peer", default="-")

# Credentials in text no caller chose: an exception's message quoting a request's bytes,
# a traceback. An Authorization (or Proxy-Authorization) value whatever its scheme, and
# a Basic or Bearer token wherever it stands (the header's name may be cut off).
_CREDENTIALS = (
    (re.compile(r"(?i)((?:proxy-)?authorization\\?['\"]?\s*[:=]\s*)[^\s'\"\\,;]+"
                r"(?:[ \t]+[^\s'\"\\,;]+)?"), r"\1[redacted]"),
    (re.compile(r"(?i)\b(basic|bearer|digest|negotiate)([ \t]+)[A-Za-z0-9+/=._~-]{6,}"),
     r"\1\2[redacted]"),
)


def scrub(text: str) -> str:
    """``text`` with every credential it quotes replaced by ``[redacted]``."""
    for pattern, replacement in _CREDENTIALS:
        text = pattern.sub(replacement, text)
    return text


def _scrubbed(renderer: structlog.typing.Processor) -> structlog.typing.Processor:
    """The renderer, its every line scrubbed: the last line of defence."""
    def render(logger: object, method: str,
               event: structlog.typing.EventDict) -> str:
        line = renderer(logger, method, event)
        return scrub(line if isinstance(line, str) else str(line))

    return render


# A client may send malformed requests without end: each is logged once a minute at most
# per client, and this many clients are remembered for that (the oldest forgotten first).
BAD_REQUEST_EVERY = 60.0
_PEERS_REMEMBERED = 4096
# aiohttp's loggers that may carry a request's data: its own exceptions quote the bytes
# of a malformed request, credentials included
REQUEST_LOGGERS = ("aiohttp.server", "aiohttp.web", "aiohttp.access", "aiohttp.internal")


class BadRequestFilter(logging.Filter):
    """What aiohttp logs about a malformed request, as one line without its content:
    ``http_bad_request`` at info level, with the client and the kind of error, once per
    client per minute. Its message (the request's bytes, headers and all) is dropped."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not type(exc).__module__.startswith("aiohttp.http_"):
            return True
        peer = request_peer.get()
        now = time.monotonic()
        last = self._last.pop(peer, None)
        if last is not None and now - last < BAD_REQUEST_EVERY:
            self._last[peer] = last
            return False
        self._last[peer] = now
        while len(self._last) > _PEERS_REMEMBERED:
            del self._last[next(iter(self._last))]
        record.msg, record.args = "http_bad_request", ()
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.peer, record.problem = peer, type(exc).__name__
        record.status = getattr(exc, "code", 400)
        record.hint = "a client sent a malformed HTTP request; logged once a minute per client"
        return True


def configure_logging(level: str = "info", fmt: LogFormat = "auto") -> None:
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.typing.Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        # Vietnamese site names stay readable in journald instead of \u escapes.
        renderer = structlog.processors.JSONRenderer(ensure_ascii=False)
    common: list[structlog.typing.Processor] = [
        redact_secrets,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # Libraries log through the standard library (paho: "failed to receive on socket",
    # aiohttp, asyncio): their lines come out in the same format, not as bare text in
    # the middle of the JSON stream.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name,
                           structlog.stdlib.ExtraAdder(("peer", "problem", "status", "hint")),
                           *common],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    _scrubbed(renderer)]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    bad_requests = BadRequestFilter()
    for name in REQUEST_LOGGERS:
        request_logger = logging.getLogger(name)
        request_logger.filters[:] = [bad_requests]
    root.setLevel(logging.getLevelNamesMapping()[level.upper()])
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *common,
            structlog.processors.format_exc_info,
            _scrubbed(renderer),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
