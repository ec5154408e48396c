"""Window statistics: RTT, loss, jitter and MOS, with the definitions users expect.

Pure functions over the probes of one window; ``SiteWindow`` only keeps the samples.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

# (sent_at, rtt or None for a probe that got no reply), as the window keeps them
Sample = tuple[float, float | None]


@dataclass(frozen=True, slots=True)
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
    return sum(abs(b - a) for a, b in pairwise(rtts)) / (len(rtts) - 1)


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
    sent = len(samples)
    rtts = [rtt for _, rtt in samples if rtt is not None]
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
    stddev = math.sqrt(sum((x - avg) ** 2 for x in rtts) / received)
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


def in_window(samples: Iterable[Sample], now: float, length: float,
              since: float = 0.0) -> list[Sample]:
    """The samples sent in the ``length`` seconds before ``now`` (and not before
    ``since``), in send order.

    Timeouts resolve after later replies, so samples arrive only nearly sorted, and a
    late timeout older than the horizon can sit behind newer samples.
    """
    start = max(now - length, since)
    return sorted((s for s in samples if s[0] >= start), key=_sent_at)


class SiteWindow:
    """The resolved probes of one site whose send time lies within the last ``length`` s."""

    __slots__ = ("_samples", "length")

    def __init__(self, length: float, max_samples: int) -> None:
        self.length = length
        # The bound keeps memory fixed even if a misconfigured clock stops pruning.
        self._samples: deque[Sample] = deque(maxlen=max_samples)

    def add(self, sent_at: float, rtt: float | None) -> None:
        self._samples.append((sent_at, rtt))

    def samples(self, now: float, since: float = 0.0) -> list[Sample]:
        """The window's samples sent at or after ``since``, in send order."""
        horizon = now - self.length
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()
        return in_window(self._samples, now, self.length, since)

    def snapshot(self) -> list[Sample]:
        """A copy of the samples as they are, safe to take from another thread:
        ``list(deque)`` runs in C without releasing the GIL."""
        return list(self._samples)

    def stats(self, now: float, since: float = 0.0) -> WindowStats:
        return summarize(self.samples(now, since))


def _sent_at(sample: Sample) -> float:
    return sample[0]
