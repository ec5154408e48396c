"""TWAMP streams in status: window figures per direction, and the health rule (a site
with a stream follows it for jitter, loss and MOS; ICMP still decides RTT and down)."""

from __future__ import annotations

import random

import pytest

from monitor.inventory import ConfigError, parse_config
from monitor.status.health import HealthTracker, StateChange, Status
from monitor.status.sites import SiteTable
from monitor.status.streams import summarize_streams
from probes import Outcome, ProbeResult, StreamResult
from probes.twamp import ErrorEstimate, Reflection
from probes.twamp_stream import StreamPacket, stream_stats

T0 = 1_774_569_600.0
MS = 1_000_000
UNSYNCED = ErrorEstimate(False, 0, 1)

SITE = """
defaults: {interval: 1s, window: 30s, down_after: 3}
health: {evaluate_every: 5s, enter_after: 2, leave_after: 2, recover_after: 2}
sites:
  - id: xa
    name: Xã
    tier: commune
    address: 127.0.0.12
    probes: [{kind: twamp, interval: 5s, timeout: 1s, spacing: 20ms}]
"""


def stream(forward: list[float | None], reverse: list[float | None], *,
           start_seq: int = 1000) -> StreamResult:
    """A stream whose packet i met ``forward[i]`` ms out and ``reverse[i]`` ms back;
    None on the way out: lost there (no reflector number used); None back: lost there."""
    packets, reflector_seq = [], start_seq
    for index, (out, back) in enumerate(zip(forward, reverse, strict=True)):
        t1 = 20 * index
        if out is None:
            packets.append(StreamPacket(index, 7000 + index, t1 * MS))
            continue
        seq, reflector_seq = reflector_seq, reflector_seq + 1
        if back is None:
            packets.append(StreamPacket(index, 7000 + index, t1 * MS))
            continue
        # the reflector's clock 3 s ahead: only figures needing no sync can come out right
        t2 = t1 + out + 3000
        t3 = t2 + 0.1
        t4 = t3 - 3000 + back
        reflection = Reflection(seq, int(t3 * MS), UNSYNCED, int(t2 * MS), 7000 + index,
                                int(t1 * MS), UNSYNCED, 64)
        packets.append(StreamPacket(index, 7000 + index, t1 * MS, reflection, int(t4 * MS), 64))
    result = tuple(packets)
    return StreamResult("127.0.0.12", 862, 0xB8, 172, 0.02, 1.0, result, (), 0,
                        stream_stats(result))


def uniform(count: int, delay: float, jitter: float, rng: random.Random) -> list[float | None]:
    return [delay + rng.uniform(-jitter, jitter) for _ in range(count)]


def test_reverse_loss_reads_reverse_and_forward_reads_clean() -> None:
    back: list[float | None] = [10.0] * 50
    for index in (5, 17, 30):
        back[index] = None
    stats = summarize_streams([stream([10.0] * 50, back), stream([10.0] * 50, [10.0] * 50)])
    assert (stats.sent, stats.received, stats.lost) == (100, 97, 3)
    assert stats.reverse.lost == 3 and stats.reverse.loss_ratio == pytest.approx(0.03)
    assert stats.forward.lost == 0 and stats.forward.loss_ratio == 0
    assert stats.lost_unattributed == 0


def test_forward_loss_reads_forward() -> None:
    out: list[float | None] = [10.0] * 50
    out[20] = out[21] = None
    stats = summarize_streams([stream(out, [10.0] * 50)])
    assert (stats.forward.lost, stats.reverse.lost) == (2, 0)
    assert stats.longest_loss_burst == 2


def test_forward_jitter_reads_forward_with_the_icmp_definition() -> None:
    rng = random.Random(3)
    # uniform ±30 ms on the way out: mean |IPDV| 2·30/3 = 20 ms, as ICMP's mean |ΔRTT| reads
    results = [stream(uniform(50, 40, 30, rng), [10.0] * 50) for _ in range(8)]
    stats = summarize_streams(results)
    assert stats.forward.jitter == pytest.approx(0.020, rel=0.1)
    assert stats.reverse.jitter == pytest.approx(0.0, abs=1e-6)
    assert stats.forward.mos is not None and stats.reverse.mos is not None
    assert stats.forward.mos < stats.reverse.mos
    assert stats.forward.delay is None  # the reflector says its clock is not synchronised


