"""Path traces on request, within one packet budget: the diagnosis runner.

A trace (``probes.trace``) is asked for when a site becomes degraded or down, when an
operator asks through the API, and, at a low rate spread over ``baseline_interval``, to
learn each site's normal path. Each finished trace goes to the record callback as a
``PathSnapshot``; what it means is the status layer's business.

The budget (``diagnosis:``): at most ``max_concurrent`` traces at once, each sending at
most ``share = packets_per_second / max_concurrent`` echo requests in any one second, so
that all of them together stay within ``packets_per_second``. A trace sends one request
per hop per cycle, all at once, so its cycle interval is chosen for that: with ``h`` hops,
any one-second window holds at most ``floor(1 / interval) + 1`` cycle starts, and the
interval keeps ``(cycles in a window) · h ≤ share``. A slot is held one second past the
end of its trace, so that the next trace in it never shares a second with the last
cycles of the one before. A site traced automatically is not traced again within
``min_spacing`` (a flapping site would spend the budget); an operator's request is.

Traces block (icmplib's and our ping socket wait in ``select``): each runs in a daemon
thread of its own, never in the event loop's default executor, which the API's record
building and /metrics rendering share, and never delaying the probe loop. A daemon
thread because a trace cannot be interrupted and a stop must not wait for it; it ends by
itself within its bound (``probes.trace`` module doc).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol

import structlog

from monitor.inventory.diagnosis import MAX_HOPS, DiagnosisSettings
from probes.trace import IcmpPermissionError, PathSnapshot, TraceMode, trace_blocking

log = structlog.get_logger("vcmon.diagnosis")

Reason = Literal["degraded", "down", "requested", "baseline"]
Outcome = Literal["queued", "already queued", "running", "spaced", "disabled"]
RecordFn = Callable[["TraceRequest", PathSnapshot], None]

# A slot stays taken this long after its trace returns (see the module doc).
SLOT_HOLD: Final = 1.0
# One cycle in any one-second window when a path is too long for more: a little over a
# second, so that a cycle started late and the next one on time still fall apart.
SLOW_INTERVAL: Final = 1.25
# Faster cycles than this measure the same thing and only bunch the routers' answers.
FAST_INTERVAL: Final = 0.1
# A path may grow by this many hops since it was last traced and still be measured whole.
HOP_MARGIN: Final = 3
REPLY_TIMEOUT: Final = 1.0


class Traceable(Protocol):
    """What a baseline trace needs of a site (an inventory ``Site``)."""

    @property
    def id(self) -> str: ...

    @property
    def address(self) -> str: ...


@dataclass(frozen=True, slots=True)
class TraceRequest:
    site_id: str
    address: str
    reason: Reason


def plan(known_hops: int | None, share: float) -> tuple[int, float]:
    """``(max_hops, interval)`` of one trace that keeps within ``share`` packets a second.

    ``known_hops``: the path's length when last traced (None: never traced).
    """
    ceiling = min(MAX_HOPS, math.floor(share))
    hops = ceiling if known_hops is None else min(ceiling, known_hops + HOP_MARGIN)
    # cycles whose starts fit in any one-second window: one more than 1 / interval
    per_second = math.floor(share / hops) - 1
    if per_second < 1:
        return hops, SLOW_INTERVAL
    return hops, max(FAST_INTERVAL, 1.0 / per_second)


def _failed(address: str, error: str) -> PathSnapshot:
    """A trace that could not start: no hops, the reason in ``error``."""
    return PathSnapshot(address, time.time(), 0.0, 0, 0, (), False, None, error)


def _in_thread(work: Callable[[], PathSnapshot]) -> asyncio.Future[PathSnapshot]:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[PathSnapshot] = loop.create_future()

    def settle(result: PathSnapshot | None, error: BaseException | None) -> None:
        if future.done():
            return  # cancelled by a stop meanwhile
        if error is not None:
            future.set_exception(error)
        else:
            assert result is not None
            future.set_result(result)

    def run() -> None:
        result: PathSnapshot | None = None
        error: BaseException | None = None
        try:
            result = work()
        except Exception as exc:  # handed to the awaiting task, which logs it
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="vcmon-trace", daemon=True).start()
    return future


class DiagnosisRunner:
    """Takes trace requests, runs them within the budget, hands each snapshot on."""

    def __init__(self, record: RecordFn, settings: DiagnosisSettings, *,
                 mode: TraceMode = "auto") -> None:
        self._record = record
        self.settings = settings
        # the daemon sets it once the ICMP engines are open: see Daemon.startup
        self.mode = mode
        self._queue: dict[str, TraceRequest] = {}  # site -> request, oldest first
        self._running: dict[str, TraceRequest] = {}
        self._slots_taken = 0
        self._baseline_running = False
        self._last_auto: dict[str, float] = {}  # site -> monotonic start of its last trace
        self._hops: dict[str, int] = {}  # site -> path length when last traced
        self._sites: list[Traceable] = []
        self._cursor = 0
        self._next_baseline = math.inf  # the first one gap after configure()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.traces: Counter[str] = Counter()  # by reason, finished
        self.packets: Counter[str] = Counter()  # echo requests sent, by reason
        self.refused: Counter[str] = Counter()  # requests not run, by outcome
        self.most_at_once = 0

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def configure(self, settings: DiagnosisSettings, sites: Sequence[Traceable]) -> None:
        """New settings and the sites whose baselines to learn (the inventory's own
        objects are kept: a pair of strings each was 1 MB at 20,000 sites)."""
        self.settings = settings
        self._sites = list(sites)
        kept = {site.id for site in self._sites}
        self._queue = {k: v for k, v in self._queue.items() if k in kept}
        self._hops = {k: v for k, v in self._hops.items() if k in kept}
        self._last_auto = {k: v for k, v in self._last_auto.items() if k in kept}
        self._cursor %= max(1, len(self._sites))
        self._next_baseline = min(self._next_baseline, time.monotonic() + self._baseline_gap())
        self._wake.set()

    def _baseline_gap(self) -> float:
        return self.settings.baseline_interval / max(1, len(self._sites))

    def request(self, site_id: str, address: str, reason: Reason) -> Outcome:
        """Ask for a trace; never waits. ``requested`` (an operator) skips the spacing."""
        outcome = self._admit(site_id, reason)
        if outcome == "queued":
            self._queue[site_id] = TraceRequest(site_id, address, reason)
            self._wake.set()
        else:
            self.refused[outcome] += 1
        return outcome

    def _admit(self, site_id: str, reason: Reason) -> Outcome:
        if not self.settings.enabled:
            return "disabled"
        if site_id in self._running:
            return "running"
        if site_id in self._queue:
            return "already queued"
        last = self._last_auto.get(site_id)
        if (reason != "requested" and last is not None
                and time.monotonic() - last < self.settings.min_spacing):
            return "spaced"
        return "queued"

    async def run(self) -> None:
        """Start traces as slots free up; learn baselines when nothing else waits."""
        try:
            while True:
                self._start_due()
                timeout = None
                if self.settings.enabled and self._sites:
                    timeout = max(0.05, self._next_baseline - time.monotonic())
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
        finally:
            for task in list(self._tasks):
                task.cancel()

    def _start_due(self) -> None:
        while self._queue and self._slots_taken < self.settings.max_concurrent:
            site_id = next(iter(self._queue))
            self._start(self._queue.pop(site_id))
        if (self.settings.enabled and self._sites and not self._queue
                and not self._baseline_running
                and self._slots_taken < self.settings.max_concurrent
                and time.monotonic() >= self._next_baseline):
            self._next_baseline = time.monotonic() + self._baseline_gap()
            for _ in range(len(self._sites)):
                site = self._sites[self._cursor]
                site_id, address = site.id, site.address
                self._cursor = (self._cursor + 1) % len(self._sites)
                if site_id not in self._running:
                    self._baseline_running = True
                    self._start(TraceRequest(site_id, address, "baseline"))
                    break

    def _start(self, request: TraceRequest) -> None:
        if request.reason != "baseline":
            self._last_auto[request.site_id] = time.monotonic()
        self._running[request.site_id] = request
        self._slots_taken += 1
        self.most_at_once = max(self.most_at_once, len(self._running))
        task = asyncio.create_task(self._trace(request), name=f"trace-{request.site_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _trace(self, request: TraceRequest) -> None:
        try:
            snapshot = await self._measure(request)
            self._running.pop(request.site_id, None)
            if snapshot.hops:
                self._hops[request.site_id] = len(snapshot.hops)
            self.traces[request.reason] += 1
            self.packets[request.reason] += snapshot.packets
            self._record(request, snapshot)
            await asyncio.sleep(SLOT_HOLD)
        finally:
            self._running.pop(request.site_id, None)
            self._slots_taken -= 1
            if request.reason == "baseline":
                self._baseline_running = False
            self._wake.set()

    async def _measure(self, request: TraceRequest) -> PathSnapshot:
        try:
            address = await _resolve(request.address)
        except OSError as exc:
            return _failed(request.address, f"cannot resolve {request.address}: {exc}")
        hops, interval = plan(self._hops.get(request.site_id), self.settings.share)
        work = functools.partial(trace_blocking, address, cycles=self.settings.cycles,
                                 interval=interval, reply_timeout=REPLY_TIMEOUT,
                                 max_hops=hops, mode=self.mode)
        try:
            return await _in_thread(work)
        except (IcmpPermissionError, OSError, ValueError) as exc:
            log.error("trace_failed", site=request.site_id, address=address,
                      reason=request.reason, error=str(exc))
            return _failed(address, str(exc))


async def _resolve(address: str) -> str:
    """The address itself when it is an IP literal, else its first IPv4 (then IPv6)
    address, looked up off the loop."""
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(address).compressed
    infos = await asyncio.get_running_loop().getaddrinfo(address, None, type=socket.SOCK_RAW)
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    if not infos:
        raise OSError(f"no address for {address}")
    return str(infos[0][4][0])
