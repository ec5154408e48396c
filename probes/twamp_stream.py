"""A TWAMP-light stream's packets and what they say about each direction of the path.

Pure functions over the records a sender makes (``probes.twamp_sender``), so every
figure can be checked against a hand-computed case.

Timestamps: T1 sender send, T2 reflector receive, T3 reflector send, T4 sender receive
(ns). T1/T4 come from one clock and T2/T3 from another, so differences within one
clock are always meaningful; differences across them only when both are synchronised.

- RTT = (T4 − T1) − (T3 − T2): the reflector's own time is taken out.
- Per direction, forward from T2 − T1 and reverse from T4 − T3: IPDV (RFC 3393, with
  RFC 5481 §4.2's consecutive-packet selection) and RFC 3550 §6.4.1 interarrival jitter.
  Both use differences of differences, in which the clock offset cancels: no sync needed.
  One-way delay needs both error estimates' S bit (RFC 4656 §4.1.2), else it is None.

Per-direction loss (the rule): the reflector numbers what it reflects with its own
counter, one per sender (RFC 5357 §4.2.1 "per session"; TWAMP-light reflectors keep one
per sender address and port). Between the first and the last reply received (by the
sender's sequence), ``missing`` sender packets had no reply. The reflector counter
advanced over the same span by ``span`` = last − first + 1 reflections, of which
``seen`` reached us: ``span − seen`` reflections were made and lost on the way back.
So reverse = min(span − seen, missing) and forward = missing − reverse. Packets lost
before the first reply or after the last have no reflector number on either side; they
are counted as ``lost_unattributed``, never guessed. A reflector that copies the
sender's sequence number into its own (some stateless ones do) makes the two
directions indistinguishable: detected when every reply carries the sender's number
(our sequence numbers start at a random value, so a real counter matches with
probability 2^-32), and then every loss is unattributed and directions say None.
Reordering within the same span as a loss can move a loss between the two counts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from math import ceil

from probes.emodel import mos_from_r, r_factor
from probes.twamp import Reflection

__all__ = [
    "DirectionStats",
    "DuplicateReply",
    "StreamPacket",
    "StreamStats",
    "mos_from_r",
    "r_factor",
    "stream_stats",
]

_NS = 1e-9


@dataclass(frozen=True, slots=True)
class StreamPacket:
    """One test packet of a stream: sent at T1, and its first reply if one came in time.

    ``index`` is the position in the stream (0-based), ``seq`` the number on the wire.
    ``received_ns`` is T4; ``reply_ttl`` the TTL / hop limit the reply arrived with.
    """

    index: int
    seq: int
    sent_ns: int
    reflection: Reflection | None = None
    received_ns: int | None = None
    reply_ttl: int | None = None

    @property
    def rtt_ns(self) -> int | None:
        """(T4 − T1) − (T3 − T2), None when lost."""
        if self.reflection is None or self.received_ns is None:
            return None
        reflection = self.reflection
        return ((self.received_ns - self.sent_ns)
                - (reflection.timestamp_ns - reflection.receive_ns))


@dataclass(frozen=True, slots=True)
class DuplicateReply:
    """A further reply to a packet already answered, with the reflector's number on it."""

    index: int
    reflector_seq: int
    received_ns: int


@dataclass(frozen=True, slots=True)
class DirectionStats:
    """One direction (forward: sender → reflector; reverse: back). Seconds.

    ``ipdv_mean`` / ``ipdv_p95`` are of |IPDV| over consecutive packets both received;
    ``jitter`` is RFC 3550's interarrival jitter; ``delay_*`` are one-way delays, None
    unless both clocks say they are synchronised. ``lost`` and ``duplicates`` are None
    when the reflector echoes the sender's sequence (the module doc says why).
    """

    lost: int | None
    duplicates: int | None
    reordered: int
    ipdv_mean: float | None
    ipdv_p95: float | None
    jitter: float | None
    delay_mean: float | None
    delay_min: float | None


@dataclass(frozen=True, slots=True)
class StreamStats:
    """A stream's figures. Times in seconds; ``rtt_jitter`` is the mean |ΔRTT| of
    consecutive replies, the definition vcmon's ICMP statistics use, and the jitter the
    E-model figures take, so TWAMP and ICMP MOS compare."""

    sent: int
    received: int
    lost: int
    loss_percent: float
    lost_unattributed: int
    longest_loss_burst: int
    duplicates: int
    reflector_echoes_sequence: bool
    synchronized: bool
    rtt_min: float | None
    rtt_mean: float | None
    rtt_max: float | None
    rtt_jitter: float | None
    forward: DirectionStats
    reverse: DirectionStats
    r_factor: float
    mos: float


def _p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, ceil(0.95 * len(ordered)) - 1)]  # nearest rank


def _reordered(keys_in_arrival_order: Sequence[tuple[int, ...]]) -> int:
    # RFC 4737 §3.3: a packet is reordered when it arrives after one sent later.
    count, highest = 0, None
    for key in keys_in_arrival_order:
        if highest is not None and key < highest:
            count += 1
        else:
            highest = key
    return count


