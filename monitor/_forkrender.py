"""/metrics rendered in a forked child: a snapshot of the state, off the daemon's GIL.

At 20,000 sites the page is ~100 MB of text and takes about a second of CPU to
write and compress. In a worker thread that second is taken from the probe loop
through the GIL: every socket call of the loop gives the GIL away and waits for it
again, the replies of 20,000 probes a second back up, and the kernel drops them when
the socket buffer is full (measured: 3-7 % of loopback replies lost while scraped
every 5 s). A forked child renders on the other core from a copy-on-write snapshot
of the state, consistent by construction, and the loop goes on.

The child only reads plain Python objects and writes to a pipe: it takes no lock
that another thread could hold at the fork (the daemon-wide metrics, whose
collectors have locks, are rendered by the caller before it forks), logs nothing,
and leaves with ``os._exit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import warnings
import zlib
from collections.abc import Callable, Iterable

# Far above a 20,000-site render (~1 s): a child that takes this long is stuck.
TIMEOUT = 60.0
_EXIT_FAILED = 70


class RenderFailed(Exception):
    """The child did not deliver a page (it failed, was killed or could not fork)."""


def pack(chunks: Iterable[bytes], gzipped: bool) -> bytes:
    """The chunks as one body, gzip-compressed a chunk at a time if asked."""
    if not gzipped:
        return b"".join(chunks)
    # Level 1: the ~100 MB page of 20,000 sites compresses ~15x at a fraction of the
    # default level's time.
    packer = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return b"".join([*map(packer.compress, chunks), packer.flush()])


def _child(write_fd: int, produce: Callable[[], Iterable[bytes]], gzipped: bool) -> None:
    try:
        gc.disable()  # nothing to collect in a process that lives a second
        data = memoryview(pack(produce(), gzipped))
        while data:
            data = data[os.write(write_fd, data):]
    except BaseException:
        os._exit(_EXIT_FAILED)
    os._exit(0)


def _read_all(read_fd: int) -> bytes:
    parts = []
    while part := os.read(read_fd, 1 << 20):
        parts.append(part)
    return b"".join(parts)


async def render_in_child(produce: Callable[[], Iterable[bytes]], gzipped: bool,
                          kill_after: float = TIMEOUT) -> bytes:
    """``pack(produce(), gzipped)``, computed in a forked child of this process."""
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe()
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns that a forked child of a threaded process may meet a
            # lock another thread held: this child takes none (see above)
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError as exc:
        os.close(read_fd)
        os.close(write_fd)
        raise RenderFailed(f"cannot fork: {exc.strerror}") from None
    if pid == 0:  # the child
        os.close(read_fd)
        _child(write_fd, produce, gzipped)
    os.close(write_fd)
    reading = loop.run_in_executor(None, _read_all, read_fd)
    try:
        body = await asyncio.wait_for(asyncio.shield(reading), kill_after)
    except BaseException as exc:  # a timeout, or the scrape was cancelled
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            await reading  # ends: the pipe's only writer is gone
        await loop.run_in_executor(None, os.waitpid, pid, 0)
        os.close(read_fd)
        if isinstance(exc, TimeoutError):
            raise RenderFailed(f"the render took over {kill_after:g} s; killed") from None
        raise
    _, status = await loop.run_in_executor(None, os.waitpid, pid, 0)
    os.close(read_fd)
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        raise RenderFailed(f"the render child ended with status {status}")
    return body
