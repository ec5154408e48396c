"""A report as Markdown, HTML (one self-contained page, printable on A4), CSV or JSON.

Markdown and HTML show the same tables (``_tables``); CSV is one row per site so that a
spreadsheet can sort and filter it (UTF-8 with a byte-order mark: without it Excel
reads Vietnamese as Windows-1252); JSON is the whole model with stable English keys.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from monitor.inventory.reports import Format, Lang
from monitor.report import i18n
from monitor.report.model import Report, SiteHistory
from monitor.status.records import STATUSES

_DASH = "–"
_NO_HISTORY = SiteHistory(None, None, None, None, None, None)


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""
    # per row, the status whose colour the HTML row takes
    statuses: list[str] | None = None


def _pct(value: float | None) -> str:
    return _DASH if value is None else f"{value * 100:.1f} %"


def _ms(value: float | None) -> str:
    if value is None:
        return _DASH
    # LAN and loopback links answer in microseconds: "0.0 ms" would hide them
    return f"{value * 1000:.1f} ms" if value >= 0.001 else f"{value * 1000:.3f} ms"


def _when(report: Report, timestamp: float | None, lang: Lang) -> str:
    if timestamp is None:
        return _DASH
    moment = datetime.fromtimestamp(timestamp, report.zone)
    return moment.strftime("%H:%M %d/%m/%Y" if lang == "vi" else "%Y-%m-%d %H:%M")


def _period(report: Report, lang: Lang) -> str:
    return f"{_when(report, report.since, lang)} – {_when(report, report.at, lang)}"


def _count_columns(report: Report) -> list[str]:
    # "unknown" only when some site is: the notice's readers expect five states.
    return [s for s in STATUSES if s != "unknown" or report.totals["counts"]["unknown"]]


def _tally_rows(label: str, counts: dict[str, int], columns: list[str]) -> list[str]:
    return [label, *(str(counts[c]) for c in columns), str(counts["total"])]


def _tables(report: Report, lang: Lang) -> list[Table]:
    w, totals = i18n.words(lang), report.totals
    columns = _count_columns(report)
    headers = [w["group"], *(i18n.status(c, lang) for c in columns), w["total"]]
    tables = [
        Table(f'{w["totals"]}: {w["overall"].lower()}, {w["by_tier"].lower()}', headers,
              [_tally_rows(w["overall"], totals["counts"], columns)]
              + [_tally_rows(i18n.tier(t, lang), c, columns)
                 for t, c in totals["by_tier"].items()]),
        Table(w["by_district"], headers,
              [_tally_rows(d["name"], d["counts"], columns) for d in totals["by_district"]]),
        Table(w["by_provision"], headers,
              [_tally_rows(i18n.provision(p, lang), c, columns)
               for p, c in totals["by_provision"].items()]),
    ]
    lines = listed(report)
    bad = [s for s, _ in lines]
    tables.append(Table(
        w["not_ready"],
        [w["district"], w["site"], w["address"], w["contact"], w["state"], w["since"],
         w["reason"], f'{w["last"]}: {w["loss"]} / {w["rtt"]} / {w["jitter"]} / {w["mos"]}'],
        [[s["district_name"], f'{s["name"]} ({s["id"]})', s["address"], _contact(s),
          i18n.status(s["status"], lang), _when(report, s["since_timestamp"], lang),
          _reason_and_behind(report, s, behind, lang),
          _last(s["window"]) + _streams(s.get("streams") or [], lang)]
         for s, behind in lines],
        note="" if bad else w["all_ready"], statuses=[s["status"] for s in bad]))
    tables.append(_history_table(report, lang))
    return tables


def listed(report: Report) -> list[tuple[dict[str, Any], list[str]]]:
    """The sites the not-ready table lists, each with the sites folded under it: one
    line per root cause (``monitor.status.records.to_act_on``), then maintenance."""
    by_id = {s["id"]: s for s in report.sites}
    entries = [*report.totals["to_act_on"], *report.totals["maintenance"]]
    return [(by_id[e["id"]], e["behind_sites"]) for e in entries]


def _reason_and_behind(report: Report, site: dict[str, Any], behind: list[str],
                       lang: Lang) -> str:
    text = i18n.reason(site, lang, report.names)
    count = len(behind) or (site.get("unreachable_behind", 0) if site["status"] == "down" else 0)
    if not count:
        return text
    names = ", ".join(report.names.get(i, i) for i in behind)
    cut_off = i18n.words(lang)["cut_off"].format(n=count)
    return f"{text}; {cut_off}" + (f": {names}" if names else "")


def _contact(site: dict[str, Any]) -> str:
    contact = site.get("contact") or {}
    parts = [contact.get("name"), contact.get("phone")]
    return ", ".join(p for p in parts if p) or _DASH


def _last(window: dict[str, Any]) -> str:
    mos = window.get("mos")
    return " / ".join([_pct(window.get("loss_ratio")), _ms(window.get("rtt_avg")),
                       _ms(window.get("jitter")), _DASH if mos is None else f"{mos:.2f}"])


def _streams(streams: list[dict[str, Any]], lang: Lang) -> str:
    """Each TWAMP stream's two directions after the ICMP figures: loss / jitter / MOS."""
    w, parts = i18n.words(lang), []
    for stream in streams:
        window = stream.get("window")
        if window is None:
            continue
        for direction in ("forward", "reverse"):
            d = window[direction]
            mos = d.get("mos")
            parts.append(f'{w[direction]}: ' + " / ".join([
                _pct(d.get("loss_ratio")), _ms(d.get("jitter")),
                _DASH if mos is None else f"{mos:.2f}"]))
    return "; " + "; ".join(parts) if parts else ""


