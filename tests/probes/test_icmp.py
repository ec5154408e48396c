"""The ICMP engine against real sockets and real packets.

Packets go only to 127.0.0.0/8 and ::1 on this host, or to addresses inside network
namespaces the test creates (see tests/netns.py); every test checks the route with
``ip route get`` before its first packet.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import icmplib
import pytest

import probes.icmp
from monitor.lab.profiles import Profile
from monitor.lab.responder import Responder
from monitor.lab.state import LabSite, LabState, write_state
from probes import KINDS, Outcome, ProbeResult
from probes.icmp import IcmpEngine, IcmpPermissionError, ping
from probes.icmp_socket import open_icmp_socket
from tests.netns import NetNamespace, route_device, skip_unless_available
from tests.probes.packets import with_checksum

pytestmark = skip_unless_available
REPO = Path(__file__).resolve().parents[2]
OPEN_PING_GROUPS = "0 2147483647"


def assert_loopback_rtts(rtts: list[float]) -> None:
    """Kernel-timestamped loopback RTTs are microseconds, well under 1 ms.

    A few may not be: a process preempted between reading the clock and sendto (the
    suite shares the machine) adds that wait. Loop lag would show in every one.
    """
    rtts = sorted(rtts)
    assert rtts[len(rtts) // 2] < 0.0001, rtts
    assert rtts[len(rtts) * 9 // 10] < 0.001, rtts
    assert rtts[-1] < 0.01, rtts


class Results:
    """An on_result callback that records results and when each arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.items: list[ProbeResult] = []
        self.arrived: list[float] = []
        self._complete = asyncio.Event()

    def __call__(self, result: ProbeResult) -> None:
        self.items.append(result)
        self.arrived.append(asyncio.get_running_loop().time())
        if len(self.items) >= self.expected:
            self._complete.set()

    async def wait(self, within: float) -> list[ProbeResult]:
        await asyncio.wait_for(self._complete.wait(), within)
        return self.items

    def outcomes(self) -> list[Outcome]:
        return [result.outcome for result in self.items]


@pytest.fixture
async def engines() -> AsyncIterator[list[IcmpEngine]]:
    """Engines a test adds here are closed at teardown, even if it fails."""
    started: list[IcmpEngine] = []
    yield started
    for engine in started:
        await engine.close()


async def start_engine(
    engines: list[IcmpEngine],
    results: Results,
    mode: probes.icmp.Mode,
    namespace: NetNamespace | None = None,
    payload_size: int = 56,
) -> IcmpEngine:
    engine = IcmpEngine(results, mode=mode, payload_size=payload_size)
    if namespace is None:
        await engine.start()
    else:
        with namespace.entered():  # its sockets live in the namespace from now on
            await engine.start()
    engines.append(engine)
    assert engine.mode == mode
    return engine


@pytest.fixture
def silent_namespace() -> Iterator[NetNamespace]:
    """A namespace whose kernel does not answer pings and allows ping sockets."""
    with NetNamespace() as namespace:
        namespace.sysctl("net.ipv4.icmp_echo_ignore_all", "1")
        namespace.sysctl("net.ipv4.ping_group_range", OPEN_PING_GROUPS)
        assert namespace.route_device("127.0.0.1") == "lo"
        yield namespace


def test_kinds_table_names_the_engine() -> None:
    assert KINDS["icmp"].engine is IcmpEngine
    assert [name for name, kind in KINDS.items() if kind.engine is not None] == ["icmp"]


# --- loopback on this host (raw socket: root here, ping_group_range is "1 0") --------


