"""A site list as CSV (one site per row), for inventories kept in a spreadsheet."""

from __future__ import annotations

import csv
import io
from typing import Any

from monitor.inventory import limits
from monitor.inventory.problems import ConfigError, Document, Problem, show, unknown_name

# column -> where its cell goes in a site
COLUMNS: dict[str, tuple[str, ...]] = {
    "id": ("id",),
    "name": ("name",),
    "tier": ("tier",),
    "parent": ("parent",),
    "district": ("district",),
    "provision": ("provision",),
    "address": ("address",),
    "contact_name": ("contact", "name"),
    "contact_phone": ("contact", "phone"),
    "contact_email": ("contact", "email"),
    "contractor": ("contract", "contractor"),
    "contract_reference": ("contract", "reference"),
}
REQUIRED = ("id", "name", "tier", "address")


def load_csv(text: str, file: str) -> Document:
    """``{"sites": [...]}`` with the line of each row, ready for the same checks as YAML."""
    document = Document(file, lines={(): 1})
    # newline="": a quoted cell may hold a line break, which csv must see as such
    reader = csv.reader(io.StringIO(text, newline=""))
    sites: list[dict[str, Any]] = []
    try:
        header = [column.strip() for column in next(reader, [])]
        _check_header(header, file)
        line = reader.line_num + 1
        for row in reader:
            _check_row(row, file, line, len(sites))
            if any(cell.strip() for cell in row):
                loc = ("sites", len(sites))
                document.lines[loc] = line
                if any(cell.strip() for cell in row[len(header) :]):
                    message = (
                        f"the row has {len(row)} cells but the header names {len(header)} "
                        "columns; remove the extra cells or add their columns to the header"
                    )
                    document.problems.append(document.problem(loc, message))
                sites.append(_site(header, row))
            # line_num counts the physical lines read so far: the next row starts after them
            line = reader.line_num + 1
    except csv.Error as exc:
        message = f"invalid CSV ({exc}); correct this line"
        raise ConfigError([Problem(file, reader.line_num, "", message)]) from None
    document.data = {"sites": sites}
    return document


def _check_row(row: list[str], file: str, line: int, sites: int) -> None:
    if sites >= limits.MAX_SITES:
        message = (f"more than {limits.MAX_SITES:,} sites are listed, more than one vcmon "
                   "handles; split the inventory into shards, one vcmon each")
        raise ConfigError([Problem(file, line, "sites", message)])
    for cell in row:
        if len(cell) > limits.MAX_SCALAR_CHARS:
            message = (f"a cell of {len(cell):,} characters starts on this line, longer than "
                       f"the {limits.MAX_SCALAR_CHARS:,} vcmon accepts; shorten it, or close "
                       "the quote left open")
            raise ConfigError([Problem(file, line, "", message)])


def _check_header(header: list[str], file: str) -> None:
    problems = [
        Problem(file, 1, "header", unknown_name("column", column, list(COLUMNS)))
        for column in header
        if column not in COLUMNS
    ]
    problems += [
        Problem(file, 1, "header", f"column {show(column)} appears twice; keep one")
        for i, column in enumerate(header)
        if column in header[:i]
    ]
    problems += [
        Problem(file, 1, "header", f'required column "{column}" is missing; add it')
        for column in REQUIRED
        if column not in header
    ]
    if problems:
        raise ConfigError(problems)


def _site(header: list[str], row: list[str]) -> dict[str, Any]:
    """The row's non-empty cells, nested like the YAML form (``contact_name`` -> contact.name)."""
    site: dict[str, Any] = {}
    for column, cell in zip(header, row, strict=False):
        if cell.strip():
            *parents, last = COLUMNS[column]
            place = site
            for part in parents:
                place = place.setdefault(part, {})
            place[last] = cell.strip()
    return site
