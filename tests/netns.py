"""Throw-away network namespaces for tests that send real packets.

A namespace made here has only ``lo`` (up) and whatever veth links the test adds
between its own namespaces, so packets sent inside it cannot reach any real
network. Needs root (``ip netns``); ``skip_unless_available`` marks such tests.

    with NetNamespace() as ns:
        ns.sysctl("net.ipv4.icmp_echo_ignore_all", "1")
        assert ns.route_device("127.0.0.1") == "lo"
        with ns.entered():
            sock = socket.socket(...)  # this socket lives in the namespace
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import pytest

_CLONE_NEWNET = 0x40000000
_TIMEOUT = 30


def _run(argv: Sequence[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def available() -> bool:
    """True when this process may create network namespaces (root with iproute2)."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


skip_unless_available = pytest.mark.skipif(
    not available(), reason="needs root and iproute2 to create network namespaces"
)


def route_device(address: str, namespace: str | None = None) -> str:
    """The device ``ip route get`` would send packets for ``address`` through.

    Tests call it before their first packet to prove the packets stay on ``lo`` or
    on a link between their own namespaces. Raises RuntimeError when there is no
    route (then nothing can be sent at all).
    """
    prefix = ["ip", "-n", namespace] if namespace else ["ip"]
    words = _run([*prefix, "-o", "route", "get", address]).split()
    return words[words.index("dev") + 1]


def _setns(ns_file: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(ns_file, _CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"setns: {os.strerror(error)}")


class NetNamespace:
    """A named network namespace that lives as long as the ``with`` block."""

    def __init__(self, prefix: str = "vcmon-test") -> None:
        self.name = f"{prefix}-{secrets.token_hex(4)}"

    def __enter__(self) -> NetNamespace:
        _run(["ip", "netns", "add", self.name])
        try:
            self.ip("link", "set", "lo", "up")
        except BaseException:
            self._delete()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._delete()

    def _delete(self) -> None:
        # Deleting the name unmounts it; sockets still open in it keep it alive (and
        # isolated) until they close. veth links die with either end.
        _run(["ip", "netns", "delete", self.name])

    def ip(self, *args: str) -> str:
        """Run ``ip -n NAME ARGS``; return its output."""
        return _run(["ip", "-n", self.name, *args])

    def sysctl(self, key: str, value: str) -> None:
        """Set a per-namespace sysctl (net.*) inside this namespace only."""
        _run(self.command(["sysctl", "-qw", f"{key}={value}"]))

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed to run inside this namespace (for subprocess)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def route_device(self, address: str) -> str:
        return route_device(address, self.name)

    def link(self, peer: NetNamespace, address: str, peer_address: str) -> tuple[str, str]:
        """Join this namespace to ``peer`` with a veth pair; return both device names.

        Addresses are CIDR (``198.51.100.1/30``); both ends are brought up.
        """
        here = f"v{secrets.token_hex(3)}"
        there = f"v{secrets.token_hex(3)}"
        self.ip("link", "add", here, "type", "veth", "peer", "name", there, "netns", peer.name)
        self.ip("address", "add", address, "dev", here)
        peer.ip("address", "add", peer_address, "dev", there)
        self.ip("link", "set", here, "up")
        peer.ip("link", "set", there, "up")
        return here, there

    @contextmanager
    def entered(self) -> Iterator[None]:
        """Switch the calling thread into the namespace for the block.

        Sockets opened inside the block belong to the namespace for their whole life,
        so a test can run an engine in the namespace on its own event loop.
        """
        with (
            Path("/proc/thread-self/ns/net").open() as home,
            Path(f"/run/netns/{self.name}").open() as target,
        ):
            _setns(target.fileno())
            try:
                yield
            finally:
                _setns(home.fileno())
