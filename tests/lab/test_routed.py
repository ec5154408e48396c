"""The routed lab's arguments and addressing, checked before anything is made."""

from __future__ import annotations

import ipaddress
import shutil

import pytest

from monitor.lab.netlab import LAB_RANGE
from monitor.lab.profiles import LabError
from monitor.lab.routed import TEST_BLOCK, RoutedLab

pytestmark = pytest.mark.skipif(shutil.which("iptables") is None, reason="needs iptables")


@pytest.mark.parametrize("roles", [(), ("core", "core"), ("Core",), ("a-b",), ("r",) * 17])
def test_router_names_are_checked(roles: tuple[str, ...]) -> None:
    with pytest.raises(LabError, match="distinct router names"):
        RoutedLab(roles)


@pytest.mark.parametrize("network", ["192.0.2.0/24", "198.18.0.0/23", "10.0.0.0/24"])
def test_only_a_slash_24_of_the_lab_range_is_accepted(network: str) -> None:
    with pytest.raises(LabError, match=r"is not a /24 of 198\.18\.0\.0/15"):
        RoutedLab(("core",), ipaddress.IPv4Network(network))


def test_addresses_stay_in_the_lab_range_and_a_ula() -> None:
    lab = RoutedLab(("core", "district", "commune"))
    assert lab.network.subnet_of(TEST_BLOCK) and TEST_BLOCK.subnet_of(LAB_RANGE)
    assert lab.path() == [str(lab.network[2]), str(lab.network[6]), str(lab.network[254])]
    assert lab.network6.prefixlen == 48
    assert lab.network6.subnet_of(ipaddress.IPv6Network("fd00::/8"))
    assert all(ipaddress.ip_address(a) in lab.network6 for a in [*lab.path(v6=True),
                                                                 lab.unrouted6])
    assert lab.hop_address(1, v6=True) == str(lab.network6[1 << 64 | 2])
    assert len({lab.target, lab.unrouted, *lab.path()}) == 4
