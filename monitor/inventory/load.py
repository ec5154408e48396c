"""Reading an inventory: a YAML or CSV file (or the embedded demo) into a ``Config``,
with every problem at once, each with its file, line and field."""

from __future__ import annotations

import os
import stat
from importlib import resources
from pathlib import Path

from pydantic import ValidationError

from monitor.inventory import limits
from monitor.inventory.calendar import schedule_references
from monitor.inventory.csvfile import load_csv
from monitor.inventory.links import Found, link_problems
from monitor.inventory.problems import ConfigError, Document, Problem, show
from monitor.inventory.reading import decode
from monitor.inventory.schema import (
    DEMO_SOURCE,
    LOADER_FIELDS,
    RECHECKED,
    Config,
    ProbeOverrides,
    ProbeSettings,
    described,
    merge_problems,
)
from monitor.inventory.series import series_references
from monitor.inventory.yamlfile import load_yaml


def parse_config(text: str, source: str = "<string>") -> Config:
    """The inventory in YAML ``text``; ``source`` names it in error messages."""
    return _build(load_yaml(text, source))


def load_config(path: str | os.PathLike[str]) -> Config:
    """The inventory in a .yaml/.yml file, or a .csv site list with default settings."""
    file = os.fspath(path)
    suffix = Path(file).suffix.lower()
    if suffix not in (".yaml", ".yml", ".csv"):
        message = "the inventory's format is unknown; name the file .yaml, .yml or .csv"
        raise ConfigError([Problem(file, None, "", message)])
    raw = _read(file)
    text = decode(raw, file)
    return _build(load_csv(text, file) if suffix == ".csv" else load_yaml(text, file))


# what a path holds when it is not an inventory file, as the refusal names it
_NOT_A_FILE = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISDIR, "a directory"))


def _refusal(file: str, mode: int) -> ConfigError | None:
    kind = next((kind for test, kind in _NOT_A_FILE if test(mode)), None)
    if kind is None:
        return None
    message = (f"the inventory path is {kind}, not a regular file; point vcmon at the "
               "inventory file itself")
    return ConfigError([Problem(file, None, "", message)])


def _read(file: str) -> bytes:
    """The file's bytes, refusing without waiting what is not a regular file (a FIFO
    nobody writes to would block ``open`` forever, a device never end) and, before
    reading a byte, a file larger than the limit."""
    try:
        refused = _refusal(file, os.stat(file).st_mode)
        if refused is not None:
            raise refused
        # O_NONBLOCK: if the path became a FIFO since the stat, open returns at once
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        why = exc.strerror or exc
        message = f"cannot read the inventory ({why}); check the path and its permissions"
        raise ConfigError([Problem(file, None, "", message)]) from None
    with open(fd, "rb") as stream:
        status = os.fstat(fd)
        refused = _refusal(file, status.st_mode)
        if refused is not None:
            raise refused
        if status.st_size > limits.MAX_FILE_BYTES:
            raise _too_large(file, f"the file is {status.st_size:,} bytes")
        try:
            # a file still being written may have grown since the fstat
            raw = stream.read(limits.MAX_FILE_BYTES + 1)
        except OSError as exc:
            why = exc.strerror or exc
            message = f"cannot read the inventory ({why}); check the path and its permissions"
            raise ConfigError([Problem(file, None, "", message)]) from None
    if len(raw) > limits.MAX_FILE_BYTES:
        raise _too_large(file, "the file grew while it was read")
    return raw


def _too_large(file: str, how: str) -> ConfigError:
    message = (f"{how}, larger than the {limits.MAX_FILE_BYTES:,} vcmon reads; check it is "
               "the right file, or split the sites into shards")
    return ConfigError([Problem(file, None, "", message)])


def default_config() -> Config:
    """The embedded demo inventory (Bắc Ninh, 240 sites on loopback addresses)."""
    text = resources.files("monitor").joinpath("data/default-inventory.yaml").read_text("utf-8")
    return parse_config(text, DEMO_SOURCE)


def _build(document: Document) -> Config:
    data, problems = document.data, list(document.problems)
    if not isinstance(data, dict):
        message = f"the inventory is {show(data)}, not a mapping; start it with sites:"
        raise ConfigError([*problems, document.problem((), message)])
    problems += [
        document.problem((key,), f"{key} is set by vcmon, not by the inventory; remove it")
        for key in LOADER_FIELDS & data.keys()
    ]
    try:
        config = Config.model_validate({**data, "source": document.file})
    except ValidationError as exc:
        problems += [
            document.problem(*described(error, Config, LOADER_FIELDS))
            for error in exc.errors()
            if error["type"] not in RECHECKED
        ]
        problems += [document.problem(loc, message) for loc, message in _recheck(document)]
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return config


def _recheck(document: Document) -> list[Found]:
    """The checks across sites and the merged probe settings, on the raw document."""
    sites = document.data.get("sites")
    if not isinstance(sites, list):
        return []
    raw = [site if isinstance(site, dict) else {} for site in sites]
    found = link_problems(raw, lambda i: f"sites[{i}] (line {document.line(('sites', i))})")
    ids = {site["id"] for site in raw if isinstance(site.get("id"), str)}
    found += schedule_references(document.data.get("schedule"), ids)
    found += series_references(document.data.get("series"), ids)
    try:
        defaults = ProbeSettings.model_validate(document.data.get("defaults", {}))
    except ValidationError:
        return found
    for i, site in enumerate(raw):
        try:
            overrides = ProbeOverrides.model_validate(site.get("probe", {}))
        except ValidationError:
            continue
        found += merge_problems(defaults, overrides, ("sites", i, "probe"))
    return found
