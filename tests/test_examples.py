"""The examples people copy: every site id in the docs and the shipped configuration,
and every district in the Alertmanager routing, exists in the demo inventory, so an
example never falls through to the wrong on-call group; the 240-row spreadsheet
example (deploy/examples/bacninh-240.csv) is the demo inventory and passes check-config."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
import yaml

from monitor.cli import main
from monitor.inventory import Config, default_config

ROOT = Path(__file__).resolve().parents[1]
CSV_EXAMPLE = ROOT / "deploy" / "examples" / "bacninh-240.csv"
# The spreadsheet's columns, in the order docs/inventory.md#from-the-provinces-spreadsheet
# explains them (district is left to vcmon: the nearest district-level site above).
COLUMNS = ("id", "name", "tier", "parent", "provision", "address", "contact_name",
           "contact_phone", "contact_email", "contractor", "contract_reference")
# Where people read ids: the docs, the README, the example inventory, the routing.
EXAMPLES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md",
            ROOT / "deploy" / "vcmon.example.yaml",
            ROOT / "deploy" / "alertmanager" / "alertmanager.yml"]
# A demo-style id: "bn-" then words (ids made up to show a shape are not "bn-" ids).
DEMO_ID = re.compile(r"\bbn-[a-z0-9-]*[a-z0-9]")


def spreadsheet(config: Config) -> str:
    """The inventory as the province's spreadsheet would hold it, one site per row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for site in config.sites:
        contact, contract = site.contact, site.contract
        writer.writerow([site.id, site.name, site.tier, site.parent or "", site.provision,
                         site.address, contact.name if contact else "",
                         contact.phone or "" if contact else "",
                         contact.email or "" if contact else "",
                         contract.contractor if contract else "",
                         contract.reference or "" if contract else ""])
    return out.getvalue()


def test_the_csv_example_is_the_demo_inventory() -> None:
    expected = spreadsheet(default_config())
    assert CSV_EXAMPLE.read_bytes().decode("utf-8") == expected, \
        "regenerate: python -c 'from tests.test_examples import write; write()'"


def test_the_csv_example_passes_check_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(CSV_EXAMPLE)]) == 0
    assert capsys.readouterr().out == f"{CSV_EXAMPLE}: ok (240 sites)\n"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_id_is_a_demo_site(path: Path) -> None:
    ids = {site.id for site in default_config().sites}
    unknown = sorted(set(DEMO_ID.findall(path.read_text(encoding="utf-8"))) - ids)
    assert unknown == [], f"{path.name} names sites the demo inventory does not have"


def test_every_routed_district_is_a_demo_district() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "alertmanager" / "alertmanager.yml").read_text())
    routed = set()
    for route in config["route"]["routes"]:
        for sub in route.get("routes", []):
            for matcher in sub["matchers"]:
                found = re.fullmatch(r'district=~"([^"]+)"', matcher)
                if found:
                    routed |= set(found[1].split("|"))
    districts = {site.id for site in default_config().sites if site.tier == "district"}
    assert routed == districts


def write() -> None:
    """Regenerate the CSV example from the demo inventory."""
    CSV_EXAMPLE.write_text(spreadsheet(default_config()), encoding="utf-8")
