"""The paging path end to end with the real binaries: a lab link fails, a page arrives.

vcmon (``vcmon run``) probes seven lab sites (monitor/lab: a network namespace of this
test, answered by the lab's responder), Debian's Prometheus scrapes it and evaluates
the shipped rules (deploy/prometheus/rules/), Debian's Alertmanager routes with a copy
of the shipped alertmanager.yml whose receivers post to a webhook of this test. The
tests break lab links with ``vcmon lab set`` (control.set_site) and check what the
webhook gets and what Alertmanager says.

Faster than in production (the file runs in about 10 minutes, most of it waiting out
the rules' keep_firing_for before each "resolved" and during outages of vcmon): probes
every 200 ms, health judged every second, Prometheus scraping and evaluating every
second (shipped: 2 s). The rules' `for:` values and the pages' group_wait are the shipped ones;
what the Alertmanager copy changes is in ``paging.alertmanager_config``.

Network safety: the lab's addresses are in a /24 of 198.19.128.0/17 (RFC 2544) on the
lab's own namespace; ``ip route get`` must show each leaving through the lab's veth
before vcmon starts. Everything else listens on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.lab import control, netlab
from monitor.lab.netlab import Lab
from monitor.lab.profiles import LabError, Profile
from tests import netns
from tests.deploy.paging import Json, Notification, PagingPath, Webhook, until

pytestmark = [
    pytest.mark.services, pytest.mark.netns, netns.skip_unless_available,
    pytest.mark.skipif(shutil.which("prometheus") is None
                       or shutil.which("prometheus-alertmanager") is None,
                       reason="needs Debian's prometheus and prometheus-alertmanager "
                              "(tests/run.sh installs them)"),
]

# seconds, at most, for any one condition: a "resolved" comes a minute after the repair
# (the rules' keep_firing_for) plus the group's group_interval
WAIT = 100.0

PROVINCE, NORTH, SOUTH = "bn-tinh-uy", "bn-tpbn", "bn-giabinh"
BEHIND_NORTH = ["bn-tpbn-phuong-vu-ninh", "bn-tpbn-phuong-dap-cau"]
LOST = "bn-giabinh-tt-gia-binh"  # goes down on its own
SLOW = "bn-giabinh-xa-dong-cuu"  # degraded
SITES: list[Json] = [
    {"id": PROVINCE, "name": "Hội trường Tỉnh ủy Bắc Ninh", "tier": "province"},
    {"id": NORTH, "name": "Hội trường Thành ủy Bắc Ninh", "tier": "district",
     "parent": PROVINCE},
    {"id": BEHIND_NORTH[0], "name": "UBND phường Vũ Ninh", "tier": "commune", "parent": NORTH},
    {"id": BEHIND_NORTH[1], "name": "UBND phường Đáp Cầu", "tier": "commune", "parent": NORTH},
    {"id": SOUTH, "name": "Huyện ủy Gia Bình", "tier": "district", "parent": PROVINCE},
    {"id": LOST, "name": "UBND thị trấn Gia Bình", "tier": "commune", "parent": SOUTH,
     "contact": {"name": "Nguyễn Văn A", "phone": "0912 345 678"}},
    # its own RTT limit, so that a 200 ms lab delay degrades it within a probe timeout
    {"id": SLOW, "name": "UBND xã Đông Cứu", "tier": "commune", "parent": SOUTH,
     "thresholds": {"rtt": "100ms"}},
]
DELAY = {"province": 0.002, "district": 0.005, "commune": 0.010}


def schedule(in_session: bool) -> Json:
    """A session on now, or only yesterday's (far outside its 60 min pre-flight)."""
    now = datetime.now(UTC)

    def at(minutes: int) -> str:
        return (now + timedelta(minutes=minutes)).isoformat(timespec="seconds")

    if in_session:
        return {"conferences": [{"name": "phien-sang", "start": at(-10), "end": at(50)}]}
    return {"conferences": [{"name": "phien-hom-qua", "start": at(-24 * 60),
                             "end": at(-23 * 60)}]}


