"""Work done in a forked child of the daemon: /metrics pages, the JSON API's pages of
every site, and reading inventories.

At 20,000 sites the /metrics page is ~100 MB of text and takes about a second of CPU
to write and compress. In a worker thread that second is taken from the probe loop
through the GIL: every socket call of the loop gives the GIL away and waits for it
again, the replies of 20,000 probes a second back up, and the kernel drops them when
the socket buffer is full (measured: 3-7 % of loopback replies lost while scraped
every 5 s). A forked child renders on the other core from a copy-on-write snapshot
of the state, consistent by construction, and the loop goes on. Reading an inventory
is the same: a second of pure Python whose ~90 MB of node tree would otherwise stay
fragmented in the daemon.

The child only reads plain Python objects and writes to a pipe: it takes no lock
that another thread could hold at the fork (the daemon-wide metrics, whose
collectors have locks, are rendered by the caller before it forks), logs nothing,
and leaves with ``os._exit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import itertools
import os
import select
import signal
import warnings
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from types import ModuleType
from typing import NoReturn

_deflate: ModuleType
try:
    # ISA-L's deflate: the 105 MB page of 20,000 sites in 0.03 s at level 1 where zlib
    # takes 0.16 s, and 10 % smaller
    from isal import isal_zlib as _deflate
except ImportError:  # a platform without its wheel: zlib does the same, slower
    _deflate = zlib

# Up to this many sites the pages people and Prometheus read (/metrics, the JSON API)
# are written in a worker thread: at the province's 240 sites that takes a few
# milliseconds, while forking the ~60 MB daemon costs ~8 ms of CPU in this process
# (page tables, copy-on-write) every time, more than the work. Above it a forked child
# keeps the work's hundreds of milliseconds off the probe loop's GIL.
CHILD_ABOVE_SITES = 1000
# A child yields the CPU to the probe loop when the two meet on one core (nice 5: about
# a quarter of the core's time against the loop's three quarters). With a core to itself
# it runs as fast as ever; without one it renders slower, where at the loop's own
# priority it took the loop's time (measured at 20,000 sites with a second process
# keeping one core busy: 39,000-59,000 skipped probe cycles and 14-32 % of the replies
# lost a minute). At nice 5: none skipped, every reply, lag p99 <= 10 ms, the gzipped
# page 0.44-0.57 s (p50, three rounds); at nice 10 the same but 0.48-0.69 s (three).
CHILD_NICE = 5
# Far above a 20,000-site render (~1 s): a child that takes this long is stuck.
TIMEOUT = 60.0
# the pipe's buffer, and the pieces read from it (bytes)
_PIPE_SIZE = 1 << 20
# A child writing to a client gives up when the client has taken nothing this long
# (s); the chunks it writes are at least this large (bytes).
STALL = 30.0
_FRAME = 256 << 10

Sink = Callable[[bytes], Awaitable[None]]
_EXIT_FAILED = 70


class ChildFailed(Exception):
    """The child delivered nothing: it failed or was killed."""


def pack(chunks: Iterable[bytes], gzipped: bool) -> bytes:
    """The chunks as one body, gzip-compressed a chunk at a time if asked."""
    return b"".join(encoded(chunks, gzipped))


def encoded(chunks: Iterable[bytes], gzipped: bool) -> Iterator[bytes]:
    """The body's pieces: the chunks, or their gzip stream (one member) if asked."""
    if not gzipped:
        yield from chunks
        return
    # Level 1: the ~100 MB page of 20,000 sites compresses ~17x at a fraction of the
    # default level's time.
    packer = _deflate.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    for chunk in chunks:
        if piece := packer.compress(chunk):
            yield piece
    yield packer.flush()


