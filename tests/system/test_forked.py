"""Work in a forked child: the same bytes, failures reported, a stuck child killed."""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Iterator

import pytest

from monitor.system.forked import ChildFailed, pack, run_in_child


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
