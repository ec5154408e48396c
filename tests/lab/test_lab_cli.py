"""``vcmon lab up | set | down`` as a user runs them, on test-only lab names."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from monitor.lab import control, netlab
from monitor.lab.netlab import Lab
from monitor.lab.state import read_state

REPO = Path(__file__).resolve().parents[2]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def vcmon(*args: str, prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*(prefix or []), sys.executable, "-m", "monitor.cli", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)


def lab_args(lab: Lab) -> list[str]:
    return ["--name", lab.name]


def up(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return vcmon("lab", "up", *lab_args(lab), "--network", str(lab.network), *args)


def probe(address: str, lab: Lab, count: int) -> subprocess.CompletedProcess[str]:
    netlab.check_routes(lab, [address])  # before the first packet
    return vcmon("probe", address, "-c", str(count), "-i", "0.02", "-W", "0.2")


@pytest.mark.parametrize("command", [["up"], ["down"], ["set", "lab-d01", "down"]])
def test_not_root_is_refused_with_a_clear_message(command: list[str]) -> None:
    done = vcmon("lab", *command, prefix=NOBODY)
    assert done.returncode == 1
    action = command[0]
    assert done.stderr == (
        f"vcmon lab: vcmon lab {action} needs root: the lab makes a network namespace, veth "
        "links and routes and answers pings on a raw socket; run it as root, e.g. sudo "
        f"vcmon lab {action} …\n")


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")


@needs_root
def test_up_set_down(lab_names: Callable[[], Lab]) -> None:
    lab = lab_names()
    done = up(lab, "--sites", "60", "--profile", "conference-day", "--seed", "3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == (f"lab {lab.name} is up: 60 sites in namespace {lab.name}, "
                        f"{lab.network} via {lab.name}0, profile conference-day, seed 3")
    assert any(line.split()[:2] == ["down", "1"] for line in lines)
    inventory = lab.run_dir / "inventory.yaml"
    assert lines[-1] == f"probe it:  vcmon run --config {inventory}"
    assert vcmon("check-config", str(inventory)).stdout == f"{inventory}: ok (60 sites)\n"

    state = read_state(control.state_file(lab))
    province = state.find("lab-province")
    replies = probe(province.address, lab, 10)
    assert "10 sent, 10 received" in replies.stdout, replies.stdout

    done = vcmon("lab", "set", *lab_args(lab), "lab-province", "down")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"lab-province ({province.address}): {province.profile.describe()} down  "
        f"(was: {province.profile.describe()})",
        "59 sites behind it go silent with it"]
    assert "5 sent, 0 received" in probe(province.address, lab, 5).stdout
    assert "5 sent, 0 received" in probe(state.find("lab-d01").address, lab, 5).stdout

    done = vcmon("lab", "set", *lab_args(lab), province.address, "up", "delay=30ms", "loss=50%")
    assert done.returncode == 0, done.stderr
    replies = probe(province.address, lab, 100)
    assert "100 sent, 100 received" not in replies.stdout
    average = re.search(r"rtt min/avg/\S+ = [\d.]+/([\d.]+)/", replies.stdout)
    assert average is not None and 29.5 < float(average[1]) < 31, replies.stdout

    done = vcmon("lab", "set", *lab_args(lab), "lab-nowhere", "down")
    assert (done.returncode, done.stderr) == (
        1, "vcmon lab: the lab has no site 'lab-nowhere'; give a site id or address "
           "(lab-province, lab-d01, lab-d02, lab-d03, lab-d01-c001, …)\n")
    done = vcmon("lab", "set", *lab_args(lab), "lab-d01", "delay=fast")
    assert done.returncode == 1 and "'fast' is not a valid delay" in done.stderr

    done = vcmon("lab", "up", *lab_args(lab), "--network", str(lab.network))
    assert done.returncode == 1 and "is already up or was left behind" in done.stderr

    done = vcmon("lab", "down", *lab_args(lab))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"lab {lab.name} removed: responder (pid ")
    assert netlab.leftovers(lab) == []
    assert vcmon("lab", "down", *lab_args(lab)).stdout == f"lab {lab.name}: nothing to remove\n"


@needs_root
def test_up_from_an_inventory_keeps_its_sites(lab_names: Callable[[], Lab],
                                              tmp_path: Path) -> None:
    lab = lab_names()
    out = tmp_path / "lab.yaml"
    done = up(lab, "--config", "monitor/data/default-inventory.yaml", "--profile", "healthy",
              "--inventory", str(out))
    assert done.returncode == 0, done.stderr
    def tree(*args: str) -> str:  # the inventory's tree without the addresses
        return re.sub(r"\) \S+ \[", ") [", vcmon("inventory", *args).stdout)

    assert tree("--config", str(out)) == tree()
    assert "198.19." in vcmon("inventory", "--config", str(out)).stdout
    state = read_state(control.state_file(lab))
    assert not any(site.profile.down or site.profile.loss for site in state.sites)


@needs_root
def test_down_clears_what_a_crash_left(lab_names: Callable[[], Lab]) -> None:
    lab = lab_names()
    assert up(lab, "--sites", "5").returncode == 0
    pid = int(control.pid_file(lab).read_text())
    os.kill(pid, signal.SIGKILL)  # the responder crashed ...
    for path in lab.run_dir.iterdir():  # ... and its state is gone (a reboot of /run)
        path.unlink()
    lab.run_dir.rmdir()
    done = vcmon("lab", "set", *lab_args(lab), "lab-province", "down")
    assert done.returncode == 1 and "run vcmon lab up first" in done.stderr
    done = vcmon("lab", "down", *lab_args(lab))
    assert done.stdout == (f"lab {lab.name} removed: namespace {lab.name}, "
                           f"link {lab.host_link}\n")
    assert netlab.leftovers(lab) == []


@needs_root
def test_up_refuses_when_a_route_takes_a_lab_address_elsewhere(
        lab_names: Callable[[], Lab]) -> None:
    lab = lab_names()
    hijacked = lab.site_addresses(3)[2]
    netlab.run(["ip", "route", "add", "unreachable", f"{hijacked}/32"])
    try:
        done = up(lab, "--sites", "5")
    finally:
        netlab.run(["ip", "route", "delete", "unreachable", f"{hijacked}/32"])
    assert done.returncode == 1
    assert done.stderr == (
        f"vcmon lab: refusing to probe: {hijacked} (via no route) would not go through the "
        f"lab's link {lab.host_link} into {lab.network}; a route on this host takes them "
        "elsewhere (see ip route), remove it or choose another --network\n")
    assert netlab.leftovers(lab) == []  # and it cleaned up after itself
