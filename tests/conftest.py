"""Shared test helpers: free loopback ports and the real Prometheus tools."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def promtool_check_metrics(text: str) -> str:
    """Run the real ``promtool check metrics``; return its findings ('' when clean)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: run tests/run.sh, which installs Debian's prometheus")
    done = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                          capture_output=True, timeout=30, check=False)
    return (done.stdout + done.stderr).decode()


def wait_until(what: str, ready: Callable[[], object], seconds: float,
               *procs: subprocess.Popen[bytes]) -> None:
    """Poll ``ready`` every 0.5 s until it is true; fail if ``seconds`` pass first or one
    of ``procs`` exits. OSError, ValueError and AssertionError count as "not yet"."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for proc in procs:
            assert proc.poll() is None, f"{proc.args} exited with {proc.returncode}"
        try:
            if ready():
                return
        except (OSError, AssertionError, ValueError):
            pass
        time.sleep(0.5)
    pytest.fail(f"{what} within {seconds} s")


def stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """Terminate a process the test started; kill it if it ignores that for ``grace`` s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
