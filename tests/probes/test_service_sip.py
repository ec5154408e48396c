"""SIP OPTIONS probes: the request against RFC 3261's grammar, answers from a real sipp
UAS over UDP and TCP, and UDP retransmission timing against a peer that drops requests."""

from __future__ import annotations

import asyncio
import errno
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import pytest

from probes import Outcome, sip
from probes.sip import T1
from tests.conftest import free_port, stop_process
from tests.probes.peers import port_of, tcp_peer

SCENARIO = Path(__file__).parent / "sipp" / "options-uas.xml"

# RFC 3261 §25.1: Request-Line and message-header, as far as an OPTIONS request uses them
TOKEN = r"[A-Za-z0-9.!%*_+`'~-]+"
REQUEST_LINE = re.compile(r"OPTIONS sip:(\[[0-9a-f:]+\]|[0-9.]+):(\d+)(;transport=tcp)? SIP/2\.0")
HEADER = re.compile(rf"({TOKEN})[ \t]*:[ \t]*(\S.*)")
VIA = re.compile(rf"SIP/2\.0/(UDP|TCP) (\[[0-9a-f:]+\]|[0-9.]+):(\d+);rport;branch=({TOKEN})")
NAME_ADDR_TAG = re.compile(rf"<sip:[^>]+>;tag=({TOKEN})")


def spec(port: int, transport: str = "udp", dscp: int = 0) -> sip.SipSpec:
    return sip.SipSpec.model_validate(
        {"kind": "sip", "port": port, "transport": transport, "dscp": dscp})


@pytest.mark.parametrize(("address", "transport", "local"), [
    ("192.0.2.7", "udp", ("198.51.100.2", 40123)),
    ("2001:db8::7", "tcp", ("2001:db8::2", 40124)),
])
def test_the_request_follows_rfc_3261(address: str, transport: str,
                                      local: tuple[str, int]) -> None:
    request = sip.options_request(address, 5060, transport, local)
    text = request.data.decode("ascii")
    head, _, body = text.partition("\r\n\r\n")
    assert body == "" and "\n" not in head.replace("\r\n", "")  # CRLF only (§7)
    request_line, *lines = head.split("\r\n")
    line = REQUEST_LINE.fullmatch(request_line)
    assert line is not None, request_line
    assert line.group(1).strip("[]") == address and line.group(2) == "5060"
    assert (line.group(3) is not None) == (transport == "tcp")
    headers: dict[str, str] = {}
    for each in lines:
        match = HEADER.fullmatch(each)
        assert match is not None, each
        assert match.group(1).lower() not in headers, f"{match.group(1)} twice"
        headers[match.group(1).lower()] = match.group(2)
    # §8.1.1: the headers every request must have
    assert {"to", "from", "cseq", "call-id", "max-forwards", "via"} <= headers.keys()
    via = VIA.fullmatch(headers["via"])
    assert via is not None, headers["via"]
    assert via.group(1) == transport.upper()
    assert (via.group(2).strip("[]"), int(via.group(3))) == local
    assert via.group(4) == request.branch and request.branch.startswith("z9hG4bK")
    assert len(request.branch) > len("z9hG4bK") + 8  # unique per request (§8.1.1.7)
    assert NAME_ADDR_TAG.fullmatch(headers["from"]) is not None
    assert ";tag=" not in headers["to"]  # outside a dialog, To has no tag (§8.1.1.2)
    assert headers["cseq"] == "1 OPTIONS"
    assert headers["call-id"] == request.call_id and "@" in request.call_id
    assert headers["max-forwards"] == "70"
    assert headers["content-length"] == "0"
    again = sip.options_request(address, 5060, transport, local)
    assert (again.branch, again.call_id) != (request.branch, request.call_id)


