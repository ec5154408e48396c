"""The conference schedule: sessions, their pre-flight windows, and maintenance windows.

Times without an offset are wall-clock times in the schedule's time zone (default
Asia/Ho_Chi_Minh, which has no daylight saving; any IANA zone works). A session may
cross midnight: start and end are full date-times.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from monitor.inventory.fields import parse_duration
from monitor.inventory.links import Found
from monitor.inventory.problems import did_you_mean, show

_FORMS = 'a date and time such as "2026-03-27 07:30" or "2026-03-27T07:30:00+07:00"'


def _parse_time(value: object) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f"{show(value)} is not a date and time; write {_FORMS}")


def _check_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # "Asia" is a directory
        raise ValueError(
            f"{show(name)} is not a known time zone; use an IANA name such as Asia/Ho_Chi_Minh"
        ) from None
    return name


def _nonempty(text: str) -> str:
    if not text.strip():
        raise ValueError("the name is empty; give the session a short name, e.g. nq13-sang-27-3")
    return text.strip()


Time = Annotated[datetime, BeforeValidator(_parse_time)]
Seconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


class _Window(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    start: Time
    end: Time

    @model_validator(mode="after")
    def _ends_after_start(self) -> _Window:
        start, end = self.start, self.end
        if (start.tzinfo is None) == (end.tzinfo is None) and end <= start:
            raise ValueError(f"end {end} is not after start {start}; fix one of them")
        return self

    def bounds(self, zone: ZoneInfo) -> tuple[datetime, datetime]:
        def aware(moment: datetime) -> datetime:
            return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)

        return aware(self.start), aware(self.end)


class Conference(_Window):
    """One session, e.g. the morning of a two-day national conference."""

    name: Annotated[str, AfterValidator(_nonempty)]
    # None: the schedule's default pre-flight
    preflight: Seconds | None = None


class Maintenance(_Window):
    """Planned work: the listed sites, and every site of the listed districts."""

    sites: list[str] = Field(default_factory=list)
    districts: list[str] = Field(default_factory=list)
    reason: str = ""


class Schedule(BaseModel):
    """The ``schedule:`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    timezone: Annotated[str, AfterValidator(_check_zone)] = "Asia/Ho_Chi_Minh"
    # checks before a session: links must be ready this long before it starts
    preflight: Seconds = 3600.0
    conferences: list[Conference] = Field(default_factory=list)
    maintenance: list[Maintenance] = Field(default_factory=list)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def phases(self, now: datetime) -> list[tuple[Conference, bool, bool]]:
        """Each conference with (in session, in pre-flight) at the aware moment ``now``."""
        zone = self.zone
        out = []
        for conference in self.conferences:
            start, end = conference.bounds(zone)
            lead = self.preflight if conference.preflight is None else conference.preflight
            active = start <= now < end
            preflight = start - timedelta(seconds=lead) <= now < start
            out.append((conference, active, preflight))
        return out

    def active_maintenance(self, now: datetime) -> list[Maintenance]:
        """The maintenance windows open at the aware moment ``now``."""
        zone = self.zone
        active = []
        for window in self.maintenance:
            start, end = window.bounds(zone)
            if start <= now < end:
                active.append(window)
        return active


def schedule_references(schedule: object, site_ids: set[str]) -> list[Found]:
    """Maintenance windows naming sites or districts that the inventory does not have."""
    found: list[Found] = []
    windows = schedule.get("maintenance") if isinstance(schedule, dict) else None
    if not isinstance(windows, list):
        return found
    for i, window in enumerate(windows):
        if not isinstance(window, dict):
            continue
        for key in ("sites", "districts"):
            names = window.get(key)
            if not isinstance(names, list):
                continue
            for j, name in enumerate(names):
                if isinstance(name, str) and name not in site_ids:
                    hint = did_you_mean(name, sorted(site_ids))
                    found.append((("schedule", "maintenance", i, key, j),
                                  f"{show(name)} is not a site id in this inventory; "
                                  f"use the id of a listed site{hint}"))
    return found
