"""The health state machine: thresholds, hysteresis, parent/child, maintenance."""

from __future__ import annotations

import gc

import pytest

from monitor.inventory import ConfigError, parse_config
from monitor.inventory.thresholds import HealthSettings, Thresholds
from monitor.status.health import (
    REUSE_SHARE,
    REUSE_WITHIN,
    HealthTracker,
    Status,
    exceeded,
    window_stats,
)
from monitor.status.sites import SiteTable
from monitor.status.window import packed_until, summarize, unpacked
from probes import Outcome, ProbeResult

T0 = 1_774_569_600.0  # 2026-03-27 00:00 UTC = 07:00 in Hà Nội

TREE = """
defaults: {interval: 1s, window: 60s, down_after: 3}
health: {evaluate_every: 5s, enter_after: 3, leave_after: 2, recover_after: 2}
sites:
  - {id: tinh, name: Tỉnh, tier: province, address: 127.0.0.10}
  - {id: huyen, name: Huyện, tier: district, parent: tinh, address: 127.0.0.11}
  - {id: xa-a, name: Xã A, tier: commune, parent: huyen, address: 127.0.0.12}
  - {id: xa-b, name: Xã B, tier: commune, parent: huyen, address: 127.0.0.13}
  - {id: huyen2, name: Huyện 2, tier: district, parent: tinh, address: 127.0.0.14}
"""


class World:
    """A site table fed second by second, and the tracker that judges it."""

    def __init__(self, text: str = TREE) -> None:
        self.config = parse_config(text)
        self.now = T0
        self.table = SiteTable(self.config, clock=lambda: self.now)
        self.tracker = HealthTracker(self.config, T0)
        self.seconds = 0
        self.changes: list[tuple[str, Status, Status, str]] = []

    def second(self, answers: dict[str, float | None] | None = None) -> None:
        """One probe per site sent at ``now``: RTT from ``answers`` (None = lost), else 10 ms."""
        answers = answers or {}
        for site in self.config.sites:
            rtt = answers.get(site.id, 0.010)
            outcome = Outcome.TIMEOUT if rtt is None else Outcome.REPLY
            self.table.record(ProbeResult(site.id, site.address, 0, self.now, outcome, rtt))
        self.now += 1
        self.seconds += 1
        evaluate = self.seconds % 5 == 0
        for change in self.tracker.update(self.table, self.now, evaluate=evaluate):
            self.changes.append((change.site.id, change.before, change.after, change.reason))

    def status(self, site_id: str) -> Status:
        return self.tracker.sites[site_id].status


def test_exceeded_names_each_threshold() -> None:
    limits, health = Thresholds(), HealthSettings()
    good = [(float(i), 0.020) for i in range(60)]
    assert exceeded(summarize(good), limits, health) == ()
    slow = [(float(i), 0.320) for i in range(60)]  # MOS still 3.70
    assert exceeded(summarize(slow), limits, health) == ("rtt",)
    shaky = [(float(i), 0.020 + 0.040 * (i % 2)) for i in range(60)]
    assert exceeded(summarize(shaky), limits, health) == ("jitter",)
    lossy = [(float(i), None if i % 20 == 0 else 0.020) for i in range(60)]  # 3 of 60
    assert exceeded(summarize(lossy), limits, health) == ("loss",)
    awful = [(float(i), 0.600 if i % 2 else 0.100) for i in range(60)]
    assert exceeded(summarize(awful), limits, health) == ("rtt", "jitter", "mos")


def test_one_lost_packet_is_not_loss_and_few_replies_say_nothing() -> None:
    limits, health = Thresholds(), HealthSettings()
    one_lost = [(float(i), None if i == 30 else 0.020) for i in range(60)]
    assert summarize(one_lost).loss_ratio == pytest.approx(1 / 60)  # above 1 %
    assert exceeded(summarize(one_lost), limits, health) == ()
    few = [(0.0, 0.900), (1.0, 0.900)]
    assert exceeded(summarize(few), limits, health) == ()