def send_chunked(fd: int, chunks: Iterable[bytes], gzipped: bool,
                 stall: float = STALL) -> bytes:
    """Writes the body (``encoded``) to the connected socket ``fd`` as HTTP/1.1 chunks
    of at least ``_FRAME`` bytes, without the last (empty) one; b"" when done.

    For a child that answers a request itself: the page goes to the client as it is
    made, never through the daemon's busy event loop (46 MB of plain text at 20,000
    sites took 180 turns of it, 1-2 s). The socket is non-blocking (the daemon's): a
    full send buffer waits in ``poll`` for the client, at most ``stall`` seconds
    (TimeoutError then), and the descriptor's flags stay as they are, shared with the
    daemon.
    """
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    pieces: list[bytes] = []
    size = 0
    for piece in itertools.chain(encoded(chunks, gzipped), [b""]):  # b"": the end
        pieces.append(piece)
        size += len(piece)
        if size >= _FRAME or (not piece and size):
            _write_all(fd, poller, [b"%x\r\n" % size, *pieces, b"\r\n"], stall)
            pieces, size = [], 0
    return b""


def _write_all(fd: int, poller: select.poll, parts: list[bytes], stall: float) -> None:
    view = memoryview(b"".join(parts))
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            if not poller.poll(stall * 1000):
                raise TimeoutError(f"the client read nothing for {stall:g} s") from None


def _child(write_fd: int, produce: Callable[[], bytes]) -> NoReturn:
    try:
        # nothing to collect in a process that lives a second, and a collection would
        # walk the whole inherited heap (and copy it, page by page, to write its marks)
        gc.disable()
        os.nice(CHILD_NICE)
        data = memoryview(produce())
        while data:
            data = data[os.write(write_fd, data):]
    except BaseException:
        os._exit(_EXIT_FAILED)
    os._exit(0)


async def _pass_on(read_fd: int, sink: Sink) -> bytes:
    # read on the event loop as the pipe fills: a reading thread would hand the GIL
    # back and forth with the loop at every piece (and delay probes by up to 5 ms)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_PIPE_SIZE)
    # wraps the fd, no I/O; the transport closes the wrapper, the caller the fd
    pipe = open(read_fd, "rb", buffering=0, closefd=False)  # noqa: ASYNC230, SIM115
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        while piece := await reader.read(_PIPE_SIZE):
            await sink(piece)
    finally:
        transport.close()
    return b""


def _read_all(read_fd: int) -> bytes:
    # FileIO.readall grows one buffer in place (mremap for a large one): a 2.4 MB
    # inventory costs 2.4 MB, where a list of reads joined at the end held it twice
    with open(read_fd, "rb", buffering=0, closefd=False) as pipe:
        return pipe.readall()


async def run_in_child(produce: Callable[[], bytes], what: str,
                       kill_after: float = TIMEOUT, sink: Sink | None = None) -> bytes:
    """``produce()``, computed in a forked child of this process; with a ``sink``,
    passed to it piece by piece as it arrives (and b"" returned), so that this process
    never holds it whole.

    Raises ``OSError`` if the child cannot be forked and ``ChildFailed`` if it fails
    or takes longer than ``kill_after`` seconds (it is killed then); ``what`` names
    the work in those messages. What the sink raises ends the child too.
    """
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe()
    with contextlib.suppress(OSError):  # fewer, larger reads (Linux; 64 KiB otherwise)
        fcntl.fcntl(read_fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns that a forked child of a threaded process may meet a
            # lock another thread held: this child takes none (see above)
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        raise
    if pid == 0:  # the child
        os.close(read_fd)
        _child(write_fd, produce)
    os.close(write_fd)
    reading: asyncio.Future[bytes] = (
        loop.run_in_executor(None, _read_all, read_fd) if sink is None
        else asyncio.ensure_future(_pass_on(read_fd, sink)))
    try:
        body = await asyncio.wait_for(asyncio.shield(reading), kill_after)
    except BaseException as exc:  # a timeout, the sink failed, or the caller was cancelled
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await reading  # ends: the pipe's only writer is gone
        await loop.run_in_executor(None, os.waitpid, pid, 0)
        os.close(read_fd)
        if isinstance(exc, TimeoutError):
            raise ChildFailed(f"the {what} took over {kill_after:g} s; killed") from None
        raise
    _, status = await loop.run_in_executor(None, os.waitpid, pid, 0)
    os.close(read_fd)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        raise ChildFailed(f"the {what} child was killed by signal {-code}")
    if code != 0:
        raise ChildFailed(f"the {what} child failed (exit code {code})")
    return body
