"""``vcmon reflect`` as the service runs it: a process answering TWAMP-light streams from
its allow-list only, counting (never answering) the rest; its systemd unit passes
systemd's own checks, and the container image documents it."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probes.twamp import ErrorEstimate, TestPacket
from probes.twamp_sender import EF, TwampSender
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "vcmon-reflect.service"
VCMON = Path(sys.executable).with_name("vcmon")


def start(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([str(VCMON), "reflect", "--log-format", "json", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    return proc


def wait_listening(proc: subprocess.Popen[str]) -> dict[str, object]:
    assert proc.stderr is not None
    line = proc.stderr.readline()
    event: dict[str, object] = json.loads(line)
    assert event["event"] == "reflecting", line
    return event


def stop(proc: subprocess.Popen[str]) -> list[dict[str, object]]:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def sent_from(address: str, port: int, data: bytes) -> bytes | None:
    """One datagram from ``address``; the answer, or None within 0.3 s."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((address, 0))
        sock.settimeout(0.3)
        sock.sendto(data, ("127.0.0.40", port))
        try:
            return sock.recv(2048)
        except TimeoutError:
            return None


async def test_reflect_answers_its_allow_list_only_and_counts_the_rest() -> None:
    port = free_port()
    proc = start("--allow", "127.0.0.41/32", "--listen", "127.0.0.40", "--port", str(port),
                 "--rate", "50", "--burst", "60")
    try:
        wait_listening(proc)
        request = TestPacket(1, time.time_ns(), ErrorEstimate(False, 10, 1), 172).encode()
        loop = asyncio.get_running_loop()
        # outside the allow-list (as a spoofed source would be), truncated, oversized
        assert await loop.run_in_executor(None, sent_from, "127.0.0.42", port, request) is None
        assert await loop.run_in_executor(None, sent_from, "127.0.0.41", port,
                                          request[:30]) is None
        assert await loop.run_in_executor(None, sent_from, "127.0.0.41", port,
                                          request + bytes(1400)) is None
        answer = await loop.run_in_executor(None, sent_from, "127.0.0.41", port, request)
        assert answer is not None and len(answer) == len(request)  # never amplified
        # a sender whose packets leave from 127.0.0.1 (its wildcard bind): not allowed
        sender = TwampSender()
        await sender.start()
        try:
            # the sender binds the wildcard address: its packets leave from 127.0.0.1
            result = await sender.stream("127.0.0.40", port, count=20, spacing=0.005, tos=EF)
        finally:
            await sender.close()
        assert result.stats.received == 0
        # a flood from an allowed source: 200 at once, about burst answered
        def flood() -> int:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind(("127.0.0.41", 0))
                sock.settimeout(0.3)
                for _ in range(200):
                    sock.sendto(request, ("127.0.0.40", port))
                answers = 0
                try:
                    while True:
                        sock.recv(2048)
                        answers += 1
                except TimeoutError:
                    return answers
        answered = await loop.run_in_executor(None, flood)
        assert 50 <= answered <= 80
    finally:
        events = stop(proc)
    counters = events[-1]
    assert counters["event"] == "reflector_counters"
    assert counters["dropped_not_allowed"] == 1 + 20
    assert counters["dropped_too_short"] == 1
    assert counters["dropped_too_long"] == 1
    assert counters["dropped_rate_limited"] == 200 - answered
    assert counters["reflected"] == 1 + answered


def test_reflect_refuses_a_bad_allow_list() -> None:
    done = subprocess.run([str(VCMON), "reflect", "--allow", "10.0.0.300/8"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert "allow-list entry is not a network" in done.stderr


def test_reflect_needs_an_allow_list() -> None:
    done = subprocess.run([str(VCMON), "reflect"], capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 2 and "--allow" in done.stderr


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's vcmon, which verify requires."""
    assert VCMON.exists(), "the package is not installed in this environment"
    path = tmp_path / "vcmon-reflect.service"
    path.write_text(UNIT.read_text().replace("/opt/vcmon/bin/vcmon", str(VCMON)))
    return path


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_the_reflect_unit_verifies_clean_and_is_hardened(unit: Path) -> None:
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
    done = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                          capture_output=True, text=True, timeout=60, check=False)
    match = re.search(r"Overall exposure level for vcmon-reflect\.service: (\d+\.\d+)",
                      done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= 2.0, done.stdout


def test_the_reflect_unit_runs_the_reflector_with_only_the_port_capability() -> None:
    text = UNIT.read_text()
    for line in ("Type=notify", "DynamicUser=yes", "ExecStart=/opt/vcmon/bin/vcmon reflect --allow",
                 "AmbientCapabilities=CAP_NET_BIND_SERVICE",
                 "CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "ProtectSystem=strict",
                 "SystemCallFilter=@system-service"):
        assert line in text, line
    assert "CAP_NET_RAW" not in text


def test_the_image_documents_the_reflector_command() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "vcmon reflect --allow" in text
    assert re.search(r"^EXPOSE .*\b862/udp\b", text, re.M)