def test_degraded_needs_k_bad_evaluations_and_leaves_after_m_good() -> None:
    world = World()
    # RTT alternating 10/90 ms: jitter 80 ms, bad from the first evaluation on
    for i in range(14):
        world.second({"xa-a": 0.010 + 0.080 * (i % 2)})
    assert world.status("xa-a") is Status.OK  # 2 bad evaluations (t=5, 10)
    world.second({"xa-a": 0.010})  # t=15: the third
    assert world.status("xa-a") is Status.DEGRADED
    assert world.tracker.sites["xa-a"].exceeded == ("jitter",)
    reason = world.tracker.sites["xa-a"].reason
    assert reason.startswith("jitter ") and "> 30 ms" in reason
    # back to steady: the 60 s window keeps the jitter until the bad samples age out
    for _ in range(60):
        world.second()
    assert world.status("xa-a") is Status.OK
    transitions = [(b, a) for s, b, a, _ in world.changes if s == "xa-a"]
    assert transitions == [(Status.UNKNOWN, Status.OK), (Status.OK, Status.DEGRADED),
                           (Status.DEGRADED, Status.OK)]


def test_a_single_lost_packet_never_flaps_a_site() -> None:
    world = World()
    for i in range(120):
        world.second({"xa-b": None} if i == 40 else {})
    assert [c for c in world.changes if c[0] == "xa-b"][1:] == []


def test_down_after_consecutive_losses_and_back_after_replies() -> None:
    world = World()
    for _ in range(5):
        world.second()
    world.second({"xa-a": None})
    world.second({"xa-a": None})
    assert world.status("xa-a") is Status.OK
    world.second({"xa-a": None})
    # held for two intervals: an upstream outage might explain the losses
    assert world.status("xa-a") is Status.OK
    world.second({"xa-a": None})
    assert world.status("xa-a") is Status.OK
    world.second({"xa-a": None})
    assert world.status("xa-a") is Status.DOWN
    assert world.tracker.sites["xa-a"].reason == "no reply to the last 5 probes"
    for _ in range(20):
        world.second({"xa-a": None})
    world.second()
    assert world.status("xa-a") is Status.DOWN  # recover_after 2
    world.second()
    assert world.status("xa-a") is Status.OK
    # the outage's losses are still in the 60 s window but must not make it degraded
    for _ in range(30):
        world.second()
    assert world.status("xa-a") is Status.OK


def test_sites_behind_a_down_district_are_unreachable_not_down() -> None:
    world = World()
    for _ in range(5):
        world.second()
    gone = {"huyen": None, "xa-a": None, "xa-b": None}
    for _ in range(5):
        world.second(gone)
    assert world.status("huyen") is Status.DOWN
    assert world.status("xa-a") is Status.UNREACHABLE
    assert world.status("xa-b") is Status.UNREACHABLE
    assert world.status("huyen2") is Status.OK
    assert world.tracker.sites["huyen"].unreachable_behind == 2
    assert world.tracker.sites["xa-a"].reason == "upstream site huyen is down"
    assert world.tracker.sites["huyen2"].unreachable_behind == 0
    downs = [c for c in world.changes if c[2] is Status.DOWN]
    assert [c[0] for c in downs] == ["huyen"]
    for _ in range(3):
        world.second()
    assert {world.status(s) for s in ("huyen", "xa-a", "xa-b")} == {Status.OK}
    assert world.tracker.sites["huyen"].unreachable_behind == 0


def test_province_down_makes_everything_below_unreachable() -> None:
    world = World()
    world.second()
    for _ in range(3):
        world.second(dict.fromkeys(["tinh", "huyen", "xa-a", "xa-b", "huyen2"]))
    assert world.status("tinh") is Status.DOWN
    assert world.tracker.sites["tinh"].unreachable_behind == 4
    assert all(world.status(s) is Status.UNREACHABLE for s in ("huyen", "xa-a", "huyen2"))
    assert world.tracker.sites["xa-a"].reason == "upstream site tinh is down"
    assert world.tracker.sites["huyen"].unreachable_behind == 0


