"""Conference sessions, pre-flight and maintenance windows in a time zone."""

from __future__ import annotations

from datetime import UTC, datetime

from monitor.inventory.calendar import Schedule


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def phases(schedule: Schedule, when: str) -> dict[str, tuple[bool, bool]]:
    return {c.name: (active, pre) for c, active, pre in schedule.phases(at(when))}


def test_session_and_preflight_in_ho_chi_minh_time() -> None:
    schedule = Schedule.model_validate({"conferences": [
        {"name": "sang", "start": "2026-03-27 07:30", "end": "2026-03-27 11:30"}]})
    # 06:29 in Hà Nội (UTC+7): before the 60-minute pre-flight
    assert phases(schedule, "2026-03-26T23:29:00+00:00") == {"sang": (False, False)}
    assert phases(schedule, "2026-03-27T06:30:00+07:00") == {"sang": (False, True)}
    assert phases(schedule, "2026-03-27T07:30:00+07:00") == {"sang": (True, False)}
    assert phases(schedule, "2026-03-27T11:29:59+07:00") == {"sang": (True, False)}
    assert phases(schedule, "2026-03-27T11:30:00+07:00") == {"sang": (False, False)}


def test_a_session_crossing_midnight() -> None:
    schedule = Schedule.model_validate({"preflight": "15m", "conferences": [
        {"name": "dem", "start": "2026-03-27 22:00", "end": "2026-03-28 01:00"}]})
    assert phases(schedule, "2026-03-27T21:50:00+07:00") == {"dem": (False, True)}
    assert phases(schedule, "2026-03-27T23:59:59+07:00") == {"dem": (True, False)}
    assert phases(schedule, "2026-03-28T00:30:00+07:00") == {"dem": (True, False)}
    assert phases(schedule, "2026-03-28T01:00:00+07:00") == {"dem": (False, False)}


def test_the_zone_is_configurable_and_dst_is_honoured() -> None:
    # Europe/Berlin switches to summer time on 2026-03-29 at 02:00 (UTC+1 → UTC+2)
    schedule = Schedule.model_validate({"timezone": "Europe/Berlin", "preflight": 0,
                                        "conferences": [
        {"name": "winter", "start": "2026-03-28 09:00", "end": "2026-03-28 10:00"},
        {"name": "summer", "start": "2026-03-30 09:00", "end": "2026-03-30 10:00"}]})
    assert phases(schedule, "2026-03-28T08:30:00+00:00")["winter"] == (True, False)
    assert phases(schedule, "2026-03-30T07:30:00+00:00")["summer"] == (True, False)
    assert phases(schedule, "2026-03-30T08:30:00+00:00")["summer"] == (False, False)


def test_per_session_preflight_and_explicit_offsets() -> None:
    schedule = Schedule.model_validate({"conferences": [
        {"name": "x", "start": "2026-03-27T00:30:00+00:00", "end": "2026-03-27T04:30:00+00:00",
         "preflight": "2h"}]})
    assert phases(schedule, "2026-03-26T22:45:00+00:00") == {"x": (False, True)}
    assert schedule.phases(datetime(2026, 3, 27, 1, tzinfo=UTC))[0][1] is True


def test_maintenance_windows_open_and_close_in_the_zone() -> None:
    # which sites a window covers (its sites, its districts) is the health tracker's
    # business: tests/status/test_health.py
    schedule = Schedule.model_validate({"maintenance": [
        {"sites": ["xa-a"], "start": "2026-03-27 07:00", "end": "2026-03-27 08:00"},
        {"districts": ["huyen"], "start": "2026-03-28 07:00", "end": "2026-03-28 08:00"}]})
    first, second = schedule.maintenance

    def open_at(when: str) -> list[object]:
        return list(schedule.active_maintenance(at(when)))

    assert open_at("2026-03-27T07:30:00+07:00") == [first]
    assert open_at("2026-03-27T00:30:00+00:00") == [first]  # 07:30 in Hà Nội
    assert open_at("2026-03-27T08:00:00+07:00") == []
    assert open_at("2026-03-28T07:59:00+07:00") == [second]
    assert open_at("2026-03-28T06:59:59+07:00") == []
