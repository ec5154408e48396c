"""When each site is probed: one heap, one sender, absolute schedule, even spread.

One asyncio task per site (20,000 sleeping tasks) is the pattern to avoid at scale;
here a heap of due times feeds one timer callback that wakes when the next probe is due
and sends everything due within a short slot after it. At the province's 240 sites the
fixed cost of a wake-up, not the sending, was most of the daemon's CPU: a slot of up to
50 ms sends a dozen probes per wake-up there. Each probe is stamped by its engine right
before its own ``sendto``, so sending it a few milliseconds early moves no RTT, and the
schedule stays absolute (the next due time follows from the due time, not from when it
went out). Sites of one interval start evenly spaced over it (their order fixed by a
hash of the site id), so the slot is the only unevenness of the send times.
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

# Probes due within this much of the earliest due one go out in the same wake-up:
# waking the loop costs far more than sending a packet a few milliseconds early.
# Measured with the daemon alone on 240 loopback sites (2026-12-05, two 30 s spans of
# /proc CPU, load < 0.2): 2.4 % of a core with a 20 ms slot, 1.5 % with 50 ms. With the
# starts evenly spaced, the send times stay within slot/interval (5 % at 1 s) of uniform.
SLOT = 0.05
# ... but never more than this share of the shortest interval or burst spacing among
# the targets, so that fast lab intervals (20 ms) and burst spacings keep their shape,
SLOT_SHARE = 0.05
# ... nor more probes than this a wake-up on average: at 20,000 sites a second a 50 ms
# slot would send 1,000 at once (8 ms of sendto) and hold the loop that long for
# everything else; 256 is 13 ms of schedule there, and already amortizes the wake-up.
SLOT_PROBES = 256
# After a stall the backlog goes out this many at a time, one loop iteration each, so
# that the engine's poll, the timers and the health loop get their turn in between
# (a 0.2 s stall at 20,000 sites a second is 4,000 probes, 80 ms of sending).
CATCH_UP = 2 * SLOT_PROBES


def slot_for(targets: Iterable[Target]) -> float:
    """The coalescing slot for these targets: ``SLOT`` or less for fast schedules and
    high probe rates."""
    shortest, rate = 1.0, 0.0
    for i, t in enumerate(targets):
        spacing = min(t.interval, t.burst_spacing if t.burst > 1 else t.interval)
        shortest = spacing if i == 0 else min(shortest, spacing)
        rate += t.burst / t.interval
    return min(SLOT, shortest * SLOT_SHARE, SLOT_PROBES / rate if rate else SLOT)


def phase_fraction(site_id: str) -> float:
    """A stable position in [0, 1) for a site, from a hash of its id: the order in which
    the sites of one interval start (``phases``)."""
    digest = hashlib.blake2b(site_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def phases(targets: Iterable[Target]) -> dict[str, float]:
    """Where in its interval each target starts, as a fraction of it: the targets of
    one interval evenly spaced (the k-th of n by hash at (k + 1/2)/n), so that however
    few they are, the sends cover the interval without bunching. Random phases alone
    were 5.2 % from uniform at 240 sites (KS distance; ~0.87/√n). The same inventory
    gives every site the same phase at every start."""
    by_interval: dict[float, list[tuple[float, str]]] = {}
    for t in targets:
        by_interval.setdefault(t.interval, []).append((phase_fraction(t.site_id), t.site_id))
    spread: dict[str, float] = {}
    for group in by_interval.values():
        group.sort()
        n = len(group)
        for k, (_, site_id) in enumerate(group):
            spread[site_id] = (k + 0.5) / n
    return spread


def is_ip_literal(address: str) -> bool:
    return ip_version(address) is not None


# A heap entry: a probe's due time (ns on the loop's clock), its target's number and its
# index in the burst, packed in one int that orders as that triple would. An int, not a
# tuple: the cyclic collector never tracks ints, and at 20,000 sites 20,000 entries are
# made a second, each alive for an interval (as tuples, every young collection walked
# them all: with the engine's probes, 10-25 ms of the loop at a time).
_INDEX_BITS = 16
_NUMBER_BITS = 48
_DUE_SHIFT = _INDEX_BITS + _NUMBER_BITS
_INDEX_MASK = (1 << _INDEX_BITS) - 1
_NUMBER_MASK = (1 << _NUMBER_BITS) - 1


def _entry(due_ns: int, number: int, index: int) -> int:
    return due_ns << _DUE_SHIFT | number << _INDEX_BITS | index


def _number(entry: int) -> int:
    return entry >> _INDEX_BITS & _NUMBER_MASK


def _due(entry: int) -> float:
    """The entry's due time in seconds of the loop's clock."""
    return (entry >> _DUE_SHIFT) / 1e9


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
    # the interval and the burst spacing in ns, as the schedule counts
    interval_ns: int = field(init=False, repr=False)
    spacing_ns: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.ip is None and is_ip_literal(self.address):
            self.ip = self.address
        if not 1 <= self.burst <= _INDEX_MASK:
            raise ValueError(f"burst must be between 1 and {_INDEX_MASK}, not {self.burst}")
        self.interval_ns = round(self.interval * 1e9)
        self.spacing_ns = round(self.burst_spacing * 1e9)

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
        # ``_entry(due_ns, target's number, burst index)``, one per target; entries of
        # replaced targets are skipped when popped rather than searched for and removed
        self._heap: list[int] = []
        self._numbered: dict[int, Target] = {}
        self._numbers = itertools.count()
        self._slot = SLOT
        # One timer for the earliest due probe; None while not running or while sending.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
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
        start: dict[str, float] | None = None
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
            if start is None:  # only when a target is new: 20 ms at 20,000 sites
                start = phases(new.values())
            first_ns = round((now + start[site_id] * target.interval) * 1e9)
            number = next(self._numbers)
            self._numbered[number] = target
            heapq.heappush(self._heap, _entry(first_ns, number, 0))
            if target.ip is None:
                self._resolvers[site_id] = loop.create_task(
                    self._resolve_forever(target), name=f"resolve {site_id}")
        self._never_sent &= new.keys()
        self._targets = new
        self._slot = slot_for(new.values())
        if not self._never_sent:
            self.first_cycle_done.set()
        self._poke()

    def behind(self, now: float) -> float:
        """How far the earliest due probe is overdue: near 0 while the loop keeps up."""
        heap, numbered = self._heap, self._numbered
        while heap and not numbered[_number(heap[0])].active:
            del numbered[_number(heapq.heappop(heap))]
        return max(0.0, now - _due(heap[0])) if heap else 0.0

    def _poke(self) -> None:
        """Re-arm the timer for the earliest due probe (new targets may be due sooner)."""
        if self._loop is not None:
            self._arm(self._loop)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        heap = self._heap
        due = _due(heap[0]) if heap else loop.time() + 3600.0
        if self._timer is not None:
            if self._timer_at == due:
                return
            self._timer.cancel()
        self._timer = loop.call_at(due, self._wake, loop)
        self._timer_at = due

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._send_due(loop.time())
        self._arm(loop)

    async def run(self) -> None:
        """Send until cancelled: a timer callback per wake-up, no task or future per probe."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        try:
            self._wake(loop)
            await loop.create_future()  # never done: the timer does the work until cancelled
        finally:
            self._loop = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            for task in self._resolvers.values():
                task.cancel()
            self._resolvers.clear()

    def _send_due(self, now: float) -> None:
        heap, numbered = self._heap, self._numbered
        if not heap or _due(heap[0]) > now + self._slot:
            return
        if self._observe_lag is not None:
            self._observe_lag(max(0.0, now - _due(heap[0])))
        now_ns = round(now * 1e9)
        # every entry due at or before the end of the slot is below this one
        limit = _entry(round((now + self._slot) * 1e9) + 1, 0, 0)
        budget = CATCH_UP
        while heap and heap[0] < limit and budget:
            budget -= 1
            entry = heapq.heappop(heap)
            number, index = _number(entry), entry & _INDEX_MASK
            target = numbered[number]
            if not target.active:
                del numbered[number]
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
            due_ns = entry >> _DUE_SHIFT
            if index + 1 < target.burst:
                nxt = _entry(due_ns + target.spacing_ns, number, index + 1)
            else:
                next_ns = due_ns - index * target.spacing_ns + target.interval_ns
                if next_ns < now_ns:
                    # The loop was stalled for more than an interval: skip the missed
                    # cycles instead of sending a backlog all at once, keep the phase.
                    missed = (now_ns - next_ns) // target.interval_ns + 1
                    self.skipped_cycles += missed
                    next_ns += missed * target.interval_ns
                nxt = _entry(next_ns, number, 0)
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
