"""The real Alertmanager with the shipped config: one page per broken link.

Each scenario starts Alertmanager on a free loopback port, with the receivers' webhook
URLs pointed at a small HTTP receiver of this test, posts alerts the way Prometheus does
(`POST /api/v2/alerts`), and checks both what Alertmanager says about each alert and
what the receivers got.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from tests.conftest import free_port, stop_process
from tests.deploy.conftest import ALERTMANAGER_CONFIG, tool

pytestmark = pytest.mark.services

WAIT = 20.0  # seconds, for any one condition
T = TypeVar("T")
Key = tuple[str, str, str]  # alertname, site (or instance), severity


class Webhook:
    """Records every notification Alertmanager posts, by receiver."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with webhook._lock:
                    webhook.notifications.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def received(self) -> dict[str, list[set[Key]]]:
        """Per receiver, the firing alerts of each notification."""
        with self._lock:
            out: dict[str, list[set[Key]]] = {}
            for note in self.notifications:
                out.setdefault(note["receiver"], []).append(
                    {key(a["labels"]) for a in note["alerts"] if a["status"] == "firing"})
            return out


def key(labels: dict[str, str]) -> Key:
    return (labels["alertname"], labels.get("site", labels.get("instance", "")),
            labels["severity"])


def config_for_test(webhook_port: int) -> str:
    """The shipped config with two changes: receivers point at the test's webhook, and
    the warnings route is neither limited to office hours (the test would depend on the
    clock) nor held 30 s (the run would be slow)."""
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"http://127.0.0.1:{webhook_port}/{receiver['name']}"
    warnings = [r for r in config["route"]["routes"] if r.get("receiver") == "technicians"]
    assert len(warnings) == 1
    del warnings[0]["active_time_intervals"]
    warnings[0]["group_wait"] = "1s"
    return yaml.safe_dump(config, sort_keys=False)


