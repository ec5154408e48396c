"""alertmanager.yml: amtool's check, and where each kind of alert is routed."""

from __future__ import annotations

import pytest
import yaml

from tests.deploy.conftest import ALERTMANAGER_CONFIG, ROOT, run, tool

INVENTORY = ROOT / "monitor" / "data" / "default-inventory.yaml"


def amtool() -> str:
    return tool("amtool", "prometheus-alertmanager")


def receivers_for(labels: dict[str, str], expected: str) -> str:
    """amtool's answer; fails with its output when it is not ``expected``."""
    done = run([amtool(), "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
                f"--verify.receivers={expected}",
                *(f"{name}={value}" for name, value in labels.items())])
    assert done.returncode == 0, f"{labels}: {done.stdout}{done.stderr}"
    return done.stdout.strip()


def test_config_is_valid() -> None:
    done = run([amtool(), "check-config", str(ALERTMANAGER_CONFIG)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def site(alertname: str, severity: str, tier: str, district: str) -> dict[str, str]:
    return {"alertname": alertname, "severity": severity, "tier": tier, "district": district,
            "site": f"{district}-x" if tier in {"commune", "unit"} else district}


ROUTES = [
    (site("VcmonSiteDown", "page", "commune", "bn-tpbn"), "oncall-north"),
    (site("VcmonDistrictUplinkDown", "page", "district", "bn-quevo"), "oncall-north"),
    (site("VcmonSiteDown", "page", "commune", "bn-giabinh"), "oncall-south"),
    (site("VcmonSiteDegraded", "page", "commune", "bn-luongtai"), "oncall-south"),
    (site("VcmonSiteFlapping", "page", "district", "bn-thuanthanh"), "oncall-south"),
    (site("VcmonSiteDown", "page", "unit", "bn-dang-uy-cong-an"), "oncall-blocs"),
    (site("VcmonProvinceDown", "page", "province", "bn-tinh-uy"), "oncall-province"),
    (site("VcmonSiteDegraded", "page", "province", "bn-tinh-uy"), "oncall-province"),
    # a district the routes do not list yet still pages someone
    (site("VcmonSiteDown", "page", "commune", "bn-new-district"), "oncall-province"),
    ({"alertname": "VcmonExporterDown", "severity": "page", "job": "vcmon"},
     "oncall-province"),
    ({"alertname": "VcmonProbeLoopStalled", "severity": "page", "job": "vcmon"},
     "oncall-province"),
    (site("VcmonSiteDegraded", "warning", "commune", "bn-tpbn"), "technicians"),
    (site("VcmonSiteFlapping", "warning", "province", "bn-tinh-uy"), "technicians"),
    ({"alertname": "Watchdog", "severity": "none"}, "watchdog"),
    # maintenance is told to the site's on-call group, as what it is
    (site("VcmonSiteInMaintenance", "info", "commune", "bn-giabinh"), "oncall-south"),
    (site("VcmonSiteInMaintenance", "info", "district", "bn-tpbn"), "oncall-north"),
    # only there to hold back "resolved" while vcmon is blind: nobody is told
    ({"alertname": "VcmonStatesSettling", "severity": "none", "job": "vcmon"}, "hold-back"),
    ({"alertname": "VcmonConfigReloadFailed", "severity": "warning", "job": "vcmon"},
     "technicians"),
    ({"alertname": "VcmonDroppingReplies", "severity": "warning", "job": "vcmon"},
     "technicians"),
]


@pytest.mark.parametrize(("labels", "receiver"), ROUTES,
                         ids=[f"{labels['alertname']}-{labels.get('district', 'none')}"
                              f"-{labels['severity']}" for labels, _ in ROUTES])
def test_route(labels: dict[str, str], receiver: str) -> None:
    assert receivers_for(labels, receiver) == receiver


# The on-call groups the demo's district-level points belong to.
ONCALL_GROUPS = {
    "oncall-north": {"bn-tpbn", "bn-tuson", "bn-tiendu", "bn-yenphong", "bn-quevo"},
    "oncall-south": {"bn-thuanthanh", "bn-giabinh", "bn-luongtai"},
    "oncall-blocs": {"bn-dang-uy-quan-su", "bn-dang-uy-cong-an", "bn-dang-uy-khoi"},
}


def test_every_district_of_the_demo_inventory_pages_its_oncall_group() -> None:
    sites = yaml.safe_load(INVENTORY.read_text())["sites"]
    districts = {s["id"] for s in sites if s["tier"] == "district"}
    assert districts == set().union(*ONCALL_GROUPS.values())
    for receiver, members in ONCALL_GROUPS.items():
        for district in members:
            receivers_for(site("VcmonDistrictUplinkDown", "page", "district", district),
                          receiver)
            receivers_for(site("VcmonSiteDegraded", "page", "unit", district), receiver)
