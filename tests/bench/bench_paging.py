"""Paging benchmark: time from a lab link failing to the page reaching a webhook.

Not part of the test run; it prints figures. Run as root from the repository root
(about 20 s per failure):

    .venv/bin/python tests/bench/bench_paging.py

Everything is the SHIPPED configuration: vcmon with the default probe settings
(interval 1 s, timeout 1 s, down_after 3) and health settings, Debian's Prometheus with
deploy/prometheus/prometheus.yml (its scrape and evaluation interval) and the rules of
deploy/prometheus/rules/, Debian's Alertmanager with deploy/alertmanager/alertmanager.yml;
only ports, paths and the webhook URLs (a receiver of this script on 127.0.0.1) differ.
vcmon probes a lab (namespace ``vcmon-pbench`` on 198.18.254.0/24, addresses checked
with ``ip route get`` before the first probe): a province hall, four district-level
points (the routes' on-call groups) and four communes or units behind each.

Each failure, on a site never failed before in the run (a site's Alertmanager group
outlives its alert, and a second failure would wait group_interval, not group_wait):
wait a random 0-5 s (so failures fall at every phase of the probes, scrapes and
evaluations), ``lab set SITE down``, time the page's arrival at the webhook, ``lab set
SITE up``, wait until Prometheus sees the site ok again (its "resolved" comes a minute
later, after the rules' keep_firing_for; the next failure is on another site). Per
failure it prints the page latency and its parts: vcmon reporting the site down (its
log), Prometheus making the alert active (``activeAt``, the evaluation's time), the
webhook. Pages for any other site are counted: there should be none (the communes
behind a down district are ``unreachable``).

Prometheus fixes the phase between its scrape of vcmon and its evaluation of the rules
from hashes (of the target, the host name, the rule group): an evaluation uses the
sample of the last scrape before it, so every page waits that phase once. The run
prints it; the same failures with the worst phase (evaluation just before a scrape)
would take (interval − phase) longer, printed as an estimate.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from monitor.inventory import load_config
from monitor.lab import control, netlab
from monitor.lab.netlab import Lab
from monitor.lab.profiles import Profile
from monitor.status.health import HealthTracker
from tests.bench.service import require_root
from tests.deploy.conftest import ALERTMANAGER_CONFIG, PROMETHEUS_DIR
from tests.deploy.paging import Json, PagingPath, Webhook, go_timestamp, until

LAB = Lab(name="vcmon-pbench", network=ipaddress.IPv4Network("198.18.254.0/24"))
WAIT = 60.0
DOWN_ALERT = {"province": "VcmonProvinceDown", "district": "VcmonDistrictUplinkDown",
              "commune": "VcmonSiteDown", "unit": "VcmonSiteDown"}
DELAY = {"province": 0.003, "district": 0.010, "commune": 0.030, "unit": 0.030}
DISTRICTS = [("bn-tpbn", "Thành ủy Bắc Ninh", "commune"),
             ("bn-giabinh", "Huyện ủy Gia Bình", "commune"),
             ("bn-tuson", "Thị ủy Từ Sơn", "commune"),
             ("bn-dang-uy-quan-su", "Đảng ủy Quân sự tỉnh", "unit")]


def sites() -> list[Json]:
    found: list[Json] = [{"id": "bn-tinh-uy", "name": "Hội trường Tỉnh ủy", "tier": "province"}]
    for district, name, tier in DISTRICTS:
        found.append({"id": district, "name": name, "tier": "district", "parent": "bn-tinh-uy"})
        found += [{"id": f"{district}-c{i}", "name": f"{name}: điểm cầu {i}", "tier": tier,
                   "parent": district} for i in range(1, 5)]
    return found


@dataclass
class Failure:
    site: str
    tier: str
    page: float  # s from the failure to the webhook
    vcmon: float | None  # s to vcmon's state_change to down
    active: float | None  # s to Prometheus's activeAt
    others: int  # pages for other sites during this failure
    phase: float | None  # scrape → evaluation, s


def _wall(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def one_failure(path: PagingPath, webhook: Webhook, site: Json, rng: random.Random) -> Failure:
    alertname = DOWN_ALERT[site["tier"]]
    time.sleep(rng.uniform(0.0, 5.0))
    pages_before = len(webhook.pages())
    changes_before = len(path.state_changes())
    wall, start = time.time(), time.monotonic()
    control.set_site(LAB, site["id"], ["down"])
    try:
        [(note, _alert)] = until(lambda: webhook.about(alertname, site["id"]),
                                 f"the page for {site['id']}", WAIT, path.alive())
        active = [a for a in path.prometheus_alerts()
                  if a["labels"]["alertname"] == alertname
                  and a["labels"].get("site") == site["id"]]
    finally:
        control.set_site(LAB, site["id"], ["up"])
    until(lambda: path.query(f'vcmon_site_status{{site="{site["id"]}", status="ok"}} == 1'),
          f"{site['id']} ok again in Prometheus", WAIT, path.alive())
    down = [e for e in path.state_changes()[changes_before:]
            if e["site"] == site["id"] and e["after"] == "down"]
    others = [a for _, a in webhook.pages()[pages_before:] if a["labels"].get("site") != site["id"]]
    return Failure(site["id"], site["tier"], note.at - start,
                   _wall(down[0]["timestamp"]) - wall if down else None,
                   go_timestamp(active[0]["activeAt"]) - wall if active else None,
                   len(others), path.phase())


def summary(name: str, values: list[float]) -> str:
    return (f"{name:<10} {len(values):>3}  {min(values):6.1f}  {statistics.median(values):6.1f}"
            f"  {max(values):6.1f}")


def configuration(inventory: Path) -> list[str]:
    config = load_config(str(inventory))
    defaults, health = config.defaults, config.health
    tracker = HealthTracker(config, time.time())
    hold = max(h.hold for h in tracker.sites.values())
    prometheus = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())["global"]
    rules = [rule for group in yaml.safe_load(
        (PROMETHEUS_DIR / "rules" / "vcmon-alerts.yml").read_text())["groups"]
        for rule in group["rules"] if rule.get("alert") in DOWN_ALERT.values()]
    route = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())["route"]
    return [
        f"  vcmon (defaults): interval {defaults.interval:g} s, timeout {defaults.timeout:g} s, "
        f"down_after {defaults.down_after}, recover_after {health.recover_after}, health tick "
        f"{min(1.0, defaults.interval):g} s, hold (sites below the province) {hold:g} s",
        f"  prometheus.yml: scrape_interval {prometheus['scrape_interval']}, "
        f"evaluation_interval {prometheus['evaluation_interval']}",
        "  vcmon-alerts.yml for: " + ", ".join(f"{r['alert']} {r.get('for', '0s')}"
                                              for r in rules),
        f"  alertmanager.yml (pages): group_wait {route['group_wait']}, group_interval "
        f"{route['group_interval']}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--communes", type=int, default=12, help="commune/unit failures (12)")
    parser.add_argument("--districts", type=int, default=4, help="district failures (4)")
    parser.add_argument("--province", type=int, default=1, choices=(0, 1),
                        help="province hall failures (1)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    require_root("bench_paging.py", "network namespaces, raw sockets")
    for binary in ("prometheus", "prometheus-alertmanager"):
        if shutil.which(binary) is None:
            print(f"{binary} not found: install Debian's {binary}", file=sys.stderr)
            return 2
    rng = random.Random(args.seed)
    document = {"sites": sites()}
    by_tier: dict[str, list[Json]] = {}
    for site in document["sites"]:
        by_tier.setdefault("district" if site["tier"] == "district" else
                           "province" if site["tier"] == "province" else "commune",
                           []).append(site)
    communes = by_tier["commune"]
    # three of each district's four communes, round robin over the districts
    order = [communes[d * 4 + i] for i in range(3) for d in range(len(DISTRICTS))]
    plan = (order[:args.communes] + by_tier["district"][:args.districts]
            + by_tier["province"][:args.province])
    if args.communes > len(order) or args.districts > len(DISTRICTS):
        parser.error(f"at most {len(order)} communes and {len(DISTRICTS)} districts")
    profiles = {s["id"]: Profile(label=s["tier"], delay=DELAY[s["tier"]])
                for s in document["sites"]}
    failures: list[Failure] = []
    with tempfile.TemporaryDirectory(prefix="bench-paging-") as directory:
        tmp = Path(directory)
        inventory = tmp / "inventory.yaml"
        control.down(LAB)  # what a killed run left
        webhook = Webhook()
        try:
            control.up(LAB, document, profiles, inventory=inventory)
            addresses = [s["address"] for s in yaml.safe_load(inventory.read_text())["sites"]]
            # Before the first probe: every site in the lab, routed into its namespace.
            assert all(ipaddress.IPv4Address(a) in LAB.network for a in addresses)
            netlab.check_routes(LAB, addresses)
            path = PagingPath(tmp, inventory, webhook, interval=None, for_test=False)
            with path.running():
                until(lambda: path.query(f'sum(vcmon_site_status{{status="ok"}}) == '
                                         f'{len(addresses)}'), "every site ok", WAIT,
                      path.alive())
                until(path.alertmanager_discovered, "Prometheus sends to Alertmanager", WAIT,
                      path.alive())
                print(f"vcmon paging benchmark: {len(plan)} link failures, lab {LAB.network} "
                      f"({LAB.name}), {len(addresses)} sites, seed {args.seed}")
                print("configuration (shipped):")
                print("\n".join(configuration(inventory)))
                print(f"{'#':>2}  {'site':<24} {'tier':<8} {'page s':>6}  {'vcmon down':>10}"
                      f"  {'alert active':>12}  {'phase':>5}  other pages", flush=True)
                for n, site in enumerate(plan, 1):
                    f = one_failure(path, webhook, site, rng)
                    failures.append(f)
                    print(f"{n:>2}  {f.site:<24} {f.tier:<8} {f.page:6.1f}  "
                          f"{_opt(f.vcmon):>10}  {_opt(f.active):>12}  {_opt(f.phase):>5}  "
                          f"{f.others}", flush=True)
        finally:
            webhook.close()
            control.down(LAB)
    _report(failures, seconds(yaml.safe_load(
        (PROMETHEUS_DIR / "prometheus.yml").read_text())["global"]["evaluation_interval"]))
    return 0


def _opt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def seconds(duration: str) -> float:
    assert duration.endswith("s") and duration[:-1].isdigit(), duration
    return float(duration[:-1])


def _report(failures: list[Failure], interval: float) -> None:
    print("link failing → page at the webhook, seconds:")
    print(f"{'tier':<10} {'n':>3}  {'min':>6}  {'median':>6}  {'max':>6}")
    for tier in ("province", "district", "commune", "unit"):
        values = [f.page for f in failures if f.tier == tier]
        if values:
            print(summary(tier, values))
    print(summary("all", [f.page for f in failures]))
    phases = [f.phase for f in failures if f.phase is not None]
    if phases:
        phase = statistics.median(phases)
        worst = [f.page + (interval - phase) for f in failures]
        print(f"scrape → evaluation phase {phase:.1f} s (of {interval:g}); estimated with the "
              f"worst phase (+{interval - phase:.1f} s): median {statistics.median(worst):.1f}, "
              f"max {max(worst):.1f}")
    others = sum(f.others for f in failures)
    print(f"pages for other sites during the failures: {others}")
    vcmon = [f.vcmon for f in failures if f.vcmon is not None]
    if vcmon:
        print(f"vcmon alone (link failing → state_change down): min {min(vcmon):.1f}, median "
              f"{statistics.median(vcmon):.1f}, max {max(vcmon):.1f} s")


if __name__ == "__main__":
    sys.exit(main())

