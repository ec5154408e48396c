"""A small province with known states, for the report and status-board tests.

Everything runs inside a "hub" network namespace that the test creates: the daemon,
Prometheus and Chromium. Far sites answer from their own namespaces behind veth links
(198.18.0.0/15, RFC 2544, exists only inside these namespaces); a far namespace goes
silent with ``net.ipv4.icmp_echo_ignore_all``. Near sites are loopback addresses of
the hub. So no packet can leave the machine, and every state is set by the test:

- ``dist-a`` and its communes ``a1``-``a3`` live in far namespace A: when A goes
  silent, ``dist-a`` is down and ``a1``-``a3`` are unreachable behind it;
- ``b-far`` (contracted) lives in far namespace B: down on its own;
- ``c-board`` lives in far namespace C (the board test takes it down);
- ``b-slow`` has an RTT threshold of 1 µs: degraded; ``b-maint`` is in maintenance.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from tests.conftest import stop_process
from tests.netns import NetNamespace

ZONE = ZoneInfo("Asia/Ho_Chi_Minh")
DAEMON = "http://127.0.0.1:9470"
PROMETHEUS = "http://127.0.0.1:9090"
FAR = {"a": 1, "b": 2, "c": 3}  # far namespace → third octet of its /24

SITES: list[dict[str, Any]] = [
    {"id": "prov", "name": "Hội trường Tỉnh ủy", "tier": "province", "address": "127.0.0.11"},
    {"id": "dist-a", "name": "Huyện ủy Tiên Du", "tier": "district", "parent": "prov",
     "address": "198.18.1.2", "contact": {"name": "Trần Thị Hà", "phone": "0912 000 001"}},
    {"id": "a1", "name": "UBND xã Lạc Vệ", "tier": "commune", "parent": "dist-a",
     "address": "198.18.1.3"},
    {"id": "a2", "name": "UBND xã Phật Tích", "tier": "commune", "parent": "dist-a",
     "address": "198.18.1.4"},
    {"id": "a3", "name": "UBND thị trấn Lim", "tier": "commune", "parent": "dist-a",
     "address": "198.18.1.5"},
    {"id": "dist-b", "name": "Huyện ủy Quế Võ", "tier": "district", "parent": "prov",
     "address": "127.0.0.12"},
    {"id": "b-ok", "name": "UBND xã Phượng Mao", "tier": "commune", "parent": "dist-b",
     "address": "127.0.0.13"},
    {"id": "b-slow", "name": "UBND xã Việt Hùng", "tier": "commune", "parent": "dist-b",
     "address": "127.0.0.14", "thresholds": {"rtt": "0.001ms"}},
    {"id": "b-maint", "name": "UBND xã Bằng An", "tier": "commune", "parent": "dist-b",
     "address": "127.0.0.15"},
    {"id": "b-far", "name": "Đảng ủy Quân sự huyện Quế Võ", "tier": "unit", "parent": "dist-b",
     "address": "198.18.2.2", "provision": "contract",
     "contract": {"contractor": "VNPT Bắc Ninh", "reference": "HĐ-2021/QV-03"},
     "contact": {"name": "Nguyễn Văn Bình", "phone": "0912 345 678"}},
    {"id": "c-board", "name": "UBND xã Chi Lăng", "tier": "commune", "parent": "dist-b",
     "address": "198.18.3.2"},
]
MAINTENANCE_REASON = "thay bộ định tuyến"


def inventory(now: datetime) -> dict[str, Any]:
    stamp = "%Y-%m-%d %H:%M"
    return {
        "listen": "127.0.0.1:9470",
        # fast probes and short windows: states settle in seconds, not minutes
        "defaults": {"interval": "500ms", "timeout": "400ms", "window": "10s",
                     "down_after": 3},
        "health": {"evaluate_every": "1s", "enter_after": 2, "leave_after": 2,
                   "recover_after": 2, "min_replies": 3},
        "schedule": {"timezone": "Asia/Ho_Chi_Minh", "maintenance": [
            {"sites": ["b-maint"], "start": (now - timedelta(hours=1)).strftime(stamp),
             "end": (now + timedelta(hours=2)).strftime(stamp), "reason": MAINTENANCE_REASON}]},
        "sites": SITES,
    }


def _prometheus_config(path: Path) -> None:
    path.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "vcmon",
                            "static_configs": [{"targets": ["127.0.0.1:9470"]}]}]}))


class Province:
    """The namespaces and processes of one scenario; ``with`` tears everything down."""

    def __init__(self, workdir: Path, *, prometheus: bool) -> None:
        self.workdir = workdir
        self.want_prometheus = prometheus
        self.stack = contextlib.ExitStack()
        self.hub = NetNamespace("vcmon-rpt")
        self.far: dict[str, NetNamespace] = {}
        self.started = 0.0

    def __enter__(self) -> Province:
        try:
            self._build()
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def _build(self) -> None:
        self.stack.enter_context(self.hub)
        for name, octet in FAR.items():
            far = self.stack.enter_context(NetNamespace(f"vcmon-rpt{name}"))
            device, far_device = self.hub.link(far, f"198.18.{octet}.1/24", f"198.18.{octet}.2/24")
            for site in SITES:
                address = site["address"]
                if address.startswith(f"198.18.{octet}.") and not address.endswith(".2"):
                    far.ip("address", "add", f"{address}/24", "dev", far_device)
            self.far[name] = far
            # the route check before the first packet: far sites only via our own link
            assert self.hub.route_device(f"198.18.{octet}.2") == device
        for site in SITES:
            if site["address"].startswith("127."):
                assert self.hub.route_device(site["address"]) == "lo"
        config = self.workdir / "inventory.yaml"
        config.write_text(yaml.safe_dump(inventory(datetime.now(ZONE)), allow_unicode=True),
                          encoding="utf-8")
        self.started = time.time()
        self._spawn("vcmon", [sys.executable, "-m", "monitor.cli", "run", "--config",
                              str(config), "--log-format", "json"])
        if self.want_prometheus:
            prometheus = shutil.which("prometheus")
            assert prometheus, "prometheus not found: run tests/run.sh (Debian's prometheus)"
            _prometheus_config(self.workdir / "prometheus.yml")
            self._spawn("prometheus", [
                prometheus, f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                "--web.listen-address=127.0.0.1:9090"])
        self.wait_for(lambda: self.get("/-/ready", raw=True) == b"vcmon is ready.\n", 20)
        if self.want_prometheus:
            self.wait_for(lambda: b"Ready" in self.get("/-/ready", raw=True, base=PROMETHEUS),
                          30)

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        self.stack.callback(log.close)
        proc = subprocess.Popen(self.hub.command(argv), stdout=log, stderr=log,
                                cwd=Path(__file__).parents[2])
        self.stack.callback(stop_process, proc)

    def get(self, path: str, *, raw: bool = False, base: str = DAEMON) -> Any:
        """GET from inside the hub; JSON unless ``raw``. OSError when nothing answers."""
        try:
            with self.hub.entered(), urllib.request.urlopen(base + path, timeout=5) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the connection open until collected otherwise
            raise OSError(f"{base}{path}: HTTP {exc.code}") from None
        return body if raw else json.loads(body)

    def statuses(self) -> dict[str, str]:
        return {s["id"]: s["status"] for s in self.get("/api/v1/sites")["sites"]}

    def wait_for(self, condition: Any, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        last: object = None
        while time.monotonic() < deadline:
            try:
                if condition():
                    return
            except OSError as exc:  # not listening yet
                last = exc
            time.sleep(0.2)
        raise AssertionError(f"not reached within {seconds} s (last error: {last}); "
                             f"logs in {self.workdir}")

    def silence(self, name: str) -> None:
        """Far namespace ``name`` stops answering pings."""
        self.far[name].sysctl("net.ipv4.icmp_echo_ignore_all", "1")

    def run(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        """A command inside the hub (e.g. ``vcmon report``)."""
        return subprocess.run(self.hub.command(argv), capture_output=True, timeout=timeout,
                              check=False, cwd=Path(__file__).parents[2])


@contextlib.contextmanager
def province(workdir: Path, *, prometheus: bool) -> Iterator[Province]:
    with Province(workdir, prometheus=prometheus) as p:
        yield p
