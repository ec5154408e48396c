"""The embedded demo inventory and the tree that ``vcmon inventory`` prints."""

from __future__ import annotations

import ipaddress
from collections import Counter

from monitor.inventory import default_config, parse_config
from monitor.report.tree import provision_counts, render_tree, tier_counts

SMALL = """\
sites:
  - {id: hall, name: Hội trường Tỉnh ủy, tier: province, address: 127.10.0.1}
  - {id: tiendu, name: Huyện ủy Tiên Du, tier: district, parent: hall, address: 127.10.5.1}
  - {id: lac-ve, name: UBND xã Lạc Vệ, tier: commune, parent: tiendu, address: 127.10.5.8}
  - {id: qs, name: Đảng ủy Quân sự, tier: district, parent: hall, address: 127.10.9.1,
     provision: contract}
  - {id: lim, name: UBND thị trấn Lim, tier: commune, parent: tiendu, address: vc-lim.example.vn}
  - {id: qs-truong, name: Trường Quân sự, tier: unit, parent: qs, address: "2001:db8::9",
     provision: contract}
  - {id: lim-nvh, name: Nhà văn hóa Lũng Giang, tier: unit, parent: lim, address: 127.10.5.20}
  - {id: lab, name: Phòng thử nghiệm, tier: unit, address: 127.20.0.1}
"""


def test_render_tree() -> None:
    assert render_tree(parse_config(SMALL)) == "\n".join(
        [
            "Hội trường Tỉnh ủy (hall) 127.10.0.1 [province, vnpt]",
            "├── Huyện ủy Tiên Du (tiendu) 127.10.5.1 [district, vnpt]",
            "│   ├── UBND xã Lạc Vệ (lac-ve) 127.10.5.8 [commune, vnpt]",
            "│   └── UBND thị trấn Lim (lim) vc-lim.example.vn [commune, vnpt]",
            "│       └── Nhà văn hóa Lũng Giang (lim-nvh) 127.10.5.20 [unit, vnpt]",
            "└── Đảng ủy Quân sự (qs) 127.10.9.1 [district, contract]",
            "    └── Trường Quân sự (qs-truong) 2001:db8::9 [unit, contract]",
            "Phòng thử nghiệm (lab) 127.20.0.1 [unit, vnpt]",
            "",
            "By tier: province 1, district 2, commune 2, unit 3",
            "By provision: vnpt 6, contract 2",
            "Total: 8 sites",
        ]
    )


def test_counts_list_every_tier_and_provision() -> None:
    config = parse_config(SMALL)
    assert tier_counts(config) == {"province": 1, "district": 2, "commune": 2, "unit": 3}
    assert provision_counts(config) == {"vnpt": 6, "contract": 2}


def test_a_long_chain_of_parents_renders() -> None:
    depth = 1200
    chain = "".join(
        f"  - {{id: s{i}, name: n{i}, tier: unit, parent: s{i - 1}, address: s{i}.example.vn}}\n"
        for i in range(1, depth)
    )
    config = parse_config(
        "sites:\n  - {id: s0, name: n0, tier: province, address: 127.0.9.1}\n" + chain
    )
    lines = render_tree(config).splitlines()
    assert (
        lines[depth - 1]
        == " " * 4 * (depth - 2) + "└── n1199 (s1199) s1199.example.vn [unit, vnpt]"
    )


def test_demo_inventory_is_the_notice_240_sites() -> None:
    config = default_config()
    assert config.source == "<embedded demo>" and config.demo
    assert len(config.sites) == 240
    assert tier_counts(config) == {"province": 1, "district": 11, "commune": 171, "unit": 57}
    assert provision_counts(config) == {"vnpt": 160, "contract": 80}


def test_demo_inventory_shape() -> None:
    config = default_config()
    (hall,) = [site for site in config.sites if site.parent is None]
    assert (hall.id, hall.name, hall.tier) == (
        "bn-tinh-uy",
        "Hội trường Tỉnh ủy Bắc Ninh",
        "province",
    )
    district_level = config.children(hall.id)
    assert len(district_level) == 11 and {s.tier for s in district_level} == {"district"}
    # communes and units hang under a district-level point: 1 + 11 + 228
    below = [child for point in district_level for child in config.children(point.id)]
    assert len(below) == 228
    assert {s.tier for s in below} == {"commune", "unit"}
    assert all(config.children(s.id) == [] for s in below)
    # vnpt: the province hall, the 8 district halls and 151 commune points
    vnpt = Counter(s.tier for s in config.sites if s.provision == "vnpt")
    assert vnpt == {"province": 1, "district": 8, "commune": 151}
    blocs = [s for s in district_level if s.provision == "contract"]
    assert [s.name for s in blocs] == [
        "Hội trường Đảng ủy Quân sự tỉnh",
        "Hội trường Đảng ủy Công an tỉnh",
        "Hội trường Đảng ủy Khối các cơ quan và Doanh nghiệp tỉnh",
    ]
    assert {s.provision for b in blocs for s in config.children(b.id)} == {"contract"}
    for site in config.sites:
        assert (site.contract is not None) == (site.provision == "contract")
        if site.contract is not None:
            assert site.contract.contractor == "VNPT Bắc Ninh"
            assert (site.contract.reference or "").startswith("HĐ-2021/")


def test_demo_addresses_are_distinct_loopback_addresses() -> None:
    addresses = [ipaddress.ip_address(site.address) for site in default_config().sites]
    assert len(set(addresses)) == 240
    assert all(a in ipaddress.ip_network("127.0.0.0/8") for a in addresses)
    assert ipaddress.ip_address("127.0.0.1") not in addresses


def test_demo_names_keep_their_vietnamese_diacritics() -> None:
    names = {site.id: site.name for site in default_config().sites}
    assert names["bn-tiendu-xa-lac-ve"] == "UBND xã Lạc Vệ"
    assert names["bn-tpbn-phuong-dap-cau"] == "UBND phường Đáp Cầu"
    assert names["bn-quevo-xa-phuong-mao"].encode() == "UBND xã Phượng Mao".encode()
    assert all(site.id.isascii() for site in default_config().sites)


def test_demo_settings() -> None:
    config = default_config()
    assert (config.defaults.interval, config.defaults.timeout, config.defaults.window) == (
        1.0,
        1.0,
        60.0,
    )
    assert {site.district for site in config.sites} == {
        s.id for s in config.sites if s.tier in ("district", "province")
    }
