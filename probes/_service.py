"""What the service probes (tcp, tls, sip, http) share: DSCP marking, the settings every
kind has, and how a failed connection reads.

A service probe is one coroutine, ``probe(target, address, timeout, spec)``, that
resolves to exactly one ``ProbeResult``: it never raises for anything the network or
the far end does.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict

from probes._result import Outcome, ProbeResult

# RFC 2474 class selectors, RFC 2597 assured forwarding, RFC 3246 expedited forwarding:
# the names network teams use in QoS policies (video is usually AF41, voice EF).
DSCP_NAMES: dict[str, int] = {
    **{f"CS{n}": n << 3 for n in range(8)},
    **{f"AF{c}{d}": (c << 3) | (d << 1) for c in range(1, 5) for d in range(1, 4)},
    "EF": 46,
}

# The well-known ports of the services a conference endpoint runs.
PORT_NAMES: dict[str, int] = {"sip": 5060, "sip-tls": 5061, "h323": 1720, "https": 443,
                              "http": 80}

# errnos of a connect() that the network refused to carry: an ICMP unreachable came
# back, or the local routing table has no usable route ("unreachable"/"prohibit").
_UNREACHABLE = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN,
                          errno.ENETDOWN, errno.EACCES, errno.EPERM})


def parse_dscp(value: object) -> int:
    """A DSCP from a name (``EF``, ``AF41``, ``CS5``, any case) or a number 0..63."""
    if isinstance(value, str):
        code = DSCP_NAMES.get(value.strip().upper())
        if code is None:
            raise ValueError(
                f'"{value}" is not a DSCP name; use EF, AF11..AF43, CS0..CS7 or a number 0..63')
        return code
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 63:
        return value
    raise ValueError(
        f"{value!r} is not a DSCP; use a name (EF, AF41, CS5) or a number 0..63 "
        "(the six high bits of the IPv4 TOS / IPv6 traffic class byte)")


def parse_port(value: object) -> int:
    """A port number 1..65535, or a service name from ``PORT_NAMES``."""
    if isinstance(value, str):
        port = PORT_NAMES.get(value.strip().lower())
        if port is None:
            raise ValueError(f'"{value}" is not a known service; use a number 1..65535 or one of '
                             f"{', '.join(PORT_NAMES)}")
        return port
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
        return value
    raise ValueError(f"{value!r} is not a port; use a number 1..65535 or a service name "
                     f"({', '.join(PORT_NAMES)})")


def tos_byte(dscp: int) -> int:
    """The IPv4 TOS / IPv6 traffic class byte for ``dscp`` (ECN bits left 0)."""
    return dscp << 2


def mark(sock: socket.socket, tos: int) -> None:
    """Set the TOS (IPv4) or traffic class (IPv6) of everything ``sock`` sends."""
    if tos:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tos)
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)


Dscp = Annotated[int, BeforeValidator(parse_dscp)]
Port = Annotated[int, BeforeValidator(parse_port)]


class ServiceSpec(BaseModel):
    """What every service probe reads from its ``probes:`` entry; kinds add their own
    (``port`` with the kind's default port, or none where no single port is right)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    kind: str
    # None until the config fills in the site's own dscp
    dscp: Dscp | None = None

    @property
    def tos(self) -> int:
        return tos_byte(self.dscp or 0)

    def host(self, site_address: str) -> str:
        """The host this probe goes to: the site's address unless the kind names another."""
        return site_address


class EchoSpec(ServiceSpec):
    """An ICMP echo probe in ``probes:``: the site pinged a second time on its own
    schedule and DSCP, to compare marked and unmarked loss and RTT."""


S = TypeVar("S", bound=ServiceSpec)
ProbeFn = Callable[[str, str, float, S], Awaitable[ProbeResult]]


@dataclass(frozen=True, slots=True)
class ProbeKind(Generic[S]):
    """One entry of ``probes.KINDS``: a kind's settings and how it probes.

    ``probe`` runs one probe of a service; ``engine`` is set for packet engines that can
    also be a site's continuous probe (``kind:`` in ``defaults``); a kind has one or both.
    ``stream`` is set instead for kinds that send a stream of test packets per probe
    (``twamp``): its results are streams, not single ``ProbeResult``s.
    """

    settings: type[S]
    probe: ProbeFn[S] | None = None
    engine: type[Any] | None = None
    stream: type[Any] | None = None


class Attempt:
    """The clock and identity of one probe, turned into its result at the end."""

    __slots__ = ("address", "sent_at", "started", "target")

    def __init__(self, target: str, address: str) -> None:
        self.target = target
        self.address = address
        self.sent_at = time.time()
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def result(self, outcome: Outcome, rtt: float | None = None, detail: str = "",
               values: Mapping[str, float | str] | None = None) -> ProbeResult:
        return ProbeResult(self.target, self.address, 0, self.sent_at, outcome,
                           rtt if outcome is Outcome.REPLY else None, detail, values)

    def failed(self, exc: BaseException, what: str) -> ProbeResult:
        """The result of a connection or exchange that ended in ``exc``."""
        outcome, why = connection_outcome(exc)
        return self.result(outcome, detail=f"{what}: {why}")


def connection_outcome(exc: BaseException) -> tuple[Outcome, str]:
    """Refused, timed out, unreachable, or another error, from what a socket call raised."""
    if isinstance(exc, TimeoutError):
        return Outcome.TIMEOUT, "no answer before the timeout"
    if isinstance(exc, ConnectionRefusedError):
        return Outcome.REFUSED, "connection refused (nothing listens on the port)"
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE:
        return Outcome.UNREACHABLE, exc.strerror or str(exc)
    if isinstance(exc, OSError):
        return Outcome.SEND_ERROR, exc.strerror or str(exc) or type(exc).__name__
    return Outcome.FAILED, str(exc) or type(exc).__name__


def socket_for(address: str, kind: socket.SocketKind,
               tos: int) -> tuple[socket.socket, tuple[Any, ...]]:
    """A non-blocking socket marked with ``tos``, and the socket address of ``address``."""
    info = socket.getaddrinfo(address, 0, type=kind, flags=socket.AI_NUMERICHOST)[0]
    sock = socket.socket(info[0], kind)
    try:
        sock.setblocking(False)
        mark(sock, tos)
    except OSError:
        sock.close()
        raise
    return sock, info[4]


async def connect(address: str, port: int, tos: int) -> socket.socket:
    """A TCP connection to ``address``:``port`` whose packets carry ``tos`` from the SYN on.

    ``address`` is an IP literal; the caller bounds the time with ``asyncio.timeout``.
    """
    sock, sockaddr = socket_for(address, socket.SOCK_STREAM, tos)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (sockaddr[0], port, *sockaddr[2:]))
    except BaseException:
        sock.close()
        raise
    return sock


def client_context(ca_file: str | None) -> ssl.SSLContext:
    """A context that verifies chain and name against ``ca_file`` (None: the system's CAs).

    Raises ValueError naming the file when it cannot be loaded.
    """
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load ca_file {ca_file}: {exc}; check the path, its "
                         "permissions and that it is a PEM file") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def host_in_uri(address: str) -> str:
    """``address`` as the host part of a URI: IPv6 literals in brackets (RFC 3986)."""
    return f"[{address}]" if ":" in address else address
