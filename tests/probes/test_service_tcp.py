"""TCP probes against real sockets: accepted, refused, dropped and unreachable told apart."""

from __future__ import annotations

import asyncio

import pytest

from probes import Outcome, ProbeResult, tcp
from tests import netns
from tests.conftest import free_port
from tests.probes.peers import port_of, tcp_peer


def spec(port: int | str, dscp: int = 0) -> tcp.TcpSpec:
    return tcp.TcpSpec.model_validate({"kind": "tcp", "port": port, "dscp": dscp})


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_an_open_port_answers_with_its_connect_time(host: str) -> None:
    async with await tcp_peer(host) as server:
        result = await tcp.probe("site/h323", host, 1.0, spec(port_of(server)))
    assert result.outcome is Outcome.REPLY, result.detail
    assert result.target == "site/h323" and result.address == host
    assert result.rtt is not None and 0 < result.rtt < 0.5


async def test_a_closed_port_is_refused_at_once() -> None:
    result = await tcp.probe("site/h323", "127.0.0.1", 2.0, spec(free_port()))
    assert result.outcome is Outcome.REFUSED
    assert "refused" in result.detail and result.rtt is None


def test_port_names_are_the_services_default_ports() -> None:
    assert [spec(name).port for name in ("sip", "sip-tls", "h323", "https")] == [
        5060, 5061, 1720, 443]


@netns.skip_unless_available
def test_dropped_unreachable_and_refused_are_told_apart() -> None:
    # Here: its own namespace, joined by a veth to a peer that does not forward, so
    # SYNs routed through the peer vanish; a route of type unreachable; the peer's own
    # address, where nothing listens.
    with netns.NetNamespace() as here, netns.NetNamespace() as peer:
        here.link(peer, "198.18.199.1/30", "198.18.199.2/30")
        here.ip("route", "add", "198.18.200.0/24", "via", "198.18.199.2")
        here.ip("route", "add", "unreachable", "198.18.201.0/24")
        peer.sysctl("net.ipv4.ip_forward", "0")
        # the route is the test's own before the first packet
        assert here.route_device("198.18.200.9") == here.route_device("198.18.199.2")
        assert here.route_device("198.18.199.2").startswith("v")
        with here.entered():
            dropped, unreachable, refused = asyncio.run(_three_probes())
    assert dropped.outcome is Outcome.TIMEOUT, dropped.detail
    assert unreachable.outcome is Outcome.UNREACHABLE, unreachable.detail
    assert "No route to host" in unreachable.detail
    assert refused.outcome is Outcome.REFUSED, refused.detail


async def _three_probes() -> list[ProbeResult]:
    return list(await asyncio.gather(
        tcp.probe("s/dropped", "198.18.200.9", 0.5, spec(1720)),
        tcp.probe("s/unreachable", "198.18.201.9", 0.5, spec(1720)),
        tcp.probe("s/refused", "198.18.199.2", 0.5, spec(1720))))


def test_an_address_that_is_no_ip_literal_is_a_send_error_not_a_crash() -> None:
    result = asyncio.run(tcp.probe("s/x", "not-an-ip", 0.5, spec(1720)))
    assert result.outcome is Outcome.SEND_ERROR
