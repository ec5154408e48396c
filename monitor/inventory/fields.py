"""The inventory's field types, each defined once: durations, ranges, slugs, addresses,
tiers and provisions. The schema and every section build their fields from these."""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator

from monitor.inventory.problems import show, show_number
from probes import DOTTED_QUAD, ip_version

Tier = Literal["province", "district", "commune", "unit"]
# vnpt: the telecom-provisioned 3-tier links; contract: sites added under a rental contract
Provision = Literal["vnpt", "contract"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*")
_FORMS = "seconds as a number (1.5) or a number with a unit: 250ms, 1s, 1.5s, 2m, 1h"


def parse_duration(value: object) -> float:
    """Seconds from ``1.5``, ``"250ms"``, ``"1.5s"``, ``"2m"`` or ``"1h"``."""
    seconds = math.nan
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match is None:
            raise ValueError(f"{show(value)} is not a duration; write {_FORMS}")
        number, unit = match.groups()
        seconds = float(number) * _UNITS[unit or "s"]
    # bool is an int subclass; "interval: yes" must not mean one second
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    if not math.isfinite(seconds):
        raise ValueError(f"{show(value)} is not a duration; write {_FORMS}")
    return seconds


# a field that takes a duration: ``interval: 1s``, ``250ms`` or a number of seconds
DURATION = BeforeValidator(parse_duration)


def between(low: float, high: float | None, unit: str = "", *, what: str = "") -> AfterValidator:
    """A number from ``low`` to ``high`` (None: no ceiling), in ``unit``.

    The refusal names the value and the range: "2 seconds is out of range; use 5 to
    65535 seconds", or with ``what``, "0 is not a valid shard count; use 1 to 1024".
    """
    def check(value: float) -> float:
        if low <= value and (high is None or value <= high):
            return value
        allowed = (f"at least {show_number(low)}" if high is None
                   else f"{show_number(low)} to {show_number(high)}")
        if what:
            raise ValueError(f"{show_number(value)} is not a valid {what}; use {allowed}")
        raise ValueError(f"{show_number(value)} {unit} is out of range; use {allowed} {unit}")

    return AfterValidator(check)


# usable as a Prometheus label value and as one MQTT topic level (no "+", "#" or "/")
SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def slug(what: str, example: str) -> AfterValidator:
    """A site id or probe name: ``SLUG``; the refusal names ``what`` and an ``example``."""
    def check(name: str) -> str:
        if SLUG.fullmatch(name):
            return name
        raise ValueError(f'{show(name)} is not a valid {what}; use 1 to 63 lowercase ASCII '
                         f'letters, digits, "-" and "_", starting with a letter or digit, '
                         f"e.g. {example}")

    return AfterValidator(check)


Slug = Annotated[str, slug("site id", "bn-tiendu-xa-lac-ve")]

# one label of an RFC 1123 hostname; spelled out, because re.I would also match "K" (Kelvin)
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _is_ip(text: str, version: int | None = None) -> bool:
    found = ip_version(text)
    return found is not None and version in (None, found)


def _is_hostname(text: str) -> bool:
    name = text.removesuffix(".")
    labels = name.split(".")
    # RFC 3696: a top-level label is never all digits, so "300.1.1.1" is a mistyped address
    return (
        len(name) <= 253
        and all(_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()
    )


def check_address(address: str) -> str:
    if _is_ip(address):
        why = _not_unicast(address)
        if why:
            raise ValueError(f"{show(address)} is {why}, not the address of one host, so no "
                             "site (or broker) ever answers there; write the address of the "
                             "device itself, e.g. 10.0.0.5")
        return address
    if _is_hostname(address):
        return address
    raise ValueError(
        f"{show(address)} is not an IPv4/IPv6 address or a valid hostname; "
        "use e.g. 10.0.0.5, 2001:db8::5 or vc-xa.example.vn"
    )


def _not_unicast(address: str) -> str:
    """What kind of address other than one host's ``address`` is, or ""."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_multicast:
        return "a multicast address (a group of receivers)"
    if ip.is_unspecified:
        return "the unspecified address (\"any\", used only as a source or to listen on)"
    if ip == ipaddress.IPv4Address("255.255.255.255"):
        return "the broadcast address of the local network"
    if isinstance(ip, ipaddress.IPv4Address) and (ip in _THIS_NETWORK or ip.is_reserved):
        return "in a block reserved for other uses (0.0.0.0/8 or 240.0.0.0/4)"
    return ""


# RFC 1122: "this host on this network", valid only as a source address
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")


def check_listen(listen: str) -> str:
    host, colon, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host_ok = _is_ip(host[1:-1], version=6)
    else:
        host_ok = _is_ip(host, version=4) or _is_hostname(host)
    if colon and host_ok and re.fullmatch(r"[0-9]{1,5}", port) and int(port) <= 65535:
        return listen
    raise ValueError(
        f"{show(listen)} is not host:port; write e.g. 127.0.0.1:9470, 0.0.0.0:9470 or [::1]:9470"
    )


def address_key(address: str) -> str:
    """The form in which two spellings of one address compare equal."""
    if DOTTED_QUAD.fullmatch(address):
        return address
    try:
        return ipaddress.ip_address(address).compressed
    except ValueError:
        return address.lower().removesuffix(".")
