"""The ``user:`` and ``group:`` fields: accounts of this host, resolved to numbers.

Only name lookups here (pwd, grp): reading an inventory never loads the code that
drops privileges (``monitor.system.privileges``), which the daemon runs once.
"""

from __future__ import annotations

import grp
import pwd
from dataclasses import dataclass

from monitor.inventory.problems import show


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
