"""Addresses that name no single host pass no inventory: a site there shows as down forever."""

from __future__ import annotations

import pytest

from monitor.inventory import ConfigError, parse_config

INVENTORY = "sites:\n  - {id: a, name: A, tier: province, address: '%s'}\n"

REFUSED = {
    "255.255.255.255": "the broadcast address of the local network",
    "224.0.0.1": "a multicast address (a group of receivers)",
    "239.255.255.250": "a multicast address (a group of receivers)",
    "0.0.0.0": 'the unspecified address ("any", used only as a source or to listen on)',
    "0.1.2.3": "in a block reserved for other uses (0.0.0.0/8 or 240.0.0.0/4)",
    "240.0.0.1": "in a block reserved for other uses (0.0.0.0/8 or 240.0.0.0/4)",
    "::": 'the unspecified address ("any", used only as a source or to listen on)',
    "ff02::1": "a multicast address (a group of receivers)",
    "ff05::1:3": "a multicast address (a group of receivers)",
    "::ffff:224.0.0.1": "a multicast address (a group of receivers)",
}


@pytest.mark.parametrize(("address", "why"), REFUSED.items())
def test_a_non_unicast_address_is_refused_with_the_reason(address: str, why: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(INVENTORY % address, "sites.yaml")
    assert [str(p) for p in refused.value.problems] == [
        f'sites.yaml:2: sites[0].address: "{address}" is {why}, not the address of one host, '
        "so no site (or broker) ever answers there; write the address of the device itself, "
        "e.g. 10.0.0.5"]


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.5", "::1", "fe80::1", "2001:db8::5",
                                     "198.18.0.1", "vc-xa.example.vn"])
def test_one_host_s_address_passes(address: str) -> None:
    assert parse_config(INVENTORY % address).sites[0].address == address
