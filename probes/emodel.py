"""The E-model vcmon scores every link with: one formula for ICMP windows and TWAMP
streams alike, so that their MOS compare (``monitor.status.window`` and
``probes.twamp_stream`` both use it)."""

from __future__ import annotations

__all__ = ["mos_from_r", "r_factor"]


def r_factor(avg_rtt: float, jitter_s: float, loss_ratio: float) -> float:
    """Simplified ITU-T G.107 E-model R-factor as ping tools compute it (inputs in seconds).

    EL = RTT + 2·jitter + 10 ms; R = 93.2 − EL/40 below 160 ms, else 93.2 − (EL − 120)/10;
    then 2.5 per percent lost, floored at 0.
    """
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
