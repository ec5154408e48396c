"""The inventory's ``reports:`` section: when the daemon writes readiness reports, and where."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

Format = Literal["md", "html", "csv", "json"]
Lang = Literal["vi", "en"]

# The notice asks for reports before 09:00 and 15:00; a quarter of an hour ahead leaves
# time to read one and make calls before it is due.
DEFAULT_TIMES = ("08:45", "14:45")
DEFAULT_FORMATS: tuple[Format, ...] = ("html", "csv", "json")
_CLOCK = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")


def _clock_time(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 14:45 as the base-60 number 885.
        raise ValueError(f'{value} is a number, not a time of day; quote it: "14:45"')
    match = _CLOCK.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{value!r} is not a time of day; write HH:MM in quotes, e.g. \"08:45\"")
    return f"{int(match[1]):02d}:{match[2]}"


ClockTime = Annotated[str, BeforeValidator(_clock_time)]


class ReportSettings(BaseModel):
    """``reports:``: present (even empty) to have the daemon write reports."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # local times in the schedule's time zone
    times: list[ClockTime] = Field(default_factory=lambda: list(DEFAULT_TIMES), min_length=1)
    # conference: only on days with a session in the schedule; daily: every day
    days: Literal["conference", "daily"] = "conference"
    # StateDirectory=vcmon in the systemd unit makes /var/lib/vcmon writable
    directory: str = "/var/lib/vcmon/reports"
    formats: list[Format] = Field(default_factory=lambda: list(DEFAULT_FORMATS),
                                  min_length=1)
    lang: Lang = "vi"
    # Prometheus's base URL for the history part; without it reports cover "now" only
    prometheus: str | None = None
