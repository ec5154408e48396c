"""/metrics in a forked child: the same bytes, failures reported, a stuck child killed."""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Iterator

import pytest

from monitor._forkrender import RenderFailed, pack, render_in_child


def _chunks() -> Iterator[bytes]:
    for i in range(2000):
        yield f"vcmon_site_up{{site=\"s{i}\"}} 1\n".encode()


async def test_the_child_delivers_what_a_thread_would() -> None:
    plain = await render_in_child(_chunks, gzipped=False)
    assert plain == pack(_chunks(), gzipped=False) and plain.count(b"\n") == 2000
    packed = await render_in_child(_chunks, gzipped=True)
    assert gzip.decompress(packed) == plain


async def test_the_child_sees_the_state_of_the_fork_moment() -> None:
    state = {"pid": os.getpid()}
    body = await render_in_child(lambda: [f"{state['pid']} {os.getpid()}".encode()], False)
    parent, child = map(int, body.split())
    assert parent == os.getpid() and child != parent


async def test_a_failing_render_is_reported() -> None:
    def broken() -> Iterator[bytes]:
        yield b"half a page"
        raise RuntimeError("a bug in a renderer")

    with pytest.raises(RenderFailed, match="status"):
        await render_in_child(broken, gzipped=True)


async def test_a_stuck_render_is_killed() -> None:
    def stuck() -> Iterator[bytes]:
        time.sleep(30)
        yield b""

    started = time.monotonic()
    with pytest.raises(RenderFailed, match="killed"):
        await render_in_child(stuck, gzipped=False, kill_after=0.5)
    assert time.monotonic() - started < 5