def test_unknown_until_the_first_result() -> None:
    world = World()
    assert world.status("xa-a") is Status.UNKNOWN
    world.tracker.update(world.table, T0 + 1, evaluate=True)
    assert world.status("xa-a") is Status.UNKNOWN
    world.second()
    assert world.status("xa-a") is Status.OK


MAINTENANCE = TREE + """
schedule:
  maintenance:
    - {sites: [xa-a], start: "2026-03-27 07:00", end: "2026-03-27 07:01", reason: thay router}
    - {districts: [huyen2], start: "2026-03-27 06:00", end: "2026-03-27 07:00:30"}
"""


def test_maintenance_windows_by_site_and_district() -> None:
    world = World(MAINTENANCE)
    world.second()
    assert world.status("xa-a") is Status.MAINTENANCE
    assert world.tracker.sites["xa-a"].reason == "thay router"
    assert world.status("huyen2") is Status.MAINTENANCE
    assert world.status("xa-b") is Status.OK
    for _ in range(30):
        world.second()
    assert world.status("huyen2") is Status.OK  # ended at 07:00:30
    assert world.status("xa-a") is Status.MAINTENANCE
    for _ in range(30):
        world.second()
    assert world.status("xa-a") is Status.OK


def test_thresholds_by_tier_then_site() -> None:
    config = parse_config(TREE.replace(
        "health: {", "health: {tiers: {commune: {rtt: 500ms, loss: 2%}}, ").replace(
        "address: 127.0.0.13}", "address: 127.0.0.13, thresholds: {rtt: 80ms}}"))
    assert config.thresholds_for(config.site("tinh")) == Thresholds()
    assert config.thresholds_for(config.site("xa-a")) == Thresholds(rtt=0.5, loss=0.02)
    assert config.thresholds_for(config.site("xa-b")) == Thresholds(rtt=0.08, loss=0.02)


def test_schedule_errors_name_line_and_field() -> None:
    text = TREE + """schedule:
  timezone: Asia/Hanoi_City
  conferences:
    - {name: sang, start: "2026-03-27 11:30", end: "2026-03-27 07:30"}
  maintenance:
    - {sites: [xa-aa], start: "2026-03-27 07:00", end: "2026-03-27 08:00"}
"""
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "sites.yaml")
    assert str(exc.value).splitlines() == [
        'sites.yaml:11: schedule.timezone: "Asia/Hanoi_City" is not a known time zone; '
        "use an IANA name such as Asia/Ho_Chi_Minh",
        "sites.yaml:13: schedule.conferences[0]: end 2026-03-27 07:30:00 is not after "
        "start 2026-03-27 11:30:00; fix one of them",
        'sites.yaml:15: schedule.maintenance[0].sites[0]: "xa-aa" is not a site id in this '
        'inventory; use the id of a listed site (did you mean "xa-a"?)',
    ]


def test_bad_thresholds_are_explained() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(TREE.replace("health: {", "health: {thresholds: {loss: 150%, mos: 5}, "),
                     "sites.yaml")
    lines = str(exc.value).splitlines()
    assert lines == [
        'sites.yaml:3: health.thresholds.loss: "150%" is not a ratio; write 0.01 or 1% '
        "(0 to 100 %)",
        "sites.yaml:3: health.thresholds.mos: 5 is not on the MOS scale; use 1 to 4.5, e.g. 3.6",
    ]


