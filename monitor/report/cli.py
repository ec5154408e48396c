"""``vcmon report``: a readiness report from a running daemon (and Prometheus)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from monitor.report.model import SourceError, gather
from monitor.report.render import RENDERERS, render
from monitor.report.short import short

EXIT_SOURCE = 1
# a few lines for a chat message (monitor/report/short.py), beside the full formats
SHORT = "short"


def _moment(text: str) -> datetime:
    """``2026-03-27 08:45`` (in the daemon's time zone unless an offset is given) or
    ``08:45`` (today)."""
    text = text.strip()
    try:
        if len(text) <= 5 and ":" in text:
            hour, minute = map(int, text.split(":"))
            return datetime.now().replace(hour=hour, minute=minute, second=0, microsecond=0)
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'{text!r} is not a time; write "2026-03-27 08:45" or "08:45" (today)') from None


def _cmd_report(args: argparse.Namespace) -> int:
    try:
        report = asyncio.run(gather(args.daemon, args.prometheus, args.at, args.since))
    except SourceError as exc:
        print(f"vcmon report: {exc}", file=sys.stderr)
        return EXIT_SOURCE
    text = (short(report, args.lang) if args.format == SHORT
            else render(report, args.format, args.lang))
    if args.output is None:
        sys.stdout.write(text)
    else:
        # newline="": the CSV writer already ends rows with CRLF, as RFC 4180 asks.
        with Path(args.output).open("w", encoding="utf-8", newline="") as out:
            out.write(text)
    return 0


def add_report_parser(subparsers: Any) -> None:
    """Add ``report`` to the ``vcmon`` command's subparsers."""
    report = subparsers.add_parser(
        "report", help="a readiness report of every site: now, and since the previous one",
        description="Totals by tier, district and provision, the sites not ready with their "
                    "contacts and reasons, and (with Prometheus) availability and worst "
                    "loss, RTT and jitter per site since the previous report.")
    report.add_argument("--at", type=_moment, metavar="TIME",
                        help="the report's moment (default now); an earlier moment needs "
                             "--prometheus")
    report.add_argument("--since", type=_moment, metavar="TIME",
                        help="start of the history period (default: the previous report "
                             "time, e.g. 14:45 the day before for an 08:45 report)")
    report.add_argument("--format", default="md", choices=[*sorted(RENDERERS), SHORT],
                        help='"short": a few lines to paste into a chat message')
    report.add_argument("--lang", default="vi", choices=["vi", "en"])
    report.add_argument("--prometheus", metavar="URL",
                        help="Prometheus's base URL for the history, e.g. http://127.0.0.1:9090")
    report.add_argument("--daemon", metavar="URL", default="http://127.0.0.1:9470",
                        help="the running vcmon (default http://127.0.0.1:9470)")
    report.add_argument("--output", "-o", metavar="FILE", help="write here, not to stdout")
    report.set_defaults(func=_cmd_report)
