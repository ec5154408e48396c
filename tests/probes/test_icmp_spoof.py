"""Spoofed, stray and mutated packets injected at the engine's socket in a namespace.

Each test runs the engine inside a namespace of its own whose kernel answers no ping:
a sniffer there reads each echo request the engine sends (id, sequence, cookie),
and raw sockets bound to the namespace's own addresses send crafted replies and ICMP
errors back to it. Nothing leaves the namespace; the routes are checked first.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from probes import Outcome, ProbeResult
from probes.icmp import IGNORE_REASONS, IcmpEngine, Mode
from tests.netns import NetNamespace, skip_unless_available
from tests.probes.mutate import mutants, no_ip_header
from tests.probes.packets import ipv6_header, with_checksum

pytestmark = skip_unless_available
OPEN_PING_GROUPS = "0 2147483647"
WITHIN = 2.0  # seconds a test waits for the engine to read what it injected


@dataclass(frozen=True)
class Family:
    v6: bool
    probed: str  # the target every test probes
    other: str  # another target, probed too
    stranger: str  # a local address never probed
    router: str  # sends the ICMP errors

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if self.v6 else socket.AF_INET

    @property
    def protocol(self) -> int:
        return socket.IPPROTO_ICMPV6 if self.v6 else socket.IPPROTO_ICMP

    @property
    def reply_type(self) -> int:
        return 129 if self.v6 else 0


V4 = Family(False, "127.0.0.1", "127.0.0.2", "127.0.0.9", "127.0.0.10")
V6 = Family(True, "::1", "2001:db8::2", "2001:db8::9", "2001:db8::10")


@dataclass(frozen=True)
class Request:
    """One echo request as the engine sent it."""

    source: str
    destination: str
    icmp: bytes
    ip_header: bytes  # IPv4 only: raw IPv4 reads carry it; IPv6 errors quote a made one

    @property
    def seq(self) -> int:
        return int(struct.unpack_from("!H", self.icmp, 6)[0])


class Lab:
    """The namespace, the engine in it, a sniffer of its requests and an injector."""

    def __init__(self, namespace: NetNamespace, net: Family, engine: IcmpEngine) -> None:
        self.namespace = namespace
        self.net = net
        self.engine = engine
        self.results: list[ProbeResult] = []
        with namespace.entered():
            self._sniffer = socket.socket(net.family, socket.SOCK_RAW, net.protocol)
        self._sniffer.setblocking(False)
        self._injectors: dict[str, socket.socket] = {}

    def close(self) -> None:
        self._sniffer.close()
        for injector in self._injectors.values():
            injector.close()

    async def send(self, target: str, address: str, within: float) -> Request:
        """Probe ``address`` with a ``within`` s timeout; return the request as sent."""
        with self.namespace.entered():  # the IPv6 socket opens on the first IPv6 send
            self.engine.send(target, address, within)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WITHIN
        while loop.time() < deadline:
            try:
                packet, (source, *_) = self._sniffer.recvfrom(65535)
            except BlockingIOError:
                await asyncio.sleep(0.001)
                continue
            header = b"" if self.net.v6 else packet[: (packet[0] & 0x0F) * 4]
            icmp = packet[len(header) :]
            if icmp[0] != (128 if self.net.v6 else 8):
                continue  # what this test injected, also read by the sniffer
            if self.net.v6:
                destination = address  # only probes to it are out
            else:
                destination = socket.inet_ntop(socket.AF_INET, header[16:20])
            assert destination == address
            return Request(source, destination, icmp, header)
        raise AssertionError(f"the sniffer saw no echo request to {address}")

    def inject(self, source: str, icmp: bytes, destination: str) -> None:
        """Send ``icmp`` from ``source`` to ``destination`` (the kernel adds the IP header;
        the IPv6 one also fills the ICMPv6 checksum)."""
        injector = self._injectors.get(source)
        if injector is None:
            with self.namespace.entered():
                injector = socket.socket(self.net.family, socket.SOCK_RAW, self.net.protocol)
            injector.bind((source, 0))
            self._injectors[source] = injector
        injector.sendto(icmp, (destination, 0))

    def reply(self, request: Request, *, source: str | None = None, edit: Edit = None) -> None:
        """The echo reply to ``request``, edited by ``edit``, from ``source``."""
        icmp = bytearray(request.icmp)
        icmp[0] = self.net.reply_type
        if edit is not None:
            edit(icmp)
        self.inject(source or request.destination, self.checksummed(bytes(icmp)), request.source)

    def error(self, request: Request, *, edit: Edit = None) -> None:
        """A host-unreachable error from the router quoting ``request`` (edited by ``edit``)."""
        quoted = bytearray(request.icmp)
        if edit is not None:
            edit(quoted)
        if self.net.v6:
            header = ipv6_header(request.source, request.destination, len(quoted))
            error = struct.pack("!BBHI", 1, 3, 0, 0) + header + quoted
        else:
            error = struct.pack("!BBHI", 3, 1, 0, 0) + request.ip_header + quoted
        self.inject(self.net.router, self.checksummed(error), request.source)

    def checksummed(self, icmp: bytes) -> bytes:
        return icmp if self.net.v6 else with_checksum(icmp)

    def on_result(self, result: ProbeResult) -> None:
        self.results.append(result)

    async def until(self, done: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WITHIN
        while not done():
            assert loop.time() < deadline, (self.results, self.engine.ignored)
            await asyncio.sleep(0.005)


Edit = Callable[[bytearray], None] | None


@contextmanager
def namespace_for(net: Family) -> Iterator[NetNamespace]:
    """A namespace that answers no ping, with ``net``'s addresses on its ``lo``."""
    with NetNamespace() as namespace:
        namespace.sysctl("net.ipv4.icmp_echo_ignore_all", "1")
        namespace.sysctl("net.ipv6.icmp.echo_ignore_all", "1")
        namespace.sysctl("net.ipv4.ping_group_range", OPEN_PING_GROUPS)
        if net.v6:
            for address in (net.other, net.stranger, net.router):
                namespace.ip("-6", "address", "add", f"{address}/128", "dev", "lo", "nodad")
        for address in (net.probed, net.other, net.stranger, net.router):
            assert namespace.route_device(address) == "lo"
        yield namespace


