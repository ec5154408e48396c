"""Least privilege: after the sockets are open, run as the ``user:`` and keep no more.

Started as root with ``user:`` (a container, an init system without systemd's
sandboxing), vcmon opens its ICMP sockets and its HTTP listener, then switches to
that user and group, gives up every supplementary group and every capability but
possibly CAP_NET_RAW, empties the bounding and ambient sets and sets no_new_privs.

CAP_NET_RAW is kept when the sockets vcmon may still open need it: an engine opens
its IPv6 socket on the first IPv6 site, and a reload that brings a new payload size
opens a new engine. Those sockets open as ICMP datagram sockets without any
capability when ``net.ipv4.ping_group_range`` admits the new group and every engine
runs on datagram sockets already; then nothing is kept. Otherwise CAP_NET_RAW stays,
effective and permitted, and is the only capability left.

Capabilities belong to a thread, not to the process: the change is made while the
process has one thread, and refused otherwise.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final, Protocol

import structlog

log = structlog.get_logger("vcmon.privileges")

CAP_NET_RAW: Final = 13
# linux/prctl.h
PR_SET_KEEPCAPS: Final = 8
PR_CAPBSET_DROP: Final = 24
PR_SET_NO_NEW_PRIVS: Final = 38
PR_CAP_AMBIENT: Final = 47
PR_CAP_AMBIENT_CLEAR_ALL: Final = 4
# linux/capability.h: 64-bit capability sets as two 32-bit halves
_LINUX_CAPABILITY_VERSION_3: Final = 0x20080522


class PrivilegeError(Exception):
    """The process cannot become the configured user, or could not shed what it holds."""


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise PrivilegeError(f"{what} failed: {os.strerror(errno)}")


def _prctl(option: int, arg: int = 0, what: str = "prctl") -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), what)


def _capset(caps: int) -> None:
    """Effective and permitted become ``caps`` (a bit mask); inheritable becomes empty."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for half in range(2):
        bits = (caps >> (32 * half)) & 0xFFFFFFFF
        data[half] = _CapData(bits, bits, 0)
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def process_status() -> dict[str, str]:
    """The fields of /proc/self/status (Uid, Gid, Groups, CapEff, NoNewPrivs, …)."""
    status = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        status[name] = value.strip()
    return status


def _last_cap() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return 40  # CAP_CHECKPOINT_RESTORE, the last one as of Linux 5.9


def ping_group_admits(gid: int) -> bool:
    """Whether ``net.ipv4.ping_group_range`` lets group ``gid`` open ICMP datagram sockets."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ping_group_range").read_text().split())
    except (OSError, ValueError):
        return False
    return low <= gid <= high


class Account(Protocol):
    """Who to become: the inventory's ``user:``/``group:`` resolved to numbers."""

    @property
    def user(self) -> str: ...

    @property
    def uid(self) -> int: ...

    @property
    def gid(self) -> int: ...


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def drop_privileges(identity: Account, engine_modes: Iterable[str]) -> dict[str, str]:
    """Become ``identity`` and keep at most CAP_NET_RAW; return the new process status.

    ``engine_modes`` are the modes of the open ICMP engines (``dgram`` or ``raw``).
    """
    if os.geteuid() != 0:
        if (os.geteuid(), os.getegid()) == (identity.uid, identity.gid):
            # already the user (a service manager switched): what it granted is its choice
            _prctl(PR_SET_NO_NEW_PRIVS, 1, "prctl(PR_SET_NO_NEW_PRIVS)")
            return process_status()
        raise PrivilegeError(
            f"user: {identity.user} is set, but vcmon runs as uid {os.geteuid()}, which cannot "
            f"switch to uid {identity.uid}; start vcmon as root, or remove user: and group: "
            "when a service manager starts it as the right user already")
    threads = _threads()
    if threads != 1:
        raise PrivilegeError(f"cannot drop privileges: {threads} threads are running, and a "
                             "thread keeps the capabilities it had; this is a bug in vcmon")
    keep = 0 if (ping_group_admits(identity.gid)
                 and all(mode == "dgram" for mode in engine_modes)) else 1 << CAP_NET_RAW
    for cap in range(_last_cap() + 1):
        if not keep >> cap & 1:
            _prctl(PR_CAPBSET_DROP, cap, "prctl(PR_CAPBSET_DROP)")
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
    # keep the permitted set across setuid, to keep CAP_NET_RAW from it below
    _prctl(PR_SET_KEEPCAPS, 1, "prctl(PR_SET_KEEPCAPS)")
    try:
        os.setgroups([])
        os.setresgid(identity.gid, identity.gid, identity.gid)
        os.setresuid(identity.uid, identity.uid, identity.uid)
    except OSError as exc:
        raise PrivilegeError(f"cannot switch to user {identity.user} (uid {identity.uid}, gid "
                             f"{identity.gid}): {exc.strerror}") from None
    _capset(keep)
    _prctl(PR_SET_KEEPCAPS, 0, "prctl(PR_SET_KEEPCAPS)")
    _prctl(PR_SET_NO_NEW_PRIVS, 1, "prctl(PR_SET_NO_NEW_PRIVS)")
    status = process_status()
    _verify(status, identity, keep)
    return status


def _verify(status: dict[str, str], identity: Account, keep: int) -> None:
    # Read back from the kernel rather than trusted: a seccomp filter (SystemCallFilter=)
    # can make a call "succeed" with no effect.
    expected = {
        "Uid": f"{identity.uid}\t{identity.uid}\t{identity.uid}\t{identity.uid}",
        "Gid": f"{identity.gid}\t{identity.gid}\t{identity.gid}\t{identity.gid}",
        "Groups": "",
        "CapEff": f"{keep:016x}", "CapPrm": f"{keep:016x}", "CapInh": f"{0:016x}",
        "CapBnd": f"{keep:016x}", "CapAmb": f"{0:016x}", "NoNewPrivs": "1",
    }
    wrong = {k: status.get(k) for k, v in expected.items() if status.get(k) != v}
    if wrong:
        raise PrivilegeError(f"privileges were not dropped as asked: {wrong}")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise PrivilegeError("privileges were not dropped: the process could become root again")


def capability_names(mask: int) -> str:
    return ",".join(_CAP_NAMES.get(cap, f"cap_{cap}") for cap in range(64) if mask >> cap & 1)


_CAP_NAMES: Final = {CAP_NET_RAW: "cap_net_raw", 10: "cap_net_bind_service", 12: "cap_net_admin"}
