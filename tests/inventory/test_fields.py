"""The dotted-quad shortcut in monitor.inventory.fields agrees with ipaddress everywhere."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from monitor.inventory.fields import address_key, check_address

_quad_like = st.lists(
    st.text(alphabet="0123456789٣", min_size=0, max_size=4), min_size=1, max_size=5
).map(".".join)


def _ipaddress_key(text: str) -> str | None:
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        return None


@given(_quad_like)
@example("0.0.0.0")  # found by CI: an address, but of no host
def test_quad_like_text_is_read_as_ipaddress_reads_it(text: str) -> None:
    expected = _ipaddress_key(text)
    if expected is not None:
        assert address_key(text) == expected
        if int(ipaddress.ip_address(text)) >> 24 in (0, *range(224, 256)):
            # this network, multicast, reserved, broadcast (as below): refused by name
            with pytest.raises(ValueError, match="not the address of one host"):
                check_address(text)
        else:
            assert check_address(text) == text
    else:
        # not an address: a hostname at most, which never ends in an all-digit label
        assert address_key(text) == text.lower().removesuffix(".")


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_every_ipv4_address_keeps_its_compressed_form(value: int) -> None:
    text = str(ipaddress.IPv4Address(value))
    assert address_key(text) == text
    if value >> 24 in (0, *range(224, 256)):  # this network, multicast, reserved, broadcast
        with pytest.raises(ValueError, match="not the address of one host"):
            check_address(text)
    else:
        assert check_address(text) == text


def test_leading_zeros_and_other_digits_are_not_addresses() -> None:
    for text in ("010.0.0.1", "1.2.3.04", "256.1.1.1", "1.2.3", "1.2.3.4.5", "١.2.3.4"):
        assert _ipaddress_key(text) is None
        assert address_key(text) == text.lower()
