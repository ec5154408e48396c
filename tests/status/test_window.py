"""Window statistics against hand-computed values."""

from __future__ import annotations

import gc
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.status.window import (
    SiteWindow,
    _first_at,
    _written,
    jitter,
    mos_from_r,
    percentile,
    r_factor,
    summarize,
)


def test_mos_worked_example_from_the_design() -> None:
    # RTT 40 ms, jitter 5 ms, loss 0.5 % → R 90.45, MOS 4.35
    r = r_factor(0.040, 0.005, 0.005)
    assert r == pytest.approx(90.45)
    assert mos_from_r(r) == pytest.approx(4.3499, abs=1e-4)


def test_r_factor_switches_formula_at_160_ms_effective_latency() -> None:
    # EL = 200 + 2*0 + 10 = 210 ≥ 160 → 93.2 − (210 − 120)/10 = 84.2
    assert r_factor(0.200, 0.0, 0.0) == pytest.approx(84.2)
    # EL = 149 + 0 + 10 = 159 < 160 → 93.2 − 159/40
    assert r_factor(0.149, 0.0, 0.0) == pytest.approx(93.2 - 159 / 40)


def test_r_factor_floors_at_zero_and_mos_is_one() -> None:
    assert r_factor(0.010, 0.0, 1.0) == 0.0
    assert mos_from_r(0.0) == 1.0


def test_jitter_is_mean_absolute_successive_difference() -> None:
    assert jitter([0.010, 0.014, 0.011, 0.011]) == pytest.approx((0.004 + 0.003 + 0.0) / 3)
    assert jitter([0.010]) is None
    assert jitter([]) is None


def test_jitter_of_uniform_noise_approaches_two_thirds_of_amplitude() -> None:
    rng = random.Random(7)
    amplitude = 0.010
    rtts = [0.030 + rng.uniform(-amplitude, amplitude) for _ in range(20000)]
    assert jitter(rtts) == pytest.approx(2 * amplitude / 3, rel=0.02)


def test_percentile_interpolates_linearly() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0.5) == 2.5
    assert percentile(values, 0.95) == pytest.approx(3.85)
    assert percentile(values, 0.0) == 1.0
    assert percentile(values, 1.0) == 4.0
    assert percentile([5.0], 0.95) == 5.0
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_summarize_hand_computed_window() -> None:
    samples = [(0.0, 0.010), (1.0, 0.020), (2.0, None), (3.0, 0.030), (4.0, 0.020)]
    s = summarize(samples)
    assert (s.sent, s.received) == (5, 4)
    assert s.loss_ratio == pytest.approx(0.2)
    assert s.rtt_min == 0.010
    assert s.rtt_max == 0.030
    assert s.rtt_avg == pytest.approx(0.020)
    assert s.rtt_median == pytest.approx(0.020)
    assert s.rtt_p95 == pytest.approx(0.0285)  # sorted 10,20,20,30: pos 2.85 → 20 + .85*10
    assert s.rtt_stddev == pytest.approx((0.0002 / 4) ** 0.5)  # population σ
    # consecutive replies in send order: |20−10|, |30−20|, |20−30| → 10 ms mean
    assert s.jitter == pytest.approx(0.010)
    # EL = 20 + 20 + 10 = 50 → R = 93.2 − 1.25 − 2.5·20 = 41.95
    assert s.r_factor == pytest.approx(41.95)
    assert s.mos == pytest.approx(1 + 0.035 * 41.95 + 7e-6 * 41.95 * (41.95 - 60) * 58.05)


def test_summarize_all_lost_and_empty() -> None:
    lost = summarize([(0.0, None), (1.0, None)])
    assert (lost.sent, lost.received, lost.loss_ratio) == (2, 0, 1.0)
    assert lost.rtt_avg is None and lost.jitter is None
    assert lost.mos == 1.0
    empty = summarize([])
    assert empty.sent == 0 and empty.loss_ratio is None and empty.mos is None


def test_window_drops_old_samples_and_orders_by_send_time() -> None:
    window = SiteWindow(10.0, max_samples=100)
    # RTTs that single precision holds exactly (see the precision test below)
    window.add(100.0, 2**-10)
    window.add(105.0, 2**-9)
    window.add(103.0, None)  # a timeout resolves after a later reply
    assert window.samples(now=108.0) == [(100.0, 2**-10), (103.0, None), (105.0, 2**-9)]
    assert window.samples(now=112.0) == [(103.0, None), (105.0, 2**-9)]
    assert window.stats(now=200.0).sent == 0


