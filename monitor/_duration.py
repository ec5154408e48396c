"""Durations in the inventory: a number of seconds, or a number with a unit."""

from __future__ import annotations

import math
import re

from monitor._problems import show

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*")
_FORMS = "seconds as a number (1.5) or a number with a unit: 250ms, 1s, 1.5s, 2m, 1h"


def parse_duration(value: object) -> float:
    """Seconds from ``1.5``, ``"250ms"``, ``"1.5s"``, ``"2m"`` or ``"1h"``."""
    seconds = math.nan
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match is None:
            raise ValueError(f"{show(value)} is not a duration; write {_FORMS}")
        number, unit = match.groups()
        seconds = float(number) * _UNITS[unit or "s"]
    # bool is an int subclass; "interval: yes" must not mean one second
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    if not math.isfinite(seconds):
        raise ValueError(f"{show(value)} is not a duration; write {_FORMS}")
    return seconds
