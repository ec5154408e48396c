"""The lab's inventory, its addresses and its topology (no packets: no root needed)."""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.inventory import default_config, load_config
from monitor.lab.netlab import LAB_RANGE, Lab
from monitor.lab.profiles import LabError, Profile
from monitor.lab.responder import Responder
from monitor.lab.sites import inventory_document, relocate, synthetic_inventory
from monitor.lab.state import LabSite, LabState

REPO = Path(__file__).resolve().parents[2]
SMALL = Lab(name="vcmt-unit", network=ipaddress.IPv4Network("198.19.200.0/24"))


@pytest.mark.parametrize(("count", "tiers"), [
    (1, {"province": 1}),
    (2, {"province": 1, "district": 1}),
    (12, {"province": 1, "district": 1, "commune": 10}),
    (240, {"province": 1, "district": 11, "commune": 228}),
    (2000, {"province": 1, "district": 92, "commune": 1907}),
])
def test_synthetic_tree_has_the_provinces_proportions(count: int, tiers: dict[str, int]) -> None:
    document = synthetic_inventory(count)
    _, config = relocate(document, Lab())
    assert Counter(site.tier for site in config.sites) == tiers
    by_id = {site.id: site for site in config.sites}
    for site in config.sites:
        if site.tier == "commune":
            assert site.parent is not None and by_id[site.parent].tier == "district"


def test_addresses_are_the_labs_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, config = relocate(synthetic_inventory(240), Lab())
    addresses = [ipaddress.IPv4Address(site.address) for site in config.sites]
    assert all(address in LAB_RANGE for address in addresses)
    assert len(set(addresses)) == 240
    # the link's /30 is not a site; no address ends in .0 or .255
    assert min(addresses) == ipaddress.IPv4Address("198.18.0.4")
    assert not any(int(address) & 0xFF in (0, 255) for address in addresses)
    assert "RFC 2544" in text.splitlines()[1]
    path = tmp_path / "inventory.yaml"
    path.write_text(text, encoding="utf-8")
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: ok (240 sites)\n"


def test_a_lab_of_no_sites_is_refused() -> None:
    with pytest.raises(LabError, match="--sites 0: a lab needs at least one site"):
        synthetic_inventory(0)


def test_a_network_too_small_is_refused() -> None:
    with pytest.raises(LabError, match="holds 11 lab sites, not 12; use a larger --network"):
        Lab(network=ipaddress.IPv4Network("198.19.0.0/28")).site_addresses(12)


@pytest.mark.parametrize(("name", "network", "message"), [
    ("Vcmon", "198.18.0.0/15", "'Vcmon' is not a lab name"),
    ("a-very-long-name", "198.18.0.0/15", "is not a lab name"),
    ("lab", "10.0.0.0/24", "10.0.0.0/24 is not a lab network; use 198.18.0.0/15"),
    ("lab", "198.16.0.0/14", "is not a lab network"),
    ("lab", "198.18.0.0/30", "/28 or larger"),
])
def test_lab_names_and_networks_are_checked(name: str, network: str, message: str) -> None:
    with pytest.raises(LabError, match=message):
        Lab(name=name, network=ipaddress.IPv4Network(network))


@pytest.mark.parametrize("source", ["monitor/data/default-inventory.yaml",
                                    "tests/inventory/testdata/sites.csv"])
def test_an_inventory_keeps_its_sites_on_lab_addresses(source: str, tmp_path: Path) -> None:
    original = load_config(REPO / source)
    text, config = relocate(inventory_document(str(REPO / source)), SMALL)
    path = tmp_path / "lab.yaml"
    path.write_text(text, encoding="utf-8")
    reloaded = load_config(path)
    for before, after in zip(original.sites, reloaded.sites, strict=True):
        assert after.model_dump(exclude={"address"}) == before.model_dump(exclude={"address"})
        assert ipaddress.IPv4Address(after.address) in SMALL.network
    assert reloaded.defaults == original.defaults
    assert [s.address for s in config.sites] == [s.address for s in reloaded.sites]


def test_the_embedded_demo_fits_the_default_lab() -> None:
    _, config = relocate(inventory_document(str(REPO / "monitor/data/default-inventory.yaml")),
                         Lab())
    assert len(config.sites) == len(default_config().sites) == 240


# --- topology: who answers --------------------------------------------------------

TREE = LabState(sites=[
    LabSite(id="province", address="198.19.200.4"),
    LabSite(id="district", address="198.19.200.5", parent="province"),
    LabSite(id="commune", address="198.19.200.6", parent="district"),
    LabSite(id="unit", address="198.19.200.7", parent="commune"),
    LabSite(id="other", address="198.19.200.8", parent="province"),
])


def answering(state: LabState, now: float = 0.0) -> set[str]:
    responder = Responder(state)
    sites = {site.id: site for site in responder.sites}
    return {site_id for site_id, site in sites.items() if responder.answering(site, now)}


def test_a_down_district_silences_everything_behind_it() -> None:
    assert answering(TREE) == {"province", "district", "commune", "unit", "other"}
    down = TREE.with_profile("district", Profile(down=True))
    assert answering(down) == {"province", "other"}
    assert sorted(TREE.behind("district")) == ["commune", "unit"]
    assert sorted(TREE.behind("province")) == ["commune", "district", "other", "unit"]
    assert answering(TREE.with_profile("province", Profile(down=True))) == set()
    assert answering(TREE.with_profile("unit", Profile(down=True))) == {
        "province", "district", "commune", "other"}


def test_a_flapping_site_is_down_in_the_second_half_of_each_period() -> None:
    flapping = TREE.with_profile("district", Profile(flap=10.0))
    assert "commune" in answering(flapping, now=1000.0)
    assert "commune" in answering(flapping, now=1004.9)
    assert answering(flapping, now=1005.0) == {"province", "other"}
    assert answering(flapping, now=1009.9) == {"province", "other"}
    assert "unit" in answering(flapping, now=time.time() // 10 * 10 + 1)


def test_a_parent_loop_in_a_hand_written_state_does_not_hang() -> None:
    looped = LabState(sites=[LabSite(id="a", address="198.19.200.4", parent="b"),
                             LabSite(id="b", address="198.19.200.5", parent="a")])
    assert answering(looped) == {"a", "b"}


def test_reload_keeps_loss_state_of_unchanged_sites() -> None:
    state = TREE.with_profile("other", Profile(loss=0.5, burst=3))
    responder = Responder(state)
    before = {site.id: site.loss for site in responder.sites}
    responder.apply(state.with_profile("district", Profile(delay=0.01)))
    after = {site.id: site.loss for site in responder.sites}
    assert after["other"] is before["other"]
    responder.apply(state.with_profile("other", Profile(loss=0.2)))
    assert {site.id: site.loss for site in responder.sites}["other"] is not before["other"]


def test_state_lookup_by_id_or_address() -> None:
    assert TREE.find("commune") == TREE.find("198.19.200.6")
    with pytest.raises(LabError, match="the lab has no site 'nowhere'; give a site id or "
                                       r"address \(province, district, commune, unit, other\)"):
        TREE.find("nowhere")
