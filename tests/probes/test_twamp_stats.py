"""TWAMP stream statistics against hand-computed streams (probes.twamp_stream).

Times below are in milliseconds. The reflector's clock runs 5 s ahead of the sender's
unless a test says otherwise, so only figures that need no clock sync can come out
right: a test that read one-way delay from unsynchronised clocks would see 5 s.
"""

from __future__ import annotations

import pytest

from probes.twamp import ErrorEstimate, Reflection
from probes.twamp_stream import (
    DuplicateReply,
    StreamPacket,
    mos_from_r,
    r_factor,
    stream_stats,
)

MS = 1_000_000
OFFSET = 5_000  # reflector clock − sender clock, ms
HOLD = 1  # reflector's own time between T2 and T3, ms
BASE = 7_000  # the stream's first sender sequence number
UNSYNCED = ErrorEstimate(False, 0, 1)
SYNCED = ErrorEstimate(True, 0, 1)


def answered(index: int, forward: float, reverse: float, reflector_seq: int, *,
             offset: float = OFFSET, synced: bool = False, t4_shift: float = 0) -> StreamPacket:
    """Packet ``index``, sent every 20 ms, with the given one-way delays (ms)."""
    t1 = 20 * index
    t2 = t1 + forward + offset
    t3 = t2 + HOLD
    t4 = t3 - offset + reverse + t4_shift
    estimate = SYNCED if synced else UNSYNCED
    reflection = Reflection(reflector_seq, int(t3 * MS), estimate, int(t2 * MS), BASE + index,
                            int(t1 * MS), estimate, 64)
    return StreamPacket(index, BASE + index, int(t1 * MS), reflection, int(t4 * MS), 64)


def lost(index: int) -> StreamPacket:
    return StreamPacket(index, BASE + index, 20 * index * MS)


def test_forward_only_variation_reads_forward() -> None:
    forward = [10, 12, 10, 14]
    stats = stream_stats([answered(i, d, 10, 300 + i) for i, d in enumerate(forward)])
    # |IPDV| of 10, 12, 10, 14: 2, 2, 4
    assert stats.forward.ipdv_mean == pytest.approx(8 / 3 * 1e-3)
    assert stats.forward.ipdv_p95 == pytest.approx(4e-3)
    # RFC 3550: J += (|D| − J)/16 over D = 2, 2, 4
    jitter = 0.0
    for d in (2, 2, 4):
        jitter += (d - jitter) / 16
    assert jitter == pytest.approx(0.47705078125)
    assert stats.forward.jitter == pytest.approx(jitter * 1e-3)
    assert stats.reverse.ipdv_mean == 0
    assert stats.reverse.jitter == 0
    # RTT = forward + reverse, the reflector's hold and clock offset taken out
    assert stats.rtt_mean == pytest.approx(21.5e-3)
    assert (stats.rtt_min, stats.rtt_max) == (pytest.approx(20e-3), pytest.approx(24e-3))
    assert stats.rtt_jitter == pytest.approx(8 / 3 * 1e-3)
    assert not stats.synchronized
    assert stats.forward.delay_mean is None and stats.reverse.delay_mean is None


def test_reverse_only_variation_reads_reverse() -> None:
    reverse = [10, 13, 10]
    stats = stream_stats([answered(i, 10, d, 300 + i) for i, d in enumerate(reverse)])
    assert stats.reverse.ipdv_mean == pytest.approx(3e-3)
    assert stats.reverse.jitter == pytest.approx((3 / 16 + (3 - 3 / 16) / 16) * 1e-3)
    assert stats.forward.ipdv_mean == 0
    assert stats.forward.jitter == 0


def test_one_way_delay_only_when_both_clocks_are_synchronised() -> None:
    packets = [answered(i, 10 + i, 20, 300 + i, offset=0, synced=True) for i in range(3)]
    stats = stream_stats(packets)
    assert stats.synchronized
    assert stats.forward.delay_mean == pytest.approx(11e-3)
    assert stats.forward.delay_min == pytest.approx(10e-3)
    assert stats.reverse.delay_mean == pytest.approx(20e-3)