@pytest.fixture(params=[V4, V6], ids=["ipv4", "ipv6"])
def net(request: pytest.FixtureRequest) -> Family:
    family: Family = request.param
    return family


async def open_lab(net: Family, mode: Mode, namespace: NetNamespace) -> Lab:
    results: list[ProbeResult] = []
    engine = IcmpEngine(results.append, mode=mode)
    with namespace.entered():
        await engine.start()
    lab = Lab(namespace, net, engine)
    lab.results = results
    assert engine.mode == mode
    return lab


@pytest.fixture(params=["raw", "dgram"])
async def lab(request: pytest.FixtureRequest, net: Family) -> AsyncIterator[Lab]:
    with namespace_for(net) as namespace:
        lab = await open_lab(net, request.param, namespace)
        try:
            yield lab
        finally:
            lab.close()
            await lab.engine.close()


def set_seq(seq: int) -> Edit:
    def edit(icmp: bytearray) -> None:
        struct.pack_into("!H", icmp, 6, seq)

    return edit


def flip(offset: int) -> Edit:
    def edit(icmp: bytearray) -> None:
        icmp[offset] ^= 0x01

    return edit


async def test_spoofed_and_stray_replies_never_count(lab: Lab) -> None:
    net, engine = lab.net, lab.engine
    raw_v4 = engine.mode == "raw" and not net.v6
    expected: Counter[str] = Counter()

    async def counted(reason: str) -> None:
        expected[reason] += 1
        await lab.until(lambda: engine.ignored[reason] >= expected[reason])

    def outcomes() -> list[tuple[str, Outcome]]:
        return [(result.target, result.outcome) for result in lab.results]

    async def resolved(target: str, outcome: Outcome) -> None:
        await lab.until(lambda: (target, outcome) in outcomes())

    a1, a2, a3, a4, a5 = [await lab.send(f"a{n}", net.probed, 10.0) for n in range(1, 6)]
    b1 = await lab.send("b1", net.other, 10.0)

    lab.reply(a1)
    await resolved("a1", Outcome.REPLY)
    lab.reply(a1)
    await counted("duplicate")
    # a2's reply from the other target, and from an address never probed
    lab.reply(a2, source=net.other)
    await counted("wrong_source")
    lab.reply(a2, source=net.stranger)
    await counted("wrong_source")
    # a2's reply made to look like b1's: b1's address and sequence, a2's cookie
    lab.reply(a2, source=net.other, edit=set_seq(b1.seq))
    await counted("wrong_source")
    lab.reply(a3, edit=flip(9))  # the secret
    await counted("cookie")
    lab.reply(a3, edit=flip(12))  # the tag: it names no destination
    await counted("unmatched")
    lab.reply(a3, edit=set_seq((a1.seq + 30000) & 0xFFFF))  # never sent
    await counted("unmatched")
    if raw_v4:  # elsewhere the kernel drops bad checksums before any socket
        icmp = bytearray(reply_to(a3, net))
        icmp[2] ^= 0x01
        lab.inject(net.probed, bytes(icmp), a3.source)
        await counted("bad_checksum")
    # another echo id: a ping socket only gets its own, and a raw socket's kernel filter
    # drops it too (never read: the count at the end has nothing "foreign")
    lab.reply(a3, edit=flip(4))
    lab.error(a4)
    await resolved("a4", Outcome.UNREACHABLE)
    assert lab.results[-1].detail.endswith(f"from {net.router}")
    lab.error(a4)
    await counted("duplicate")
    lab.error(a5, edit=flip(9))  # an error quoting a secret that is not ours
    await counted("cookie")
    # stale: its timeout is reported, then its reply comes
    stale = await lab.send("stale", net.probed, 0.05)
    await resolved("stale", Outcome.TIMEOUT)
    lab.reply(stale)
    await counted("late")

    assert engine.received == 1
    for request in (a2, a3, a5, b1):  # none of them was taken by a spoof
        lab.reply(request)
    await lab.until(lambda: len(lab.results) == 7)
    assert sorted(outcomes()) == sorted(
        [
            ("a1", Outcome.REPLY),
            ("a4", Outcome.UNREACHABLE),
            ("stale", Outcome.TIMEOUT),
            ("a2", Outcome.REPLY),
            ("a3", Outcome.REPLY),
            ("a5", Outcome.REPLY),
            ("b1", Outcome.REPLY),
        ]
    )
    assert engine.received == 5
    await asyncio.sleep(0.05)  # nothing else comes in
    assert +engine.ignored == +expected
    assert set(engine.ignored) == set(IGNORE_REASONS)


