"""SIP OPTIONS probes (RFC 3261 §11): is the endpoint's SIP stack answering?

Any final response (200, but also 405, 403, 404, 503 …) comes from a live SIP stack
and counts as an answer; its code is reported. Over UDP the request is retransmitted
as a non-INVITE client transaction does (§17.1.2.2): after T1 = 500 ms, doubling up
to T2 = 4 s, and every T2 once a provisional response came, all within the probe's
timeout (Timer F, 64·T1, is longer than any probe timeout).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from probes._result import Outcome, ProbeResult
from probes._service import (
    PORT_NAMES,
    Attempt,
    Port,
    ServiceSpec,
    connect,
    host_in_uri,
    socket_for,
)

T1 = 0.5
T2 = 4.0
# RFC 3261 §8.1.1.7: a branch that starts with the magic cookie marks an RFC 3261 client
MAGIC_COOKIE = "z9hG4bK"
_MAX_MESSAGE = 65535
_STATUS_LINE = re.compile(rb"SIP/2\.0 ([1-6]\d\d) ([^\r\n]*)")
# compact forms (§7.3.3) of the headers a response is matched on
_COMPACT = {"v": "via", "i": "call-id"}


class SipSpec(ServiceSpec):
    port: Port = PORT_NAMES["sip"]
    transport: Literal["udp", "tcp"] = "udp"


@dataclass(frozen=True, slots=True)
class Request:
    """One OPTIONS request and what its responses must echo."""

    data: bytes
    branch: str
    call_id: str


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    reason: str
    headers: Mapping[str, str]  # lowercase full names; the first of repeated headers

    def answers(self, request: Request) -> bool:
        # §17.1.3: the top Via's branch and the CSeq method match the transaction
        via, cseq = self.headers.get("via", ""), self.headers.get("cseq", "")
        return (f"branch={request.branch}" in via and cseq.split()[-1:] == ["OPTIONS"]
                and self.headers.get("call-id") == request.call_id)


def options_request(address: str, port: int, transport: str,
                    local: tuple[str, int]) -> Request:
    """An OPTIONS request to ``address``:``port`` from the socket bound at ``local``."""
    host, here = host_in_uri(address), f"{host_in_uri(local[0])}:{local[1]}"
    branch = MAGIC_COOKIE + secrets.token_hex(8)
    call_id = f"{secrets.token_hex(12)}@{host_in_uri(local[0])}"
    param = "" if transport == "udp" else f";transport={transport}"
    lines = [
        f"OPTIONS sip:{host}:{port}{param} SIP/2.0",
        # rport (RFC 3581): answer to the port we sent from, through NAT too
        f"Via: SIP/2.0/{transport.upper()} {here};rport;branch={branch}",
        "Max-Forwards: 70",
        f"From: <sip:vcmon@{host_in_uri(local[0])}>;tag={secrets.token_hex(6)}",
        f"To: <sip:{host}:{port}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 OPTIONS",
        f"Contact: <sip:vcmon@{here}{param}>",
        "Accept: application/sdp",
        "User-Agent: vcmon",
        "Content-Length: 0",
    ]
    return Request(("\r\n".join(lines) + "\r\n\r\n").encode(), branch, call_id)


def parse_response(data: bytes) -> tuple[Response, int] | None:
    """The first response in ``data`` and the bytes it takes; None until it is whole."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = data[:end].split(b"\r\n")
    match = _STATUS_LINE.fullmatch(head[0])
    if match is None:
        raise ValueError(f"not a SIP response: {head[0][:60]!r}")
    headers: dict[str, str] = {}
    for line in head[1:]:
        name, colon, value = line.decode("utf-8", "replace").partition(":")
        if colon:
            key = name.strip().lower()
            headers.setdefault(_COMPACT.get(key, key), value.strip())
    length = int(headers.get("content-length", headers.get("l", "0")) or 0)
    if len(data) < end + 4 + length:
        return None
    response = Response(int(match.group(1)), match.group(2).decode("utf-8", "replace"), headers)
    return response, end + 4 + length


async def probe(target: str, address: str, timeout: float, spec: SipSpec) -> ProbeResult:  # noqa: ASYNC109 - the probe's own time budget, as every kind takes it
    """Send OPTIONS; RTT is the time from the first transmission to the final response."""
    attempt = Attempt(target, address)
    what = f"SIP OPTIONS over {spec.transport.upper()} port {spec.port}"
    sent = [0]  # transmissions so far, also known when the timeout cuts them short
    try:
        async with asyncio.timeout(timeout):
            if spec.transport == "udp":
                response = await _over_udp(address, spec, sent)
            else:
                response = await _over_tcp(address, spec)
    except TimeoutError as exc:
        result = attempt.failed(exc, what)
        return attempt.result(result.outcome, detail=f"{result.detail} ({sent[0]} sent)")
    except OSError as exc:
        return attempt.failed(exc, what)
    except ValueError as exc:
        return attempt.result(Outcome.FAILED, detail=f"{what}: {exc}",
                              values={"reason": "sip_protocol"})
    values: dict[str, float | str] = {"status_code": response.status}
    if sent[0]:
        values["retransmissions"] = sent[0] - 1
    return attempt.result(Outcome.REPLY, attempt.elapsed(),
                          f"{response.status} {response.reason}", values)


async def _over_udp(address: str, spec: SipSpec, sent: list[int]) -> Response:
    loop = asyncio.get_running_loop()
    sock, sockaddr = socket_for(address, socket.SOCK_DGRAM, spec.tos)
    with sock:
        # connected: the local address goes into Via, and an ICMP port unreachable
        # comes back as ECONNREFUSED (nothing listens) instead of a silent timeout
        await loop.sock_connect(sock, (sockaddr[0], spec.port, *sockaddr[2:]))
        request = options_request(address, spec.port, "udp", sock.getsockname()[:2])
        wait, provisional = T1, False
        while True:  # ended by the caller's timeout
            await loop.sock_sendall(sock, request.data)
            sent[0] += 1
            deadline = time.perf_counter() + wait
            while (left := deadline - time.perf_counter()) > 0:
                try:
                    async with asyncio.timeout(left):
                        data = await loop.sock_recv(sock, _MAX_MESSAGE)
                except TimeoutError:
                    break
                parsed = parse_response(data)
                if parsed is None or not parsed[0].answers(request):
                    continue  # a stray or stale datagram: not ours
                if parsed[0].status >= 200:
                    return parsed[0]
                provisional = True
            # §17.1.2.2: Timer E doubles up to T2; after a provisional response, T2
            wait = T2 if provisional else min(2 * wait, T2)


async def _over_tcp(address: str, spec: SipSpec) -> Response:
    loop = asyncio.get_running_loop()
    with await connect(address, spec.port, spec.tos) as sock:
        request = options_request(address, spec.port, "tcp", sock.getsockname()[:2])
        await loop.sock_sendall(sock, request.data)
        buffer = b""
        while len(buffer) < _MAX_MESSAGE:
            chunk = await loop.sock_recv(sock, _MAX_MESSAGE)
            if not chunk:
                raise ValueError("the connection closed before a final response")
            buffer += chunk
            while (parsed := parse_response(buffer)) is not None:
                response, used = parsed
                buffer = buffer[used:]
                if response.status >= 200 and response.answers(request):
                    return response
        raise ValueError("no final response within 64 KiB")