def test_loss_on_each_way_is_told_apart_by_the_reflector_counter() -> None:
    # Packet 2 never reached the reflector (its counter did not move); packet 5 was
    # reflected as number 504 and that reply was lost.
    packets = [answered(0, 10, 10, 500), answered(1, 10, 10, 501), lost(2),
               answered(3, 10, 10, 502), answered(4, 10, 10, 503), lost(5),
               answered(6, 10, 10, 505), answered(7, 10, 10, 506)]
    stats = stream_stats(packets)
    assert (stats.sent, stats.received, stats.lost) == (8, 6, 2)
    assert stats.loss_percent == 25
    assert stats.forward.lost == 1
    assert stats.reverse.lost == 1
    assert stats.lost_unattributed == 0
    assert stats.longest_loss_burst == 1
    assert not stats.reflector_echoes_sequence


def test_losses_outside_the_replies_are_unattributed() -> None:
    packets = [lost(0), answered(1, 10, 10, 40), lost(2), lost(3), lost(4),
               answered(5, 10, 10, 41), lost(6)]
    stats = stream_stats(packets)
    # 2, 3, 4: the counter went 40 → 41, so the reflector never saw them
    assert (stats.forward.lost, stats.reverse.lost) == (3, 0)
    assert stats.lost_unattributed == 2  # packets 0 and 6
    assert stats.longest_loss_burst == 3


def test_counter_wrap_is_not_a_loss() -> None:
    packets = [answered(0, 10, 10, 0xFFFFFFFE), answered(1, 10, 10, 0xFFFFFFFF),
               answered(2, 10, 10, 0), answered(3, 10, 10, 1)]
    stats = stream_stats(packets)
    assert (stats.forward.lost, stats.reverse.lost, stats.lost) == (0, 0, 0)


def test_reflector_echoing_the_sender_sequence_hides_the_direction() -> None:
    packets = [answered(0, 10, 10, BASE), lost(1), answered(2, 10, 10, BASE + 2)]
    stats = stream_stats(packets)
    assert stats.reflector_echoes_sequence
    assert stats.forward.lost is None and stats.reverse.lost is None
    assert stats.lost_unattributed == 1


def test_forward_reordering() -> None:
    # packet 2 reaches the reflector 25 ms late, after packet 3; the reflector numbers
    # them in arrival order and its replies keep that order on the way back
    packets = [answered(0, 10, 10, 100), answered(1, 10, 10, 101),
               answered(2, 35, 10, 103), answered(3, 10, 10, 102)]
    stats = stream_stats(packets)
    assert (stats.forward.reordered, stats.reverse.reordered) == (1, 0)
    assert (stats.forward.lost, stats.reverse.lost) == (0, 0)


def test_reverse_reordering() -> None:
    # packet 1's reply is held 30 ms on the way back and arrives after packet 2's
    packets = [answered(0, 10, 10, 100), answered(1, 10, 40, 101),
               answered(2, 10, 10, 102)]
    stats = stream_stats(packets)
    assert (stats.forward.reordered, stats.reverse.reordered) == (0, 1)


def test_duplicates_per_direction() -> None:
    packets = [answered(0, 10, 10, 100), answered(1, 10, 10, 101), answered(2, 10, 10, 103)]
    duplicates = [
        # packet 1 reached the reflector twice: the second copy took number 102
        DuplicateReply(1, 102, 30 * MS),
        # packet 2's reply was copied on the way back: same number
        DuplicateReply(2, 103, 50 * MS),
    ]
    stats = stream_stats(packets, duplicates)
    assert stats.duplicates == 2
    assert (stats.forward.duplicates, stats.reverse.duplicates) == (1, 1)
    # number 102 was used by the duplicate, so no reply went missing
    assert (stats.forward.lost, stats.reverse.lost, stats.lost) == (0, 0, 0)


def test_everything_lost() -> None:
    stats = stream_stats([lost(0), lost(1)])
    assert (stats.received, stats.loss_percent, stats.longest_loss_burst) == (0, 100, 2)
    assert stats.rtt_mean is None and stats.forward.jitter is None
    assert (stats.r_factor, stats.mos) == (0, 1)
    assert stats.lost_unattributed == 2


def test_mos_worked_example() -> None:
    # EL = 40 + 2·5 + 10 = 60 ms; R = 93.2 − 60/40 − 2.5·0.5 = 90.45
    r = r_factor(0.040, 0.005, 0.005)
    assert r == pytest.approx(90.45)
    # 1 + 0.035·90.45 + 7e-6·90.45·30.45·9.55 = 4.3499
    assert mos_from_r(r) == pytest.approx(4.35, abs=0.005)
    # past 160 ms the slope is 1/10: EL = 210 → R = 93.2 − 9
    assert r_factor(0.200, 0.0, 0.0) == pytest.approx(84.2)
    assert r_factor(0.040, 0.005, 0.5) == 0
