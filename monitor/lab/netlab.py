"""The lab's network: one namespace joined to the host by a veth pair, routes, cleanup.

    host                                   namespace NAME
    NAME0 (first address of the network) ── NAME1 (second address)
    route NETWORK via NAME1's address       every lab site's address on lo

Every lab address comes from 198.18.0.0/15, the RFC 2544 benchmarking range, which
is never routed on real networks; before anything is probed, ``ip route get`` must
show each address leaving through the lab's own veth. Everything the lab makes is
named after the lab (namespace NAME, links NAME0/NAME1, state in /run/NAME), so
``remove`` finds it again even when the process that made it crashed.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from monitor.lab.profiles import LabError

LAB_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
DEFAULT_NAME = "vcmon-lab"
# the links are NAME0 and NAME1, and a Linux interface name has at most 15 characters
_NAME = re.compile(r"[a-z][a-z0-9-]{0,13}")
_TIMEOUT = 30.0


@dataclass(frozen=True)
class Lab:
    """Where one lab lives: its names, its address range and its state directory."""

    name: str = DEFAULT_NAME
    network: ipaddress.IPv4Network = LAB_RANGE
    run_root: Path = Path("/run")

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise LabError(f"{self.name!r} is not a lab name; use 1 to 14 lowercase letters, "
                           "digits and '-', starting with a letter")
        if not self.network.subnet_of(LAB_RANGE) or self.network.prefixlen > 28:
            raise LabError(f"{self.network} is not a lab network; use {LAB_RANGE} (the RFC 2544 "
                           "benchmarking range, used only by the lab) or a part of it, /28 "
                           "or larger")

    @property
    def namespace(self) -> str:
        return self.name

    @property
    def host_link(self) -> str:
        return f"{self.name}0"

    @property
    def lab_link(self) -> str:
        return f"{self.name}1"

    @property
    def host_address(self) -> str:
        return str(self.network[1])

    @property
    def lab_address(self) -> str:
        return str(self.network[2])

    @property
    def run_dir(self) -> Path:
        return self.run_root / self.name

    def site_addresses(self, count: int) -> list[str]:
        """``count`` addresses for sites: after the link's /30, none ending in .0 or .255."""
        found: list[str] = []
        usable = (a for a in self.network.hosts() if int(a) - int(self.network[0]) >= 4
                  and int(a) & 0xFF not in (0, 255))
        for address in usable:
            if len(found) == count:
                return found
            found.append(str(address))
        if len(found) < count:
            raise LabError(f"{self.network} holds {len(found)} lab sites, not {count}; "
                           "use a larger --network or fewer sites")
        return found


def run(argv: Sequence[str], stdin: str | None = None) -> str:
    """Run a command (ip, sysctl); LabError with its own message when it fails."""
    try:
        done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True,
                              timeout=_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{' '.join(argv[:4])} …: {exc}") from None
    if done.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def _lines(stdout: str) -> Iterator[list[str]]:
    return (line.split() for line in stdout.splitlines() if line.strip())


def namespace_exists(lab: Lab) -> bool:
    return any(words[0] == lab.namespace for words in _lines(run(["ip", "netns", "list"])))


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def create(lab: Lab, addresses: Sequence[str]) -> None:
    """Make the namespace, the veth pair, the route and the sites' addresses.

    On failure whatever was made stays, for ``remove`` to find by name.
    """
    ns = ["ip", "-n", lab.namespace]
    run(["ip", "netns", "add", lab.namespace])
    run([*ns, "link", "set", "lo", "up"])
    # The kernel must stay silent: the responder answers for the sites.
    run(["ip", "netns", "exec", lab.namespace, "sysctl", "-qw",
         "net.ipv4.icmp_echo_ignore_all=1"])
    run(["ip", "link", "add", lab.host_link, "type", "veth", "peer", "name", lab.lab_link,
         "netns", lab.namespace])
    run(["ip", "address", "add", f"{lab.host_address}/30", "dev", lab.host_link])
    run([*ns, "address", "add", f"{lab.lab_address}/30", "dev", lab.lab_link])
    run(["ip", "link", "set", lab.host_link, "up"])
    run([*ns, "link", "set", lab.lab_link, "up"])
    run(["ip", "route", "add", str(lab.network), "via", lab.lab_address, "dev", lab.host_link])
    # One ip process for all addresses: thousands of sites take a fraction of a second.
    batch = "".join(f"address add {address}/32 dev lo\n" for address in addresses)
    run([*ns, "-batch", "-"], stdin=batch)


def route_devices(addresses: Sequence[str]) -> dict[str, str]:
    """The device ``ip route get`` names for each address; addresses without a route
    are left out."""
    batch = "".join(f"route get {address}\n" for address in addresses)
    # -force: go on past an address without a route (it is then missing below)
    done = subprocess.run(["ip", "-o", "-force", "-batch", "-"], input=batch,
                          capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    devices = {}
    for words in _lines(done.stdout):
        # "198.18.0.5 via … dev X …", or "local 127.0.0.5 dev lo …" (a type first)
        address = words[0] if words[0][0].isdigit() else words[1]
        if "dev" in words:
            devices[address] = words[words.index("dev") + 1]
    return devices


def check_routes(lab: Lab, addresses: Sequence[str]) -> None:
    """Refuse unless every address is in the lab's network and routes via its veth."""
    outside = [a for a in addresses if ipaddress.IPv4Address(a) not in lab.network]
    devices = route_devices(addresses)
    wrong = outside + [f"{a} (via {devices.get(a, 'no route')})" for a in addresses
                       if devices.get(a) != lab.host_link and a not in outside]
    if wrong:
        shown = ", ".join(wrong[:5]) + (f" and {len(wrong) - 5} more" if len(wrong) > 5 else "")
        raise LabError(f"refusing to probe: {shown} would not go through the lab's link "
                       f"{lab.host_link} into {lab.network}; a route on this host takes them "
                       "elsewhere (see ip route), remove it or choose another --network")


def namespace_pids(lab: Lab) -> list[int]:
    """The processes living in the lab's namespace (the responder, normally)."""
    if not namespace_exists(lab):
        return []
    return [int(word) for words in _lines(run(["ip", "netns", "pids", lab.namespace]))
            for word in words]


def leftovers(lab: Lab) -> list[str]:
    """What of this lab exists on the host, found by name."""
    found = []
    if namespace_exists(lab):
        found.append(f"namespace {lab.namespace}")
    found += [f"link {name}" for name in (lab.host_link,) if link_exists(name)]
    if lab.run_dir.exists():
        found.append(f"directory {lab.run_dir}")
    return found


def remove(lab: Lab) -> list[str]:
    """Delete the namespace, the host's link (and with it the route) and the state
    directory; return what was there. Stop the processes in the namespace first:
    they keep a deleted namespace alive."""
    found = leftovers(lab)
    # The link first: a deleted namespace is freed (and its veth with it) only later,
    # by a kernel worker, and a new lab of the same name would find the link still there.
    if link_exists(lab.host_link):
        run(["ip", "link", "delete", lab.host_link])
    if namespace_exists(lab):
        run(["ip", "netns", "delete", lab.namespace])
    shutil.rmtree(lab.run_dir, ignore_errors=True)
    return found
