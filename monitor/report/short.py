"""The short report: a few lines to paste into a chat group, beside the full report.

Who reads it is on a phone between two calls: the totals (ready of all, by tier and
provision), each root cause once with the sites it cuts off, the degraded links, and
the sites in maintenance, in plain text without tables.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from monitor.inventory.reports import Lang
from monitor.report import i18n
from monitor.report.model import Report
from monitor.report.render import history_missing

# Beyond this many lines per part, a count: a chat message stays one screen long.
MAX_LINES = 10
_SYMBOL = {"down": "✖", "unreachable": "⊘", "degraded": "▲", "unknown": "?",
           "maintenance": "⚒"}


def _ready(counts: dict[str, int], lang: Lang) -> str:
    return f'{counts["ok"]}/{counts["total"]} {i18n.words(lang)["ready_of"]}'


def _line(entry: dict[str, Any], report: Report, lang: Lang) -> str:
    w = i18n.words(lang)
    text = f'{_SYMBOL[entry["status"]]} {entry["name"]}: {i18n.status(entry["status"], lang)}'
    site = next((s for s in report.sites if s["id"] == entry["id"]), None)
    if entry["behind"]:
        text += ", " + w["cut_off"].format(n=entry["behind"])
    elif site is not None and entry["status"] != "down":
        reason = i18n.reason(site, lang, report.names)
        if reason:
            text += f" ({reason})"
    if entry["tier"] not in ("province", "district"):
        text += f' — {entry["district_name"]}'
    return text


def _part(title: str, lines: list[str], lang: Lang) -> list[str]:
    if not lines:
        return []
    more = len(lines) - MAX_LINES
    shown = lines[:MAX_LINES] + ([f"… +{more}"] if more > 0 else [])
    return [f"{title}:", *shown]


def short(report: Report, lang: Lang) -> str:
    """The chat message: some ten lines for one outage, whatever the number of sites."""
    w, totals = i18n.words(lang), report.totals
    moment = datetime.fromtimestamp(report.at, report.zone)
    stamp = moment.strftime("%H:%M %d/%m/%Y" if lang == "vi" else "%Y-%m-%d %H:%M")
    head = f'{w["title"]} — {stamp}'
    out = [head] if not report.demo else [head, w["demo"]]
    counts = totals["counts"]
    out.append(f'{w["overall"]}: {_ready(counts, lang)}; '
               + ", ".join(f"{i18n.status(s, lang)} {counts[s]}"
                           for s in ("down", "unreachable", "degraded", "maintenance", "unknown")
                           if counts[s]))
    out.append(f'{w["by_tier"]}: ' + "; ".join(
        f"{i18n.tier(t, lang)} {_ready(c, lang)}" for t, c in totals["by_tier"].items()))
    out.append(f'{w["by_provision"]}: ' + "; ".join(
        f"{i18n.provision(p, lang)} {_ready(c, lang)}"
        for p, c in totals["by_provision"].items()))
    actions = totals["to_act_on"]
    out += _part(w["root_causes"], [_line(e, report, lang) for e in actions
                                    if e["status"] in ("down", "unreachable", "unknown")], lang)
    out += _part(w["degraded_links"], [_line(e, report, lang) for e in actions
                                       if e["status"] == "degraded"], lang)
    out += _part(w["in_maintenance"], [f'{_SYMBOL["maintenance"]} {e["name"]}'
                                       for e in totals["maintenance"]], lang)
    if not actions:
        out.append(w["all_ready"])
    if report.history is None:
        out.append(f'{w["no_history"]}: {history_missing(report, lang)}')
    elif report.partial and report.covered is not None:
        start, end = (datetime.fromtimestamp(t, report.zone).strftime("%H:%M %d/%m")
                      for t in report.covered)
        out.append(w["partial"].format(start=start, end=end))
    return "\n".join(out) + "\n"
