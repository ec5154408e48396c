"""Site addresses and the listen address: what is accepted, and when two are the same."""

from __future__ import annotations

import ipaddress
import re

from monitor._problems import show
from probes._ip import DOTTED_QUAD, ip_version

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
    if _is_ip(address) or _is_hostname(address):
        return address
    raise ValueError(
        f"{show(address)} is not an IPv4/IPv6 address or a valid hostname; "
        "use e.g. 10.0.0.5, 2001:db8::5 or vc-xa.example.vn"
    )


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