def document() -> Json:
    return {
        "defaults": {"interval": "200ms", "timeout": "500ms", "window": "4s"},
        "health": {"evaluate_every": "1s", "enter_after": 2, "leave_after": 2},
        "schedule": schedule(in_session=False),
        "sites": SITES,
    }


@dataclass
class World:
    lab: Lab
    path: PagingPath
    webhook: Webhook
    # site id → address, name as the lab's inventory has them
    sites: dict[str, Json]

    def set(self, site: str, *words: str) -> None:
        control.set_site(self.lab, site, list(words))

    def wait(self, what: str, condition: Any) -> Any:
        try:
            return until(condition, what, WAIT, self.path.alive())
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.path.tail()}") from None

    def pages_since(self, start: float) -> list[tuple[Notification, Json]]:
        return [(note, alert) for note, alert in self.webhook.pages() if note.at >= start]

    def switch_session(self, in_session: bool) -> None:
        """Rewrite the inventory's schedule and reload vcmon (SIGHUP)."""
        inventory = self.path.inventory
        text = yaml.safe_load(inventory.read_text(encoding="utf-8"))
        text["schedule"] = schedule(in_session)
        temporary = inventory.with_suffix(".tmp")
        temporary.write_text(yaml.safe_dump(text, allow_unicode=True), encoding="utf-8")
        temporary.replace(inventory)
        self.path.reload_vcmon()

    def set_maintenance(self, site: str | None) -> None:
        """Put ``site`` into a maintenance window (None: no window) and reload vcmon."""
        inventory = self.path.inventory
        text = yaml.safe_load(inventory.read_text(encoding="utf-8"))
        now = datetime.now(UTC)
        text["schedule"]["maintenance"] = [] if site is None else [
            {"sites": [site], "start": (now - timedelta(minutes=1)).isoformat(timespec="seconds"),
             "end": (now + timedelta(minutes=30)).isoformat(timespec="seconds"),
             "reason": "thay bộ định tuyến"}]
        temporary = inventory.with_suffix(".tmp")
        temporary.write_text(yaml.safe_dump(text, allow_unicode=True), encoding="utf-8")
        temporary.replace(inventory)
        self.path.reload_vcmon()

    def status(self, site: str) -> str | None:
        """What Prometheus last scraped as the site's status."""
        found = self.path.query(f'vcmon_site_status{{site="{site}"}} == 1')
        return found[0]["metric"]["status"] if found else None

    def fired(self, alertname: str, selector: str, minutes: int = 5) -> list[Json]:
        """The alert's series in Prometheus's ALERTS over the last minutes (pending or
        firing): empty means Prometheus never raised it."""
        return self.path.query(
            f'count_over_time(ALERTS{{alertname="{alertname}", {selector}}}[{minutes}m])')


def make_lab() -> Lab:
    """A lab named vcpg-XXXX on a random /24 of 198.19.128.0/17 (where test labs live)."""
    block = 198 << 24 | 19 << 16 | (128 + secrets.randbelow(128)) << 8
    return Lab(name=f"vcpg-{secrets.token_hex(3)}", network=ipaddress.IPv4Network((block, 24)))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp: Path = tmp_path_factory.mktemp("paging")
    inventory = tmp / "inventory.yaml"
    profiles = {s["id"]: Profile(label=s["tier"], delay=DELAY[s["tier"]]) for s in SITES}
    with contextlib.ExitStack() as stack:
        webhook = Webhook()
        stack.callback(webhook.close)
        lab = None
        for _ in range(3):  # another test's lab may hold the /24 we drew
            candidate = make_lab()
            # registered before up(): whatever up() made is taken down again
            stack.callback(control.down, candidate)
            try:
                control.up(candidate, document(), profiles, inventory=inventory)
            except LabError:
                continue
            lab = candidate
            break
        assert lab is not None, "could not bring a lab up on three random /24s"
        written = yaml.safe_load(inventory.read_text(encoding="utf-8"))
        addresses = [site["address"] for site in written["sites"]]
        # Before the first probe: every site is in the lab and routed into its namespace.
        assert all(ipaddress.IPv4Address(a) in lab.network for a in addresses), addresses
        netlab.check_routes(lab, addresses)
        assert {netlab.route_devices(addresses)[a] for a in addresses} == {lab.host_link}

        path = PagingPath(tmp, inventory, webhook, interval="1s", for_test=True)
        stack.enter_context(path.running())
        world = World(lab, path, webhook, {s["id"]: s for s in written["sites"]})
        world.wait("Prometheus sees every site ok", lambda: world.path.query(
            f'sum(vcmon_site_status{{status="ok"}}) == {len(SITES)}'))
        # Prometheus drops the alerts it evaluates before it has discovered its
        # Alertmanager (and sends them again only after --rules.alert.resend-delay, 1 m)
        world.wait("Prometheus sends to Alertmanager", path.alertmanager_discovered)
        yield world


