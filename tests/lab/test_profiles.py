"""Lab profiles: the ``lab set`` language, its errors, and the ready-made scenarios."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from monitor.inventory import Config
from monitor.lab.profiles import (
    SCENARIOS,
    TIER_DELAY_MS,
    LabError,
    Profile,
    apply_settings,
    conference_day,
)
from monitor.lab.sites import synthetic_inventory


def test_settings_parse_units_and_percentages() -> None:
    profile = apply_settings(Profile(), ["delay=40ms", "jitter=10ms", "loss=2%", "burst=4"])
    assert profile == Profile(delay=0.040, jitter=0.010, loss=0.02, burst=4.0)
    assert apply_settings(profile, ["loss=0.5", "delay=1.5s"]).loss == 0.5
    assert apply_settings(profile, ["flap=10s"]).flap == 10.0


def test_settings_not_named_keep_their_value() -> None:
    base = Profile(label="commune", delay=0.030, jitter=0.003)
    changed = apply_settings(base, ["loss=3%"])
    assert (changed.label, changed.delay, changed.jitter, changed.loss) == (
        "commune", 0.030, 0.003, 0.03)


def test_down_up_flap_and_off() -> None:
    base = Profile(delay=0.01, loss=0.05, burst=3)
    down = apply_settings(base, ["down"])
    assert down.down and down.model_copy(update={"down": False}) == base
    flapping = apply_settings(base, ["flap=2s"])
    assert apply_settings(flapping, ["up"]) == base  # up ends an outage and a flap
    assert apply_settings(flapping, ["flap=off"]).flap == 0
    assert apply_settings(base, ["burst=off"]).burst is None


@pytest.mark.parametrize(("words", "message"), [
    ([], "no settings given; use delay=40ms"),
    (["latency=4ms"], "'latency=4ms' is not a lab setting; use delay=40ms"),
    (["delay"], "'delay' is not a lab setting"),
    (["delay=soon"], "'delay=soon': 'soon' is not a valid delay"),
    (["loss=120%"], "'loss=120%': '120%' is not a valid loss"),
    (["burst=many"], "'burst=many': 'many' is not a valid burst"),
    (["jitter=20ms"], "jitter=20ms: profile: jitter 20ms exceeds delay 10ms: a reply cannot "
                      "come before its request; raise delay or lower jitter"),
    (["loss=100%", "burst=2"], "burst needs a loss below 100%"),
    (["burst=0.5"], "burst: Input should be greater than or equal to 1"),
    (["flap=5ms"], "flap period 5ms is too short; use at least 20ms"),
    (["delay=20s"], "delay: Input should be less than or equal to 10"),
])
def test_bad_settings_are_explained(words: list[str], message: str) -> None:
    with pytest.raises(LabError) as error:
        apply_settings(Profile(delay=0.010), words)
    assert message in str(error.value)


def test_describe_reads_back() -> None:
    profile = Profile(delay=0.04, jitter=0.01, loss=0.02, burst=4, flap=10, down=True)
    assert profile.describe() == "delay=40ms jitter=10ms loss=2% burst=4 flap=10s down"
    assert apply_settings(Profile(), profile.describe().split()) == profile


def demo_sites(count: int = 240) -> Config:
    return Config.model_validate({"sites": [
        {**site, "address": f"127.0.{i // 250}.{i % 250 + 1}"}
        for i, site in enumerate(synthetic_inventory(count)["sites"])]})


def test_conference_day() -> None:
    config = demo_sites()
    profiles = conference_day(config.sites, random.Random(1))
    labels = Counter(p.label for p in profiles.values())
    (down,) = [site for site in config.sites if profiles[site.id].label == "down"]
    assert down.tier == "district" and profiles[down.id].down
    behind = [site.id for site in config.sites if site.parent == down.id]
    assert {profiles[site_id].label for site_id in behind} == {"behind-down"}
    assert labels == {"province": 1, "district": 10, "down": 1, "behind-down": len(behind),
                      "commune": 228 - len(behind) - labels["degraded"],
                      "degraded": round(0.05 * (228 - len(behind)))}
    for site in config.sites:
        profile = profiles[site.id]
        low, high = TIER_DELAY_MS[site.tier]
        if profile.label == "degraded":
            # ±60 ms of uniform noise measures as 40 ms of jitter
            assert (profile.jitter, profile.loss) == (0.060, 0.03)
            assert profile.delay >= profile.jitter
        else:
            assert low <= profile.delay * 1000 <= high
            assert profile.loss == 0
            assert profile.jitter <= 0.1 * profile.delay + 0.00005  # rounded to 0.1 ms
    # repeatable from the seed, different for another
    assert conference_day(config.sites, random.Random(1)) == profiles
    assert conference_day(config.sites, random.Random(2)) != profiles


def test_healthy_and_tiny_labs() -> None:
    assert {p.label for p in SCENARIOS["healthy"](demo_sites().sites, random.Random(1)).values()
            } == {"province", "district", "commune"}
    # one district: kept up, or nothing but the hall would answer
    tiny = conference_day(demo_sites(5).sites, random.Random(1))
    assert not any(p.down for p in tiny.values())
    assert Counter(p.label for p in tiny.values())["degraded"] == 1
    assert conference_day(demo_sites(1).sites, random.Random(1))["lab-province"].label == \
        "province"


def test_directions_are_set_apart_and_described() -> None:
    profile = apply_settings(Profile(), ["fwd.loss=2%", "rev.delay=40ms", "rev.jitter=30ms"])
    assert (profile.fwd_loss, profile.rev_delay, profile.rev_jitter) == (0.02, 0.040, 0.030)
    assert (profile.fwd_delay, profile.rev_loss, profile.delay) == (0.0, 0.0, 0.0)
    assert "fwd.loss=2%" in profile.describe() and "rev.jitter=30ms" in profile.describe()
    with pytest.raises(LabError, match=re.escape("rev.jitter 50ms exceeds rev.delay 40ms")):
        apply_settings(profile, ["rev.jitter=50ms"])
    with pytest.raises(LabError,
                       match=re.escape("'fwd.loss=lots': 'lots' is not a valid fwd.loss")):
        apply_settings(profile, ["fwd.loss=lots"])


def test_icmp_deprioritised_touches_pings_only_and_comes_off() -> None:
    profile = apply_settings(Profile(), ["icmp-deprioritised"])
    assert profile.icmp_only and profile.loss > 0 and 2 * profile.jitter / 3 > 0.030
    assert "icmp-deprioritised" in profile.describe()
    assert not apply_settings(profile, ["icmp-deprioritised=off"]).icmp_only
