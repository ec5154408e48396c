"""Per-send TOS / traffic class, read back from the packets on the wire.

The engine runs in a namespace of the test's own; a packet socket on that namespace's
``lo`` captures each echo request as it leaves, and the test reads its IPv4 TOS byte
or IPv6 traffic class. Replies still match: the TOS never touches the matching.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from probes import Outcome, ProbeResult
from probes.icmp import IcmpEngine, Mode
from tests.netns import NetNamespace, skip_unless_available

pytestmark = skip_unless_available
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
ETHERNET_HEADER = 14
# best effort, EF (DSCP 46, voice), AF41 (DSCP 34, interactive video)
TOS_VALUES = (0, 0xB8, 0x88)


@pytest.fixture
def namespace() -> Iterator[NetNamespace]:
    with NetNamespace() as namespace:
        namespace.sysctl("net.ipv4.ping_group_range", "0 2147483647")
        for address in ("127.0.0.1", "::1"):
            assert namespace.route_device(address) == "lo"
        yield namespace


def sent_requests(capture: socket.socket) -> dict[int, int]:
    """``{sequence: TOS or traffic class}`` of the echo requests captured leaving ``lo``."""
    found = {}
    for _ in range(10_000):
        try:
            frame, (_, _, kind, *_) = capture.recvfrom(65535)
        except BlockingIOError:
            break
        if kind != PACKET_OUTGOING:
            continue  # lo shows each packet leaving and arriving
        ip = frame[ETHERNET_HEADER:]
        if ip[0] >> 4 == 4 and ip[9] == socket.IPPROTO_ICMP:
            icmp = ip[(ip[0] & 0x0F) * 4 :]
            tos = ip[1]
        elif ip[0] >> 4 == 6 and ip[6] == socket.IPPROTO_ICMPV6:
            icmp = ip[40:]
            tos = (ip[0] & 0x0F) << 4 | ip[1] >> 4
        else:
            continue
        if icmp[0] in (8, 128):
            found[int.from_bytes(icmp[6:8], "big")] = tos
    return found


@pytest.mark.parametrize("mode", ["raw", "dgram"])
@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
async def test_each_send_carries_its_own_tos(
    namespace: NetNamespace, mode: Mode, address: str
) -> None:
    # interleaved, so each packet's TOS is its own, not the last one set
    wanted = [tos for _ in range(3) for tos in TOS_VALUES]
    results: list[ProbeResult] = []
    all_in = asyncio.Event()

    def on_result(result: ProbeResult) -> None:
        results.append(result)
        if len(results) == len(wanted):
            all_in.set()

    engine = IcmpEngine(on_result, mode=mode)
    with namespace.entered():
        capture = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        await engine.start()
    try:
        capture.bind(("lo", 0))
        capture.setblocking(False)
        with namespace.entered():  # the IPv6 socket opens on the first IPv6 send
            for tos in wanted:
                engine.send("site", address, 1.0, tos=tos)
        await asyncio.wait_for(all_in.wait(), 2.0)
        seen = sent_requests(capture)
    finally:
        capture.close()
        await engine.close()
    assert [result.outcome for result in results] == [Outcome.REPLY] * len(wanted)
    assert [seen.get(result.seq) for result in results] == wanted


async def test_tos_out_of_range(namespace: NetNamespace) -> None:
    engine = IcmpEngine(lambda result: None, mode="raw")
    with namespace.entered():
        await engine.start()
    try:
        for tos in (-1, 256):
            with pytest.raises(ValueError, match="tos must be between 0 and 255"):
                engine.send("site", "127.0.0.1", 1.0, tos=tos)
        assert engine.sent == 0
    finally:
        await engine.close()