def test_a_commune_down_pages_once_with_its_name_and_district(world: World) -> None:
    start = time.monotonic()
    world.set(LOST, "down")
    try:
        world.wait(f"a page for {LOST}", lambda: world.webhook.about("VcmonSiteDown", LOST))
        # anything that would come with it has had its group_wait
        time.sleep(2.0)
    finally:
        world.set(LOST, "up")
    [(note, alert)] = world.pages_since(start)
    assert note.receiver == "oncall-south"
    labels = alert["labels"]
    assert (labels["alertname"], labels["site"], labels["tier"], labels["district"]) == \
        ("VcmonSiteDown", LOST, "commune", SOUTH)
    assert labels["name"] == "UBND thị trấn Gia Bình"
    assert labels["address"] == world.sites[LOST]["address"]
    assert alert["annotations"]["summary"] == f"Site DOWN: UBND thị trấn Gia Bình ({LOST})"
    assert alert["annotations"]["contact"] == "Nguyễn Văn A, 0912 345 678"

    # recovery: a "resolved" for the same alert, and still exactly one page
    world.wait(f"the resolved notification for {LOST}",
               lambda: world.webhook.about("VcmonSiteDown", LOST, "resolved"))
    assert world.status(LOST) == "ok"
    assert len(world.pages_since(start)) == 1, world.pages_since(start)


def test_a_district_uplink_down_pages_once_and_holds_back_its_communes(world: World) -> None:
    start = time.monotonic()
    world.set(NORTH, "down")
    posted = {"alertname": "VcmonSiteDown", "severity": "page", "job": "vcmon",
              "instance": world.path.vcmon, "site": BEHIND_NORTH[0], "tier": "commune",
              "district": NORTH, "provision": "vnpt", "status": "down",
              "name": "UBND phường Vũ Ninh", "address": world.sites[BEHIND_NORTH[0]]["address"]}
    try:
        [(note, alert)] = world.wait(
            f"a page for {NORTH}", lambda: world.webhook.about("VcmonDistrictUplinkDown", NORTH))
        assert note.receiver == "oncall-north"
        assert alert["labels"]["name"] == "Hội trường Thành ủy Bắc Ninh"
        assert "2 sites behind it are unreachable" in alert["annotations"]["description"]
        # vcmon calls the communes unreachable, not down
        assert {world.status(site) for site in BEHIND_NORTH} == {"unreachable"}

        am = {a["labels"]["alertname"]: a for a in world.path.am_alerts()
              if a["labels"].get("site") == NORTH}
        source = am["VcmonDistrictUplinkDown"]
        assert source["status"]["state"] == "active"
        # Any commune alert that reached Alertmanager is held back by the uplink's.
        # With vcmon's hold none should fire at all (checked below).
        for a in world.path.am_alerts():
            if a["labels"].get("site") in BEHIND_NORTH:
                assert a["status"]["inhibitedBy"] == [source["fingerprint"]], a

        # Second line: a commune page posted while the uplink's alert fires, as if vcmon
        # had called the commune down, is suppressed by the real config's inhibit rule.
        world.path.am_post(posted, ends_in=120)

        def inhibited() -> Json | None:
            found = [a for a in world.path.am_alerts()
                     if a["labels"]["alertname"] == "VcmonSiteDown"
                     and a["labels"]["site"] == BEHIND_NORTH[0]]
            return found[0] if found and found[0]["status"]["state"] == "suppressed" else None

        held = world.wait("Alertmanager holds the posted commune alert back", inhibited)
        assert held["status"]["inhibitedBy"] == [source["fingerprint"]]
        time.sleep(3.0)  # its group_wait (1 s) is long over: it would have been sent
        assert world.webhook.about("VcmonSiteDown", BEHIND_NORTH[0]) == []
    finally:
        # resolved before the uplink's alert goes, so that nothing is left to send
        world.path.am_post(posted, ends_in=0)
        world.set(NORTH, "up")

    world.wait(f"the resolved notification for {NORTH}",
               lambda: world.webhook.about("VcmonDistrictUplinkDown", NORTH, "resolved"))
    world.wait("the communes ok again in Prometheus",
               lambda: {world.status(site) for site in BEHIND_NORTH} == {"ok"})
    time.sleep(2.0)  # a commune page after the uplink's recovery would be here by now
    pages = world.pages_since(start)
    assert [(n.receiver, a["labels"]["alertname"], a["labels"]["site"]) for n, a in pages] == \
        [("oncall-north", "VcmonDistrictUplinkDown", NORTH)]
    # vcmon's hold: the communes were never down, so Prometheus never raised their alert
    assert world.fired("VcmonSiteDown", f'district="{NORTH}"') == []
    # vcmon's log (unknown → ok at start is not logged at info level)
    changes = [(e["before"], e["after"]) for e in world.path.state_changes()
               if e["site"] in BEHIND_NORTH]
    assert sorted(set(changes)) == [("ok", "unreachable"), ("unreachable", "ok")], changes


