"""Reading an inventory in a child process, for the daemon.

Parsing 20,000 sites takes the YAML composer's node tree through ~90 MB and holds
the GIL for seconds (libyaml and pydantic-core do not release it). Done in the
daemon, that memory stays fragmented in the process for good and a reload stalls
the probe loop. Done here, in a child of our own interpreter, the daemon only
unpickles the finished ``Config`` (~0.1 s and ~35 MB at 20,000 sites) or the
``ConfigError``; the child also runs under memory and CPU limits, so a hostile
file can cost at most those.

Run as ``python -m monitor._isolated PATH``: writes one pickle to stdout.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import pickle
import resource
import subprocess
import sys

from monitor._problems import ConfigError, Problem
from monitor.config import Config, load_config, parse_config

# Generous for any real inventory (20,000 sites peak at ~300 MB of address space
# on top of the interpreter), small enough that a YAML bomb cannot take the host.
MEMORY_LIMIT = 2 << 30
CPU_SECONDS = 120


def _command(path: str) -> list[str]:
    return [sys.executable, "-m", "monitor._isolated", os.fspath(path)]


def _outcome(path: str, returncode: int, stdout: bytes, stderr: bytes) -> Config:
    if returncode == 0:
        try:
            result = pickle.loads(stdout)
        except Exception:
            result = None
        if isinstance(result, Config):
            return result
        if isinstance(result, list) and all(isinstance(p, Problem) for p in result):
            raise ConfigError(result)
    why = stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {returncode}"]
    message = (f"reading the inventory failed ({why[0]}); run `vcmon check-config {path}` "
               "to see why")
    raise ConfigError([Problem(path, None, "", message)])


def load_config_isolated(path: str) -> Config:
    """``load_config(path)`` in a child process; raises ``ConfigError`` as it would."""
    try:
        done = subprocess.run(_command(path), capture_output=True, check=False,
                              timeout=CPU_SECONDS * 2)
    except OSError:
        # the interpreter cannot be started again (e.g. not executable by the user
        # vcmon switched to): read it here, as vcmon check-config does
        return load_config(path)
    return _outcome(path, done.returncode, done.stdout, done.stderr)


async def load_config_isolated_async(path: str) -> Config:
    """The same, awaited: the event loop keeps running while the child parses."""
    try:
        child = await asyncio.create_subprocess_exec(
            *_command(path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError:
        # as above; a worker thread then, which at least keeps the loop running
        return await asyncio.get_running_loop().run_in_executor(None, load_config, path)
    try:
        stdout, stderr = await asyncio.wait_for(child.communicate(), CPU_SECONDS * 2)
    except TimeoutError:
        child.kill()
        await child.wait()
        raise ConfigError([Problem(path, None, "", "reading the inventory took too long; "
                                   f"run `vcmon check-config {path}` to see why")]) from None
    assert child.returncode is not None
    return _outcome(path, child.returncode, stdout, stderr)


def prepare_fallback() -> None:
    """Import now what reading an inventory in this process needs: where the user
    vcmon switches to cannot start the interpreter, it usually cannot read its
    library either, and a lazy import would fail at the first reload."""
    codecs.lookup("utf-8-sig")
    parse_config("sites:\n  - {id: a, name: a, tier: province, address: 127.0.0.1}\n")


def main(path: str) -> int:
    for limit, value in ((resource.RLIMIT_AS, MEMORY_LIMIT), (resource.RLIMIT_CPU, CPU_SECONDS)):
        soft, hard = resource.getrlimit(limit)
        if soft != resource.RLIM_INFINITY and soft <= value:
            continue  # already as tight
        # the shipped systemd unit forbids setrlimit (SystemCallFilter=~@resources);
        # its MemoryMax= bounds the child there
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(limit, (value, hard))
    # a Config, or the list of problems (an exception's pickle would lose them)
    result: Config | list[Problem]
    try:
        result = load_config(path)
    except ConfigError as exc:
        result = exc.problems
    except MemoryError:
        result = [Problem(path, None, "", f"the inventory needs more than {MEMORY_LIMIT >> 30} "
                          "GiB to read; is it a YAML bomb?")]
    sys.stdout.buffer.write(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
