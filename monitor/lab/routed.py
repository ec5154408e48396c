"""A routed lab: a chain of namespaces as routers, for tracing a path hop by hop.

    host ── core ── district ── commune          (names are the caller's)
    .1      .2  .5  .6      .9  .10, target .254 on commune's lo

Every link is a veth pair on its own /30 of one /24 from 198.18.0.0/15 (link i holds
.4i+1 upstream and .4i+2 downstream) and on its own /64 of a random ULA /48 (P:i::1
and P:i::2; the IPv6 target is P:ffff::1). Routers forward, so the host sees real
time-exceeded messages from real kernels, each from the router's upstream address.
Any other address of the /24 or the /48 is routed down to the last namespace, which
has no route for it and answers "network unreachable".

Faults, all inside one router's namespace:
- ``lose``: random drops in ``raw PREROUTING`` on the router's upstream link. A router
  answers time-exceeded before its FORWARD hook, so drops in FORWARD would show at the
  NEXT hop (measured on this lab); PREROUTING makes the router itself the lossy hop.
- ``down``: drop everything arriving on the upstream link.
- ``rate_limit``: the kernel's own ICMP error rate limit (``net.ipv4.icmp_ratelimit``,
  whose default mask covers time-exceeded): a hop that loses only its own answers,
  the classic MTR false positive.

There is no netem on this kernel, so the lab adds no delay.

    with RoutedLab(("core", "district", "commune")) as lab:
        lab.check_route(lab.target)
        lab.lose(1, 0.4)           # district drops 40 % of what reaches it (v4 and v6)
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import shutil
from collections.abc import Sequence
from types import TracebackType

from monitor.lab.netlab import LAB_RANGE, run
from monitor.lab.profiles import LabError

_ULA = ipaddress.IPv6Network("fd00::/8")
# Outside the bottom of LAB_RANGE (the user's vcmon-lab) and 198.19.128.0/17 (the lab
# tests' vcmt-* labs), so concurrent labs never share an address.
TEST_BLOCK = ipaddress.IPv4Network("198.19.64.0/18")
_MAX_ROUTERS = 16  # 16 links of a /30 fill .0-.63 of the /24, far below the target
_UPLINK = "uplink"  # every router's link towards the host, by the same name
_ROLE = re.compile(r"[a-z][a-z0-9]{0,15}")


def random_network() -> ipaddress.IPv4Network:
    """A random /24 of ``TEST_BLOCK`` that no route of the host covers yet: two labs up
    at once (a test's second chain, another test run) must not pick the same one, or the
    second one's route is refused ("File exists")."""
    taken = [ipaddress.IPv4Network(line.split()[0], strict=False)
             for line in run(["ip", "-4", "route", "show"]).splitlines()
             if line and line.split()[0][0].isdigit()]
    # only routes inside the block: the main lab's 198.18.0.0/15 covers it all, and a
    # /24's own route is more specific than that one
    taken = [route for route in taken if route.subnet_of(TEST_BLOCK)]
    free = [net for net in TEST_BLOCK.subnets(new_prefix=24)
            if not any(net.overlaps(route) for route in taken)]
    if not free:
        raise LabError(f"every /24 of {TEST_BLOCK} is routed already; take down the labs "
                       "left behind (ip netns list)")
    return free[secrets.randbelow(len(free))]


class RoutedLab:
    """The chain of router namespaces, made on ``with`` and always taken down after it.

    Router ``i`` (0 is next to the host) lives in namespace ``PREFIX-ROLE`` and answers
    the trace as hop ``i + 1`` from ``hop_address(i)``; ``target`` is on the last one.
    """

    def __init__(self, roles: Sequence[str], network: ipaddress.IPv4Network | None = None,
                 ) -> None:
        if (not 1 <= len(roles) <= _MAX_ROUTERS or len(set(roles)) != len(roles)
                or not all(_ROLE.fullmatch(role) for role in roles)):
            raise LabError(f"a routed lab needs 1 to {_MAX_ROUTERS} distinct router names of "
                           f"1 to 16 lowercase letters and digits, not {list(roles)}")
        self.network = network or random_network()
        if not self.network.subnet_of(LAB_RANGE) or self.network.prefixlen != 24:
            raise LabError(f"{self.network} is not a /24 of {LAB_RANGE}, the lab's range")
        if shutil.which("iptables") is None:
            raise LabError("iptables is missing; the routed lab injects its faults with it "
                           "(apt-get install iptables)")
        self.prefix = f"vtr{secrets.token_hex(3)}"
        self.roles = tuple(roles)
        self.namespaces = tuple(f"{self.prefix}-{role}" for role in roles)
        self.host_link = f"{self.prefix}-0"
        # fd00::/8 with 40 random bits: a ULA /48 (RFC 4193) no other lab picks
        self.network6 = ipaddress.IPv6Network((int(_ULA.network_address)
                                               | secrets.randbits(40) << 80, 48))
        self.target = str(self.network[254])
        self.target6 = self._address6(0xFFFF, 1)
        # addresses routed to the last router, which has no route for them
        self.unrouted = str(self.network[253])
        self.unrouted6 = self._address6(0xFFFE, 1)
        self._made: list[str] = []

    def hop_address(self, index: int, v6: bool = False) -> str:
        """The address router ``index`` answers from: its end of its upstream link."""
        return self._address6(index, 2) if v6 else self._address(index, 2)

    def path(self, v6: bool = False) -> list[str]:
        """Every hop's address as a trace to the target sees it, the target last."""
        routers = [self.hop_address(i, v6) for i in range(len(self.roles) - 1)]
        return [*routers, self.target6 if v6 else self.target]

    def _address(self, link: int, end: int) -> str:
        return str(self.network[4 * link + end])

    def _address6(self, link: int, end: int) -> str:
        return str(self.network6[link << 64 | end])

    def _link6(self, link: int) -> str:
        return str(ipaddress.IPv6Network((int(self.network6.network_address) | link << 64, 64)))

    def _in(self, index: int, *argv: str) -> str:
        return run(["ip", "netns", "exec", self.namespaces[index], *argv])

    def __enter__(self) -> RoutedLab:
        try:
            self._build()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.teardown()

    def _build(self) -> None:
        last = len(self.roles) - 1
        for index, namespace in enumerate(self.namespaces):
            run(["ip", "netns", "add", namespace])
            self._made.append(namespace)
            run(["ip", "-n", namespace, "link", "set", "lo", "up"])
            self._in(index, "sysctl", "-qw", "net.ipv4.ip_forward=1",
                     "net.ipv6.conf.all.forwarding=1",
                     # Linux rate-limits time-exceeded to one a second per source after
                     # a burst of 6 by default (icmp_ratelimit 1000 ms, ratemask bit
                     # 11; IPv6: 100 ms): every router would look lossy to a fast trace.
                     "net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0",
                     # Duplicate address detection keeps a new link's link-local address
                     # tentative for 1-2 s, and the router cannot resolve its neighbours
                     # meanwhile: a trace right after building saw the target silent.
                     "net.ipv6.conf.default.accept_dad=0")
            upstream = self.host_link if index == 0 else f"{self.prefix}-d{index}"
            where = [] if index == 0 else ["netns", self.namespaces[index - 1]]
            run(["ip", "link", "add", upstream, *where, "type", "veth",
                 "peer", "name", _UPLINK, "netns", namespace])
            if index == 0:
                self._made.append(upstream)
                run(["sysctl", "-qw", f"net.ipv6.conf.{upstream}.accept_dad=0"])
            run([*self._ip(index - 1), "address", "add", f"{self._address(index, 1)}/30",
                 "dev", upstream])
            run([*self._ip(index - 1), "link", "set", upstream, "up"])
            run(["ip", "-n", namespace, "address", "add", f"{self._address(index, 2)}/30",
                 "dev", _UPLINK])
            run([*self._ip(index - 1), "address", "add", f"{self._address6(index, 1)}/64",
                 "dev", upstream])
            run(["ip", "-n", namespace, "address", "add", f"{self._address6(index, 2)}/64",
                 "dev", _UPLINK])
            run(["ip", "-n", namespace, "link", "set", _UPLINK, "up"])
            # back to every link nearer the host, through the upstream neighbour
            for nearer in range(index):
                run(["ip", "-n", namespace, "route", "add", f"{self._address(nearer, 0)}/30",
                     "via", self._address(index, 1)])
                run(["ip", "-n", namespace, "route", "add", self._link6(nearer),
                     "via", self._address6(index, 1)])
        last_ns = ["ip", "-n", self.namespaces[last]]
        run([*last_ns, "address", "add", f"{self.target}/32", "dev", "lo"])
        run([*last_ns, "address", "add", f"{self.target6}/128", "dev", "lo"])
        run(["ip", "route", "add", str(self.network), "via", self._address(0, 2),
             "dev", self.host_link])
        run(["ip", "route", "add", str(self.network6), "via", self._address6(0, 2),
             "dev", self.host_link])
        for index in range(last):
            ns = ["ip", "-n", self.namespaces[index]]
            run([*ns, "route", "add", str(self.network), "via", self._address(index + 1, 2)])
            run([*ns, "route", "add", str(self.network6), "via", self._address6(index + 1, 2)])

    def _ip(self, index: int) -> list[str]:
        """``ip`` in router ``index``'s namespace; -1 is the host."""
        return ["ip"] if index < 0 else ["ip", "-n", self.namespaces[index]]

    def teardown(self) -> None:
        """Delete the host's link (its route goes with it) and every namespace made."""
        errors = []
        for name in reversed(self._made):
            argv = (["ip", "link", "delete", name] if name == self.host_link
                    else ["ip", "netns", "delete", name])
            try:
                run(argv)
            except LabError as exc:
                errors.append(str(exc))
        self._made.clear()
        if errors:
            raise LabError("; ".join(errors))

    def check_route(self, address: str) -> None:
        """Refuse unless ``address`` is in the lab and the host routes it via the lab's link."""
        words = run(["ip", "-o", "route", "get", address]).split()
        device = words[words.index("dev") + 1] if "dev" in words else "no route"
        if (ipaddress.ip_address(address) not in (self.network, self.network6)[":" in address]
                or device != self.host_link):
            raise LabError(f"refusing to send to {address}: it leaves through {device}, not "
                           f"the lab's link {self.host_link} into {self.network} or "
                           f"{self.network6}")

    def lose(self, index: int, probability: float) -> None:
        """Router ``index`` drops ``probability`` of the packets reaching it from upstream."""
        if not 0.0 < probability <= 1.0:
            raise LabError(f"a loss probability is above 0 and at most 1, not {probability}")
        self._drop(index, "-m", "statistic", "--mode", "random",
                   "--probability", f"{probability}")

    def down(self, index: int) -> None:
        """Router ``index`` drops everything reaching it from upstream."""
        self._drop(index)

    def _drop(self, index: int, *match: str) -> None:
        # Neighbour discovery passes: a lost advertisement stalls a router's next hop for
        # a 1 s retransmission, which silenced the IPv6 target for a whole trace (ARP,
        # not being IP, never meets iptables).
        for kind in ("neighbour-solicitation", "neighbour-advertisement"):
            self._in(index, "ip6tables", "-t", "raw", "-A", "PREROUTING", "-i", _UPLINK,
                     "-p", "ipv6-icmp", "--icmpv6-type", kind, "-j", "ACCEPT")
        for tool in ("iptables", "ip6tables"):
            self._in(index, tool, "-t", "raw", "-A", "PREROUTING", "-i", _UPLINK, *match,
                     "-j", "DROP")

    def rate_limit(self, index: int, milliseconds: int = 1000) -> None:
        """Router ``index`` sends its ICMP errors at most once per ``milliseconds`` per
        source, after a burst of 6 (the kernel's default, which the lab turns off)."""
        self._in(index, "sysctl", "-qw", f"net.ipv4.icmp_ratelimit={milliseconds}",
                 f"net.ipv6.icmp.ratelimit={milliseconds}")

    def clear(self, index: int) -> None:
        """Router ``index`` forwards and answers cleanly again: its drops and its ICMP
        rate limit are gone."""
        for tool in ("iptables", "ip6tables"):
            self._in(index, tool, "-t", "raw", "-F", "PREROUTING")
        self._in(index, "sysctl", "-qw", "net.ipv4.icmp_ratelimit=0",
                 "net.ipv6.icmp.ratelimit=0")
