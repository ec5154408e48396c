"""End to end: ``vcmon run`` on the embedded inventory, scraped like Prometheus would."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port, promtool_check_metrics

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMP sockets need root here")


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


Daemon = tuple[subprocess.Popen[bytes], str, Path]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    port = free_port()
    log = tmp_path_factory.mktemp("e2e") / "vcmon.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "run", "--demo", "--listen", f"127.0.0.1:{port}",
             "--log-format", "json"],
            stdout=subprocess.DEVNULL, stderr=log_file)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                if fetch(f"{base}/-/ready")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail("vcmon did not become ready within 20 s")
        # Ready means every site was sent one probe; give replies and the
        # down_after bookkeeping a few cycles before asserting on every site.
        time.sleep(3.5)
        yield proc, base, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def scrape(base: str) -> str:
    status, body, headers = fetch(f"{base}/metrics", {"Accept-Encoding": "gzip"})
    assert status == 200
    assert headers.get("Content-Encoding") == "gzip"
    return gzip.decompress(body).decode()


def test_every_embedded_site_is_up_with_loopback_rtt(
        daemon: Daemon) -> None:
    _, base, _ = daemon
    families = {f.name: f for f in text_string_to_metric_families(scrape(base))}
    up = {s.labels["site"]: s.value for s in families["vcmon_site_up"].samples}
    assert len(up) == 240
    assert all(v == 1 for v in up.values()), [k for k, v in up.items() if v != 1]
    medians = [s.value for s in families["vcmon_site_rtt_seconds"].samples
               if s.labels["stat"] == "median"]
    assert len(medians) == 240
    assert max(medians) < 0.001
    ok = [s.labels["site"] for s in families["vcmon_site_status"].samples
          if s.labels["status"] == "ok" and s.value == 1]
    assert len(ok) == 240
    info = families["vcmon_site_info"].samples
    assert len(info) == 240
    assert any("xã" in s.labels["name"] for s in info)
    sent = {s.labels["site"]: s.value for s in families["vcmon_probe_packets_sent"].samples
            if s.name.endswith("_total")}
    assert min(sent.values()) >= 3


def test_the_demo_says_it_is_a_demo(daemon: Daemon) -> None:
    """``vcmon run --demo`` is marked where people and scripts look: metrics, API, board."""
    _, base, _ = daemon
    families = {f.name: f for f in text_string_to_metric_families(scrape(base))}
    assert [s.value for s in families["vcmon_demo"].samples] == [1]
    status, body, _ = fetch(f"{base}/api/v1/summary")
    assert status == 200 and json.loads(body)["demo"] is True
    assert "DEMO — dữ liệu mô phỏng" in fetch(f"{base}/")[1].decode()


def test_run_without_an_inventory_refuses_with_the_hint() -> None:
    done = subprocess.run([sys.executable, "-m", "monitor.cli", "run"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "no inventory given" in done.stderr and "--config FILE" in done.stderr
    assert "--demo" in done.stderr


def test_promtool_accepts_the_scrape(daemon: Daemon) -> None:
    _, base, _ = daemon
    assert promtool_check_metrics(scrape(base)) == ""


def test_health_endpoints(daemon: Daemon) -> None:
    _, base, _ = daemon
    assert fetch(f"{base}/-/healthy")[0] == 200
    assert fetch(f"{base}/-/ready")[0] == 200
    assert fetch(f"{base}/nope")[0] == 404


def test_sigterm_stops_cleanly_within_two_seconds(
        daemon: Daemon) -> None:
    proc, base, log = daemon
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(5)
    elapsed = time.monotonic() - started
    stderr = log.read_text()
    assert code == 0, stderr
    assert elapsed < 2.0
    assert "Traceback" not in stderr
    assert '"event": "stopped"' in stderr
    with pytest.raises(OSError):
        fetch(f"{base}/-/healthy")