async def test_loopback_every_probe_matched_in_microseconds(engines: list[IcmpEngine]) -> None:
    addresses = ["127.0.0.1", "127.0.0.2", "127.20.0.3", "127.99.1.1", "::1"]
    for address in addresses:
        assert route_device(address) == "lo"
    rounds = 30
    results = Results(rounds * len(addresses))
    engine = await start_engine(engines, results, "raw")
    for _ in range(rounds):
        for address in addresses:
            engine.send(f"site-{address}", address, 0.5)
        await asyncio.sleep(0.001)
    await results.wait(2.0)
    await asyncio.sleep(0.05)  # nothing more may arrive: exactly one result per send
    assert len(results.items) == rounds * len(addresses)
    assert set(results.outcomes()) == {Outcome.REPLY}
    assert_loopback_rtts([result.rtt or 1.0 for result in results.items])
    for address in addresses:
        mine = [result for result in results.items if result.address == address]
        assert {result.target for result in mine} == {f"site-{address}"}
        seqs = sorted({result.seq for result in mine})
        assert len(seqs) == rounds
        assert all(0 <= seq <= 0xFFFF for seq in seqs)
    assert (engine.sent, engine.received, engine.pending_count) == (len(results.items),) * 2 + (0,)


async def test_answered_probes_do_not_wake_the_timer(
    engines: list[IcmpEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replies are read in the poll that follows the sends, so while every probe is
    answered the engine's timer does not fire at all (it woke ~every 10 ms, the timer
    slack, at a probe every 10 ms before timeouts were armed for unanswered probes
    only), and answered probes are still forgotten once past their deadline."""
    assert route_device("127.0.0.1") == "lo"
    fired: list[float] = []
    on_timer = IcmpEngine._on_timer

    def counting(engine: IcmpEngine) -> None:
        fired.append(asyncio.get_running_loop().time())
        on_timer(engine)

    monkeypatch.setattr(IcmpEngine, "_on_timer", counting)
    probes_sent, timeout = 60, 0.2
    results = Results(probes_sent)
    engine = await start_engine(engines, results, "raw")
    for _ in range(probes_sent):  # 0.6 s: three timeouts long
        engine.send("site", "127.0.0.1", timeout)
        await asyncio.sleep(0.01)
    await results.wait(1.0)
    await asyncio.sleep(timeout + 0.05)
    assert set(results.outcomes()) == {Outcome.REPLY}
    # a reply the kernel was late to queue (the suite shares the machine) may need one
    assert len(fired) <= 2, fired
    assert engine.polls <= probes_sent + len(fired)
    # at most the last timeout's worth of answered probes are kept, with some to spare
    assert engine.pending_count == 0 and len(engine._resolved) <= 2 * timeout / 0.01


async def test_an_answered_probe_leaves_no_object_for_the_cyclic_collector(
        engines: list[IcmpEngine]) -> None:
    """Each probe is kept until its deadline: at 20,000 sites 20,000 of them, and any
    object of theirs is in the young generation when a collection comes, which walks
    every one (the probe loop's worst lag). Once answered, a probe is kept as numbers
    only (its key, its deadline), which the collector does not track."""
    assert route_device("127.0.0.1") == "lo"
    count = 300
    replies = Results(count)
    engine = IcmpEngine(lambda result: replies(result) if result.rtt is not None else None,
                        mode="raw")
    await engine.start()
    engines.append(engine)
    was_enabled = gc.isenabled()
    gc.disable()  # what is made stays in the young generation
    try:
        before = len(gc.get_objects(generation=0))
        for _ in range(count):
            engine.send("site", "127.0.0.1", 30.0)
        await replies.wait(5.0)
        replies.items.clear()  # what the callback kept is the test's, not the engine's
        kept = len(gc.get_objects(generation=0)) - before
    finally:
        if was_enabled:
            gc.enable()
    assert len(engine._resolved) == count  # all kept until their deadline, 30 s away
    # the loop's own bookkeeping: about 30, for 100 probes as for 1,000 (a tuple a
    # probe kept was 300 more)
    assert kept < 60, kept


async def test_a_run_of_sends_is_read_in_one_poll(engines: list[IcmpEngine]) -> None:
    """A scheduler's wake-up sends many probes at once: the engine reads their replies
    in one poll right after the run, not one loop wake-up per reply."""
    addresses = [f"127.0.1.{i}" for i in range(1, 41)]
    assert route_device(addresses[0]) == route_device(addresses[-1]) == "lo"
    results = Results(len(addresses))
    engine = await start_engine(engines, results, "raw")
    polls = engine.polls
    for address in addresses:
        engine.send(address, address, 0.5)
    await results.wait(1.0)
    assert engine.polls - polls == 1
    assert set(results.outcomes()) == {Outcome.REPLY}
    # every result in the same iteration of the loop
    assert max(results.arrived) - min(results.arrived) < 0.005


def test_fill_time_keeps_a_quarter_of_the_socket_free() -> None:
    # 8,192 packets of room, 20,000 a second coming in: a quarter fills in 0.1 s
    assert probes.icmp.fill_time(8192, 500, 0.025) == pytest.approx(0.1024)
    # Debian's default rmem_max (425,984 bytes granted): 416 packets, polled in 5 ms
    assert probes.icmp.fill_time(416, 500, 0.025) == pytest.approx(0.0052)
    assert probes.icmp.fill_time(8192, 0, 1.0) == float("inf")


async def test_reported_rtt_excludes_event_loop_lag(engines: list[IcmpEngine]) -> None:
    assert route_device("127.0.0.1") == "lo"
    results = Results(5)
    engine = await start_engine(engines, results, "raw")
    loop = asyncio.get_running_loop()
    sent_at = loop.time()
    for _ in range(5):
        engine.send("site", "127.0.0.1", 0.03)
    # A busy loop: nothing is read for 50 ms, past the probes' deadline. The replies
    # came back in microseconds, which the kernel's timestamps prove.
    time.sleep(0.05)  # noqa: ASYNC251
    await results.wait(1.0)
    assert min(results.arrived) - sent_at >= 0.05
    assert set(results.outcomes()) == {Outcome.REPLY}
    assert_loopback_rtts([result.rtt or 1.0 for result in results.items])


@pytest.mark.parametrize("step", [-10.0, 10.0])
async def test_wall_clock_step_falls_back_to_monotonic(
    engines: list[IcmpEngine], monkeypatch: pytest.MonkeyPatch, step: float
) -> None:
    assert route_device("127.0.0.1") == "lo"
    results = Results(1)
    engine = await start_engine(engines, results, "raw")
    # The send time is read from a clock that is 10 s off from the kernel's stamp,
    # as if the wall clock stepped between send and receive.
    monkeypatch.setattr(probes.icmp, "time_ns", lambda: time.time_ns() + int(step * 1e9))
    engine.send("site", "127.0.0.1", 0.5)
    (result,) = await results.wait(1.0)
    assert result.outcome is Outcome.REPLY
    assert result.rtt is not None and 0 < result.rtt < 0.1


async def test_large_payload(engines: list[IcmpEngine]) -> None:
    assert route_device("127.0.0.1") == "lo"
    results = Results(3)
    engine = await start_engine(engines, results, "raw", payload_size=1400)
    for _ in range(3):
        engine.send("site", "127.0.0.1", 0.5)
    assert set(result.outcome for result in await results.wait(1.0)) == {Outcome.REPLY}


async def test_ping_yields_each_probe_on_an_absolute_schedule() -> None:
    assert route_device("127.0.0.1") == "lo"
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = [r async for r in ping("127.0.0.1", count=5, interval=0.03, timeout=0.2, mode="raw")]
    assert [r.outcome for r in results] == [Outcome.REPLY] * 5
    assert [(r.seq - results[0].seq) % 0x10000 for r in results] == [0, 1, 2, 3, 4]
    sent = [r.sent_at - results[0].sent_at for r in results]
    assert sent == pytest.approx([0, 0.03, 0.06, 0.09, 0.12], abs=0.015)
    assert loop.time() - started < 0.5


async def test_argument_errors(engines: list[IcmpEngine]) -> None:
    results = Results(1)
    engine = IcmpEngine(results)
    with pytest.raises(RuntimeError, match="start"):
        engine.send("site", "127.0.0.1", 0.1)
    with pytest.raises(ValueError, match="payload_size"):
        IcmpEngine(results, payload_size=7)
    engine = await start_engine(engines, results, "raw")
    with pytest.raises(ValueError, match="not an IP address literal"):
        engine.send("site", "localhost", 0.1)
    with pytest.raises(ValueError, match="not an IP address literal"):
        async for _ in ping("example.invalid", count=1, interval=1, timeout=1):
            pass


async def test_ipv6_socket_failure_is_a_send_error(
    engines: list[IcmpEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    results = Results(2)
    engine = await start_engine(engines, results, "raw")

    def no_ipv6(v6: bool, mode: probes.icmp.Mode) -> tuple[socket.socket, str, int]:
        raise OSError(97, "Address family not supported by protocol")

    monkeypatch.setattr(probes.icmp, "open_icmp_socket", no_ipv6)
    engine.send("site", "::1", 0.1)
    engine.send("site", "::1", 0.1)
    assert results.items == []  # delivered from the loop, never from inside send()
    for result in await results.wait(1.0):
        assert result.outcome is Outcome.SEND_ERROR
        assert "cannot open an IPv6 ICMP socket" in result.detail
    assert engine.sent == 0


# --- foreign traffic on the raw socket ------------------------------------------


def icmp_of(packet: bytes) -> bytes:
    return packet[(packet[0] & 0x0F) * 4 :]


async def test_foreign_duplicate_forged_and_garbage_packets_are_ignored(
    engines: list[IcmpEngine],
) -> None:
    ours, others = "127.0.0.3", "127.0.0.4"
    for address in (ours, others):
        assert route_device(address) == "lo"
    results = Results(10)
    engine = await start_engine(engines, results, "raw")
    # Another program's raw sockets: one sees every ICMP packet, one sends from `ours`.
    with (
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sniffer,
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as other,
    ):
        sniffer.setblocking(False)
        other.bind((ours, 0))
        for _ in range(10):
            engine.send("site", ours, 1.0)
        await results.wait(1.0)
        seqs = {result.seq for result in results.items}
        replies = []
        for _ in range(10_000):
            try:
                packet, (source, _) = sniffer.recvfrom(65535)
            except BlockingIOError:
                break
            icmp = icmp_of(packet)
            if icmp[0] == 0 and source == ours and struct.unpack_from("!H", icmp, 6)[0] in seqs:
                replies.append(icmp)
        assert len(replies) == 10
        ident = struct.unpack_from("!H", replies[0], 4)[0]
        before = engine.ignored.copy()
        for reply in replies:
            other.sendto(reply, ("127.0.0.1", 0))  # a duplicate: same source, id, seq, cookie
            forged = bytearray(reply)
            forged[8] ^= 0xFF  # right id and seq, wrong cookie
            other.sendto(with_checksum(bytes(forged)), ("127.0.0.1", 0))
            # a ping of another program: its replies reach our socket too
            other.sendto(
                with_checksum(struct.pack("!BBHHH", 8, 0, 0, ident ^ 0x8000, 1)), (others, 0)
            )
        garbage = [
            struct.pack("!BBHHH", 0, 0, 0, ident, 1) + b"\1\2",  # our id, cookie cut short
            struct.pack("!BBHI", 3, 1, 0, 0) + b"\x45",  # an error with a truncated quote
            struct.pack("!BBHI", 11, 0, 0, 0) + b"\x41" + bytes(30),  # quoted IHL too small
        ]
        for packet in garbage:
            other.sendto(with_checksum(packet), ("127.0.0.1", 0))
        await asyncio.sleep(0.1)
    # With no probe out the engine reads again at its next send (or within its idle
    # poll): the next probes are answered, and what came meanwhile is counted.
    results.expected = 15
    for _ in range(5):
        engine.send("site", ours, 1.0)
    assert set(result.outcome for result in await results.wait(1.0)) == {Outcome.REPLY}
    new = engine.ignored - before
    assert new["duplicate"] == 10
    assert new["cookie"] == 10
    # the other program's replies carry another echo id: the socket's kernel filter
    # drops them before they are queued (as it would any other program's)
    assert new["foreign"] == 0
    assert new["malformed"] == 3
    assert len(results.items) == 15
    assert engine.received == 15


# --- inside namespaces ---------------------------------------------------------


async def test_replies_the_full_socket_dropped_are_counted_as_vcmons_own(
    engines: list[IcmpEngine],
) -> None:
    """A socket too small for a run of sends: the kernel drops replies, the engine
    reports their probes as timeouts and counts the drops (the kernel's socket table),
    so that loss of vcmon's own is told apart from the network's. A ping socket in a namespace
    of the test's own sees only its replies: every drop is one of them."""
    with NetNamespace() as namespace:
        namespace.sysctl("net.ipv4.ping_group_range", OPEN_PING_GROUPS)
        addresses = [f"127.0.2.{i}" for i in range(1, 201)]
        assert namespace.route_device(addresses[0]) == "lo"
        assert namespace.route_device(addresses[-1]) == "lo"
        results = Results(len(addresses))
        engine = await start_engine(engines, results, "dgram", namespace)
        assert engine.capacity > 1000 and engine.dropped == 0
        assert engine._v4 is not None
        engine._v4.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        for address in addresses:  # one run: nothing is read until it is over
            engine.send(address, address, 0.2)
        await results.wait(1.0)
        received = results.outcomes().count(Outcome.REPLY)
        lost = len(addresses) - received
        assert lost > 100  # a 8 KiB buffer holds about 10 replies
        assert results.outcomes().count(Outcome.TIMEOUT) == lost
        with namespace.entered():  # the socket table is the namespace's own
            assert engine.dropped == lost


@pytest.mark.parametrize("mode", ["raw", "dgram"])
async def test_silent_address_times_out(
    engines: list[IcmpEngine], silent_namespace: NetNamespace, mode: probes.icmp.Mode
) -> None:
    timeout = 0.1
    results = Results(10)
    engine = await start_engine(engines, results, mode, silent_namespace)
    loop = asyncio.get_running_loop()
    sent = []
    for _ in range(10):
        sent.append(loop.time())
        engine.send("site", "127.0.0.1", timeout)
        await asyncio.sleep(0.005)
    assert engine.pending_count == 10
    await results.wait(timeout + 1.0)
    await asyncio.sleep(0.05)
    assert results.outcomes() == [Outcome.TIMEOUT] * 10
    waited = [arrived - at for arrived, at in zip(results.arrived, sent, strict=True)]
    assert all(timeout <= wait < timeout + 0.05 for wait in waited), waited
    assert (engine.sent, engine.received, engine.pending_count) == (10, 0, 0)
    assert all(result.rtt is None for result in results.items)


async def test_close_drops_pending_probes(
    engines: list[IcmpEngine], silent_namespace: NetNamespace
) -> None:
    results = Results(1)
    engine = await start_engine(engines, results, "raw", silent_namespace)
    for _ in range(3):
        engine.send("site", "127.0.0.1", 0.05)
    await engine.close()
    await asyncio.sleep(0.1)
    assert results.items == []
    assert engine.pending_count == 0
    with pytest.raises(RuntimeError):
        engine.send("site", "127.0.0.1", 0.05)


def answering_loopback(delay: float) -> LabState:
    """The lab's responder, answering pings to 127.0.0.1 ``delay`` s late."""
    return LabState(sites=[LabSite(id="site", address="127.0.0.1", profile=Profile(delay=delay))])


@pytest.fixture
async def slow_responder(silent_namespace: NetNamespace) -> AsyncIterator[Responder]:
    responder = Responder(answering_loopback(0.3))
    with silent_namespace.entered():
        responder.start()
    yield responder
    responder.close()


@pytest.mark.parametrize("mode", ["raw", "dgram"])
async def test_reply_after_the_timeout_is_late_not_received(
    engines: list[IcmpEngine],
    silent_namespace: NetNamespace,
    slow_responder: Responder,
    mode: probes.icmp.Mode,
) -> None:
    results = Results(5)
    engine = await start_engine(engines, results, mode, silent_namespace)
    for _ in range(5):
        engine.send("site", "127.0.0.1", 0.1)
    await results.wait(1.0)
    assert results.outcomes() == [Outcome.TIMEOUT] * 5
    await asyncio.sleep(0.4)  # the answers leave the responder 0.3 s after the requests
    assert slow_responder.answered == 5
    assert (engine.received, len(results.items)) == (0, 5)


async def test_replies_slower_than_the_interval_are_not_lost(
    engines: list[IcmpEngine], silent_namespace: NetNamespace, slow_responder: Responder
) -> None:
    results = Results(8)
    engine = await start_engine(engines, results, "raw", silent_namespace)
    for _ in range(8):
        engine.send("site", "127.0.0.1", 1.0)
        await asyncio.sleep(0.05)  # 6 probes are out before the first reply is back
    await results.wait(2.0)
    assert results.outcomes() == [Outcome.REPLY] * 8
    assert all(0.29 < (result.rtt or 0) < 0.4 for result in results.items)
    assert engine.received == 8 and engine.ignored.total() == 0


async def test_unanswered_probe_behind_answered_ones_times_out_on_time(
    engines: list[IcmpEngine], silent_namespace: NetNamespace, slow_responder: Responder
) -> None:
    """The timer skips the deadlines of answered probes, never an unanswered one's."""
    results = Results(4)
    engine = await start_engine(engines, results, "raw", silent_namespace)
    assert silent_namespace.route_device("127.0.0.2") == "lo"
    loop = asyncio.get_running_loop()
    # answered after 0.3 s, with deadlines before and after the silent probes'
    engine.send("answered", "127.0.0.1", 0.5)
    engine.send("answered", "127.0.0.1", 0.8)
    sent = loop.time()
    engine.send("silent", "127.0.0.2", 0.6)
    engine.send("silent", "127.0.0.2", 0.7)
    await results.wait(2.0)
    by_target = {(r.target, r.outcome) for r in results.items}
    assert by_target == {("answered", Outcome.REPLY), ("silent", Outcome.TIMEOUT)}
    silent = [at - sent for r, at in zip(results.items, results.arrived, strict=True)
              if r.target == "silent"]
    assert 0.6 <= silent[0] < 0.65 and 0.7 <= silent[1] < 0.75, silent
    assert [r.detail for r in results.items if r.target == "silent"] == [
        "no reply within 0.6 s", "no reply within 0.7 s"]


@pytest.fixture
def responder_process(silent_namespace: NetNamespace, tmp_path: Path) -> Iterator[None]:
    """The lab's responder as its own process in the namespace, answering in 50 ms.

    Its replies leave on time even while the test blocks its own event loop.
    """
    state = tmp_path / "state.json"
    write_state(state, answering_loopback(0.05))
    argv = silent_namespace.command(
        [sys.executable, "-m", "monitor.lab.responder", "--state", str(state)])
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as responder:
        try:
            assert responder.stdout is not None
            assert responder.stdout.readline() == "ready\n"
            yield
        finally:
            responder.terminate()


async def test_reply_past_its_deadline_read_before_the_timer_fired_is_late(
    engines: list[IcmpEngine], silent_namespace: NetNamespace, responder_process: None
) -> None:
    results = Results(1)
    engine = await start_engine(engines, results, "raw", silent_namespace)
    engine.send("site", "127.0.0.1", 0.02)
    # Blocked until the reply (50 ms) is in, past the deadline (20 ms): the loop then
    # reads the reply before its timer runs.
    time.sleep(0.1)  # noqa: ASYNC251
    (result,) = await results.wait(1.0)
    assert result.outcome is Outcome.TIMEOUT
    assert result.detail.startswith("reply after 0.05")
    assert (engine.ignored["late"], engine.received) == (1, 0)


async def test_sequence_wrap_within_the_timeout_resolves_the_older_probe(
    engines: list[IcmpEngine], silent_namespace: NetNamespace
) -> None:
    results = Results(1)
    engine = await start_engine(engines, results, "raw", silent_namespace)
    for _ in range(0x10000 + 1):
        engine.send("site", "127.0.0.1", 10.0)
    assert results.items == []
    (result,) = await results.wait(1.0)
    assert result.outcome is Outcome.TIMEOUT
    assert result.detail == "no reply before its sequence number was reused"
    assert engine.pending_count == 0x10000


CHILD = """
import asyncio, json, sys
from probes.icmp import IcmpEngine, IcmpPermissionError

async def main():
    results = []
    engine = IcmpEngine(results.append)
    try:
        await engine.start()
    except IcmpPermissionError as exc:
        print(json.dumps({"error": str(exc)}))
        return
    for _ in range(10):
        for address in sys.argv[1:]:
            engine.send(address, address, 0.5)
        await asyncio.sleep(0.002)
    async with asyncio.timeout(2):
        while engine.pending_count:
            await asyncio.sleep(0.01)
    print(json.dumps({"mode": engine.mode, "sent": engine.sent, "results": [
        [r.address, r.outcome, r.rtt] for r in results]}))
    await engine.close()

asyncio.run(main())
"""
# Root without any capability: no CAP_NET_RAW for raw sockets, nor CAP_NET_ADMIN.
NO_CAPABILITIES = [
    "setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--no-new-privs",
]  # fmt: skip


def run_child(namespace: NetNamespace, *addresses: str) -> dict[str, object]:
    argv = namespace.command([*NO_CAPABILITIES, sys.executable, "-c", CHILD, *addresses])
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=30, check=True)
    report: dict[str, object] = json.loads(done.stdout)
    return report


def test_unprivileged_process_uses_ping_sockets() -> None:
    with NetNamespace() as namespace:
        namespace.sysctl("net.ipv4.ping_group_range", OPEN_PING_GROUPS)
        for address in ("127.0.0.1", "::1"):
            assert namespace.route_device(address) == "lo"
        report = run_child(namespace, "127.0.0.1", "::1")
    assert report["mode"] == "dgram"
    assert report["sent"] == 20
    results = report["results"]
    assert isinstance(results, list) and len(results) == 20
    assert {address for address, _, _ in results} == {"127.0.0.1", "::1"}
    assert {outcome for _, outcome, _ in results} == {"reply"}
    assert_loopback_rtts([rtt for _, _, rtt in results])


def test_no_permission_names_both_fixes() -> None:
    with NetNamespace() as namespace:
        namespace.sysctl("net.ipv4.ping_group_range", "1 0")
        report = run_child(namespace, "127.0.0.1")
    message = str(report["error"])
    assert 'sysctl -w net.ipv4.ping_group_range="0 2147483647"' in message
    assert "/etc/sysctl.d/" in message
    assert "setcap cap_net_raw+ep" in message
    assert "AmbientCapabilities=CAP_NET_RAW" in message
    assert 'ping_group_range is "1 0"' in message


def test_permission_error_type() -> None:
    assert issubclass(IcmpPermissionError, OSError)


ROUTER = "198.51.100.2"
UNREACHABLE = "203.0.113.1"  # an "unreachable" route on the router
PROHIBITED = "203.0.113.65"  # a "prohibit" route on the router
LOOPING = "203.0.113.129"  # bounces between two routers until its TTL runs out
NO_ROUTE = "192.0.2.1"  # an "unreachable" route on the probing host itself


@pytest.fixture
def routed_network() -> Iterator[NetNamespace]:
    """host -- router -- far, all namespaces of this test; returns the host."""
    with NetNamespace() as host, NetNamespace() as router, NetNamespace() as far:
        host_device, _ = host.link(router, "198.51.100.1/30", f"{ROUTER}/30")
        router.link(far, "198.51.100.5/30", "198.51.100.6/30")
        host.sysctl("net.ipv4.ping_group_range", OPEN_PING_GROUPS)
        host.ip("route", "add", "203.0.113.0/24", "via", ROUTER)
        host.ip("route", "add", "unreachable", "192.0.2.0/24")
        for namespace in (router, far):
            namespace.sysctl("net.ipv4.ip_forward", "1")
            # The per-destination ICMP rate limit would drop errors after the first.
            namespace.sysctl("net.ipv4.icmp_ratelimit", "0")
        router.ip("route", "add", "unreachable", "203.0.113.0/26")
        router.ip("route", "add", "prohibit", "203.0.113.64/26")
        router.ip("route", "add", "203.0.113.128/26", "via", "198.51.100.6")
        far.ip("route", "add", "203.0.113.128/26", "via", "198.51.100.5")
        far.ip("route", "add", "198.51.100.0/30", "via", "198.51.100.5")
        for address in (ROUTER, UNREACHABLE, PROHIBITED, LOOPING):
            assert host.route_device(address) == host_device
        with pytest.raises(RuntimeError, match="No route to host"):
            host.route_device(NO_ROUTE)
        yield host


@pytest.mark.parametrize("mode", ["raw", "dgram"])
async def test_icmp_errors_are_attributed_to_their_probe(
    engines: list[IcmpEngine], routed_network: NetNamespace, mode: probes.icmp.Mode
) -> None:
    results = Results(6)
    engine = await start_engine(engines, results, mode, routed_network)
    for address in (ROUTER, UNREACHABLE, LOOPING, NO_ROUTE):
        engine.send(address, address, 0.3)
    assert results.items == []  # the send error too comes from the loop, not from send()
    engine.send("prohibited", PROHIBITED, 0.3)
    # Block the loop so the errors are still pending on the socket (sk_err) when the
    # next sendto runs; a ping socket's sendto reports them, yet this send must go out.
    time.sleep(0.05)  # noqa: ASYNC251
    engine.send("after", ROUTER, 0.3)
    by_target = {result.target: result for result in await results.wait(1.0)}
    assert len(by_target) == 6
    assert by_target[ROUTER].outcome is Outcome.REPLY
    assert by_target["after"].outcome is Outcome.REPLY
    unreachable = by_target[UNREACHABLE]
    assert unreachable.outcome is Outcome.UNREACHABLE
    assert unreachable.detail.startswith("host unreachable (ICMP type 3 code 1)")
    assert unreachable.detail.endswith(f"from {ROUTER}")
    prohibited = by_target["prohibited"]
    assert prohibited.outcome is Outcome.UNREACHABLE
    assert prohibited.detail == (
        f"communication administratively prohibited (ICMP type 3 code 13) from {ROUTER}"
    )
    looping = by_target[LOOPING]
    assert looping.outcome is Outcome.TTL_EXCEEDED
    assert looping.detail.startswith(
        "TTL exceeded in transit (ICMP type 11 code 0) from 198.51.100."
    )
    no_route = by_target[NO_ROUTE]
    assert no_route.outcome is Outcome.SEND_ERROR
    assert no_route.detail == os.strerror(113)  # EHOSTUNREACH
    assert engine.sent == 5 and engine.received == 2 and engine.pending_count == 0


@pytest.mark.parametrize(("address", "v6"), [("127.0.0.1", False), ("::1", True)])
def test_a_raw_socket_queues_no_other_sockets_echo_replies(address: str, v6: bool) -> None:
    """Loopback only. Shards on one host, or a trace, each see every echo reply on a raw
    socket; the kernel filter keeps only the socket's own echo id."""
    assert route_device(address) == "lo"
    try:
        sock, mode, ident = open_icmp_socket(v6, "raw")
    except IcmpPermissionError as exc:
        pytest.skip(str(exc))
    family = icmplib.ICMPv6Socket if v6 else icmplib.ICMPv4Socket
    try:
        other = family(privileged=True)
    except icmplib.ICMPLibError as exc:
        sock.close()
        pytest.skip(str(exc))
    try:
        assert mode == "raw"
        for sequence in range(10):
            other.send(icmplib.ICMPRequest(address, ident ^ 0x5A5A, sequence))
        time.sleep(0.1)  # loopback answers at once: ten replies of another id, queued
        with pytest.raises(BlockingIOError):
            sock.recv(1024)
    finally:
        other.close()
        sock.close()