class World:
    """One site: ICMP results every second, a stream every five."""

    def __init__(self) -> None:
        self.config = parse_config(SITE)
        self.now = T0
        self.table = SiteTable(self.config, clock=lambda: self.now)
        self.tracker = HealthTracker(self.config, T0)
        self.rng = random.Random(7)
        self.seconds = 0
        self.changes: list[StateChange] = []

    def run(self, seconds: int, icmp: float | str | None, forward: tuple[float, float],
            reverse: tuple[float, float]) -> None:
        """``icmp``: the RTT (s), None for lost, "jitter" for 80 ± 60 ms RTTs."""
        for _ in range(seconds):
            if icmp == "jitter":
                rtt: float | None = 0.080 + self.rng.uniform(-0.060, 0.060)
            else:
                rtt = icmp if isinstance(icmp, float) or icmp is None else None
            outcome = Outcome.TIMEOUT if rtt is None else Outcome.REPLY
            self.table.record(ProbeResult("xa", "127.0.0.12", 0, self.now, outcome, rtt))
            if self.seconds % 5 == 0:
                self.tracker.streams.record("xa/twamp", self.now, stream(
                    uniform(50, forward[0], forward[1], self.rng),
                    uniform(50, reverse[0], reverse[1], self.rng)))
            self.now += 1
            self.seconds += 1
            self.changes += self.tracker.update(self.table, self.now,
                                                evaluate=self.seconds % 5 == 0)

    @property
    def health(self) -> tuple[Status, str]:
        h = self.tracker.sites["xa"]
        return h.status, h.reason


def test_reverse_jitter_degrades_with_the_direction_in_the_reason() -> None:
    world = World()
    # ICMP clean; the way back has ±67.5 ms of noise: mean |IPDV| 45 ms
    world.run(30, 0.020, (10, 0), (80, 67.5))
    status, reason = world.health
    assert status is Status.DEGRADED
    assert reason.startswith("reverse jitter ")
    assert "forward" not in reason
    assert float(reason.split()[2]) == pytest.approx(45, rel=0.15)
    assert "> 30 ms" in reason
    # the change carries both directions as the rule judged them (events, logs)
    change = world.changes[-1]
    assert change.after is Status.DEGRADED
    (directions,) = change.measurements["streams"]
    assert directions["reverse"]["jitter"] == pytest.approx(0.045, rel=0.15)
    assert directions["forward"]["jitter"] < 0.001
    assert set(directions["forward"]) == {"jitter", "loss_ratio", "mos"}


def test_icmp_degraded_but_stream_clean_follows_the_stream() -> None:
    world = World()
    world.run(30, "jitter", (10, 1), (10, 1))
    assert world.health == (Status.OK, "")


def test_without_a_stream_the_same_icmp_window_is_degraded() -> None:
    # the control for the test above: the ICMP window alone reads degraded
    world = World()
    world.tracker.streams.probes.clear()
    world.tracker.streams.reconfigure(parse_config(SITE.replace(
        "probes: [{kind: twamp, interval: 5s, timeout: 1s, spacing: 20ms}]", "probes: []")))
    world.run(30, "jitter", (10, 1), (10, 1))
    status, reason = world.health
    assert status is Status.DEGRADED and reason.startswith("jitter ")


def test_icmp_still_decides_down() -> None:
    world = World()
    world.run(10, 0.020, (10, 1), (10, 1))
    world.run(4, None, (10, 1), (10, 1))
    assert world.health[0] is Status.DOWN


def test_the_stream_counts_as_a_service_probe() -> None:
    world = World()
    for _ in range(3):
        world.tracker.streams.record("xa/twamp", world.now, stream([None] * 50, [None] * 50))
    state = world.tracker.services.probes["xa/twamp"]
    assert state.up is False and "no reply to 50 packets" in state.detail


def test_twamp_settings_in_the_inventory() -> None:
    config = parse_config(SITE)
    (spec,) = config.services_for(config.sites[0])
    assert (spec.kind, spec.dscp, spec.tos) == ("twamp", 46, 0xB8)
    assert (spec.port, spec.packets, spec.spacing, spec.size) == (862, 50, 0.02, 172)  # type: ignore[attr-defined]


def test_a_stream_longer_than_its_interval_is_refused_with_the_line() -> None:
    text = SITE.replace("interval: 5s, timeout: 1s, spacing: 20ms",
                        "interval: 2s, timeout: 1s, packets: 100")
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    problem = caught.value.problems[0]
    assert problem.line == 9
    assert "lasts 2.98 s, not less than the interval of 2 s" in problem.message


def test_a_bad_spacing_names_the_field() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(SITE.replace("spacing: 20ms", "spacing: 2s"))
    problem = caught.value.problems[0]
    assert problem.field.endswith("probes[0].spacing")
    assert "use 0 to 1 seconds" in problem.message


def test_the_window_is_summed_again_only_when_a_stream_comes_or_goes() -> None:
    world = World()
    streams = world.tracker.streams
    streams.record("xa/twamp", T0, stream([10.0] * 50, [10.0] * 50))
    (state,) = streams
    first = state.current_stats(T0 + 1)
    # summed when the stream came (on the loop), not when read (a forked /metrics child)
    assert first is not None and first is state._cached[1]  # type: ignore[index]
    assert state.current_stats(T0 + 2) is first
    back: list[float | None] = [10.0] * 50
    back[3] = None
    streams.record("xa/twamp", T0 + 5, stream([10.0] * 50, back))
    second = state.current_stats(T0 + 6)
    assert second is not None and second is not first and second.reverse.lost == 1
    # the first stream leaves the 30 s window: only the second one is summed
    third = state.current_stats(T0 + 31)
    assert third is not None and third.streams == 1 and third.reverse.lost == 1
    assert state.current_stats(T0 + 36) is None