def _troubled(h: SiteHistory) -> bool:
    return ((h.availability is not None and h.availability < 0.9995)
            or bool(h.not_ready) or bool(h.changes and h.changes >= 0.5))


def _history_table(report: Report, lang: Lang) -> Table:
    w = i18n.words(lang)
    title = f'{w["history"]} ({_period(report, lang)})'
    headers = [w["district"], w["site"], w["availability"], w["not_ready_time"],
               w["worst_loss"], w["worst_rtt"], w["worst_jitter"], w["changes"]]
    if report.history is None:
        return Table(title, headers, [], note=f'{w["no_history"]}: {history_missing(report, lang)}')
    rows = []
    for site in report.sites:
        h = report.history.get(site["id"])
        if h is None or not _troubled(h):
            continue
        rows.append([site["district_name"], f'{site["name"]} ({site["id"]})',
                     _pct(h.availability), _pct(h.not_ready), _pct(h.worst_loss),
                     _ms(h.worst_rtt), _ms(h.worst_jitter),
                     _DASH if h.changes is None else f"{h.changes:.0f}"])
    note = w["history_only_problems"]
    if report.partial and report.covered is not None:
        start, end = report.covered
        note = w["partial"].format(start=_when(report, start, lang),
                                   end=_when(report, end, lang)) + " " + note
    if report.lowest_ready is not None:
        count, at = report.lowest_ready
        note += f' {w["lowest_ready"]}: {count} ({_when(report, at, lang)}).'
    return Table(title, headers, rows, note=f'{note} {w["definitions"]}')


def history_missing(report: Report, lang: Lang) -> str:
    """Why the report has no history, as a sentence in ``lang``."""
    w = i18n.words(lang)
    if report.history_unreadable:
        # the English note carries the library's error text; the Vietnamese one the URL
        return (w["prometheus_unreadable"].format(url=report.prometheus) if lang == "vi"
                else report.history_note)
    return w["no_prometheus"]


def _heading(report: Report, lang: Lang) -> list[tuple[str, str]]:
    w = i18n.words(lang)
    source = w["source_now"] if report.source == "daemon" else w["source_past"]
    heading = [(w["at"], _when(report, report.at, lang)),
               (w["period"], _period(report, lang)),
               (w["generated"], f"{_when(report, report.generated, lang)} ({report.timezone}); "
                                f"{source}")]
    if report.demo:
        heading.insert(0, (w["data"], w["demo"]))
    return heading


def markdown(report: Report, lang: Lang) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    out = [f"# {i18n.words(lang)['title']}", ""]
    out += [f"- **{label}**: {value}" for label, value in _heading(report, lang)]
    for table in _tables(report, lang):
        out += ["", f"## {table.title}", ""]
        if table.rows:
            out.append("| " + " | ".join(map(cell, table.headers)) + " |")
            out.append("|" + "---|" * len(table.headers))
            out += ["| " + " | ".join(map(cell, row)) + " |" for row in table.rows]
        if table.note:
            out += ["", table.note]
    return "\n".join(out) + "\n"


_CSS = """
@page { size: A4; margin: 12mm; }
body { font-family: "DejaVu Sans", "Noto Sans", Arial, sans-serif; font-size: 9.5pt;
       color: #111; margin: 0 auto; max-width: 190mm; }
h1 { font-size: 14pt; margin: 0 0 4pt; }
h2 { font-size: 11pt; margin: 10pt 0 3pt; break-after: avoid; }
dl { display: grid; grid-template-columns: max-content auto; gap: 1pt 8pt; margin: 0; }
dt { font-weight: bold; }
dd { margin: 0; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 0.5pt solid #999; padding: 1.5pt 3pt; text-align: left; vertical-align: top; }
th { background: #eee; }
tr { break-inside: avoid; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.s-down td, tr.s-unreachable td { background: #fde2e2; }
tr.s-degraded td { background: #fff4cc; }
tr.s-maintenance td, tr.s-unknown td { background: #e6eef8; }
p.note { margin: 3pt 0; color: #333; }
"""


def _numeric(text: str) -> bool:
    return text[:1].isdigit() or text == _DASH


