"""The ``diagnosis:`` section: defaults, durations, and exact refusals with their lines."""

from __future__ import annotations

import pytest

from monitor.inventory import ConfigError, parse_config
from monitor.inventory.diagnosis import DiagnosisSettings

HALL = """\
sites:
  - id: hall
    name: Hội trường Tỉnh ủy
    tier: province
    address: 127.10.0.1
"""


def problems(section: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(section + HALL)
    return [str(problem) for problem in caught.value.problems]


def test_absent_section_means_diagnosis_on_with_defaults() -> None:
    settings = parse_config(HALL).diagnosis
    assert settings == DiagnosisSettings()
    assert settings.enabled
    assert (settings.cycles, settings.max_concurrent) == (10, 2)
    assert (settings.min_spacing, settings.baseline_interval) == (300.0, 86400.0)
    assert settings.share == 20.0


def test_durations_and_numbers_are_read() -> None:
    settings = parse_config("diagnosis:\n  enabled: false\n  cycles: 5\n  max_concurrent: 4\n"
                            "  min_spacing: 2m\n  packets_per_second: 100\n"
                            "  baseline_interval: 6h\n" + HALL).diagnosis
    assert not settings.enabled
    assert (settings.cycles, settings.max_concurrent, settings.min_spacing) == (5, 4, 120.0)
    assert (settings.packets_per_second, settings.baseline_interval) == (100.0, 21600.0)
    assert settings.share == 25.0


@pytest.mark.parametrize(("section", "expected"), [
    ("diagnosis:\n  cycles: 0\n",
     "<string>:2: diagnosis.cycles: 0 cycles is out of range; use 1 to 100 cycles"),
    ("diagnosis:\n  cycles: 101\n",
     "<string>:2: diagnosis.cycles: 101 cycles is out of range; use 1 to 100 cycles"),
    ("diagnosis:\n  max_concurrent: 0\n",
     "<string>:2: diagnosis.max_concurrent: 0 is not a valid number of traces at once; "
     "use 1 to 16"),
    ("diagnosis:\n  min_spacing: 5 min\n",
     '<string>:2: diagnosis.min_spacing: "5 min" is not a duration; write seconds as a number '
     "(1.5) or a number with a unit: 250ms, 1s, 1.5s, 2m, 1h"),
    ("diagnosis:\n  packets_per_second: 2000\n",
     "<string>:2: diagnosis.packets_per_second: 2000 packets per second is out of range; "
     "use 8 to 1000 packets per second"),
    ("diagnosis:\n  baseline_interval: 1m\n",
     "<string>:2: diagnosis.baseline_interval: 60 seconds is out of range; "
     "use 600 to 604800 seconds"),
    ("diagnosis:\n  packets_per_second: 10\n  max_concurrent: 4\n",
     "<string>:1: diagnosis: 10 packets per second shared by 4 traces at once leaves 2.5 per "
     "trace, fewer than the 8 a path needs; raise packets_per_second to at least 32 or lower "
     "max_concurrent"),
    ("diagnosis:\n  cycle: 3\n",
     '<string>:2: diagnosis.cycle: unknown key "cycle" (did you mean "cycles"?); allowed keys '
     "are: enabled, cycles, max_concurrent, min_spacing, packets_per_second, "
     "baseline_interval"),
])
def test_bad_values_are_refused_with_the_fix(section: str, expected: str) -> None:
    assert problems(section) == [expected]