def test_a_degraded_link_warns_outside_a_session_and_pages_in_one(world: World) -> None:
    start = time.monotonic()
    world.set(SLOW, "delay=200ms")
    try:
        # Outside a session: a warning for the technicians (30 s `for:`), no page.
        [(note, alert)] = world.wait(f"a warning for {SLOW}", lambda: world.webhook.about(
            "VcmonSiteDegraded", SLOW, severity="warning"))
        assert note.receiver == "technicians"
        assert alert["annotations"]["summary"] == f"Link degraded: UBND xã Đông Cứu ({SLOW}): rtt"
        assert world.pages_since(start) == []
        assert world.fired("VcmonSiteDegraded", 'severity="page"') == []

        # A session starts (vcmon reloads its schedule): the same link now pages.
        world.switch_session(in_session=True)
        [(note, alert)] = world.wait(f"a page for {SLOW}", lambda: world.webhook.about(
            "VcmonSiteDegraded", SLOW, severity="page"))
        assert note.receiver == "oncall-south"
        assert alert["labels"]["district"] == SOUTH
        # the page holds back the warning about the same site
        am = {a["labels"]["severity"]: a for a in world.path.am_alerts()
              if a["labels"]["alertname"] == "VcmonSiteDegraded"
              and a["labels"]["site"] == SLOW}
        assert am["warning"]["status"]["inhibitedBy"] == [am["page"]["fingerprint"]]
    finally:
        world.set(SLOW, f"delay={DELAY['commune'] * 1000:g}ms")

    world.wait(f"the resolved notification for {SLOW}'s page", lambda: world.webhook.about(
        "VcmonSiteDegraded", SLOW, "resolved", severity="page"))
    world.switch_session(in_session=False)
    assert world.status(SLOW) == "ok"
    pages = world.pages_since(start)
    assert [(n.receiver, a["labels"]["alertname"], a["labels"]["site"]) for n, a in pages] == \
        [("oncall-south", "VcmonSiteDegraded", SLOW)]
    assert len([n for n in world.webhook.notes() if n.receiver == "technicians"
                and n.at >= start and n.alerts()]) == 1


