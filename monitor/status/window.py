"""Window statistics: RTT, loss, jitter and MOS, with the definitions users expect.

Pure functions over the probes of one window; ``SiteWindow`` only keeps the samples.
The E-model (``r_factor``, ``mos_from_r``) is the probes' one, shared with TWAMP streams.
"""

from __future__ import annotations

import math
import operator
import struct
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import filterfalse, islice

from probes.emodel import mos_from_r, r_factor

__all__ = ["SiteWindow", "WindowStats", "jitter", "mos_from_r", "packed_until", "percentile",
           "r_factor", "summarize", "summarize_rtts", "unpacked"]

# (sent_at, rtt or None for a probe that got no reply), as the window keeps them
Sample = tuple[float, float | None]


# Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__,
# 0.7 µs of the ~6 µs a window's statistics take, 20,000 times per scrape.
@dataclass(slots=True)
class WindowStats:
    sent: int
    received: int
    loss_ratio: float | None
    rtt_min: float | None
    rtt_avg: float | None
    rtt_max: float | None
    rtt_median: float | None
    rtt_p95: float | None
    rtt_stddev: float | None
    jitter: float | None
    r_factor: float | None
    mos: float | None

    def packed(self, until: float) -> bytes:
        """The statistics and until when they may be shown (``until``) as 104 bytes, None
        as NaN (137 in all, where the object and its floats take ~350; ``unpacked`` undoes
        it). Bytes: not an object the cyclic collector tracks, never changed in place."""
        return _PACKED.pack(self.sent, self.received, *[
            _NAN if value is None else value
            for value in (self.loss_ratio, self.rtt_min, self.rtt_avg, self.rtt_max,
                          self.rtt_median, self.rtt_p95, self.rtt_stddev, self.jitter,
                          self.r_factor, self.mos)], until)


# sent, received, the ten statistics and until when they may be shown
_PACKED = struct.Struct("=2q11d")
_UNTIL = struct.Struct("=d")


def packed_until(packed: bytes) -> float:
    """Until when the statistics of ``WindowStats.packed`` may be shown."""
    until: float = _UNTIL.unpack_from(packed, _PACKED.size - _UNTIL.size)[0]
    return until


def unpacked(packed: bytes) -> WindowStats:
    """The ``WindowStats`` of ``WindowStats.packed``."""
    sent, received, *values, _ = _PACKED.unpack(packed)
    return WindowStats(sent, received, *[None if value != value else value for value in values])


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), ``q`` in [0, 1]."""
    if not sorted_values:
        raise ValueError("percentile of an empty sequence")
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def jitter(rtts: Sequence[float]) -> float | None:
    """Mean absolute difference of consecutive RTTs, (1/(n-1)) Σ |RTTᵢ − RTTᵢ₋₁|.

    The definition of check_icmp and most ping-jitter tools (for uniform ±J noise its
    expected value is 2J/3). Needs two RTTs.
    """
    if len(rtts) < 2:
        return None
    total: float = sum(map(abs, map(operator.sub, islice(rtts, 1, None), rtts)))
    return total / (len(rtts) - 1)


def summarize(samples: Sequence[Sample]) -> WindowStats:
    """Statistics of one window's resolved probes, given in send order."""
    return summarize_rtts(len(samples), [rtt for _, rtt in samples if rtt is not None])


def summarize_rtts(sent: int, rtts: list[float], total: float | None = None) -> WindowStats:
    """Statistics of ``sent`` probes whose replies took ``rtts``, in send order
    (``total``: their sum, where the caller has it already).

    Every loop runs in C (``map``, ``sum``, ``sorted``): the daemon summarizes each
    site's window at every scrape and every threshold evaluation, 20,000 sites at a time.
    """
    received = len(rtts)
    loss = (sent - received) / sent if sent else None
    if not rtts:
        # Every probe lost: the link is unusable, and the E-model says so (R floors at 0).
        mos_all_lost = mos_from_r(0.0) if sent else None
        r_all_lost = 0.0 if sent else None
        return WindowStats(sent, 0, loss, None, None, None, None, None, None, None,
                           r_all_lost, mos_all_lost)
    ordered = sorted(rtts)
    avg = (sum(rtts) if total is None else total) / received
    # E[x²] − E[x]²: RTTs vary far more than 1e-7 of their size, so no precision is lost;
    # hypot is the root of the sum of squares, in one C call
    stddev = math.sqrt(max(0.0, math.hypot(*rtts) ** 2 / received - avg * avg))
    jit = jitter(rtts)
    r = r_factor(avg, jit or 0.0, loss or 0.0)
    # positional: the fields in their order (keywords cost a fifth of the call)
    return WindowStats(sent, received, loss, ordered[0], avg, ordered[-1],
                       percentile(ordered, 0.5), percentile(ordered, 0.95), stddev, jit,
                       r, mos_from_r(r))


