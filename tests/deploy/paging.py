"""The paging path with the real binaries: vcmon → Prometheus → Alertmanager → a webhook.

Shared by tests/deploy/test_paging_e2e.py and tests/bench/bench_paging.py. Everything
listens on free ports of 127.0.0.1; vcmon probes the sites of a lab (monitor/lab),
whose addresses live in a network namespace the caller made and checked with
``ip route get``. ``PagingPath`` starts the three processes and stops them again,
whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.conftest import free_port, stop_process
from tests.deploy.conftest import ALERTMANAGER_CONFIG, PROMETHEUS_DIR, ROOT

T = TypeVar("T")
Json = dict[str, Any]
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))


class Timeout(AssertionError):
    """A condition did not come true in time; the message says which."""


def until(condition: Callable[[], T | None], what: str, seconds: float,
          procs: list[subprocess.Popen[bytes]] | None = None, step: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy, at most ``seconds``; fail
    at once if one of ``procs`` exits."""
    deadline = time.monotonic() + seconds
    while True:
        for proc in procs or ():
            if proc.poll() is not None:
                raise AssertionError(f"{proc.args!r} exited with {proc.returncode} "
                                     f"while waiting for {what}")
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise Timeout(f"not within {seconds:g} s: {what}")
        time.sleep(step)


@dataclass(frozen=True)
class Notification:
    receiver: str
    at: float  # time.monotonic() when it arrived
    wall: float  # time.time() when it arrived
    body: Json

    def alerts(self, status: str = "firing") -> list[Json]:
        return [a for a in self.body["alerts"] if a["status"] == status]


class Webhook:
    """Records every notification Alertmanager posts, with its arrival time."""

    def __init__(self) -> None:
        self._notes: list[Notification] = []
        self._lock = threading.Lock()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                note = Notification(body["receiver"], time.monotonic(), time.time(), body)
                with webhook._lock:
                    webhook._notes.append(note)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def notes(self) -> list[Notification]:
        with self._lock:
            return list(self._notes)

    def about(self, alertname: str, site: str, status: str = "firing",
              severity: str | None = None) -> list[tuple[Notification, Json]]:
        """Each notification carrying ``alertname`` for ``site`` in ``status``, with it."""
        return [(note, alert) for note in self.notes() for alert in note.alerts(status)
                if alert["labels"]["alertname"] == alertname
                and alert["labels"].get("site") == site
                and severity in (None, alert["labels"]["severity"])]

    def pages(self) -> list[tuple[Notification, Json]]:
        """Every firing page that arrived, whoever it was for."""
        return [(note, alert) for note in self.notes() for alert in note.alerts()
                if alert["labels"]["severity"] == "page"]


def alertmanager_config(webhook_port: int, *, for_test: bool) -> str:
    """The shipped alertmanager.yml with every receiver's URL on the webhook.

    ``for_test`` also changes what would make a test slow or clock-dependent: the
    warnings route is not limited to office hours and waits 1 s instead of 30 s, and
    the degraded/flapping pages' group_interval (which spaces their "resolved") is 10 s
    instead of 1 min. Pages of down links keep the shipped values.
    """
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"http://127.0.0.1:{webhook_port}/{receiver['name']}"
    if for_test:
        routes = config["route"]["routes"]
        [warnings] = [r for r in routes if r.get("receiver") == "technicians"]
        del warnings["active_time_intervals"]
        warnings["group_wait"] = "1s"
        [quality] = [r for r in routes if any("VcmonSiteDegraded" in m
                                              for m in r.get("matchers", []))]
        quality["group_interval"] = "10s"
    return yaml.safe_dump(config, sort_keys=False)