def test_maintenance_by_reload_is_told_as_such_not_resolved(world: World) -> None:
    """A dead link put into maintenance by a reload: the on-call group hears "in
    maintenance", never "resolved", while the link is still dead."""
    start = time.monotonic()
    world.set(LOST, "down")
    try:
        world.wait(f"a page for {LOST}", lambda: world.webhook.about("VcmonSiteDown", LOST))
        reloaded = time.monotonic()
        world.set_maintenance(LOST)
        [(note, alert)] = world.wait("the maintenance notification", lambda: world.webhook.about(
            "VcmonSiteInMaintenance", LOST))
        assert note.receiver == "oncall-south"
        assert alert["labels"]["severity"] == "info"
        assert alert["annotations"]["summary_vi"].startswith("Đang bảo trì (chưa khắc phục)")
        # past keep_firing_for and a group_interval: a "resolved" would be here by now
        time.sleep(max(0.0, reloaded + 75.0 - time.monotonic()))
        assert world.status(LOST) == "maintenance"
        assert [n for n, _ in world.webhook.about("VcmonSiteDown", LOST, "resolved")
                if n.at >= start] == []
    finally:
        world.set_maintenance(None)
        world.set(LOST, "up")
    world.wait(f"{LOST} ok again", lambda: world.status(LOST) == "ok")


def test_no_site_alert_resolves_because_vcmon_or_prometheus_stopped(world: World) -> None:
    """A dead commune and a degraded one stay firing through vcmon stopped (SIGTERM),
    vcmon killed (SIGKILL) and a Prometheus restart: zero "resolved" while the links
    are still bad; VcmonExporterDown pages instead. Runs last: it restarts vcmon."""
    stopped_for = 75.0  # past keep_firing_for (1 m) and a group_interval
    start = time.monotonic()
    world.switch_session(in_session=False)
    world.set(LOST, "down")
    world.set(SLOW, "delay=200ms")
    timing: list[str] = []

    def resolved() -> list[tuple[str, str]]:
        return [(alert["labels"]["alertname"], alert["labels"]["site"])
                for note in world.webhook.notes() if note.at >= start
                for alert in note.alerts("resolved")
                if alert["labels"].get("site") in (LOST, SLOW)
                and alert["labels"]["alertname"] != "VcmonSiteInMaintenance"]

    def bad_again() -> bool:
        return world.status(LOST) == "down" and world.status(SLOW) == "degraded"

    try:
        world.wait(f"a page for {LOST}", lambda: world.webhook.about("VcmonSiteDown", LOST))
        world.wait(f"a warning for {SLOW}", lambda: world.webhook.about(
            "VcmonSiteDegraded", SLOW, severity="warning"))

        stop = time.monotonic()
        world.path.stop("vcmon", signal.SIGTERM)
        [(note, _)] = world.wait("VcmonExporterDown pages", lambda: [
            (n, a) for n, a in world.pages_since(stop)
            if a["labels"]["alertname"] == "VcmonExporterDown"])
        timing.append(f"vcmon stopped → VcmonExporterDown page {note.at - stop:.1f} s")
        time.sleep(max(0.0, stop + stopped_for - time.monotonic()))
        assert resolved() == [], resolved()
        world.path.restart("vcmon")
        world.wait("the links bad again in Prometheus", bad_again)
        timing.append(f"vcmon stopped {time.monotonic() - stop:.0f} s in all: 0 resolved")

        kill = time.monotonic()
        world.path.stop("vcmon", signal.SIGKILL)  # the scrape target dies
        time.sleep(10.0)
        world.path.restart("vcmon")
        world.wait("the links bad again in Prometheus", bad_again)
        time.sleep(max(0.0, kill + stopped_for - time.monotonic()))
        assert resolved() == [], resolved()
        timing.append(f"vcmon killed, back after 10 s, watched {time.monotonic() - kill:.0f} s: "
                      "0 resolved")

        restart = time.monotonic()
        world.path.stop("prometheus", signal.SIGTERM)
        world.path.restart("prometheus")
        world.wait("Prometheus sends to Alertmanager again", world.path.alertmanager_discovered)
        time.sleep(max(0.0, restart + stopped_for - time.monotonic()))
        assert resolved() == [], resolved()
        timing.append(f"Prometheus restarted, watched {time.monotonic() - restart:.0f} s: "
                      "0 resolved")
        # still firing in Alertmanager, not expired
        firing = {(a["labels"]["alertname"], a["labels"].get("site"))
                  for a in world.path.am_alerts() if a["status"]["state"] != "unprocessed"}
        assert ("VcmonSiteDown", LOST) in firing, firing
    finally:
        world.set(LOST, "up")
        world.set(SLOW, f"delay={DELAY['commune'] * 1000:g}ms")
        print("\n".join(timing))

