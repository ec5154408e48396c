"""Work in a forked child: the same bytes, failures reported, a stuck child killed."""

from __future__ import annotations

import asyncio
import gzip
import os
import socket
import time
from collections.abc import Iterator

import pytest

from monitor.system.forked import CHILD_NICE, ChildFailed, pack, run_in_child, send_chunked


def _chunks() -> Iterator[bytes]:
    for i in range(2000):
        yield f"vcmon_site_up{{site=\"s{i}\"}} 1\n".encode()


async def test_the_child_delivers_what_a_thread_would() -> None:
    plain = await run_in_child(lambda: pack(_chunks(), gzipped=False), "render")
    assert plain == pack(_chunks(), gzipped=False) and plain.count(b"\n") == 2000
    packed = await run_in_child(lambda: pack(_chunks(), gzipped=True), "render")
    assert gzip.decompress(packed) == plain


async def test_the_child_sees_the_state_of_the_fork_moment() -> None:
    state = {"pid": os.getpid()}
    body = await run_in_child(lambda: f"{state['pid']} {os.getpid()}".encode(), "render")
    parent, child = map(int, body.split())
    assert parent == os.getpid() and child != parent


async def test_the_child_gives_way_to_the_probe_loop() -> None:
    """Nice 5 above this process (the kernel's ceiling is 19): on a shared core the loop
    keeps its probes on time and the page waits."""
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    seen = await run_in_child(lambda: b"%d" % os.getpriority(os.PRIO_PROCESS, 0), "nice")
    assert int(seen) == min(ours + CHILD_NICE, 19) and CHILD_NICE == 5
    assert os.getpriority(os.PRIO_PROCESS, 0) == ours


async def test_a_failing_child_is_reported() -> None:
    def broken() -> Iterator[bytes]:
        yield b"half a page"
        raise RuntimeError("a bug in a renderer")

    with pytest.raises(ChildFailed, match=r"the render child failed \(exit code 70\)"):
        await run_in_child(lambda: pack(broken(), gzipped=True), "render")


async def test_a_stuck_child_is_killed() -> None:
    def stuck() -> bytes:
        time.sleep(30)
        return b""

    started = time.monotonic()
    with pytest.raises(ChildFailed, match=r"the render took over 0\.5 s; killed"):
        await run_in_child(stuck, "render", kill_after=0.5)
    assert time.monotonic() - started < 5


async def test_a_sink_gets_the_output_piece_by_piece() -> None:
    pieces: list[bytes] = []

    async def sink(piece: bytes) -> None:
        pieces.append(piece)

    big = b"".join(_chunks()) * 40  # ~2 MB: more than the pipe holds at once
    assert await run_in_child(lambda: big, "render", sink=sink) == b""
    assert b"".join(pieces) == big and len(pieces) > 1


async def test_a_failing_sink_ends_the_child() -> None:
    async def gone(piece: bytes) -> None:
        raise ConnectionResetError("the scraper went away")

    started = time.monotonic()
    with pytest.raises(ConnectionResetError):
        await run_in_child(lambda: b"x" * (8 << 20), "render", sink=gone)
    assert time.monotonic() - started < 5


def _dechunked(stream: bytes) -> tuple[bytes, list[int]]:
    """An HTTP/1.1 chunked body (without its last, empty chunk) and its chunks' sizes."""
    body, sizes = b"", []
    while stream:
        line, _, stream = stream.partition(b"\r\n")
        size = int(line, 16)
        assert size > 0 and stream[size:size + 2] == b"\r\n"
        body, sizes, stream = body + stream[:size], [*sizes, size], stream[size + 2:]
    return body, sizes


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
async def test_a_child_writes_the_page_to_the_client_in_chunks(gzipped: bool) -> None:
    """What the client reads from a non-blocking socket (as the daemon's are) is the
    same body, framed; the socket stays non-blocking for the daemon."""
    loop = asyncio.get_running_loop()
    ours, client = socket.socketpair()
    ours.setblocking(False)
    # ~6 MB, 3 MB gzipped: more than a socket buffer holds
    big = [chunk + os.urandom(750).hex().encode() for chunk in _chunks()]
    received = bytearray()

    def read() -> None:
        with client:
            while piece := client.recv(1 << 20):
                received.extend(piece)

    reading = loop.run_in_executor(None, read)
    try:
        assert await run_in_child(
            lambda: send_chunked(ours.fileno(), iter(big), gzipped), "render") == b""
        assert not ours.getblocking()
    finally:
        ours.close()
    await reading
    body, sizes = _dechunked(bytes(received))
    assert body == pack(iter(big), gzipped)
    if gzipped:
        assert gzip.decompress(body) == b"".join(big)
    assert len(sizes) > 1 and min(sizes[:-1]) >= 256 << 10


async def test_a_client_that_reads_nothing_ends_the_child() -> None:
    ours, client = socket.socketpair()
    ours.setblocking(False)
    started = time.monotonic()
    try:
        with pytest.raises(ChildFailed, match="exit code 70"):
            await run_in_child(lambda: send_chunked(ours.fileno(), [b"x" * (32 << 20)], False,
                                                    stall=0.3), "render")
    finally:
        ours.close()
        client.close()
    assert time.monotonic() - started < 5
