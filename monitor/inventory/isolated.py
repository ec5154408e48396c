"""Reading an inventory in a forked child, for the daemon.

Parsing 20,000 sites takes the YAML composer's node tree through ~90 MB and holds
the GIL for a second (libyaml and pydantic-core do not release it). Done in the
daemon, that memory stays fragmented in the process for good and a reload stalls
the probe loop. Done in a forked child (``monitor.system.forked``), which has every module
imported already, the daemon only unpickles the finished ``Config`` (~0.05 s and
~35 MB at 20,000 sites) or the list of problems; the child also runs under memory
and CPU limits, so a hostile file can cost at most those.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import pickle
import resource

from monitor.inventory import Config, load_config, parse_config
from monitor.inventory.problems import ConfigError, Problem
from monitor.system.forked import ChildFailed, run_in_child
from monitor.system.garbage import collector_paused

# Generous for any real inventory (20,000 sites peak at ~300 MB on top of the
# daemon), small enough that a YAML bomb cannot take the host.
MEMORY_LIMIT = 2 << 30
CPU_SECONDS = 120


def _failed(path: str, why: str) -> Problem:
    return Problem(path, None, "", f"reading the inventory failed ({why}); "
                   f"run `vcmon check-config {path}` to see why")


def _limit_resources() -> None:
    # on top of what the daemon already maps: the child starts as its copy
    with open("/proc/self/statm", "rb") as statm:
        mapped = int(statm.read().split()[0]) * resource.getpagesize()
    limits = ((resource.RLIMIT_AS, mapped + MEMORY_LIMIT), (resource.RLIMIT_CPU, CPU_SECONDS))
    for limit, value in limits:
        soft, hard = resource.getrlimit(limit)
        if soft != resource.RLIM_INFINITY and soft <= value:
            continue  # already as tight
        # the shipped systemd unit forbids setrlimit (SystemCallFilter=~@resources);
        # its MemoryMax= bounds the child there
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(limit, (value, hard))


def read_pickled(path: str) -> bytes:
    """In the child: the pickled ``Config``, or the list of problems (an exception's
    pickle would lose them)."""
    result: Config | list[Problem]
    try:
        _limit_resources()
        result = load_config(path)
    except ConfigError as exc:
        result = exc.problems
    except MemoryError:
        result = [Problem(path, None, "", f"the inventory needs more than {MEMORY_LIMIT >> 30} "
                          "GiB to read; is it a YAML bomb?")]
    except Exception as exc:  # a bug: say which, rather than "the child ended with 70"
        result = [_failed(path, f"{type(exc).__name__}: {exc}")]
    return pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)


def _outcome(path: str, data: bytes) -> Config:
    try:
        with collector_paused():
            result = pickle.loads(data)
    except Exception:
        result = None
    if isinstance(result, Config):
        return result
    if isinstance(result, list) and result and all(isinstance(p, Problem) for p in result):
        raise ConfigError(result)
    raise ConfigError([_failed(path, "the reader's answer is unreadable")])


async def load_config_isolated_async(path: str) -> Config:
    """``load_config(path)`` in a forked child; raises ``ConfigError`` as it would.
    The event loop keeps running while the child parses."""
    try:
        data = await run_in_child(lambda: read_pickled(path), "inventory reader",
                                  kill_after=CPU_SECONDS * 2)
    except OSError:
        # no process to be had (EAGAIN, ENOMEM): a worker thread then, which at least
        # keeps the loop running
        return await asyncio.get_running_loop().run_in_executor(None, load_config, path)
    except ChildFailed as exc:
        raise ConfigError([_failed(path, str(exc))]) from None
    return _outcome(path, data)


def load_config_isolated(path: str) -> Config:
    """The same, for the start of ``vcmon run``, before its event loop runs."""
    return asyncio.run(load_config_isolated_async(path))


def prepare_fallback() -> None:
    """Import now what reading an inventory needs: after vcmon switches user, the
    child (and the thread read, where no child can be forked) may no longer be allowed
    to read vcmon's library, and a lazy import would fail at the first reload."""
    codecs.lookup("utf-8-sig")
    parse_config("sites:\n  - {id: a, name: a, tier: province, address: 127.0.0.1}\n")