def test_a_window_nobody_reads_keeps_only_its_length() -> None:
    """Each send pushes out what falls behind it: the array never outgrows the window
    between two statistics (at 20,000 sites that growth was 13 MB of heap)."""
    window = SiteWindow(30.0, max_samples=1000)
    for i in range(200):
        window.add(1_795_000_000.0 + i, 4e-6)
    assert len(window.snapshot()) == 31
    assert window.snapshot()[0][0] == 1_795_000_000.0 + 169


def test_window_is_bounded() -> None:
    window = SiteWindow(1e9, max_samples=5)
    for i in range(20):
        window.add(float(i), 0.001)
    assert [t for t, _ in window.samples(now=20.0)] == [15.0, 16.0, 17.0, 18.0, 19.0]


@given(st.lists(st.tuples(st.floats(0, 1000), st.one_of(st.none(), st.floats(0, 5))),
                max_size=200))
def test_summarize_invariants(samples: list[tuple[float, float | None]]) -> None:
    s = summarize(sorted(samples, key=lambda sample: sample[0]))
    assert s.sent == len(samples)
    assert 0 <= s.received <= s.sent
    if s.sent:
        assert s.loss_ratio is not None and 0.0 <= s.loss_ratio <= 1.0
        assert s.mos is not None and 1.0 <= s.mos <= 4.5
    if s.received:
        assert s.rtt_min is not None and s.rtt_max is not None
        assert s.rtt_median is not None and s.rtt_p95 is not None
        assert s.rtt_min <= s.rtt_median <= s.rtt_p95 <= s.rtt_max


def test_mos_stays_on_its_scale_where_the_cubic_dips_below_one() -> None:
    assert 1 + 0.035 * 4.2 + 7e-6 * 4.2 * (4.2 - 60) * (100 - 4.2) < 1
    assert mos_from_r(4.2) == 1.0
    assert mos_from_r(93.2) == pytest.approx(4.41, abs=0.01)


@given(st.lists(st.tuples(st.floats(0, 100), st.one_of(st.none(), st.floats(0, 5))),
                max_size=150),
       st.floats(0, 120), st.floats(0, 100))
def test_window_stats_are_summarize_of_its_samples(
        added: list[tuple[float, float | None]], now: float, since: float) -> None:
    """The array-backed window against the plain definition: samples in send order
    (whatever order they resolved in), the same statistics from every path."""
    window = SiteWindow(30.0, max_samples=100)
    for sent_at, rtt in added:
        window.add(sent_at, rtt)
    snapshot = window.snapshot()
    assert snapshot == sorted(snapshot, key=lambda sample: sample[0])
    assert len(snapshot) <= min(len(added), 100)
    newest = max((t for t, _ in added), default=0.0)
    inside = [sample for sample in added if sample[0] >= newest - 30.0]
    near_edge = any(abs(t - (newest - 30.0)) <= 2**-11 for t, _ in added)
    if len(added) <= 100 and not near_edge:
        # what the window holds as of its newest send; in single precision: send times
        # to 2⁻¹² s, RTTs to 1 part in 2²⁴
        kept = window.samples(newest)
        assert [t for t, _ in kept] == pytest.approx(sorted(t for t, _ in inside), abs=2**-12)
        assert sorted(r for _, r in kept if r is not None) == pytest.approx(
            sorted(r for _, r in inside if r is not None), rel=2**-23)
    current = window.current_stats(now)
    samples = window.samples(now, since)
    assert [t for t, _ in samples] == sorted(t for t, _ in samples)
    assert all(t >= max(now - 30.0, since) for t, _ in samples)
    expected = summarize(samples)
    got = window.stats(now, since)
    assert got.sent == expected.sent and got.received == expected.received
    for name in ("loss_ratio", "rtt_min", "rtt_avg", "rtt_max", "rtt_median", "rtt_p95",
                 "rtt_stddev", "jitter", "mos"):
        assert getattr(got, name) == pytest.approx(getattr(expected, name), abs=1e-9), name
    if since <= now - 30.0:
        assert current == got


def test_the_window_keeps_real_send_times_and_rtts_closely_across_a_new_base() -> None:
    """Epoch send times (1.8e9 s) over more than one base: send times within 0.25 ms,
    RTTs within a part in ten million, statistics as of the exact values."""
    rng = random.Random(11)
    start = 1_795_000_000.123456
    window = SiteWindow(60.0, max_samples=70)
    sent = [start + i + rng.random() * 0.01 for i in range(3000)]  # 50 min, bases move
    rtts = [4e-6 + rng.random() * 1e-6 if i % 7 else None for i in range(3000)]
    for t, r in zip(sent, rtts, strict=True):
        window.add(t, r)
    now = sent[-1] + 0.5
    kept = [(t, r) for t, r in zip(sent, rtts, strict=True) if t >= now - 60.0]
    got = window.samples(now)
    assert len(got) == len(kept)
    for (t, r), (t_kept, r_kept) in zip(got, kept, strict=True):
        assert abs(t - t_kept) <= 2**-12
        assert (r is None) == (r_kept is None)
        assert r is None or abs(r - r_kept) <= r_kept * 2**-23
    exact, stored = summarize(kept), window.stats(now)
    assert stored.sent == exact.sent and stored.received == exact.received
    assert stored.rtt_median == pytest.approx(exact.rtt_median, rel=1e-6)
    assert stored.jitter == pytest.approx(exact.jitter, rel=1e-5)


