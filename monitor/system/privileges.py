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
import grp
import os
import pwd
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import structlog

from monitor._problems import show

if TYPE_CHECKING:
    from monitor.config import Config

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


@dataclass(frozen=True, slots=True)
class Identity:
    """The user and group vcmon runs as once its sockets are open."""

    user: str
    uid: int
    gid: int


def _user(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise ValueError(f"there is no user {show(user)} on this host; create it (useradd "
                         "--system --no-create-home vcmon) or name an existing one") from None


def _group(group: str) -> grp.struct_group:
    try:
        return grp.getgrgid(int(group)) if group.isdigit() else grp.getgrnam(group)
    except KeyError:
        raise ValueError(f"there is no group {show(group)} on this host; create it "
                         "or name an existing one") from None


def check_user(user: str) -> str:
    """The ``user:`` field: a user of this host other than root (a name or a uid)."""
    if _user(user).pw_uid == 0:
        raise ValueError(f"user {show(user)} is root, which gives nothing up; name an "
                         "unprivileged user such as vcmon or nobody, or remove user:")
    return user


def check_group(group: str) -> str:
    """The ``group:`` field: a group of this host (a name or a gid)."""
    _group(group)
    return group


def resolve(user: str, group: str | None) -> Identity:
    """``user:`` and ``group:`` (default: the user's primary group) as numbers."""
    entry = _user(user)
    gid = entry.pw_gid if group is None else _group(group).gr_gid
    return Identity(entry.pw_name, entry.pw_uid, gid)


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def drop_privileges(identity: Identity, engine_modes: Iterable[str]) -> dict[str, str]:
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


def _verify(status: dict[str, str], identity: Identity, keep: int) -> None:
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


def least_privilege(config: Config, engine_modes: list[str]) -> None:
    """The daemon's hook once its sockets are open: become ``user:`` if one is set."""
    warn_exposed_secrets(config)
    identity = config.identity
    if identity is None:
        if os.geteuid() == 0:
            log.warning("running_as_root", hint="set user: (and group:) in the inventory to "
                        "run unprivileged once the sockets are open")
        return
    status = drop_privileges(identity, engine_modes)
    log.info("privileges_dropped", user=identity.user, uid=identity.uid, gid=identity.gid,
             capabilities=capability_names(int(status["CapEff"], 16)) or "none",
             no_new_privs=status["NoNewPrivs"] == "1")


def capability_names(mask: int) -> str:
    return ",".join(_CAP_NAMES.get(cap, f"cap_{cap}") for cap in range(64) if mask >> cap & 1)


_CAP_NAMES: Final = {CAP_NET_RAW: "cap_net_raw", 10: "cap_net_bind_service", 12: "cap_net_admin"}


def secret_files(config: Config) -> list[tuple[str, str]]:
    """``(path, what it holds)`` for every file the configuration names that holds a secret."""
    found = []
    mqtt, web = config.mqtt, config.web
    if mqtt is not None and mqtt.password_file is not None:
        found.append((mqtt.password_file, "the MQTT password"))
    if mqtt is not None and mqtt.tls is not None and mqtt.tls.key_file is not None:
        found.append((mqtt.tls.key_file, "the MQTT client key"))
    if web.config_file is not None:
        found.append((web.config_file, "basic-auth password hashes"))
        tls = web.tls_server_config
        if tls is not None:
            found.append((str(Path(web.config_file).parent / tls.key_file), "the HTTPS key"))
    return found


def warn_exposed_secrets(config: Config) -> None:
    """A warning for each secret file that every local user may read, or others may write.

    Group-readable is the intended set-up (root:vcmon, 0640), so it is not warned about.
    """
    for path, what in secret_files(config):
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue  # reported where the file is read
        if mode & (stat.S_IROTH | stat.S_IWOTH | stat.S_IWGRP):
            log.warning("secret_file_exposed", file=path, mode=f"{stat.S_IMODE(mode):04o}",
                        holds=what, hint=f"chmod 0640 {path} (owner root, group of vcmon's "
                        "user) or 0600 for the user vcmon runs as")


def check_reloaded(before: Config, after: Config) -> None:
    """The daemon's hook on reload: secrets exposed, and settings that wait for a restart."""
    warn_exposed_secrets(after)
    waiting = [name for name, old, new in (
        ("web tls_server_config", before.web.tls_server_config, after.web.tls_server_config),
        ("user", before.user, after.user), ("group", before.group, after.group)) if old != new]
    if waiting:
        log.warning("restart_needed", settings=", ".join(waiting),
                    hint="the listener and the user are set at start; restart vcmon to apply")
