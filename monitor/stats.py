"""Window statistics: RTT, loss, jitter and MOS, with the definitions users expect.

Pure functions over the probes of one window; ``SiteWindow`` only keeps the samples.
"""

from __future__ import annotations

import math
import operator
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import filterfalse, islice

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


def r_factor(avg_rtt: float, jitter_s: float, loss_ratio: float) -> float:
    """Simplified ITU-T G.107 E-model R-factor as ping tools compute it (inputs in seconds)."""
    effective_latency_ms = avg_rtt * 1000 + 2 * jitter_s * 1000 + 10
    if effective_latency_ms < 160:
        r = 93.2 - effective_latency_ms / 40
    else:
        r = 93.2 - (effective_latency_ms - 120) / 10
    r -= 2.5 * loss_ratio * 100
    return max(r, 0.0)


def mos_from_r(r: float) -> float:
    """Mean opinion score (1–4.5) from an R-factor (ITU-T G.107 Annex B).

    The cubic dips below 1 for 0 < R < 6.5; G.107 defines MOS as 1 at the bottom of
    the scale, so it is clamped (found by the property test).
    """
    return min(4.5, max(1.0, 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r)))


def summarize(samples: Sequence[Sample]) -> WindowStats:
    """Statistics of one window's resolved probes, given in send order."""
    return summarize_rtts(len(samples), [rtt for _, rtt in samples if rtt is not None])


def summarize_rtts(sent: int, rtts: list[float]) -> WindowStats:
    """Statistics of ``sent`` probes whose replies took ``rtts``, in send order.

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
    avg = sum(rtts) / received
    # E[x²] − E[x]²: RTTs vary far more than 1e-7 of their size, so no precision is lost;
    # hypot is the root of the sum of squares, in one C call
    stddev = math.sqrt(max(0.0, math.hypot(*rtts) ** 2 / received - avg * avg))
    jit = jitter(rtts)
    r = r_factor(avg, jit or 0.0, loss or 0.0)
    return WindowStats(
        sent=sent,
        received=received,
        loss_ratio=loss,
        rtt_min=ordered[0],
        rtt_avg=avg,
        rtt_max=ordered[-1],
        rtt_median=percentile(ordered, 0.5),
        rtt_p95=percentile(ordered, 0.95),
        rtt_stddev=stddev,
        jitter=jit,
        r_factor=r,
        mos=mos_from_r(r),
    )


class SiteWindow:
    """The resolved probes of one site whose send time lies within the last ``length`` s.

    Kept as one flat array of (sent_at, rtt) pairs in send order, NaN for a probe
    without a reply: 16 bytes a probe where a deque of tuples took ~110, which is
    most of the daemon's memory at 20,000 sites. Every change is one C-level call
    (``extend``, slice assignment, ``del``), so a copy taken from another thread
    (``data[:]``) always holds whole pairs.
    """

    __slots__ = ("_data", "_max", "length")

    def __init__(self, length: float, max_samples: int) -> None:
        self.length = length
        # The bound keeps memory fixed even if a misconfigured clock stops pruning.
        self._max = 2 * max_samples
        self._data = array("d")

    def add(self, sent_at: float, rtt: float | None) -> None:
        data = self._data
        value = _NAN if rtt is None else rtt
        end = len(data)
        if not end or data[end - 2] <= sent_at:
            data.extend((sent_at, value))
        else:
            # A timeout resolves after later replies: its place is a few pairs back.
            at = end - 2
            while at > 0 and data[at - 2] > sent_at:
                at -= 2
            data[at:at] = array("d", (sent_at, value))
        if len(data) > self._max:
            del data[:len(data) - self._max]

    def _prune(self, now: float) -> None:
        data, horizon = self._data, now - self.length
        if data and data[0] < horizon:
            del data[:_first_at(data, horizon)]

    def samples(self, now: float, since: float = 0.0) -> list[Sample]:
        """The window's samples sent at or after ``since``, in send order."""
        self._prune(now)
        data = self._data
        return _pairs(data, _first_at(data, max(now - self.length, since)))

    def snapshot(self) -> list[Sample]:
        """A copy of the samples as they are, safe to take from another thread."""
        return _pairs(self._data[:], 0)

    def stats(self, now: float, since: float = 0.0) -> WindowStats:
        """The window's statistics (from the event loop: drops what is too old)."""
        self._prune(now)
        return _stats(self._data, max(now - self.length, since))

    def current_stats(self, now: float) -> WindowStats:
        """The window's statistics without changing it: safe from another thread."""
        return _stats(self._data[:], now - self.length)


_NAN = math.nan


def _first_at(data: array[float], start: float) -> int:
    """Index of the first pair sent at or after ``start`` (binary search on pairs)."""
    lo, hi = 0, len(data) // 2
    while lo < hi:
        mid = (lo + hi) // 2
        if data[2 * mid] < start:
            lo = mid + 1
        else:
            hi = mid
    return 2 * lo


def _pairs(data: array[float], first: int) -> list[Sample]:
    """The (sent_at, rtt) samples from index ``first`` on; NaN (no reply) becomes None."""
    return [(data[i], None if data[i + 1] != data[i + 1] else data[i + 1])
            for i in range(first, len(data), 2)]


def _stats(data: array[float], start: float) -> WindowStats:
    first = _first_at(data, start)
    replies = data[first + 1::2]
    # NaN (a lost probe) makes the sum NaN: only then is there anything to filter
    total = sum(replies)
    rtts = replies.tolist() if total == total else list(filterfalse(math.isnan, replies))
    return summarize_rtts(len(replies), rtts)
