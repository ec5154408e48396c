"""Files the inventory names that hold secrets, and settings a reload cannot apply."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from monitor.inventory.schema import Config

# the logger these warnings always had
log = structlog.get_logger("vcmon.privileges")


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
        ("user", before.user, after.user), ("group", before.group, after.group),
        ("mqtt", before.mqtt, after.mqtt)) if old != new]
    if waiting:
        log.warning("restart_needed", settings=", ".join(waiting),
                    hint="the listener, the user and the MQTT connection are set at start; "
                    "restart vcmon to apply")
