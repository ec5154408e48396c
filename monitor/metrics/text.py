"""The Prometheus text format (0.0.4) pieces that every renderer of /metrics shares:
sample values, HELP/TYPE headers, label names and escaped label text."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping


def number(value: float) -> str:
    """A sample value as the text format writes it."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def header(name: str, kind: str, text: str) -> str:
    """The HELP and TYPE lines of a family (a counter is named with its _total suffix,
    as the 0.0.4 text format wants)."""
    named = f"{name}_total" if kind == "counter" else name
    return f"# HELP {named} {text}\n# TYPE {named} {kind}\n"


def families_text(families: Iterable[tuple[str, str, str]],
                  lines: Mapping[str, list[str]]) -> str:
    """HELP and TYPE of each (name, type, help) family, then its sample lines."""
    parts = []
    for name, kind, text in families:
        parts.append(header(name, kind, text))
        if lines[name]:
            parts.append("\n".join(lines[name]))
            parts.append("\n")
    return "".join(parts)


SITE_LABELS = ("site", "tier", "district", "provision")


def escape(value: str) -> str:
    """A label value as the text format wants it (backslash, quote and newline escaped)."""
    # most values hold none of the three: the value itself is returned, not a copy
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def label_text(names: Iterable[str], values: Iterable[str]) -> str:
    return ",".join(f'{n}="{escape(v)}"' for n, v in zip(names, values, strict=True))
