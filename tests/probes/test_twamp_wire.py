"""Our TWAMP-light packets as an independent decoder reads them: Wireshark's tshark.

tshark captures a short stream on loopback. Its TWAMP-Test dissector takes every
datagram of 41 bytes or more for a reflector's reply (it has no control session to
say which side is which), and our requests are padded to at least that (RFC 6038 §4.2).
So requests are decoded with the OWAMP-Test dissector, whose packet is the layout
RFC 5357 §4.1.2 gives the session-sender, and replies with TWAMP-Test; neither needs
the well-known port 862, ``-d udp.port==P`` maps them onto the test's own port.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from probes.twamp import REFLECTION_HEADER, SENDER_HEADER, ErrorEstimate
from probes.twamp_reflector import TwampReflector
from probes.twamp_sender import TwampSender

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="tshark needs root to capture")

SENDER_ESTIMATE = ErrorEstimate(True, 20, 3)
REFLECTOR_ESTIMATE = ErrorEstimate(False, 10, 7)
COUNT, SIZE = 3, 100
_TIME = re.compile(r"(\w+ +\d+, \d+ \d+:\d+:\d+)\.(\d{9}) UTC")
_FIELDS = ("udp.length", "twamp.test.seq_number", "twamp.test.timestamp",
           "twamp.test.error_estimate", "twamp.test.error_estimate.s",
           "twamp.test.error_estimate.scale", "twamp.test.error_estimate.multiplier",
           "twamp.test.mbz1", "twamp.test.receive_timestamp", "twamp.test.sender_seq_number",
           "twamp.test.sender_timestamp", "twamp.test.sender_error_estimate",
           "twamp.test.mbz2", "twamp.test.sender_ttl", "twamp.test.padding")


def tshark() -> str:
    binary = shutil.which("tshark")
    if binary is None:
        pytest.fail("tshark not found: run tests/run.sh, which installs it")
    return binary


def ns(text: str) -> int:
    """Nanoseconds since 1970 of a time as tshark prints it (in UTC, TZ set below)."""
    match = _TIME.fullmatch(text)
    assert match is not None, text
    seconds = calendar.timegm(time.strptime(" ".join(match[1].split()), "%b %d, %Y %H:%M:%S"))
    return seconds * 1_000_000_000 + int(match[2])


def decoded(pcap: Path, port: int, direction: str, dissector: str) -> list[dict[str, Any]]:
    argv = [tshark(), "-r", str(pcap), "-Y", f"udp.{direction}port=={port}",
            "-d", f"udp.port=={port},{dissector}", "-T", "json"]
    for name in _FIELDS:
        argv += ["-e", name]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True,
                          env={**os.environ, "TZ": "UTC"})
    return [{name: values[0] for name, values in packet["_source"]["layers"].items()}
            for packet in json.loads(done.stdout)]


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
async def test_tshark_decodes_requests_and_replies_as_rfc_5357_says(
        address: str, tmp_path: Path) -> None:
    reflector = TwampReflector(["127.0.0.0/8", "::1/128"], listen=(address,), port=0,
                               error_estimate=REFLECTOR_ESTIMATE)
    await reflector.start()
    sender = TwampSender(error_estimate=SENDER_ESTIMATE)
    await sender.start()
    pcap = tmp_path / "twamp.pcap"
    _, port = reflector.addresses[0]
    capture = await asyncio.create_subprocess_exec(
        tshark(), "-i", "lo", "-f", f"udp port {port}", "-c", str(2 * COUNT),
        "-a", "duration:15", "-w", str(pcap),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        assert capture.stderr is not None
        # dumpcap says so once the filter is on the interface: nothing is missed after
        for _ in range(10):
            line = await asyncio.wait_for(capture.stderr.readline(), 15)
            if b"Capture started" in line or not line:
                break
        assert b"Capture started" in line, line
        result = await sender.stream(address, port, count=COUNT, spacing=0.02, size=SIZE)
        await asyncio.wait_for(capture.wait(), 15)
    finally:
        if capture.returncode is None:
            capture.kill()
            await capture.wait()
        await sender.close()
        await reflector.close()
    assert capture.returncode == 0

    requests = decoded(pcap, port, "dst", "owamp.test")
    replies = decoded(pcap, port, "src", "twamp.test")
    assert len(requests) == len(replies) == COUNT
    for packet, request, reply in zip(result.packets, requests, replies, strict=True):
        reflection = packet.reflection
        assert reflection is not None
        # §4.1.2: Sequence Number, Timestamp (NTP: tshark shows whole nanoseconds, cut
        # where ours round up, so up to 1 ns apart), Error Estimate, Padding
        assert int(request["udp.length"]) == 8 + SIZE
        assert int(request["twamp.test.seq_number"]) == packet.seq
        assert abs(ns(request["twamp.test.timestamp"]) - packet.sent_ns) <= 1
        assert int(request["twamp.test.error_estimate"]) == SENDER_ESTIMATE.encode()
        assert request["twamp.test.error_estimate.s"] in ("1", "True")
        assert int(request["twamp.test.error_estimate.scale"]) == 20
        assert int(request["twamp.test.error_estimate.multiplier"]) == 3
        padding = bytes.fromhex(request["twamp.test.padding"])
        assert len(padding) == SIZE - SENDER_HEADER
        # §4.2.1, field by field
        assert int(reply["udp.length"]) == 8 + SIZE  # the same size: no amplification
        assert int(reply["twamp.test.seq_number"]) == reflection.seq
        assert abs(ns(reply["twamp.test.timestamp"]) - reflection.timestamp_ns) <= 1
        assert int(reply["twamp.test.error_estimate"]) == REFLECTOR_ESTIMATE.encode()
        assert reply["twamp.test.error_estimate.s"] in ("0", "False")
        assert int(reply["twamp.test.error_estimate.scale"]) == 10
        assert int(reply["twamp.test.error_estimate.multiplier"]) == 7
        assert int(reply["twamp.test.mbz1"]) == int(reply["twamp.test.mbz2"]) == 0
        assert abs(ns(reply["twamp.test.receive_timestamp"]) - reflection.receive_ns) <= 1
        assert int(reply["twamp.test.sender_seq_number"]) == packet.seq
        assert abs(ns(reply["twamp.test.sender_timestamp"]) - packet.sent_ns) <= 1
        assert int(reply["twamp.test.sender_error_estimate"]) == SENDER_ESTIMATE.encode()
        assert int(reply["twamp.test.sender_ttl"]) == 64  # Linux's default, no hop on lo
        # the request's padding less the 27 octets the reply header takes in addition
        reply_padding = bytes.fromhex(reply["twamp.test.padding"])
        assert reply_padding == padding[REFLECTION_HEADER - SENDER_HEADER:]