def page(report: Report, lang: Lang) -> str:
    e = html.escape
    w = i18n.words(lang)
    out = [f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8">',
           f"<title>{e(w['title'])}</title><style>{_CSS}</style></head><body>",
           f"<h1>{e(w['title'])}</h1><dl>"]
    out += [f"<dt>{e(label)}</dt><dd>{e(value)}</dd>" for label, value in _heading(report, lang)]
    out.append("</dl>")
    for table in _tables(report, lang):
        out.append(f"<h2>{e(table.title)}</h2>")
        if table.rows:
            out.append("<table><thead><tr>"
                       + "".join(f"<th>{e(h)}</th>" for h in table.headers)
                       + "</tr></thead><tbody>")
            for i, row in enumerate(table.rows):
                status = table.statuses[i] if table.statuses else ""
                css = f' class="s-{e(status)}"' if status else ""
                cells = "".join(f'<td class="n">{e(c)}</td>' if _numeric(c) and j else
                                f"<td>{e(c)}</td>" for j, c in enumerate(row))
                out.append(f"<tr{css}>{cells}</tr>")
            out.append("</tbody></table>")
        if table.note:
            out.append(f'<p class="note">{e(table.note)}</p>')
    out.append("</body></html>\n")
    return "\n".join(out)


# OWASP "CSV injection": a spreadsheet runs a cell that starts with one of these as a
# formula (=HYPERLINK(...), =cmd|'/c calc'!A1), and names, contacts and reasons come from
# the inventory; a leading apostrophe makes it text. Plain numbers ("-3.5") stay numbers.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")


def cell(value: str) -> str:
    """``value`` as a CSV cell that no spreadsheet evaluates."""
    if value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def spreadsheet(report: Report, lang: Lang) -> str:
    w = i18n.words(lang)
    headers = [w["district"], w["site_id"], w["site"], w["tier"], w["provision"], w["address"],
               w["contact"], w["phone"], w["state"], w["since"], w["reason"],
               f'{w["loss"]} (%)', f'{w["rtt"]} (ms)', f'{w["jitter"]} (ms)', w["mos"],
               f'{w["availability"]} (%)', f'{w["not_ready_time"]} (%)',
               f'{w["worst_loss"]} (%)', f'{w["worst_rtt"]} (ms)', f'{w["worst_jitter"]} (ms)',
               w["changes"]]

    def num(value: float | None, scale: float = 1.0, digits: int = 3) -> str:
        return "" if value is None else f"{value * scale:.{digits}f}"

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(map(cell, headers))
    history = report.history or {}
    for s in report.sites:
        win, contact = s["window"], s.get("contact") or {}
        h = history.get(s["id"], _NO_HISTORY)
        writer.writerow(map(cell, [
            s["district_name"], s["id"], s["name"], i18n.tier(s["tier"], lang),
            i18n.provision(s["provision"], lang), s["address"], contact.get("name") or "",
            contact.get("phone") or "", i18n.status(s["status"], lang),
            report.time(s["since_timestamp"]), i18n.reason(s, lang, report.names),
            num(win.get("loss_ratio"), 100, 2), num(win.get("rtt_avg"), 1000),
            num(win.get("jitter"), 1000), num(win.get("mos"), 1, 2),
            num(h.availability, 100, 2), num(h.not_ready, 100, 2),
            num(h.worst_loss, 100, 2), num(h.worst_rtt, 1000),
            num(h.worst_jitter, 1000), num(h.changes, 1, 0)]))
    return "\ufeff" + buffer.getvalue()


def data(report: Report, lang: Lang) -> str:
    history = report.history
    sites = [{**s, "status_label": i18n.status(s["status"], lang),
              "reason_text": i18n.reason(s, lang, report.names),
              "history": asdict(history[s["id"]]) if history and s["id"] in history else None}
             for s in report.sites]
    lowest = report.lowest_ready
    return json.dumps({
        "at": report.time(report.at), "since": report.time(report.since),
        "generated_at": report.time(report.generated), "timezone": report.timezone,
        "lang": lang, "source": report.source, "prometheus": report.prometheus,
        "history_available": history is not None, "history_note": report.history_note,
        "history_text": history_missing(report, lang) if history is None else "",
        "history_covered": None if report.covered is None else {
            "from": report.time(report.covered[0]), "to": report.time(report.covered[1]),
            "partial": report.partial},
        "demo": report.demo,
        **report.totals,
        "not_ready": [s["id"] for s in report.not_ready],
        "lowest_ready": None if lowest is None else {"count": lowest[0],
                                                     "at": report.time(lowest[1])},
        "sites": sites,
    }, ensure_ascii=False, indent=1) + "\n"


RENDERERS = {"md": markdown, "html": page, "csv": spreadsheet, "json": data}


def render(report: Report, fmt: Format, lang: Lang) -> str:
    return RENDERERS[fmt](report, lang)
