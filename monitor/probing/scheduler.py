"""When each site is probed: one heap, one sender, absolute schedule, spread starts.

One asyncio task per site (20,000 sleeping tasks) is the pattern to avoid at scale;
here a heap of due times feeds one loop that wakes when the next probe is due and
sends everything due by then.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog

from probes import Outcome, ProbeResult, ip_version

log = structlog.get_logger("vcmon.scheduler")

SendFn = Callable[[str, str, float], None]
ResultFn = Callable[[ProbeResult], None]

# Probes due within this much of each other go out in one wake-up: waking the loop
# costs far more than sending a packet 0.5 ms early.
COALESCE = 0.0005


def phase_fraction(site_id: str) -> float:
    """A stable position in [0, 1) for a site: starts spread over the interval, and a
    site keeps its phase across restarts and reloads."""
    digest = hashlib.blake2b(site_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def is_ip_literal(address: str) -> bool:
    return ip_version(address) is not None


@dataclass(eq=False, slots=True)
class Target:
    """What the scheduler needs to probe one site."""

    site_id: str
    address: str
    # How this site's probes go out (the engine of its probe kind), called as
    # send(site_id, ip, timeout); its result arrives later through the engine.
    send: SendFn
    interval: float
    timeout: float
    burst: int = 1
    burst_spacing: float = 0.02
    resolve_interval: float = 300.0
    # The address to send to: the literal itself, or what the resolver last found.
    ip: str | None = None
    resolve_error: str = ""
    active: bool = field(default=True, repr=False)

    def __post_init__(self) -> None:
        if self.ip is None and is_ip_literal(self.address):
            self.ip = self.address

    def same_schedule(self, other: Target) -> bool:
        return (self.address, self.send, self.interval, self.timeout, self.burst,
                self.burst_spacing) == (other.address, other.send, other.interval,
                                        other.timeout, other.burst, other.burst_spacing)


class Scheduler:
    """Sends each target's probes every ``interval`` on an absolute schedule."""

    def __init__(
        self,
        on_result: ResultFn,
        *,
        observe_lag: Callable[[float], None] | None = None,
    ) -> None:
        self._on_result = on_result
        self._observe_lag = observe_lag
        self._targets: dict[str, Target] = {}
        # (due, tie-breaker, target, burst index); entries of replaced targets are
        # skipped when popped rather than searched for and removed.
        self._heap: list[tuple[float, int, Target, int]] = []
        self._tie = itertools.count()
        self._wake: asyncio.Future[None] | None = None
        self._resolvers: dict[str, asyncio.Task[None]] = {}
        self._never_sent: set[str] = set()
        self.first_cycle_done = asyncio.Event()
        self.sends = 0
        self.skipped_cycles = 0

    @property
    def targets(self) -> dict[str, Target]:
        return self._targets

    def set_targets(self, targets: Iterable[Target]) -> None:
        """Replace the target set. Unchanged targets keep their place in the schedule."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        new = {t.site_id: t for t in targets}
        for site_id, old in self._targets.items():
            if site_id not in new or not new[site_id].same_schedule(old):
                old.active = False
                task = self._resolvers.pop(site_id, None)
                if task is not None:
                    task.cancel()
        for site_id, target in new.items():
            current = self._targets.get(site_id)
            if current is not None and current.active:
                new[site_id] = current
                continue
            self._never_sent.add(site_id)
            first = now + phase_fraction(site_id) * target.interval
            heapq.heappush(self._heap, (first, next(self._tie), target, 0))
            if target.ip is None:
                self._resolvers[site_id] = loop.create_task(
                    self._resolve_forever(target), name=f"resolve {site_id}")
        self._never_sent &= new.keys()
        self._targets = new
        if not self._never_sent:
            self.first_cycle_done.set()
        self._poke()

    def behind(self, now: float) -> float:
        """How far the earliest due probe is overdue: near 0 while the loop keeps up."""
        heap = self._heap
        while heap and not heap[0][2].active:
            heapq.heappop(heap)
        return max(0.0, now - heap[0][0]) if heap else 0.0

    def _poke(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._send_due(loop.time())
                wake: asyncio.Future[None] = loop.create_future()
                self._wake = wake
                due = self._heap[0][0] if self._heap else loop.time() + 3600.0
                handle = loop.call_at(due, _resolve_future, wake)
                try:
                    await wake
                finally:
                    handle.cancel()
        finally:
            for task in self._resolvers.values():
                task.cancel()
            self._resolvers.clear()

    def _send_due(self, now: float) -> None:
        heap = self._heap
        if not heap or heap[0][0] > now + COALESCE:
            return
        if self._observe_lag is not None:
            self._observe_lag(max(0.0, now - heap[0][0]))
        horizon = now + COALESCE
        while heap and heap[0][0] <= horizon:
            due, _, target, index = heapq.heappop(heap)
            if not target.active:
                continue
            ip = target.ip
            if ip is None:
                self._on_result(ProbeResult(
                    target.site_id, target.address, 0, time.time(), Outcome.SEND_ERROR,
                    detail=f"cannot resolve {target.address}: {target.resolve_error or 'pending'}",
                ))
            else:
                target.send(target.site_id, ip, target.timeout)
            self.sends += 1
            if self._never_sent:
                self._never_sent.discard(target.site_id)
                if not self._never_sent:
                    # a set keeps its table when emptied: 1 MB at 20,000 sites
                    self._never_sent = set()
                    self.first_cycle_done.set()
            if index + 1 < target.burst:
                nxt = (due + target.burst_spacing, next(self._tie), target, index + 1)
            else:
                cycle_start = due - index * target.burst_spacing
                next_due = cycle_start + target.interval
                if next_due < now:
                    # The loop was stalled for more than an interval: skip the missed
                    # cycles instead of sending a backlog all at once, keep the phase.
                    missed = int((now - next_due) // target.interval) + 1
                    self.skipped_cycles += missed
                    next_due += missed * target.interval
                nxt = (next_due, next(self._tie), target, 0)
            heapq.heappush(heap, nxt)

    async def _resolve_forever(self, target: Target) -> None:
        """Keep a hostname's address current; a failure affects only this site."""
        loop = asyncio.get_running_loop()
        while target.active:
            try:
                infos = await loop.getaddrinfo(target.address, None, type=socket.SOCK_RAW)
            except (OSError, UnicodeError) as exc:
                target.resolve_error = str(exc) or type(exc).__name__
                log.warning("resolve_failed", site=target.site_id, address=target.address,
                            error=target.resolve_error)
                await asyncio.sleep(min(30.0, target.resolve_interval))
                continue
            # Prefer IPv4 as ping does, since provincial links are IPv4 first.
            infos.sort(key=lambda info: info[0] != socket.AF_INET)
            ip = str(infos[0][4][0])
            if ip != target.ip:
                log.info("resolved", site=target.site_id, address=target.address, ip=ip)
            target.ip = ip
            target.resolve_error = ""
            await asyncio.sleep(target.resolve_interval)


def _resolve_future(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
