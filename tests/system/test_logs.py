"""Log lines: JSON from vcmon and from the libraries it uses alike."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import logging, structlog
from monitor.system.logs import configure_logging
configure_logging("info", "json")
structlog.get_logger("vcmon.test").info("ours", site="xa-lac-ve", password="hunter2")
logging.getLogger("mqtt").error("failed to receive on socket: [Errno 104] reset")
logging.getLogger("aiohttp.server").debug("below the level")
"""


def test_library_lines_are_json_too() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          check=True, timeout=60)
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(line["event"], line["level"]) for line in lines] == [
        ("ours", "info"), ("failed to receive on socket: [Errno 104] reset", "error")]
    assert lines[0]["password"] == "[redacted]" and lines[0]["site"] == "xa-lac-ve"
    assert lines[1]["logger"] == "mqtt" and "timestamp" in lines[1]
