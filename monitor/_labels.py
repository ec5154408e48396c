"""Label sets of the per-site series, as exposition text."""

from __future__ import annotations

from collections.abc import Iterable

SITE_LABELS = ("site", "tier", "district", "provision")
# Longer values live on vcmon_site_info only, joined on `site` in PromQL.
# dscp: of the site's ICMP probes, 0..63 (0: unmarked)
INFO_LABELS = ("name", "parent", "address", "contact_name", "contact_phone", "contractor",
               "contract_reference", "dscp")


def escape(value: str) -> str:
    """A label value as the text format wants it (backslash, quote and newline escaped)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def label_text(names: Iterable[str], values: Iterable[str]) -> str:
    return ",".join(f'{n}="{escape(v)}"' for n, v in zip(names, values, strict=True))