class Alertmanager:
    def __init__(self, base: str, log: Path) -> None:
        self.base = base
        self.log = log

    def post(self, alerts: list[dict[str, str]]) -> None:
        now = datetime.now(UTC)
        body = [{"labels": labels,
                 "annotations": {"summary": f"{labels['alertname']} {labels.get('site')}"},
                 "startsAt": now.isoformat(),
                 "endsAt": (now + timedelta(minutes=10)).isoformat()} for labels in alerts]
        request = urllib.request.Request(
            f"{self.base}/api/v2/alerts", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200

    def alerts(self) -> dict[Key, dict[str, Any]]:
        with urllib.request.urlopen(f"{self.base}/api/v2/alerts", timeout=5) as response:
            return {key(a["labels"]): a for a in json.loads(response.read())}


def until(condition: Callable[[], T | None], what: str, log: Path | None = None) -> T:
    """Poll ``condition`` until it returns something truthy, at most WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log is not None else ""
            pytest.fail(f"not within {WAIT:.0f} s: {what}\n{tail}")
        time.sleep(0.1)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    hook.thread.start()
    try:
        yield hook
    finally:
        hook.server.shutdown()
        hook.server.server_close()


@pytest.fixture
def alertmanager(tmp_path: Path, webhook: Webhook) -> Iterator[Alertmanager]:
    binary = tool("prometheus-alertmanager", "prometheus-alertmanager")
    if shutil.which("amtool") is None:  # same package: a half-installed one is a setup bug
        pytest.fail("prometheus-alertmanager is installed without amtool")
    config = tmp_path / "alertmanager.yml"
    config.write_text(config_for_test(webhook.port))
    port = free_port()
    log = tmp_path / "alertmanager.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
             "--log.level=debug"],
            stdout=log_file, stderr=subprocess.STDOUT)
    try:
        am = Alertmanager(f"http://127.0.0.1:{port}", log)

        def ready() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"{am.base}/-/ready", timeout=1) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        until(ready, "Alertmanager ready", log)
        yield am
    finally:
        stop_process(proc)


def site_alert(alertname: str, severity: str, site: str, tier: str, district: str,
               instance: str = "127.0.0.1:9470") -> dict[str, str]:
    return {"alertname": alertname, "severity": severity, "site": site, "tier": tier,
            "district": district, "job": "vcmon", "instance": instance}


def down(site: str, tier: str, district: str, **kw: str) -> dict[str, str]:
    name = {"province": "VcmonProvinceDown", "district": "VcmonDistrictUplinkDown"}.get(
        tier, "VcmonSiteDown")
    return site_alert(name, "page", site, tier, district, **kw)


def degraded(severity: str, site: str, tier: str, district: str) -> dict[str, str]:
    return site_alert("VcmonSiteDegraded", severity, site, tier, district)


def check(am: Alertmanager, webhook: Webhook, posted: list[dict[str, str]],
          inhibited: dict[Key, Key], delivered: dict[str, list[set[Key]]]) -> None:
    """After posting, ``inhibited`` (target → source) are suppressed by their source and
    every other alert is active; the receivers got exactly ``delivered``."""
    am.post(posted)

    def listed() -> dict[Key, dict[str, Any]] | None:
        alerts = am.alerts()
        if len(alerts) != len(posted):
            return None
        # the inhibitor learns of a source alert a moment after the API lists it: wait
        # for the targets' status to settle (a target never muted fails below)
        settled = all(alerts[k]["status"]["state"] == "suppressed" for k in inhibited)
        return alerts if settled or time.monotonic() > give_up else None

    give_up = time.monotonic() + 10
    alerts = until(listed, f"Alertmanager lists the {len(posted)} alerts", am.log)
    for labels in posted:
        alert, k = alerts[key(labels)], key(labels)
        if k in inhibited:
            assert alert["status"]["state"] == "suppressed", (k, alert["status"])
            assert alert["status"]["inhibitedBy"] == \
                [alerts[inhibited[k]]["fingerprint"]], (k, alert["status"])
        else:
            assert alert["status"]["state"] == "active", (k, alert["status"])
            assert alert["status"]["inhibitedBy"] == [], (k, alert["status"])

    def complete() -> bool:
        got = webhook.received()
        return all(len(got.get(r, [])) >= len(notes) for r, notes in delivered.items())

    until(complete, f"notifications {delivered}, got {webhook.received()}", am.log)
    # Anything inhibited would have been flushed with the same group_wait; give a
    # straggler a moment to show up before asserting there is none.
    time.sleep(1.0)
    got = webhook.received()
    assert {r: sorted(map(sorted, n)) for r, n in got.items()} == \
        {r: sorted(map(sorted, n)) for r, n in delivered.items()}


def test_district_uplink_down_holds_back_the_sites_behind_it(
        alertmanager: Alertmanager, webhook: Webhook) -> None:
    uplink = down("bn-tpbn", "district", "bn-tpbn")
    behind = [down(f"bn-tpbn-phuong-{name}", "commune", "bn-tpbn")
              for name in ("vu-ninh", "dap-cau", "thi-cau")]
    elsewhere = down("bn-giabinh-tt-gia-binh", "commune", "bn-giabinh")
    check(alertmanager, webhook, [uplink, *behind, elsewhere],
          inhibited={key(site): key(uplink) for site in behind},
          delivered={"oncall-north": [{key(uplink)}], "oncall-south": [{key(elsewhere)}]})


def test_a_page_holds_back_the_warning_for_the_same_site(
        alertmanager: Alertmanager, webhook: Webhook) -> None:
    # In session a degraded site has both; another site's warning still goes out.
    page = degraded("page", "bn-luongtai-xa-an-thinh", "commune", "bn-luongtai")
    warning = degraded("warning", "bn-luongtai-xa-an-thinh", "commune", "bn-luongtai")
    other = degraded("warning", "bn-luongtai-xa-trung-kenh", "commune", "bn-luongtai")
    check(alertmanager, webhook, [page, warning, other],
          inhibited={key(warning): key(page)},
          delivered={"oncall-south": [{key(page)}], "technicians": [{key(other)}]})


def test_degraded_pages_come_one_notification_per_district(
        alertmanager: Alertmanager, webhook: Webhook) -> None:
    # A degraded uplink holds back the degraded sites behind it; degraded sites of a
    # district whose uplink is fine are listed in one page, not one page each.
    uplink = degraded("page", "bn-quevo", "district", "bn-quevo")
    behind = degraded("page", "bn-quevo-xa-phuong-lieu", "commune", "bn-quevo")
    tuson = [degraded("page", f"bn-tuson-phuong-{name}", "commune", "bn-tuson")
             for name in ("dong-ngan", "dinh-bang")]
    check(alertmanager, webhook, [uplink, behind, *tuson],
          inhibited={key(behind): key(uplink)},
          delivered={"oncall-north": [{key(uplink)}, {key(a) for a in tuson}]})


def test_province_down_holds_back_everything_below(
        alertmanager: Alertmanager, webhook: Webhook) -> None:
    province = down("bn-tinh-uy", "province", "bn-tinh-uy")
    below = [down("bn-yenphong", "district", "bn-yenphong"),
             down("bn-luongtai-xa-an-thinh", "commune", "bn-luongtai"),
             down("bn-ca-phong-an-ninh", "unit", "bn-dang-uy-cong-an"),
             degraded("warning", "bn-tuson", "district", "bn-tuson")]
    check(alertmanager, webhook, [province, *below],
          inhibited={key(site): key(province) for site in below},
          delivered={"oncall-province": [{key(province)}]})


def test_a_blind_vcmon_holds_back_its_own_site_alerts(
        alertmanager: Alertmanager, webhook: Webhook) -> None:
    # Two vcmon shards; the one at .1 cannot be scraped, the one at .2 still watches.
    blind = {"alertname": "VcmonExporterDown", "severity": "page", "job": "vcmon",
             "instance": "127.0.0.1:9470"}
    stale = down("bn-tpbn-phuong-vu-ninh", "commune", "bn-tpbn", instance="127.0.0.1:9470")
    seen = down("bn-giabinh-tt-gia-binh", "commune", "bn-giabinh", instance="127.0.0.2:9470")
    check(alertmanager, webhook, [blind, stale, seen],
          inhibited={key(stale): key(blind)},
          delivered={"oncall-province": [{key(blind)}], "oncall-south": [{key(seen)}]})


def test_no_vcmon_metrics_holds_back_every_site_alert(
        alertmanager: Alertmanager, webhook: Webhook) -> None:
    absent = {"alertname": "VcmonExporterAbsent", "severity": "page", "job": "vcmon"}
    sites = [down("bn-tpbn", "district", "bn-tpbn"),
             degraded("warning", "bn-tuson", "district", "bn-tuson")]
    check(alertmanager, webhook, [absent, *sites],
          inhibited={key(site): key(absent) for site in sites},
          delivered={"oncall-province": [{key(absent)}]})


def test_maintenance_is_told_as_such_and_holds_back_the_sites_alerts(
        alertmanager: Alertmanager, webhook: Webhook) -> None:
    # A reload put the commune into maintenance while its link is still dead: the
    # on-call group hears "in maintenance", never a "resolved" of the down page.
    site = "bn-giabinh-xa-dong-cuu"
    maintenance = site_alert("VcmonSiteInMaintenance", "info", site, "commune", "bn-giabinh")
    dead = down(site, "commune", "bn-giabinh")
    other = down("bn-giabinh-tt-gia-binh", "commune", "bn-giabinh")
    check(alertmanager, webhook, [maintenance, dead, other],
          inhibited={key(dead): key(maintenance)},
          delivered={"oncall-south": [{key(maintenance)}, {key(other)}]})


def test_a_vcmon_settling_holds_back_its_site_alerts_and_is_never_sent(
        alertmanager: Alertmanager, webhook: Webhook) -> None:
    settling = {"alertname": "VcmonStatesSettling", "severity": "none", "job": "vcmon",
                "instance": "127.0.0.1:9470"}
    stale = down("bn-tpbn-phuong-vu-ninh", "commune", "bn-tpbn", instance="127.0.0.1:9470")
    seen = down("bn-giabinh-tt-gia-binh", "commune", "bn-giabinh", instance="127.0.0.2:9470")
    check(alertmanager, webhook, [settling, stale, seen],
          inhibited={key(stale): key(settling)},
          delivered={"oncall-south": [{key(seen)}]})

