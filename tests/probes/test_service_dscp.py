"""DSCP marking, checked on the wire: tcpdump captures each probe's first packet on
loopback and the test reads the IPv4 TOS / IPv6 traffic class byte it shows."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable

import pytest

from probes import ProbeResult, http, parse_dscp, sip, tcp, tos_byte
from probes.icmp import IcmpEngine
from tests.conftest import free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="tcpdump needs root to capture")

_BYTE = re.compile(r"\((?:tos|class) (0x[0-9a-f]+)")


async def captured_byte(bpf: str, send: Callable[[], Awaitable[object]]) -> int:
    """The TOS/traffic class of the first loopback packet matching ``bpf`` that ``send``
    makes, as tcpdump reads it."""
    binary = shutil.which("tcpdump")
    if binary is None:
        pytest.fail("tcpdump not found: run tests/run.sh, which installs it")
    proc = await asyncio.create_subprocess_exec(
        binary, "-i", "lo", "-n", "-v", "-l", "-c", "1", bpf,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stderr is not None
        # tcpdump says so once its filter is attached; only then is nothing missed
        line = await asyncio.wait_for(proc.stderr.readline(), 10)
        assert b"listening on lo" in line, line
        await send()
        out, err = await asyncio.wait_for(proc.communicate(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    match = _BYTE.search(out.decode())
    assert match is not None, (out + err).decode()
    return int(match.group(1), 16)


@pytest.mark.parametrize(("dscp", "tos"), [("EF", 0xB8), ("AF41", 0x88), ("CS5", 0xA0),
                                           ("AF11", 0x28), (0, 0)])
def test_names_map_to_the_tos_byte(dscp: str | int, tos: int) -> None:
    assert tos_byte(parse_dscp(dscp)) == tos


@pytest.mark.parametrize(("address", "dscp"), [("127.0.0.1", "AF41"), ("::1", "CS5"),
                                               ("127.0.0.1", 0)])
async def test_tcp_syn_carries_the_dscp(address: str, dscp: str | int) -> None:
    port = free_port()
    spec = tcp.TcpSpec.model_validate({"kind": "tcp", "port": port, "dscp": dscp})
    marked = await captured_byte(
        f"tcp dst port {port} and tcp[tcpflags] & tcp-syn != 0" if ":" not in address
        else f"ip6 and tcp dst port {port}",
        lambda: tcp.probe("s/tcp", address, 1.0, spec))
    assert marked == tos_byte(parse_dscp(dscp))


async def test_sip_over_udp_carries_ef_on_every_transmission() -> None:
    port = free_port()
    spec = sip.SipSpec.model_validate({"kind": "sip", "port": port, "dscp": "EF"})
    marked = await captured_byte(f"udp dst port {port}",
                                 lambda: sip.probe("s/sip", "127.0.0.1", 1.0, spec))
    assert marked == 0xB8


async def test_http_carries_the_dscp_through_aiohttp() -> None:
    port = free_port()
    spec = http.HttpSpec.model_validate(
        {"kind": "http", "url": f"http://127.0.0.1:{port}/", "dscp": "AF31"})
    marked = await captured_byte(f"tcp dst port {port}",
                                 lambda: http.probe("s/http", "127.0.0.1", 1.0, spec))
    assert marked == 0x68


async def test_icmp_echo_carries_the_site_dscp() -> None:
    results: list[ProbeResult] = []
    engine = IcmpEngine(results.append)
    await engine.start()
    address = "127.77.0.1"

    async def send() -> None:
        engine.send("s", address, 1.0, tos=0x88)  # type: ignore[call-arg]
        deadline = time.monotonic() + 2
        while not results and time.monotonic() < deadline:  # noqa: ASYNC110 - the engine calls back
            await asyncio.sleep(0.01)

    try:
        marked = await captured_byte(f"icmp and dst host {address}", send)
    finally:
        await engine.close()
    assert marked == 0x88