def prometheus_config(vcmon: str, alertmanager: str, interval: str | None) -> str:
    """The shipped prometheus.yml and rules, pointed at these ports; ``interval`` (e.g.
    "1s") replaces the shipped 5 s scrape and evaluation interval, None keeps it."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert config["rule_files"] == ["rules/*.yml"], config["rule_files"]
    config["rule_files"] = [str(path) for path in RULE_FILES]
    [manager] = config["alerting"]["alertmanagers"]
    manager["static_configs"] = [{"targets": [alertmanager]}]
    [job] = config["scrape_configs"]
    assert job["job_name"] == "vcmon"
    job["static_configs"] = [{"targets": [vcmon]}]
    if interval is not None:
        config["global"] = {"scrape_interval": interval, "scrape_timeout": interval,
                            "evaluation_interval": interval}
    return yaml.safe_dump(config, sort_keys=False)


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


class PagingPath:
    """vcmon (``vcmon run``), Prometheus and Alertmanager as subprocesses, logs in ``tmp``."""

    def __init__(self, tmp: Path, inventory: Path, webhook: Webhook, *,
                 interval: str | None, for_test: bool) -> None:
        self.tmp = tmp
        self.inventory = inventory
        self.vcmon = f"127.0.0.1:{free_port()}"
        self.prometheus = f"127.0.0.1:{free_port()}"
        self.alertmanager = f"127.0.0.1:{free_port()}"
        (tmp / "prometheus.yml").write_text(
            prometheus_config(self.vcmon, self.alertmanager, interval))
        (tmp / "alertmanager.yml").write_text(
            alertmanager_config(webhook.port, for_test=for_test))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        # stopped on purpose (``stop``): their exit is no failure
        self.stopped: set[str] = set()

    def log(self, name: str) -> Path:
        return self.tmp / f"{name}.log"

    def _start(self, name: str, argv: list[str]) -> None:
        with self.log(name).open("ab") as log:
            self.procs[name] = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL,
                                                stdout=log, stderr=subprocess.STDOUT)

    @contextlib.contextmanager
    def running(self) -> Iterator[PagingPath]:
        try:
            self._start("alertmanager", [
                "prometheus-alertmanager", f"--config.file={self.tmp / 'alertmanager.yml'}",
                f"--storage.path={self.tmp / 'alertmanager-data'}",
                f"--web.listen-address={self.alertmanager}", "--cluster.listen-address=",
                "--log.level=debug"])
            self.start_prometheus()
            self.start_vcmon()
            until(lambda: all(_ready(f"http://{where}/-/ready") for where in
                              (self.vcmon, self.prometheus, self.alertmanager)),
                  "vcmon, Prometheus and Alertmanager ready", 30, list(self.procs.values()))
            yield self
        finally:
            for proc in self.procs.values():
                stop_process(proc, grace=10.0)

    def start_prometheus(self) -> None:
        """Prometheus on its data directory: a restart keeps what it scraped."""
        self._start("prometheus", [
            "prometheus", f"--config.file={self.tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.tmp / 'prometheus-data'}",
            f"--web.listen-address={self.prometheus}", "--log.level=info"])

    def start_vcmon(self) -> None:
        self._start("vcmon", [
            sys.executable, "-m", "monitor.cli", "run", "--config", str(self.inventory),
            "--listen", self.vcmon, "--log-format", "json", "--log-level", "info"])

    def stop(self, name: str, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop one of the three (SIGKILL: as a crash) and wait for it to exit."""
        proc = self.procs[name]
        self.stopped.add(name)
        proc.send_signal(sig)
        proc.wait(30)

    def restart(self, name: str) -> None:
        """Start ``name`` again after ``stop`` and wait until it is ready."""
        {"prometheus": self.start_prometheus, "vcmon": self.start_vcmon}[name]()
        self.stopped.discard(name)
        where = {"prometheus": self.prometheus, "vcmon": self.vcmon}[name]
        until(lambda: _ready(f"http://{where}/-/ready"), f"{name} ready again", 60,
              self.alive())

    def alive(self) -> list[subprocess.Popen[bytes]]:
        """The processes that must be running (a failure if one exits)."""
        return [proc for name, proc in self.procs.items() if name not in self.stopped]

    def tail(self, lines: int = 30) -> str:
        """The end of every log, for a failure message."""
        out = []
        for name in self.procs:
            text = self.log(name).read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {name}.log\n" + "\n".join(text))
        return "\n".join(out)

    def reload_vcmon(self, within: float = 30.0) -> None:
        """SIGHUP, then wait for vcmon's "reloaded" line."""
        seen = self.log("vcmon").read_text(errors="replace").count('"event": "reloaded"')
        self.procs["vcmon"].send_signal(signal.SIGHUP)
        until(lambda: self.log("vcmon").read_text(errors="replace")
              .count('"event": "reloaded"') > seen, "vcmon reloaded its inventory", within,
              self.alive())

    def state_changes(self) -> list[Json]:
        """vcmon's state_change log events, in order."""
        events = []
        for line in self.log("vcmon").read_text(errors="replace").splitlines():
            if '"state_change"' in line:
                with contextlib.suppress(ValueError):
                    events.append(json.loads(line))
        return events

    # --- Prometheus ---------------------------------------------------------------

    def query(self, expr: str) -> list[Json]:
        url = f"http://{self.prometheus}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr})
        body = get_json(url)
        assert body["status"] == "success", body
        result: list[Json] = body["data"]["result"]
        return result

    def prometheus_alerts(self) -> list[Json]:
        alerts: list[Json] = get_json(f"http://{self.prometheus}/api/v1/alerts")["data"]["alerts"]
        return alerts

    def alertmanager_discovered(self) -> bool:
        found = get_json(f"http://{self.prometheus}/api/v1/alertmanagers")["data"]
        return [a["url"] for a in found["activeAlertmanagers"]] == \
            [f"http://{self.alertmanager}/api/v2/alerts"]

    def phase(self) -> float | None:
        """Seconds from a scrape of vcmon to the next evaluation of the link alerts
        (what an evaluation waits for a new sample), or None before both happened."""
        targets = get_json(f"http://{self.prometheus}/api/v1/targets")["data"]["activeTargets"]
        groups = get_json(f"http://{self.prometheus}/api/v1/rules")["data"]["groups"]
        [target] = targets
        [links] = [g for g in groups if g["name"] == "vcmon-links"]
        if target["lastScrape"].startswith("0001") or links["lastEvaluation"].startswith("0001"):
            return None
        scrape, evaluation = map(go_timestamp, (target["lastScrape"], links["lastEvaluation"]))
        every = links["interval"]
        return float((evaluation - scrape) % every)

    # --- Alertmanager -------------------------------------------------------------

    def am_alerts(self) -> list[Json]:
        alerts: list[Json] = get_json(f"http://{self.alertmanager}/api/v2/alerts")
        return alerts

    def am_post(self, labels: dict[str, str], *, ends_in: float) -> None:
        """Post one alert the way Prometheus does; ``ends_in`` ≤ 0 resolves it."""
        now = datetime.now(UTC)
        body = [{"labels": labels, "annotations": {"summary": "posted by the test"},
                 "startsAt": (now - timedelta(seconds=1)).isoformat(),
                 "endsAt": (now + timedelta(seconds=ends_in)).isoformat()}]
        request = urllib.request.Request(
            f"http://{self.alertmanager}/api/v2/alerts", data=json.dumps(body).encode(),
            method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200


def go_timestamp(text: str) -> float:
    """Go's RFC 3339 with nanoseconds (Python's parser takes microseconds)."""
    match = re.fullmatch(r"([^.]+?)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    assert match, text
    head, fraction, zone = match.groups()
    seconds = datetime.fromisoformat(head + ("+00:00" if zone == "Z" else zone)).timestamp()
    return seconds + (float(f"0.{fraction}") if fraction else 0.0)