def _direction(
    received: Sequence[StreamPacket],
    transit: Callable[[StreamPacket], int],
    arrival: Callable[[StreamPacket], int],
    send_order: Callable[[StreamPacket], tuple[int, ...]],
    synchronized: bool,
    lost: int | None,
    duplicates: int | None,
) -> DirectionStats:
    ipdv = [abs(transit(b) - transit(a)) * _NS for a, b in pairwise(received)
            if b.index == a.index + 1]
    by_arrival = sorted(received, key=arrival)
    jitter: float | None = None
    if len(by_arrival) > 1:
        jitter = 0.0
        for a, b in pairwise(by_arrival):
            jitter += (abs(transit(b) - transit(a)) * _NS - jitter) / 16  # RFC 3550 A.8
    delays = [transit(p) * _NS for p in received] if synchronized and received else []
    return DirectionStats(
        lost=lost,
        duplicates=duplicates,
        reordered=_reordered([send_order(p) for p in by_arrival]),
        ipdv_mean=sum(ipdv) / len(ipdv) if ipdv else None,
        ipdv_p95=_p95(ipdv) if ipdv else None,
        jitter=jitter,
        delay_mean=sum(delays) / len(delays) if delays else None,
        delay_min=min(delays) if delays else None,
    )


def _relative(seq: int, base: int) -> int:
    """``seq`` − ``base`` as a signed 32-bit difference (counters wrap)."""
    return ((seq - base + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def _reflection(packet: StreamPacket) -> Reflection:
    assert packet.reflection is not None, "only received packets reach here"
    return packet.reflection


def _received_ns(packet: StreamPacket) -> int:
    assert packet.received_ns is not None, "only received packets reach here"
    return packet.received_ns


def _rtt(packet: StreamPacket) -> int:
    rtt = packet.rtt_ns
    assert rtt is not None, "only received packets reach here"
    return rtt


def stream_stats(packets: Sequence[StreamPacket],
                 duplicates: Sequence[DuplicateReply] = ()) -> StreamStats:
    """The figures of one stream; ``packets`` in send order, one per packet sent."""
    received = [p for p in packets if p.reflection is not None and p.received_ns is not None]
    sent, lost = len(packets), len(packets) - len(received)
    echoes = bool(received) and all(_reflection(p).seq == p.seq for p in received) and all(
        d.reflector_seq == packets[d.index].seq for d in duplicates)

    burst = longest = 0
    for packet in packets:
        burst = burst + 1 if packet.reflection is None else 0
        longest = max(longest, burst)

    forward_lost = reverse_lost = forward_dup = reverse_dup = None
    unattributed = lost
    if received and not echoes:
        first, last = received[0].index, received[-1].index
        missing = (last - first + 1) - len(received)
        base = _reflection(received[0]).seq
        first_of = {p.index: _reflection(p).seq for p in received}
        numbers = {_relative(seq, base) for seq in first_of.values()}
        numbers.update(_relative(d.reflector_seq, base) for d in duplicates)
        reflections_lost = max(numbers) - min(numbers) + 1 - len(numbers)
        reverse_lost = min(reflections_lost, missing)
        forward_lost = missing - reverse_lost
        unattributed = lost - missing
        # The reflector numbers each request it reflects: a second copy of a request
        # (duplicated on the way out) gets a new number; a reply copied on the way back
        # keeps its number.
        reverse_dup = sum(d.reflector_seq == first_of.get(d.index) for d in duplicates)
        forward_dup = len(duplicates) - reverse_dup

    synchronized = bool(received) and all(
        _reflection(p).error_estimate.synchronized
        and _reflection(p).sender_error_estimate.synchronized for p in received)
    base_seq = _reflection(received[0]).seq if received else 0
    forward = _direction(
        received,
        transit=lambda p: _reflection(p).receive_ns - p.sent_ns,
        arrival=lambda p: _reflection(p).receive_ns,
        send_order=lambda p: (p.index,),
        synchronized=synchronized, lost=forward_lost, duplicates=forward_dup)
    reverse = _direction(
        received,
        transit=lambda p: _received_ns(p) - _reflection(p).timestamp_ns,
        arrival=_received_ns,
        # The reflector sent its replies in T3 order; its counter breaks ties of a
        # coarse clock.
        send_order=lambda p: (_reflection(p).timestamp_ns, _relative(_reflection(p).seq, base_seq)),
        synchronized=synchronized, lost=reverse_lost, duplicates=reverse_dup)

    rtts = [_rtt(p) * _NS for p in received]
    rtt_jitter = (sum(abs(b - a) for a, b in pairwise(rtts)) / (len(rtts) - 1)
                  if len(rtts) > 1 else None)
    loss_ratio = lost / sent if sent else 0.0
    # Every packet lost: the link is unusable and R floors at 0, as vcmon's ICMP figures say.
    r = (r_factor(sum(rtts) / len(rtts), rtt_jitter or 0.0, loss_ratio) if rtts else 0.0)
    return StreamStats(
        sent=sent,
        received=len(received),
        lost=lost,
        loss_percent=100 * loss_ratio,
        lost_unattributed=unattributed,
        longest_loss_burst=longest,
        duplicates=len(duplicates),
        reflector_echoes_sequence=echoes,
        synchronized=synchronized,
        rtt_min=min(rtts) if rtts else None,
        rtt_mean=sum(rtts) / len(rtts) if rtts else None,
        rtt_max=max(rtts) if rtts else None,
        rtt_jitter=rtt_jitter,
        forward=forward,
        reverse=reverse,
        r_factor=r,
        mos=mos_from_r(r),
    )