def test_a_child_whose_losses_add_up_first_never_pages_before_its_uplink() -> None:
    world = World()
    for _ in range(5):
        world.second()
    # the commune's probes are phased before the district's: its third loss comes
    # one tick before the district's
    world.second({"xa-a": None})
    world.second({"xa-a": None, "huyen": None})
    world.second({"xa-a": None, "huyen": None})
    assert world.status("xa-a") is Status.OK  # own_down, but held
    world.second({"xa-a": None, "huyen": None})
    assert world.status("huyen") is Status.OK  # held too, under the province
    for _ in range(3):
        world.second({"xa-a": None, "huyen": None})
    assert world.status("huyen") is Status.DOWN
    assert world.status("xa-a") is Status.UNREACHABLE
    # the uplink comes back a tick before the commune's replies do
    world.second({"xa-a": None})
    world.second({"xa-a": None})
    assert world.status("huyen") is Status.OK
    assert world.status("xa-a") is Status.UNREACHABLE
    assert world.tracker.sites["xa-a"].reason.startswith("upstream came back")
    world.second()
    world.second()
    assert world.status("xa-a") is Status.OK
    assert [c for c in world.changes if c[0] == "xa-a" and c[2] is Status.DOWN] == []


def test_a_site_without_upstream_is_down_without_hold() -> None:
    world = World()
    world.second()
    for _ in range(3):
        world.second({"tinh": None})
    assert world.status("tinh") is Status.DOWN


def test_the_hold_ends_after_two_ticks_even_when_ticks_run_a_hair_early() -> None:
    world = World()
    for _ in range(5):
        world.second()
    for _ in range(3):
        world.second({"xa-a": None})
    down_at = world.tracker.sites["xa-a"].down_since
    world.second({"xa-a": None})
    world.table.record(ProbeResult("xa-a", "127.0.0.12", 0, world.now, Outcome.TIMEOUT))
    # the second tick after it, 1.9995 s later
    world.tracker.update(world.table, down_at + 1.9995, evaluate=False)
    assert world.status("xa-a") is Status.DOWN


def test_a_health_tick_makes_no_object_per_site_for_the_cyclic_collector() -> None:
    """A tick goes through every site. Each object it made per site (a pair of id and
    health, say) would be looked at by the cyclic collector and, 20,000 of them, make
    it collect many times a tick, each time walking every object the probes keep
    alive: 50-60 ms of the probe loop's time in one piece at 20,000 sites."""
    sites = 2000
    config = parse_config("defaults: {interval: 1s, window: 60s}\nsites:\n" + "".join(
        f"  - {{id: s{i}, name: S {i}, tier: unit, address: 127.0.{i // 250}.{1 + i % 250}}}\n"
        for i in range(sites)))
    table = SiteTable(config, clock=lambda: T0)
    tracker = HealthTracker(config, T0)
    for site in config.sites:
        table.record(ProbeResult(site.id, site.address, 0, T0, Outcome.REPLY, 0.010))
    assert len(tracker.update(table, T0 + 1, evaluate=True)) == sites  # unknown → ok
    was_enabled = gc.isenabled()
    gc.disable()  # what is made stays in the young generation
    try:
        before = len(gc.get_objects(generation=0))
        made = []
        for changes in tracker.steps(table, T0 + 2, set(tracker.sites)):
            assert changes == []  # nothing changed; only the judging was done
            made.append(len(gc.get_objects(generation=0)) - before)
    finally:
        if was_enabled:
            gc.enable()
    assert max(made) < sites / 10, made


def test_the_pages_show_the_statistics_the_judging_took_while_they_are_fresh() -> None:
    """/metrics, the API and MQTT reuse the whole window's statistics the last judging
    took, for at most REUSE_WITHIN s; then, or for a site not judged, they are taken anew."""
    world = World()
    for _ in range(65):  # a whole 60 s window of 10 ms; judged every fifth second
        world.second()
    judged_at = world.now
    h, state = world.tracker.sites["huyen"], world.table.sites["huyen"]
    assert h.judged is not None
    # every field as the window gave it at the judging
    assert unpacked(h.judged) == state.window.current_stats(judged_at)
    assert unpacked(h.judged).sent == 60
    world.second({"huyen": 0.500})  # a slow reply since, not judged yet (the 66th second)
    reused = window_stats(state, h, world.now)
    assert (reused.sent, reused.rtt_max) == (60, pytest.approx(0.010))
    assert reused == unpacked(h.judged)
    late = judged_at + REUSE_WITHIN + 0.5
    fresh = window_stats(state, h, late)
    assert fresh == state.window.current_stats(late)
    assert fresh.rtt_max == pytest.approx(0.500)
    assert window_stats(state, None, world.now).rtt_max == pytest.approx(0.500)  # no health