class SiteWindow:
    """The resolved probes of one site whose send time lies within the last ``length`` s.

    Kept as (offset, rtt) pairs in one ``array('f')`` made at its full size once:
    ``max_samples`` pairs, NaN for a probe without a reply, the offset being the send
    time after the window's ``base``. 8 bytes a probe where a deque of tuples took
    ~110, and an array that never grows: the windows are most of the daemon's memory
    at 20,000 sites, and arrays growing past a size class left 13 MB of heap behind.
    Single precision keeps an RTT to 1 part in 10⁷ (0.4 ps of a 4 µs loopback reply)
    and, as offsets stay within ±``_SPAN`` s of the base (moved when a send falls
    outside), a send time to 0.25 ms, far finer than any window's edge needs.

    The live pairs are ``data[2*lo:2*hi]``, in send order; a send is written after
    them, and when the end is reached they move to the start of a new array. Nothing
    below ``hi`` is ever written again (an out-of-order insert makes a new array too),
    and the pairs past it are NaN, offsets included. A pair is written value first and
    offset last, so a reader in another thread that takes ``state`` (the base and the
    array) once finds every pair written so far: those before the first NaN offset.

    ``lo`` and ``hi`` are plain ints of the loop's, and ``state`` changes only when
    the pairs move: a tuple made at every send lived for a second, and at 20,000 sites
    20,000 of them were in the young generation each time the cyclic collector ran
    (with the scheduler's own, 13 ms a collection while MQTT was publishing).
    """

    __slots__ = ("capacity", "hi", "length", "lo", "state")

    def __init__(self, length: float, max_samples: int) -> None:
        self.length = length
        self.capacity = max_samples
        # (base, data)
        self.state: tuple[float, array[float]] = (0.0, _nan_pairs(max_samples))
        self.lo = 0
        self.hi = 0

    def add(self, sent_at: float, rtt: float | None) -> None:
        base, data = self.state
        before = data
        lo, hi = self.lo, self.hi
        offset = sent_at - base
        if not -_SPAN < offset < _SPAN:
            new_base = _base_for(sent_at)
            data, lo, hi = self._moved(data, lo, hi, shift=base - new_base)
            base, offset = new_base, sent_at - new_base
        value = _NAN if rtt is None else rtt
        if hi > lo and data[2 * hi - 2] > offset:
            # A timeout resolves after later replies: its place is a few pairs back.
            live = data[2 * lo:2 * hi]
            at = len(live) - 2
            while at > 0 and live[at - 2] > offset:
                at -= 2
            live[at:at] = array("f", (offset, value))
            data, lo, hi = self._moved(live, 0, len(live) // 2)
        else:
            if hi == self.capacity:
                data, lo, hi = self._moved(data, lo, hi, room=1)
            data[2 * hi + 1] = value
            data[2 * hi] = offset  # last: the pair counts from now on
            hi += 1
        # What this send pushes out of the window goes now (usually the oldest pair).
        horizon = offset - self.length
        while data[2 * lo] < horizon:
            lo += 1
        self.lo, self.hi = lo, hi
        if data is not before:  # moved (a new base moves the pairs too)
            self.state = (base, data)

    def _moved(self, data: array[float], lo: int, hi: int, shift: float = 0.0,
               room: int = 0) -> tuple[array[float], int, int]:
        """The pairs ``lo..hi`` at the start of a new full-size array, leaving ``room``
        free pairs (the oldest go if need be), their offsets moved by ``shift``."""
        keep = min(hi - lo, self.capacity - room)
        live = data[2 * (hi - keep):2 * hi]
        if shift:
            live[::2] = array("f", [offset + shift for offset in live[::2]])
        return live + _nan_pairs(self.capacity - keep), 0, keep

    def _prune(self, now: float) -> tuple[float, array[float], int, int]:
        base, data = self.state
        self.lo = first = _first_at(data, now - self.length - base, self.lo, self.hi)
        return base, data, first, self.hi

    def samples(self, now: float, since: float = 0.0) -> list[Sample]:
        """The window's samples sent at or after ``since``, in send order."""
        base, data, lo, hi = self._prune(now)
        first = _first_at(data, max(now - self.length, since) - base, lo, hi)
        return _pairs(data, first, hi, base)

    def snapshot(self) -> list[Sample]:
        """The samples as of the newest send, safe to take from another thread."""
        base, data, lo, hi = self._seen(-math.inf)
        return _pairs(data, lo, hi, base)

    def _seen(self, start: float) -> tuple[float, array[float], int, int]:
        """What another thread sees: the base, the array and the live pairs sent at or
        after ``start``; those the newest send pushed out are not (as in ``add``)."""
        base, data = self.state
        hi = _written(data, self.hi)
        if not hi:
            return base, data, 0, 0
        start = max(start - base, data[2 * hi - 2] - self.length)
        # the loop's lo is where to look first, if every pair before it is older
        lo = self.lo
        if not (0 <= lo <= hi and (lo == 0 or data[2 * lo - 2] < start)):
            lo = 0
        return base, data, _first_at(data, start, lo, hi), hi

    def stats(self, now: float, since: float = 0.0) -> WindowStats:
        """The window's statistics (from the event loop: drops what is too old)."""
        base, data, lo, hi = self._prune(now)
        if since > now - self.length:
            lo = _first_at(data, since - base, lo, hi)
        return _stats(data, lo, hi)

    def oldest(self) -> float | None:
        """When the oldest sample still in the window was sent (from the event loop, as
        of the last ``add`` or ``stats``), or None while it holds none."""
        base, data = self.state
        if self.hi <= self.lo:
            return None
        return base + data[2 * self.lo]

    def current_stats(self, now: float) -> WindowStats:
        """The window's statistics without changing it: safe from another thread."""
        _, data, lo, hi = self._seen(now - self.length)
        return _stats(data, lo, hi)


_NAN = math.nan
# How far (s) a send's offset may lie from its window's base before the base moves:
# a float32 offset below 2048 s is exact to 2⁻¹² s (0.24 ms).
_SPAN = 1024.0
_NAN_PAIR = array("f", (_NAN, _NAN))


# Bases are whole multiples of _BASE_STEP s, so that the windows started (or moved) in
# the same few minutes share one float object: one of 24 bytes for every site otherwise.
_BASE_STEP = 256
_last_base = [0.0]


def _base_for(sent_at: float) -> float:
    base = float(math.floor(sent_at / _BASE_STEP) * _BASE_STEP)
    if base == _last_base[0]:
        return _last_base[0]
    _last_base[0] = base
    return base


def _nan_pairs(count: int) -> array[float]:
    return _NAN_PAIR * count


def _first_at(data: array[float], start: float, lo: int, hi: int) -> int:
    """The first pair in ``lo..hi`` sent at or after offset ``start``: ``lo`` or the next
    one, as a window moves a probe at a time (a binary search otherwise)."""
    if lo == hi or not data[2 * lo] < start:
        return lo
    lo += 1
    if lo == hi or not data[2 * lo] < start:
        return lo
    while lo < hi:
        mid = (lo + hi) // 2
        if data[2 * mid] < start:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _written(data: array[float], hint: int) -> int:
    """How many pairs of ``data`` are written: those before the first NaN offset.

    ``hint`` is the window's ``hi`` as read after ``data``: the answer whenever both
    were read between two sends (always in a forked child), which two lookups confirm;
    else a binary search finds it (a thread that read them across a move)."""
    pairs = len(data) // 2
    if (0 <= hint <= pairs and (hint == 0 or data[2 * hint - 2] == data[2 * hint - 2])
            and (hint == pairs or data[2 * hint] != data[2 * hint])):
        return hint
    lo, hi = 0, pairs
    while lo < hi:
        mid = (lo + hi) // 2
        if data[2 * mid] == data[2 * mid]:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _pairs(data: array[float], first: int, hi: int, base: float) -> list[Sample]:
    """The (sent_at, rtt) samples of pairs ``first..hi``; NaN (no reply) becomes None."""
    return [(base + data[i], None if data[i + 1] != data[i + 1] else data[i + 1])
            for i in range(2 * first, 2 * hi, 2)]


def _stats(data: array[float], first: int, hi: int) -> WindowStats:
    replies = data[2 * first + 1:2 * hi:2]
    # NaN (a lost probe) makes the sum NaN: only then is there anything to filter
    total = sum(replies)
    if total == total:
        return summarize_rtts(len(replies), replies.tolist(), total)
    return summarize_rtts(len(replies), list(filterfalse(math.isnan, replies)))
