"""TWAMP-light sender and reflector talking for real on loopback (127.0.0.1 and ::1).

Each test starts its own reflector on a kernel-chosen port; a misbehaving reflector,
written here on a plain socket, shows what the sender does with what a network sends.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest

from probes.twamp import (
    ErrorEstimate,
    Reflection,
    TestPacket,
    reflect,
)
from probes.twamp_reflector import TwampReflector
from probes.twamp_sender import EF, StreamResult, TwampSender
from tests.netns import NetNamespace, skip_unless_available

UNSYNCED = ErrorEstimate(False, 10, 1)
# a request and whether an answer arrives are judged within this (loopback answers in µs)
ANSWER_WAIT = 0.3


async def reflector_for(address: str, *, allow: Sequence[str] = ("127.0.0.0/8", "::1/128"),
                        tos: int | None = None, rate: float = 100.0, burst: int = 100,
                        max_size: int = 1472) -> TwampReflector:
    reflector = TwampReflector(allow, listen=(address,), port=0, tos=tos, rate=rate,
                               burst=burst, max_size=max_size)
    await reflector.start()
    return reflector


@pytest.fixture
async def sender() -> AsyncIterator[TwampSender]:
    sender = TwampSender(error_estimate=UNSYNCED)
    await sender.start()
    yield sender
    await sender.close()


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
async def test_stream_over_loopback(sender: TwampSender, address: str) -> None:
    reflector = await reflector_for(address)
    try:
        _, port = reflector.addresses[0]
        started = time.monotonic()
        result = await sender.stream(address, port, count=50, spacing=0.02, size=172)
        elapsed = time.monotonic() - started
    finally:
        await reflector.close()
    stats = result.stats
    assert (stats.sent, stats.received, stats.lost, result.send_errors) == (50, 50, 0, 0)
    # 49 spacings, then the last reply within microseconds, not the 1 s timeout
    assert 0.98 <= elapsed < 1.5
    assert stats.rtt_mean is not None and stats.rtt_mean < 1e-3
    assert (stats.forward.reordered, stats.reverse.reordered, stats.duplicates) == (0, 0, 0)
    assert (stats.forward.lost, stats.reverse.lost) == (0, 0)
    assert not stats.reflector_echoes_sequence
    # a fresh sender for this reflector: its counter starts at 0 (RFC 5357 §4.2.1)
    assert [p.reflection.seq for p in result.packets if p.reflection] == list(range(50))
    for packet in result.packets:
        reflection = packet.reflection
        assert reflection is not None and packet.received_ns is not None
        # one clock on both ends here: T1 ≤ T2 ≤ T3 ≤ T4
        assert packet.sent_ns <= reflection.receive_ns <= reflection.timestamp_ns
        assert reflection.timestamp_ns <= packet.received_ns
        assert reflection.size == 172
        assert reflection.error_estimate.synchronized is False
        # Linux's default TTL / hop limit, and no router on loopback
        assert reflection.sender_ttl == packet.reply_ttl == 64
    assert reflector.reflected == 50
    assert sum(sender.ignored.values()) == 0


async def test_reflector_counter_per_sender_and_sequence_across_streams() -> None:
    reflector = await reflector_for("127.0.0.1")
    first, second = TwampSender(error_estimate=UNSYNCED), TwampSender(error_estimate=UNSYNCED)
    await first.start()
    await second.start()
    try:
        _, port = reflector.addresses[0]
        a = await first.stream("127.0.0.1", port, count=3, spacing=0.005)
        b = await second.stream("127.0.0.1", port, count=3, spacing=0.005)
        c = await first.stream("127.0.0.1", port, count=3, spacing=0.005)
    finally:
        await first.close()
        await second.close()
        await reflector.close()

    def numbers(result: StreamResult) -> list[int]:
        return [p.reflection.seq for p in result.packets if p.reflection]

    assert (numbers(a), numbers(b), numbers(c)) == ([0, 1, 2], [0, 1, 2], [3, 4, 5])
    # the sender's own sequence continues too, so no reply can match an older stream
    assert c.packets[0].seq == (a.packets[-1].seq + 1) & 0xFFFFFFFF


async def test_concurrent_streams_to_one_reflector_take_turns(sender: TwampSender) -> None:
    reflector = await reflector_for("127.0.0.1")
    try:
        _, port = reflector.addresses[0]
        results = await asyncio.gather(*(
            sender.stream("127.0.0.1", port, count=5, spacing=0.005) for _ in range(3)))
    finally:
        await reflector.close()
    # one after the other, so each stream's reflector numbers run without a gap
    for result in results:
        numbers = [p.reflection.seq for p in result.packets if p.reflection]
        assert numbers == list(range(numbers[0], numbers[0] + 5))
        assert (result.stats.forward.lost, result.stats.reverse.lost) == (0, 0)


async def test_many_streams_at_once_keep_their_spacing(sender: TwampSender) -> None:
    """Every stream's packets go out from one schedule: 40 streams at once, each on time
    and each packet answered."""
    addresses = [f"127.0.0.{60 + i}" for i in range(40)]
    reflector = TwampReflector(["127.0.0.0/8"], listen=addresses, port=0, rate=10_000,
                               burst=10_000)
    await reflector.start()
    try:
        results = await asyncio.gather(*(
            sender.stream(address, port, count=25, spacing=0.01)
            for address, port in reflector.addresses))
    finally:
        await reflector.close()
    for result in results:
        assert result.stats.received == 25
        sent = [p.sent_ns for p in result.packets]
        assert sent == sorted(sent)
        # packet i is due at the stream's start + i · 10 ms, on an absolute schedule (up
        # to 0.5 ms early beside another stream's packet): no drift along the stream
        offsets = [at - index * 10_000_000 for index, at in enumerate(sent)]
        assert max(offsets) - min(offsets) < 10_000_000, offsets


@skip_unless_available
async def test_default_port_862_in_a_namespace_of_our_own() -> None:
    """The well-known port, bound where it can clash with nothing: a fresh namespace."""

    async def scenario() -> StreamResult:
        reflector = TwampReflector(["::1/128"], listen=("::1",))
        await reflector.start()
        sender = TwampSender(error_estimate=UNSYNCED)
        await sender.start()
        try:
            assert reflector.addresses == [("::1", 862)]
            return await sender.stream("::1", count=5, spacing=0.01)
        finally:
            await sender.close()
            await reflector.close()

    def in_namespace(namespace: NetNamespace) -> StreamResult:
        # The whole thread, its loop and every socket it opens, live in the namespace.
        with namespace.entered():
            return asyncio.run(scenario())

    with NetNamespace() as namespace:
        assert namespace.route_device("::1") == "lo"
        result = await asyncio.wait_for(asyncio.to_thread(in_namespace, namespace), 20)
    assert (result.port, result.stats.received, result.stats.lost) == (862, 5, 0)


# --- the reflector's defences -------------------------------------------------------


def udp_socket(address: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET,
                         socket.SOCK_DGRAM)
    sock.bind((address, 0))
    sock.settimeout(ANSWER_WAIT)
    return sock


def request(size: int, seq: int = 1) -> bytes:
    return TestPacket(seq, time.time_ns(), UNSYNCED, size).encode()


def answers(sock: socket.socket, limit: int) -> list[bytes]:
    """Replies that arrive until the socket has been quiet for ANSWER_WAIT (at most limit)."""
    replies = []
    for _ in range(limit):
        try:
            replies.append(sock.recv(65535))
        except TimeoutError:
            break
    return replies


async def in_thread(work: Callable[[], list[bytes]]) -> list[bytes]:
    # the reflector runs on this loop: blocking reads go to a thread
    return await asyncio.to_thread(work)


async def test_sources_outside_the_allow_list_get_nothing() -> None:
    reflector = await reflector_for("127.0.0.1", allow=["127.0.0.2/32"])
    try:
        target = reflector.addresses[0]
        with udp_socket("127.0.0.1") as outsider, udp_socket("127.0.0.2") as member:
            for seq in range(5):
                outsider.sendto(request(64, seq), target)
            member.sendto(request(64), target)
            refused = await in_thread(lambda: answers(outsider, 5))
            allowed = await in_thread(lambda: answers(member, 2))
    finally:
        await reflector.close()
    assert refused == []
    assert len(allowed) == 1  # the same reflector answers a member: the port was right
    assert reflector.dropped["not_allowed"] == 5
    assert reflector.reflected == 1


async def test_a_flood_is_rate_limited() -> None:
    reflector = await reflector_for("127.0.0.1", rate=20.0, burst=5)
    flood = 300
    try:
        target = reflector.addresses[0]
        with udp_socket() as source:
            source.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            started = time.monotonic()
            for seq in range(flood):
                source.sendto(request(64, seq), target)
                if seq % 50 == 0:
                    await asyncio.sleep(0)  # let the reflector read as it would in life
            replies = await in_thread(lambda: answers(source, flood))
            elapsed = time.monotonic() - started
    finally:
        await reflector.close()
    # a burst of 5, then 20 per second of the time the flood and the reads took
    assert 5 <= len(replies) <= 5 + 20 * elapsed + 1
    assert reflector.dropped["rate_limited"] == flood - len(replies)
    assert reflector.reflected == len(replies)


async def test_bad_sizes_are_dropped_and_replies_never_exceed_requests() -> None:
    reflector = await reflector_for("127.0.0.1", max_size=200)
    try:
        target = reflector.addresses[0]
        with udp_socket() as source:
            for size in (0, 14, 40):
                source.sendto(request(41)[:size], target)
            for size in (201, 1400):
                source.sendto(request(size), target)
            zero_multiplier = bytearray(request(64))
            zero_multiplier[13] = 0
            source.sendto(zero_multiplier, target)
            assert await in_thread(lambda: answers(source, 6)) == []
            sizes = (41, 42, 172, 200)
            replies = []
            for size in sizes:
                source.sendto(request(size), target)
                replies += await in_thread(lambda: answers(source, 2))
    finally:
        await reflector.close()
    assert dict(reflector.dropped) == {"too_short": 3, "too_long": 2, "malformed": 1,
                                       "not_allowed": 0, "rate_limited": 0, "service_port": 0,
                                       "send_error": 0}
    assert [len(reply) for reply in replies] == list(sizes)
    assert all(Reflection.decode(reply).sender_seq == 1 for reply in replies)


@pytest.mark.skipif(os.geteuid() != 0, reason="binding a port below 1024 needs root")
async def test_no_reply_to_a_well_known_port() -> None:
    # Spoofed from another reflector's port 862, a request would start a reply loop.
    reflector = await reflector_for("127.0.0.1")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as source:
            source.bind(("127.0.0.1", 862))
            source.settimeout(ANSWER_WAIT)
            source.sendto(request(64), reflector.addresses[0])
            assert await in_thread(lambda: answers(source, 1)) == []
    finally:
        await reflector.close()
    assert reflector.dropped["service_port"] == 1
    assert reflector.reflected == 0


def test_reflector_needs_an_allow_list() -> None:
    with pytest.raises(ValueError, match="allow-list"):
        TwampReflector([])
    with pytest.raises(ValueError, match="not a network"):
        TwampReflector(["example.com"])


# --- the sender against a misbehaving reflector -------------------------------------


async def test_sender_survives_what_the_network_sends(sender: TwampSender) -> None:
    """A reflector that answers junk, wrong T1, twice, too late; and a stranger."""
    loop = asyncio.get_running_loop()
    count, timeout = 20, 0.3
    with udp_socket() as bad, udp_socket() as stranger:
        bad.setblocking(False)
        stranger.setblocking(False)
        port = bad.getsockname()[1]

        async def misbehave() -> None:
            for number in range(count):
                data, source = await asyncio.wait_for(loop.sock_recvfrom(bad, 2048), 2)
                seq = struct.unpack_from("!I", data)[0]
                now = time.time_ns()
                reply = reflect(data, seq=number, receive_ns=now, send_ns=now,
                                error_estimate=UNSYNCED.encode(), ttl=64)
                if number == 1:
                    bad.sendto(b"junk", source)  # malformed
                    stranger.sendto(reply, source)  # foreign: right bytes, wrong port
                if number == 2:  # wrong T1: not an answer to anything we sent
                    forged = bytearray(reply)
                    forged[35] ^= 1
                    bad.sendto(forged, source)
                    continue
                if number == 3:
                    bad.sendto(reply, source)  # duplicate, copied on the way back
                if number == 4:  # past its 0.3 s timeout, while the stream still runs
                    loop.call_later(0.4, bad.sendto, reply, source)
                    continue
                if number == 5:  # a sequence number never sent
                    bad.sendto(reply[:24] + struct.pack("!I", seq + 1000) + reply[28:], source)
                bad.sendto(reply, source)

        task = asyncio.create_task(misbehave())
        result = await sender.stream("127.0.0.1", port, count=count, spacing=0.02,
                                     timeout=timeout)
        await asyncio.wait_for(task, 2)
    stats = result.stats
    assert stats.lost == 2  # 2 (never answered right) and 4 (answered late)
    assert [p.index for p in result.packets if p.reflection is None] == [2, 4]
    # reflector numbers 2 and 4 never arrived in time: both count as lost on the way back
    assert (stats.forward.lost, stats.reverse.lost) == (0, 2)
    assert (stats.duplicates, stats.reverse.duplicates) == (1, 1)
    assert dict(sender.ignored) == {"malformed": 1, "foreign": 1, "unmatched": 2, "late": 1,
                                    "duplicate": 1}


async def test_stream_arguments_are_checked(sender: TwampSender) -> None:
    with pytest.raises(ValueError, match="at least 41"):
        await sender.stream("127.0.0.1", 862, size=40)
    with pytest.raises(ValueError, match="not an IP address literal"):
        await sender.stream("localhost", 862)
    with pytest.raises(ValueError, match="at least one packet"):
        await sender.stream("127.0.0.1", 862, count=0)


# --- DSCP on the wire ---------------------------------------------------------------

_TOS = re.compile(r"\((?:tos|class) (0x[0-9a-f]+)")


async def captured_tos(port: int, packets: int,
                       run: Callable[[], Awaitable[object]]) -> list[int]:
    """TOS / traffic class of the first ``packets`` loopback packets to or from ``port``."""
    binary = shutil.which("tcpdump")
    if binary is None:
        pytest.fail("tcpdump not found: run tests/run.sh, which installs it")
    proc = await asyncio.create_subprocess_exec(
        binary, "-i", "lo", "-nn", "-v", "-l", "-c", str(packets), f"udp port {port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stderr is not None
        line = await asyncio.wait_for(proc.stderr.readline(), 10)
        assert b"listening on lo" in line, line
        await run()
        out, err = await asyncio.wait_for(proc.communicate(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    found = [int(match, 16) for match in _TOS.findall(out.decode())]
    assert len(found) == packets, (out + err).decode()
    return found


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="tcpdump needs root to capture")


@needs_root
@pytest.mark.parametrize(
    ("address", "sender_tos", "reflector_tos", "expected"),
    [("127.0.0.1", EF, None, [EF] * 4), ("::1", EF, None, [EF] * 4),
     # a configured reply TOS (AF41) wins over the request's
     ("127.0.0.1", EF, 0x88, [EF, 0x88] * 2),
     # EF with ECT(1): the reply copies the DSCP, never the request's ECN bits
     ("127.0.0.1", 0xB9, None, [0xB9, EF] * 2)])
async def test_dscp_on_both_directions(sender: TwampSender, address: str, sender_tos: int,
                                       reflector_tos: int | None,
                                       expected: Sequence[int]) -> None:
    reflector = await reflector_for(address, tos=reflector_tos)
    try:
        _, port = reflector.addresses[0]
        marks = await captured_tos(port, 4, lambda: sender.stream(
            address, port, count=2, spacing=0.05, tos=sender_tos))
    finally:
        await reflector.close()
    # request, reply, request, reply as tcpdump saw them
    assert marks == list(expected)