def reply_to(request: Request, net: Family) -> bytes:
    return with_checksum(bytes([net.reply_type]) + request.icmp[1:])


@pytest.mark.parametrize("count", [3000])
async def test_every_packet_read_is_a_result_or_counted(net: Family, count: int) -> None:
    """Mutants of real replies and errors for pending probes, through the raw socket."""
    rng = random.Random(11)
    with namespace_for(net) as namespace:
        lab = await open_lab(net, "raw", namespace)
        try:
            requests = [await lab.send("a", net.probed, 30.0) for _ in range(10)]
            requests += [await lab.send("b", net.other, 30.0) for _ in range(10)]
            seeds = [reply_to(request, net) for request in requests]
            for request in requests[::4]:
                if net.v6:
                    header = ipv6_header(request.source, request.destination, 64)
                    seeds.append(struct.pack("!BBHI", 1, 3, 0, 0) + header + request.icmp)
                else:
                    seeds.append(
                        with_checksum(
                            struct.pack("!BBHI", 11, 0, 0, 0) + request.ip_header + request.icmp
                        )
                    )
            # Only types the socket's kernel filter passes, and a whole ICMP header, which
            # the filter needs: the kernel drops the rest before any read.
            passing = (129, 1, 3) if net.v6 else (0, 3, 11)
            packets = []
            for packet in mutants(rng, seeds, count, no_ip_header):
                data = bytearray(packet.ljust(8, b"\0"))
                if data[0] not in passing:
                    data[0] = rng.choice(passing)
                packets.append(lab.checksummed(bytes(data)) if rng.random() < 0.5 else bytes(data))
            # echo replies with another id: the socket's kernel filter drops them too
            ident = requests[0].icmp[4:6]
            kept = sum(1 for packet in packets if packet[0] != passing[0] or packet[4:6] == ident)
            sources = (net.probed, net.other, net.stranger, net.router)
            for number, packet in enumerate(packets):
                lab.inject(rng.choice(sources), packet, requests[0].source)
                if number % 200 == 0:
                    await asyncio.sleep(0)  # let the engine read: the buffer is finite
            engine = lab.engine

            def accounted() -> int:
                return len(lab.results) + engine.ignored.total()

            await lab.until(lambda: accounted() >= kept)
            await asyncio.sleep(0.1)
            assert accounted() == kept, (len(lab.results), engine.ignored)
            assert kept > count // 2  # the mutants are mostly errors and replies of ours
            assert all(result.outcome is not Outcome.TIMEOUT for result in lab.results)
            assert engine.received <= 20
        finally:
            lab.close()
            await lab.engine.close()