def test_stddev_matches_the_two_pass_definition() -> None:
    rng = random.Random(7)
    for base in (4e-6, 0.040, 0.6):
        rtts = [base + rng.gauss(0, base / 50) for _ in range(60)]
        avg = sum(rtts) / len(rtts)
        two_pass = (sum((x - avg) ** 2 for x in rtts) / len(rtts)) ** 0.5
        got = summarize([(float(i), r) for i, r in enumerate(rtts)]).rtt_stddev
        assert got == pytest.approx(two_pass, rel=1e-6)


def test_a_send_makes_no_object_for_the_cyclic_collector_most_of_the_time() -> None:
    """A window lives as long as its site, and what a send made lived until the next
    send, a second: at 20,000 sites 20,000 objects in the young generation at every
    collection, which walks them all. A send writes numbers into the array; only when
    the pairs move to a new array (every tenth send here) does it make objects: the
    array and a tuple."""
    start = 1_795_000_000.0
    windows = [SiteWindow(60.0, max_samples=70) for _ in range(1000)]
    for k, window in enumerate(windows):
        for second in range(k % 10, 100):  # each its own number of sends: moves spread
            window.add(start + second, 4e-6)
    was_enabled = gc.isenabled()
    gc.collect()  # what is alive now is old
    gc.disable()  # what is made from now on stays in the young generation
    try:
        before = len(gc.get_objects(generation=0))
        for window in windows:  # one second's sends
            window.add(start + 100, 4e-6)
        made = len(gc.get_objects(generation=0)) - before
    finally:
        if was_enabled:
            gc.enable()
    assert made <= 2 * len(windows) / 10 + 2, made  # a tuple a send made 1,100
    # and another thread still finds every sample: those before the first NaN offset
    now = start + 101
    assert all(w.current_stats(now) == w.stats(now) for w in windows)
    assert windows[0].current_stats(now).sent == 60


def test_another_thread_finds_the_written_pairs_whatever_hi_it_read() -> None:
    """A thread reads the window's array, then its ``hi``: across a move to a new array
    that ``hi`` belongs to the other array. The written pairs are still found from the
    array alone (those before the first NaN offset)."""
    window = SiteWindow(60.0, max_samples=70)
    for i in range(67):
        window.add(1_795_000_000.0 + i, None if i % 7 == 0 else 4e-6)
    _, data = window.state
    for hint in range(-1, len(data) // 2 + 3):
        assert _written(data, hint) == window.hi, hint


@given(st.lists(st.floats(-1000.0, 1000.0), max_size=40), st.floats(-1100.0, 1100.0),
       st.integers(0, 40))
def test_the_first_pair_from_any_place_at_or_before_it(offsets: list[float], start: float,
                                                        lo: int) -> None:
    """``_first_at`` looks at ``lo`` and the next pair before it searches: the same answer
    as a search of the whole range, from any ``lo`` at or before that answer."""
    from array import array
    from bisect import bisect_left

    ordered = sorted(offsets)
    data = array("f", [v for offset in ordered for v in (offset, 0.0)])
    as_stored = data[::2].tolist()
    want = bisect_left(as_stored, start)
    lo = min(lo, want)
    assert _first_at(data, start, lo, len(ordered)) == want


def test_another_thread_starts_from_the_loop_s_lo_only_when_it_fits_the_array() -> None:
    """``_seen`` starts looking at the loop's ``lo``; a ``lo`` that belongs to another
    array (read across a move) or lies past the pairs is not trusted."""
    window = SiteWindow(10.0, max_samples=12)
    for i in range(30):
        window.add(1_795_000_000.0 + i, 4e-6)
    now = 1_795_000_000.0 + 29.5
    want = [rtt for _, rtt in window.samples(now)]
    for lo in (-5, 0, 1, window.lo, window.hi, window.hi + 3, 11, 40):
        window.lo = lo
        _, data, first, hi = window._seen(now - window.length)
        assert data[2 * first + 1:2 * hi:2].tolist() == pytest.approx(want), lo
