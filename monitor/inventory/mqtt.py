"""The inventory's ``mqtt:`` section: which broker, which topics, how hard to try.

Secrets are never part of the inventory: the password is read from a file or an
environment variable when vcmon connects, so the inventory can be shared and logged.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import stat
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    ValidationInfo,
    field_validator,
)

from monitor.inventory.fields import DURATION, between, check_address
from monitor.inventory.problems import show
from monitor.inventory.problems import show_number as _num

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOPIC_LEVEL_FORBIDDEN = frozenset("+#\0")


class MqttSetupError(Exception):
    """The broker cannot be tried yet: a password or TLS file is missing or unreadable."""


def _check_port(port: int) -> int:
    if 1 <= port <= 65535:
        return port
    raise ValueError(f"{port} is not a TCP port; use 1 to 65535, e.g. 1883 (8883 with TLS)")


def _check_prefix(prefix: str) -> str:
    levels = prefix.split("/")
    if not prefix or any(not level for level in levels):
        raise ValueError(
            f"{show(prefix)} is not a topic prefix; write one or more non-empty levels "
            "separated by /, without a leading or trailing /, e.g. vcmon or bacninh/vcmon"
        )
    if _TOPIC_LEVEL_FORBIDDEN & set(prefix) or prefix.startswith("$"):
        raise ValueError(
            f"{show(prefix)} is not a topic prefix; + and # are wildcards and a leading $ is "
            "reserved for the broker, e.g. write vcmon"
        )
    return prefix


def _check_qos(qos: int) -> int:
    if qos not in (1, 2):
        raise ValueError(
            f"{qos} is not a QoS vcmon can keep its promise with: events are kept until the "
            "broker acknowledges them, which needs 1 (at least once) or 2 (exactly once)"
        )
    return qos


def _check_client_id(client_id: str) -> str:
    if not 1 <= len(client_id) <= 128 or not client_id.isprintable():
        raise ValueError(
            f"{show(client_id)} is not a client id; use 1 to 128 printable characters, "
            "e.g. vcmon-bacninh-1"
        )
    return client_id


def _check_env_name(name: str) -> str:
    if not _ENV_NAME.fullmatch(name):
        raise ValueError(
            f"{show(name)} is not an environment variable name; write e.g. VCMON_MQTT_PASSWORD"
        )
    return name


Port = Annotated[int, AfterValidator(_check_port)]
# paho sends the keepalive as a 16-bit number of seconds; below 5 s a busy link flaps
Keepalive = Annotated[float, DURATION, between(5, 65535, "seconds")]
# from 10 ms for tests and labs; against a real broker 1 s or more
Backoff = Annotated[float, DURATION, between(0.01, 3600, "seconds")]
# One message per site per period; faster than once a second is a job for /metrics.
MeasurementsEvery = Annotated[float, DURATION, between(1, 86400, "seconds")]
QueueSize = Annotated[int, between(10, 1_000_000, "messages")]


class MqttTls(BaseModel):
    """``mqtt.tls``: present means TLS; without ``ca_file`` the system's CAs are trusted."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @field_validator("key_file")
    @classmethod
    def _key_needs_cert(cls, key_file: str | None, info: ValidationInfo) -> str | None:
        if key_file is not None and info.data.get("cert_file") is None:
            raise ValueError("a client key needs its certificate; set cert_file too")
        return key_file

    def context(self) -> ssl.SSLContext:
        """A client context that checks the broker's certificate chain and name."""
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file is not None:
                context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            files = ", ".join(f for f in (self.ca_file, self.cert_file, self.key_file) if f)
            raise MqttSetupError(
                f"cannot load the TLS files of mqtt.tls ({files}): {exc}; "
                "check the paths, their permissions and that they are PEM files"
            ) from None
        return context


class MqttSettings(BaseModel):
    """The ``mqtt:`` section. Without it vcmon publishes nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    host: Annotated[str, AfterValidator(check_address)]
    port: Port | None = None  # 1883, or 8883 with tls
    # topic root: <prefix>/status, <prefix>/events, <prefix>/sites/<site-id>/state
    prefix: Annotated[str, AfterValidator(_check_prefix)] = "vcmon"
    qos: Annotated[int, AfterValidator(_check_qos)] = 1
    client_id: Annotated[str, AfterValidator(_check_client_id)] | None = None
    keepalive: Keepalive = 30.0
    username: str | None = None
    password_file: str | None = None
    password_env: Annotated[str, AfterValidator(_check_env_name)] | None = None
    tls: MqttTls | None = None
    # messages held while the broker is away; at 1 kB each, the default is ~10 MB at most
    queue_size: QueueSize = 10_000
    measurements_every: MeasurementsEvery | None = None
    reconnect_initial: Backoff = 1.0
    reconnect_max: Backoff = 60.0

    @field_validator("password_file", "password_env")
    @classmethod
    def _password_needs_username(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        if info.data.get("username") is None:
            # MQTT 3.1.1, 3.1.2.9: a password without a user name is a protocol error
            raise ValueError("a password needs a user name; set username too")
        if info.field_name == "password_env" and info.data.get("password_file") is not None:
            raise ValueError("the password comes from one place; keep password_file or "
                             "password_env, not both")
        return value

    @field_validator("reconnect_max")
    @classmethod
    def _max_not_below_initial(cls, value: float, info: ValidationInfo) -> float:
        initial = info.data.get("reconnect_initial")
        if initial is not None and value < initial:
            raise ValueError(f"{_num(value)} s is below reconnect_initial ({_num(initial)} s); "
                             "raise reconnect_max or lower reconnect_initial")
        return value

    @property
    def broker_port(self) -> int:
        if self.port is not None:
            return self.port
        return 8883 if self.tls is not None else 1883

    @property
    def identifier(self) -> str:
        # Stable per host, so that broker ACLs and logs can name it; two instances on
        # one host (shards) must set client_id, or the broker disconnects the older one.
        return self.client_id or f"vcmon-{socket.gethostname()}"

    def password(self) -> str | None:
        """The password, read when vcmon builds its connection to the broker."""
        if self.password_file is not None:
            try:
                # a FIFO would block the event loop in open(), a device never end
                if not stat.S_ISREG(os.stat(self.password_file).st_mode):
                    raise MqttSetupError(
                        f"mqtt.password_file {self.password_file} is not a regular file; "
                        "point it at the file that holds the password")
                text = Path(self.password_file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                why = getattr(exc, "strerror", None) or exc
                raise MqttSetupError(
                    f"cannot read the MQTT password from mqtt.password_file "
                    f"{self.password_file} ({why}); check the path and its permissions"
                ) from None
            # editors and `echo` add a line break that is not part of the password
            return text.removesuffix("\n").removesuffix("\r")
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise MqttSetupError(
                    f"the environment variable {self.password_env} named by "
                    "mqtt.password_env is not set; set it in the service's environment"
                )
            return value
        return None