def bound(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


@contextmanager
def sipp_uas(transport: str, status: int, tmp_path: Path) -> Iterator[int]:
    """A real sipp answering OPTIONS with ``status`` on a loopback port."""
    binary = shutil.which("sipp")
    if binary is None:
        pytest.fail("sipp not found: run tests/run.sh, which installs Debian's sip-tester")
    scenario = tmp_path / f"uas-{status}.xml"
    scenario.write_text(SCENARIO.read_text().replace("SIP/2.0 200 OK", f"SIP/2.0 {status} X"))
    port = free_port()
    mode = {"udp": "u1", "tcp": "t1"}[transport]
    proc = subprocess.Popen(
        [binary, "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port), "-t", mode,
         "-nostdin", "-timeout", "60s"],
        cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    try:
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        deadline = time.monotonic() + 10
        while not bound(port, kind):
            if proc.poll() is not None or time.monotonic() > deadline:
                assert proc.stderr is not None
                pytest.fail(f"sipp did not start: {proc.stderr.read().decode()[-500:]}")
            time.sleep(0.02)
        yield port
    finally:
        stop_process(proc)
        assert proc.stderr is not None
        proc.stderr.close()


@pytest.mark.parametrize(("transport", "status"), [("udp", 200), ("tcp", 200), ("udp", 405)])
async def test_sipp_answers_and_any_final_response_means_alive(
        transport: str, status: int, tmp_path: Path) -> None:
    with sipp_uas(transport, status, tmp_path) as port:
        result = await sip.probe("s/sip", "127.0.0.1", 2.0, spec(port, transport))
    assert result.outcome is Outcome.REPLY, result.detail
    assert (result.values or {})["status_code"] == status
    assert result.detail.startswith(str(status))
    assert (result.values or {}).get("retransmissions", 0) == 0  # UDP: none needed
    assert result.rtt is not None and 0 < result.rtt < T1


class DroppingPeer(asyncio.DatagramProtocol):
    """Drops the first ``drop`` requests, then answers 100 Trying and, ``delay`` s later,
    200 — or, with ``stray``, a 200 for another transaction only."""

    def __init__(self, drop: int, delay: float = 0.0, stray: bool = False) -> None:
        self.drop, self.delay, self.stray = drop, delay, stray
        self.arrivals: list[float] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.arrivals.append(time.monotonic())
        if len(self.arrivals) <= self.drop:
            return
        text = data.decode()
        echoed = [line for line in text.split("\r\n")
                  if line.split(":")[0] in ("Via", "From", "To", "Call-ID", "CSeq")]
        if self.stray:
            echoed = [line.replace("branch=z9hG4bK", "branch=z9hG4bKother") for line in echoed]

        def answer(status: str) -> None:
            assert self.transport is not None
            message = "\r\n".join([f"SIP/2.0 {status}", *echoed, "Content-Length: 0", "", ""])
            self.transport.sendto(message.encode(), addr)

        answer("100 Trying")
        asyncio.get_running_loop().call_later(self.delay, answer, "200 OK")


async def peer(protocol: DroppingPeer) -> tuple[asyncio.DatagramTransport, int]:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: protocol, local_addr=("127.0.0.1", 0))
    return transport, transport.get_extra_info("sockname")[1]


async def test_udp_retransmits_after_t1_doubling() -> None:
    protocol = DroppingPeer(drop=2)
    transport, port = await peer(protocol)
    try:
        result = await sip.probe("s/sip", "127.0.0.1", 3.0, spec(port))
    finally:
        transport.close()
    assert result.outcome is Outcome.REPLY, result.detail
    assert (result.values or {})["retransmissions"] == 2
    gaps = [b - a for a, b in zip(protocol.arrivals, protocol.arrivals[1:], strict=False)]
    # Timer E: T1 = 500 ms, then 1 s (a loaded machine may add some, never less)
    assert len(gaps) == 2 and 0.5 <= gaps[0] < 0.9 and 1.0 <= gaps[1] < 1.4, gaps
    assert result.rtt is not None and 1.5 <= result.rtt < 2.3


async def test_a_provisional_response_waits_for_the_final_one() -> None:
    protocol = DroppingPeer(drop=0, delay=1.7)
    transport, port = await peer(protocol)
    try:
        result = await sip.probe("s/sip", "127.0.0.1", 3.0, spec(port))
    finally:
        transport.close()
    assert result.outcome is Outcome.REPLY and (result.values or {})["status_code"] == 200
    # §17.1.2.2: in Proceeding, Timer E still fires when due (0.5 s) and is then reset
    # to T2 (4 s): two transmissions, not the three of Trying (0, 0.5, 1.5 s)
    assert len(protocol.arrivals) == 2
    assert result.rtt is not None and 1.7 <= result.rtt < 2.4


async def test_answers_to_another_transaction_are_ignored_until_the_timeout() -> None:
    protocol = DroppingPeer(drop=0, stray=True)
    transport, port = await peer(protocol)
    try:
        result = await sip.probe("s/sip", "127.0.0.1", 1.0, spec(port))
    finally:
        transport.close()
    assert result.outcome is Outcome.TIMEOUT
    # sent at 0 and 0.5 s; the timeout cuts the third
    assert result.detail.endswith("(2 sent)") and len(protocol.arrivals) == 2


async def test_nothing_listening_on_udp_is_refused_by_the_port_unreachable() -> None:
    result = await sip.probe("s/sip", "127.0.0.1", 2.0, spec(free_port()))
    assert result.outcome is Outcome.REFUSED, result.detail


async def test_a_peer_that_does_not_speak_sip_is_a_protocol_failure() -> None:
    web = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
    async with await tcp_peer(reply=web) as server:
        result = await sip.probe("s/sip", "127.0.0.1", 2.0, spec(port_of(server), "tcp"))
    assert result.outcome is Outcome.FAILED
    assert (result.values or {})["reason"] == "sip_protocol"
    assert "not a SIP response" in result.detail