def test_while_the_window_fills_the_pages_show_statistics_a_tenth_of_its_span_old() -> None:
    """In a window's first minute a few seconds are much of it: 10 s into it, the
    judging's statistics are shown for 1 s (REUSE_SHARE of the 10 s covered)."""
    world = World()
    for _ in range(10):  # judged at the tenth second, samples T0 .. T0 + 9
        world.second()
    judged_at = world.now
    h, state = world.tracker.sites["huyen"], world.table.sites["huyen"]
    assert h.judged is not None and packed_until(h.judged) == judged_at + 1.0
    world.second({"huyen": 0.500})
    assert window_stats(state, h, judged_at + 0.5).rtt_max == pytest.approx(0.010)
    fresh = window_stats(state, h, judged_at + 1.5)
    assert (fresh.sent, fresh.rtt_max) == (11, pytest.approx(0.500))


def test_a_short_window_shows_statistics_a_tenth_of_it_old_at_most() -> None:
    """REUSE_SHARE: of a 20 s window, statistics at most 2 s old (not REUSE_WITHIN's 6)."""
    world = World(TREE.replace("window: 60s", "window: 20s"))
    for _ in range(25):
        world.second()
    h, state = world.tracker.sites["huyen"], world.table.sites["huyen"]
    assert h.judged is not None and REUSE_SHARE * state.window.length == 2.0
    world.second({"huyen": 0.500})
    assert window_stats(state, h, world.now).rtt_max == pytest.approx(0.010)  # 1 s old
    world.second()
    world.second()
    assert window_stats(state, h, world.now).rtt_max == pytest.approx(0.500)  # 3 s old


def test_after_an_outage_and_while_down_the_pages_take_the_window_anew() -> None:
    """The judging leaves an outage's losses out of its statistics (clean_since); the
    pages show the whole window, those losses included."""
    world = World()
    for _ in range(65):
        world.second()
    for _ in range(4):
        world.second({"xa-a": None})
    h, state = world.tracker.sites["xa-a"], world.table.sites["xa-a"]
    assert h.own_down and h.judged is None  # the judging's statistics dropped on going down
    while_down = window_stats(state, h, world.now)
    assert while_down == state.window.current_stats(world.now)
    assert (while_down.sent, while_down.received) == (60, 56)
    for _ in range(6):  # back, and judged again since
        world.second()
    assert not h.own_down
    assert h.judged is None  # the judging's statistics left the outage out
    shown = window_stats(state, h, world.now)
    assert (shown.sent, shown.received) == (60, 56)


def test_an_outage_between_two_judgings_shows_as_soon_as_it_is_over() -> None:
    """Down at the 64th second, back at the 66th, judged next at the 70th: the pages show
    the three lost probes from the moment the site goes down, not the 61st second's
    judging of a clean window."""
    world = World()
    for _ in range(61):
        world.second()
    h, state = world.tracker.sites["xa-a"], world.table.sites["xa-a"]
    assert h.judged is not None
    for lost in (True, True, True, False, False):
        world.second({"xa-a": None} if lost else None)
    assert not h.own_down and h.judged is None
    shown = window_stats(state, h, world.now)
    assert shown == state.window.current_stats(world.now)
    assert (shown.sent, shown.received) == (60, 57)


@pytest.mark.parametrize("samples", [
    [], [(0.0, None), (1.0, None)], [(0.0, 0.010)], [(0.0, 0.010), (1.0, None), (2.0, 0.030)]])
def test_packed_statistics_come_back_as_they_were(
        samples: list[tuple[float, float | None]]) -> None:
    stats = summarize(samples)
    packed = stats.packed(T0)
    assert unpacked(packed) == stats and packed_until(packed) == T0
    assert not gc.is_tracked(packed)
