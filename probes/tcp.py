"""TCP connect probes: is anything listening on the service's port, and how fast does it
accept? Refused (a reset: the host is up, nothing listens), timed out (the SYN or its
answer went missing) and unreachable (an ICMP error, or no route) are told apart.
"""

from __future__ import annotations

import asyncio

from probes._result import Outcome, ProbeResult
from probes._service import Attempt, Port, ServiceSpec, connect


class TcpSpec(ServiceSpec):
    # no default: H.323 (1720), SIP (5060) and HTTPS (443) are all "the" port of some
    # endpoint; write it, by number or name
    port: Port


async def probe(target: str, address: str, timeout: float, spec: TcpSpec) -> ProbeResult:  # noqa: ASYNC109 - the probe's own time budget, as every kind takes it
    """Connect to ``address``:``spec.port``; the result's RTT is the connect time."""
    attempt = Attempt(target, address)
    try:
        async with asyncio.timeout(timeout):
            sock = await connect(address, spec.port, spec.tos)
    except (OSError, TimeoutError) as exc:
        return attempt.failed(exc, f"TCP port {spec.port}")
    elapsed = attempt.elapsed()
    sock.close()
    return attempt.result(Outcome.REPLY, elapsed)
