"""An inventory path that is not a regular file, or one too large, is refused at once:
nothing waits on a FIFO nobody writes to, reads a device without end, or reads a file
the limit already rules out."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.inventory import ConfigError, limits, load_config

NOT_A_FILE = "not a regular file; point vcmon at the inventory file itself"


@pytest.fixture
def paths(tmp_path: Path) -> Iterator[dict[str, Path]]:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    null, zero = tmp_path / "null.yaml", tmp_path / "zero.csv"
    null.symlink_to("/dev/null")
    zero.symlink_to("/dev/zero")
    directory = tmp_path / "dir.yaml"
    directory.mkdir()
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(str(tmp_path / "socket.yaml"))
    try:
        yield {"a named pipe (FIFO)": fifo, "a character device": null,
               "a character device ": zero, "a directory": directory,
               "a socket": tmp_path / "socket.yaml"}
    finally:
        listening.close()


def test_what_is_not_a_regular_file_is_refused_at_once(paths: dict[str, Path]) -> None:
    for kind, path in paths.items():
        started = time.perf_counter()
        with pytest.raises(ConfigError) as refused:
            load_config(path)
        assert time.perf_counter() - started < 0.5, kind
        assert [str(p) for p in refused.value.problems] == [
            f"{path}: the inventory path is {kind.strip()}, {NOT_A_FILE}"]


def test_check_config_answers_for_a_fifo(paths: dict[str, Path]) -> None:
    fifo = paths["a named pipe (FIFO)"]
    done = subprocess.run([sys.executable, "-m", "monitor.cli", "check-config", str(fifo)],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2, done.stderr
    assert f"the inventory path is a named pipe (FIFO), {NOT_A_FILE}" in done.stdout + done.stderr


def test_a_file_over_the_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    sparse = tmp_path / "huge.yaml"
    with sparse.open("wb") as stream:  # 1 GiB that takes no disk space
        stream.truncate(1 << 30)
    started = time.perf_counter()
    with pytest.raises(ConfigError) as refused:
        load_config(sparse)
    # reading the first 64 MiB of it, as before, took ~0.1 s; a stat takes microseconds
    assert time.perf_counter() - started < 0.05
    assert [str(p) for p in refused.value.problems] == [
        f"{sparse}: the file is 1,073,741,824 bytes, larger than the "
        f"{limits.MAX_FILE_BYTES:,} vcmon reads; check it is the right file, or split the "
        "sites into shards"]
