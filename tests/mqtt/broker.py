"""A real Mosquitto broker for one test, on a free loopback port.

    with Broker(tmp_path) as broker:         # started, killed at the end whatever happens
        broker.kill(); ...; broker.start()    # an outage, same port, state lost
        broker.freeze(); ...; broker.thaw()   # a broker that stops answering

``netns`` runs it inside a test's network namespace (``ip netns exec``), where the
port is free by construction.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import pytest

from tests.conftest import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
_START_TIMEOUT = 10.0

skip_unless_mosquitto = pytest.mark.skipif(
    not Path(MOSQUITTO).exists(),
    reason="needs Debian's mosquitto: run tests/run.sh, which installs it")


class Broker:
    def __init__(self, folder: Path, *, port: int | None = None, extra: str = "",
                 listener_options: str = "", plain_port: int | None = None,
                 wrap: Sequence[str] = ()) -> None:
        """``listener_options`` go under the main listener (TLS files, auth);
        ``plain_port``, if given, is a second listener without them, for subscribers."""
        self.folder = folder
        self.port = port if port is not None else free_port()
        self.plain_port = plain_port
        self.log = folder / f"mosquitto-{self.port}.log"
        self.conf = folder / f"mosquitto-{self.port}.conf"
        self._wrap = list(wrap)
        lines = [
            # per_listener_settings: auth applies to the main listener only
            "per_listener_settings true" if plain_port is not None else "",
            # root may read the test's files, which are private to root
            "user root",
            "persistence false",
            f"log_dest file {self.log}",
            "log_type all",
            f"listener {self.port} 127.0.0.1",
            listener_options or "allow_anonymous true",
        ]
        if plain_port is not None:
            lines += [f"listener {plain_port} 127.0.0.1", "allow_anonymous true"]
        self.conf.write_text("\n".join([*lines, extra, ""]))
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.kill()

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen([*self._wrap, MOSQUITTO, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + _START_TIMEOUT
        while "running" not in self._log_text():
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited ({self.proc.returncode}):\n"
                                   + self._log_text())
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("mosquitto did not start within 10 s:\n" + self._log_text())
            time.sleep(0.01)
        self._mark = len(self._log_text())

    def _log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_since_start(self) -> str:
        return self._log_text()[self._mark:]

    def kill(self) -> None:
        """SIGKILL, frozen or not: no clean disconnects, no Wills sent, nothing kept."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        # the log restarts with the next start, so that "running" means this start
        self.log.unlink(missing_ok=True)

    def freeze(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)


def port_is_closed(port: int) -> bool:
    """True when nothing accepts on 127.0.0.1:``port`` (a dead broker's port)."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0
