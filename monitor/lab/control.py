"""Bringing a lab up, changing its sites while it runs, and taking it down.

State lives in /run/NAME/: ``state.json`` (profiles), ``inventory.yaml`` (for
``vcmon run``), ``responder.pid`` and ``responder.log``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from monitor.inventory import Config
from monitor.lab import netlab
from monitor.lab.netlab import Lab
from monitor.lab.profiles import SCENARIOS, LabError, Profile, apply_settings
from monitor.lab.sites import Document, relocate
from monitor.lab.state import LabSite, LabState, read_state, write_state

_READY_WITHIN = 10.0
_STOP_WITHIN = 3.0
_RESPONDER = "monitor.lab.responder"


def state_file(lab: Lab) -> Path:
    return lab.run_dir / "state.json"


def pid_file(lab: Lab) -> Path:
    return lab.run_dir / "responder.pid"


def log_file(lab: Lab) -> Path:
    return lab.run_dir / "responder.log"


def inventory_file(lab: Lab) -> Path:
    return lab.run_dir / "inventory.yaml"


def require_root(action: str) -> None:
    if os.geteuid() != 0:
        raise LabError(f"vcmon lab {action} needs root: the lab makes a network namespace, "
                       "veth links and routes and answers pings on a raw socket; run it "
                       f"as root, e.g. sudo vcmon lab {action} …")


@dataclass(frozen=True)
class Started:
    state: LabState
    config: Config
    inventory: Path


def up(lab: Lab, document: Document, scenario: str | dict[str, Profile] = "conference-day",
       seed: int = 1, inventory: Path | None = None) -> Started:
    """Build the lab for the sites of ``document`` with profiles from a named scenario
    (or given per site id), check its routes, start the responder."""
    found = netlab.leftovers(lab)
    if found:
        raise LabError(f"the lab {lab.name} is already up or was left behind "
                       f"({', '.join(found)}); run vcmon lab down --name {lab.name} first")
    text, config = relocate(document, lab)
    if isinstance(scenario, str):
        name, profiles = scenario, SCENARIOS[scenario](config.sites, random.Random(seed))
    else:
        name, profiles = "custom", scenario
    state = LabState(name=lab.name, network=str(lab.network), scenario=name, seed=seed,
                     sites=[LabSite(id=site.id, address=site.address, parent=site.parent,
                                    profile=profiles.get(site.id, Profile()))
                            for site in config.sites])
    addresses = [site.address for site in state.sites]
    inventory = inventory or inventory_file(lab)
    try:
        netlab.create(lab, addresses)
        # Before any probe: every address must leave through the lab's own link.
        netlab.check_routes(lab, addresses)
        lab.run_dir.mkdir(parents=True, exist_ok=True)
        write_state(state_file(lab), state)
        inventory.write_text(text, encoding="utf-8")
        _start_responder(lab)
    except BaseException:
        down(lab)
        raise
    return Started(state, config, inventory)


def _start_responder(lab: Lab) -> None:
    argv = ["setsid", "--fork", "ip", "netns", "exec", lab.namespace, sys.executable, "-m",
            _RESPONDER, "--state", str(state_file(lab)), "--pid-file", str(pid_file(lab))]
    # setsid --fork: the responder is nobody's child once `lab up` exits; it prints
    # "ready" on the pipe once its socket is open.
    with log_file(lab).open("ab") as log, subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log) as launcher:
        assert launcher.stdout is not None
        readable, _, _ = select.select([launcher.stdout], [], [], _READY_WITHIN)
        line = launcher.stdout.readline() if readable else b""
        launcher.wait(_READY_WITHIN)
    if line != b"ready\n":
        tail = log_file(lab).read_text(errors="replace").strip().splitlines()[-3:]
        raise LabError(f"the lab's responder did not start within {_READY_WITHIN:g} s: "
                       f"{' | '.join(tail) or 'no output'} (log: {log_file(lab)})")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # A zombie is dead: only its parent (init, here) can still reap it.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def responder_pids(lab: Lab) -> list[int]:
    """The running responder(s) of this lab: the pid file's, if it is still one, and
    every process in the lab's namespace."""
    pids = set(netlab.namespace_pids(lab))
    with contextlib.suppress(OSError, ValueError):
        pid = int(pid_file(lab).read_text())
        # The pid may have been reused since a crash: only a responder is ours.
        if _RESPONDER.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
            pids.add(pid)
    return sorted(pid for pid in pids if _alive(pid))


def _stop(pids: list[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + _STOP_WITHIN
        while pids and time.monotonic() < deadline:
            time.sleep(0.02)
            pids = [pid for pid in pids if _alive(pid)]
        if not pids:
            return


def down(lab: Lab) -> list[str]:
    """Stop the responder and remove everything of the lab; what was found is returned.

    Works from names alone, so it also clears what a crashed ``lab up`` left.
    """
    pids = responder_pids(lab)
    _stop(pids)
    return [f"responder (pid {pid})" for pid in pids] + netlab.remove(lab)


@contextlib.contextmanager
def _locked(lab: Lab) -> Iterator[None]:
    # Two `lab set` at once must not lose one of the changes.
    with (lab.run_dir / "lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def set_site(lab: Lab, key: str, words: list[str]) -> tuple[LabSite, LabSite, list[str]]:
    """Change one site's profile while the lab runs; return it before and after, and
    the ids of the sites behind it."""
    if not lab.run_dir.exists():
        raise LabError(f"the lab {lab.name} is not up ({lab.run_dir} does not exist); "
                       "run vcmon lab up first")
    with _locked(lab):
        state = read_state(state_file(lab))
        before = state.find(key)
        after = before.model_copy(update={"profile": apply_settings(before.profile, words)})
        write_state(state_file(lab), state.with_profile(before.id, after.profile))
    pids = responder_pids(lab)
    if not pids:
        raise LabError(f"the profile is saved, but the lab's responder is not running "
                       f"(see {log_file(lab)}); run vcmon lab down, then vcmon lab up")
    for pid in pids:
        os.kill(pid, signal.SIGHUP)
    return before, after, state.behind(before.id)
