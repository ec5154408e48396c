"""Inventory problems: where they are (file, line, field) and sentences that say what to do."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

Loc = tuple[str | int, ...]

_SHOWN_CHARS = 60
_SHOWN_BITS = 196  # 59 decimal digits
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an inventory; ``line`` and ``field`` are None and "" where unknown."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        field = f"{self.field}: " if self.field else ""
        return f"{where}: {field}{self.message}"


class ConfigError(Exception):
    """Every problem found in one inventory, sorted by line."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.line is not None, p.line or 0))
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(map(str, self.problems))


@dataclass(slots=True)
class Document:
    """An inventory read into plain data, with the line of every path that has one and
    the problems found while reading it that do not stop the rest from being checked."""

    file: str
    data: Any = None
    lines: dict[Loc, int] = dataclasses.field(default_factory=dict)
    problems: list[Problem] = dataclasses.field(default_factory=list)

    def line(self, loc: Sequence[str | int]) -> int | None:
        # a missing key or a model-level error has no node of its own: use the nearest parent's
        for end in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return None

    def problem(self, loc: Sequence[str | int], message: str) -> Problem:
        return Problem(self.file, self.line(loc), field_path(loc), message)


def field_path(loc: Sequence[str | int]) -> str:
    """``("sites", 3, "address")`` -> ``sites[3].address``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            # a key of the user's may be empty or hold dots, spaces or line breaks
            name = part if _PLAIN_KEY.fullmatch(part) else quote(part)
            path += f".{name}" if path else name
    return path


def quote(text: str) -> str:
    """``text`` in double quotes, escaped so that a problem stays on one line and readable."""
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = (c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return f'"{"".join(escaped)}"'


def show(value: object) -> str:
    """A value as the user wrote it, in quotes if it is text, cut short if long."""
    if isinstance(value, str):
        return quote(value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "…")
    if isinstance(value, bool):
        return f"{str(value).lower()} (YAML reads yes/no/on/off/true/false as a boolean)"
    if value is None:
        return "an empty value"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, date):
        return f"{value.isoformat()} (YAML reads this as a date)"
    if isinstance(value, bytes):
        return "binary data"
    if isinstance(value, int) and value.bit_length() > _SHOWN_BITS:
        # YAML 1.1 reads 1:59:59:… as one (base 60) number, too long for str() to print
        return f"a whole number of about {int(value.bit_length() * math.log10(2)) + 1:,} digits"
    text = str(value)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {quote(close[0])}?)" if close else ""


def unknown_name(what: str, name: str, allowed: Sequence[str]) -> str:
    hint = did_you_mean(name, allowed)
    return f"unknown {what} {show(name)}{hint}; allowed {what}s are: {', '.join(allowed)}"


def explain(
    error: ErrorDetails, root: type[BaseModel], hidden: frozenset[str] = frozenset()
) -> str:
    """One pydantic error as a sentence that says what is wrong and what to do.

    ``hidden`` names fields of ``root`` that the file must not set, so they are not offered.
    """
    kind, loc, value = error["type"], error["loc"], error.get("input")
    if kind == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    if kind == "extra_forbidden":
        allowed = [f for f in _fields_at(root, loc[:-1]) if not (len(loc) == 1 and f in hidden)]
        return unknown_name("key", str(loc[-1]), allowed)
    if kind == "missing":
        return f'required key "{loc[-1]}" is missing; add it'
    if kind == "literal_error":
        return f"{show(value)} is not allowed here; use {error.get('ctx', {}).get('expected')}"
    if kind == "string_type":
        return f"expected text, found {show(value)}; write text, in quotes if need be"
    if kind == "int_type":
        return f"expected a whole number, found {show(value)}; write e.g. 3"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping of keys, found {show(value)}; write key: value lines"
    if kind == "list_type":
        return f"expected a list, found {show(value)}; write one '- ' line per item"
    return f"{error['msg']}; fix this value"


def _fields_at(root: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The field names of the model that ``loc`` points into (empty if it is not a model)."""
    node: Any = root
    for part in loc:
        if isinstance(part, str):
            if not (isinstance(node, type) and issubclass(node, BaseModel)):
                return []
            node = node.model_fields[part].annotation
        node = _inner(node)
    return list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


def _inner(annotation: Any) -> Any:
    """``list[Site]`` -> ``Site``; ``Contact | None`` -> ``Contact``."""
    origin = get_origin(annotation)
    if origin in (list, Union, types.UnionType):
        return next(a for a in get_args(annotation) if a is not type(None))
    return annotation


def show_number(value: float) -> str:
    """A number as a message shows it: integers as written, others to six digits."""
    return str(value) if isinstance(value, int) else f"{value:.6g}"
