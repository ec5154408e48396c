"""HTTP probes: status and latency of an endpoint's web interface or an MCU's health URL.

A status below 400 is an answer (redirects are not followed: a login page's 302 means
the web server is alive); 4xx and 5xx are failures with their code reported.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import TYPE_CHECKING

from pydantic import field_validator
from yarl import URL

from probes._result import Outcome, ProbeResult
from probes._service import (
    PORT_NAMES,
    Attempt,
    Port,
    ServiceSpec,
    client_context,
    host_in_uri,
    mark,
)

if TYPE_CHECKING:
    from aiohappyeyeballs import AddrInfoType


class HttpSpec(ServiceSpec):
    port: Port = PORT_NAMES["https"]
    # an absolute http:// or https:// URL, fetched as written; none: https://<address>:<port>/
    url: str | None = None
    # as for tls: the CAs to trust (none: the system's), and whether to verify at all
    ca_file: str | None = None
    verify: bool = True

    @field_validator("url")
    @classmethod
    def _absolute(cls, url: str | None) -> str | None:
        if url is not None:
            parsed = URL(url)
            if parsed.scheme not in ("http", "https") or not parsed.host:
                raise ValueError(f'"{url}" is not an http:// or https:// URL with a host; '
                                 "write e.g. https://10.0.0.5/api/health")
        return url

    def host(self, site_address: str) -> str:
        return URL(self.url).host or site_address if self.url else site_address

    def url_for(self, address: str) -> str:
        return self.url or f"https://{host_in_uri(address)}:{self.port}/"


async def probe(target: str, address: str, timeout: float, spec: HttpSpec) -> ProbeResult:  # noqa: ASYNC109 - the probe's own time budget, as every kind takes it
    """GET the URL; RTT is the time to the response's status line and headers."""
    # imported here: reading an inventory (a child process, at every start and reload)
    # needs HttpSpec, not the client's 70 ms of imports
    import aiohttp

    attempt = Attempt(target, address)
    url = spec.url_for(address)

    def marked_socket(info: AddrInfoType) -> socket.socket:
        sock = socket.socket(info[0], info[1], info[2])
        mark(sock, spec.tos)
        return sock

    verify: ssl.SSLContext | bool = False
    if spec.verify:
        try:
            verify = client_context(spec.ca_file)
        except ValueError as exc:
            return attempt.result(Outcome.FAILED, detail=str(exc))
    connector = aiohttp.TCPConnector(ssl=verify, force_close=True, socket_factory=marked_socket)
    try:
        async with (
            asyncio.timeout(timeout),
            aiohttp.ClientSession(connector=connector) as session,
            session.get(url, allow_redirects=False) as response,
        ):
            status = response.status
            elapsed = attempt.elapsed()
    except aiohttp.ClientConnectorCertificateError as exc:
        return attempt.result(Outcome.FAILED, detail=f"GET {url}: certificate rejected: "
                              f"{exc.certificate_error}", values={"reason": "cert_invalid"})
    except aiohttp.ClientConnectorError as exc:
        return attempt.failed(exc.os_error, f"GET {url}")
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return attempt.failed(exc, f"GET {url}")
    values: dict[str, float | str] = {"status_code": status}
    if status >= 400:
        values["reason"] = "http_status"
        return attempt.result(Outcome.FAILED, detail=f"GET {url}: HTTP {status}", values=values)
    return attempt.result(Outcome.REPLY, elapsed, f"HTTP {status}", values)
