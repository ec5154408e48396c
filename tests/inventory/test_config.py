"""The inventory loader: models, every problem at once, exact messages with lines."""

from __future__ import annotations

import tempfile
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from monitor.inventory import (
    Config,
    ConfigError,
    ProbeOverrides,
    ProbeSettings,
    Problem,
    Site,
    load_config,
    parse_config,
)

TESTDATA = Path(__file__).parent / "testdata"

HALL = """\
sites:
  - id: hall
    name: Hội trường Tỉnh ủy
    tier: province
    address: 127.10.0.1
"""

SEE_TIERS = "use 'province', 'district', 'commune' or 'unit'"
PROBE_KEYS = (
    "kind, interval, timeout, burst, burst_spacing, payload_size, window, down_after, "
    "resolve_interval, dscp, probes"
)
COLUMNS = (
    "id, name, tier, parent, district, provision, address, contact_name, contact_phone, "
    "contact_email, contractor, contract_reference"
)
BAD_ADDRESS = (
    "is not an IPv4/IPv6 address or a valid hostname; "
    "use e.g. 10.0.0.5, 2001:db8::5 or vc-xa.example.vn"
)
DURATIONS = "seconds as a number (1.5) or a number with a unit: 250ms, 1s, 1.5s, 2m, 1h"

# file in testdata/ -> the exact problems loading it reports, "{file}" standing for its path
INVALID: dict[str, list[str]] = {
    "invalid-alias-loop.yml": [
        "{file}:1: this node contains an alias of itself; remove that alias"
    ],
    "invalid-bad-address.yml": [f'{{file}}:5: sites[0].address: "300.1.1.1" {BAD_ADDRESS}'],
    "invalid-bad-duration.yml": [
        f'{{file}}:2: defaults.timeout: "1 sec" is not a duration; write {DURATIONS}'
    ],
    "invalid-bad-interval.yml": [
        "{file}:2: defaults.interval: 0 seconds is out of range; use 0.01 to 3600 seconds"
    ],
    "invalid-bad-listen.yml": [
        '{file}:1: listen: "::1:9470" is not host:port; '
        "write e.g. 127.0.0.1:9470, 0.0.0.0:9470 or [::1]:9470"
    ],
    "invalid-bad-slug.yml": [
        '{file}:2: sites[0].id: "Xã Lạc Vệ" is not a valid site id; use 1 to 63 lowercase ASCII '
        'letters, digits, "-" and "_", starting with a letter or digit, e.g. bn-tiendu-xa-lac-ve'
    ],
    "invalid-bad-tier.yml": [
        f'{{file}}:4: sites[0].tier: "village" is not allowed here; {SEE_TIERS}'
    ],
    "invalid-billion-laughs.yml": [
        "{file}:1: aliases expand the document far beyond any real inventory; use fewer aliases"
    ],
    "invalid-burst-too-long.yml": [
        "{file}:4: defaults.burst_spacing: a burst of 20 packets 0.1 s apart takes 1.9 s, not less "
        "than the interval of 1 s; lower burst or burst_spacing, or raise interval"
    ],
    "invalid-burst-type.yml": [
        "{file}:2: defaults.burst: expected a whole number, found 2.5; write e.g. 3"
    ],
    "invalid-contract-on-vnpt.yml": [
        "{file}:6: sites[0].contract: contract details belong to contracted sites only; "
        "set provision: contract, or remove contract"
    ],
    "invalid-duplicate-address.yml": [
        '{file}:10: sites[1].address: address "2001:0db8:0:0::5" is already used by sites[0] '
        "(line 2); give every site its own address"
    ],
    "invalid-duplicate-id.yml": [
        '{file}:6: sites[1].id: id "hall" is already used by sites[0] (line 2); '
        "give every site its own id"
    ],
    "invalid-duplicate-key.yml": [
        '{file}:5: sites[0].tier: key "tier" appears twice (first on line 4); keep one'
    ],
    "invalid-empty-file.yml": ["{file}:1: the file is empty; list the sites under sites:"],
    "invalid-empty-name.yml": [
        "{file}:3: sites[0].name: the name is empty; write the site's name, e.g. UBND xã Lạc Vệ"
    ],
    "invalid-empty-sites.yml": [
        "{file}:3: sites: no sites are listed; add at least one site under sites:"
    ],
    "invalid-header.csv": [
        '{file}:1: header: unknown column "adress" (did you mean "address"?); '
        f"allowed columns are: {COLUMNS}",
        f'{{file}}:1: header: unknown column "note"; allowed columns are: {COLUMNS}',
        '{file}:1: header: required column "address" is missing; add it',
    ],
    "invalid-merged-settings.yml": [
        "{file}:8: sites[0].probe.window: the window of 60 s is shorter than the interval of "
        "120 s and would hold no probe cycle; raise window or lower interval"
    ],
    "invalid-missing-address.yml": [
        '{file}:2: sites[0].address: required key "address" is missing; add it'
    ],
    "invalid-missing-district.yml": [
        '{file}:10: sites[1].district: district "tien-du" is not the id of any site '
        '(did you mean "tiendu"?); use a listed id'
    ],
    "invalid-missing-parent.yml": [
        '{file}:9: sites[1].parent: parent "hal" is not the id of any site '
        '(did you mean "hall"?); use a listed id'
    ],
    "invalid-non-text-key.yml": [
        '{file}:5: sites[0]: YAML reads the key yes as bool, not text; write it in quotes: "yes"'
    ],
    "invalid-not-text.yml": [
        "{file}:3: sites[0].name: expected text, found 2021-03-27 (YAML reads this as a date); "
        "write text, in quotes if need be"
    ],
    "invalid-parent-cycle.yml": [
        '{file}:9: sites[1].parent: the parents go round in a loop: "tiendu" -> "lac-ve" -> '
        '"tiendu"; give one of these sites another parent'
    ],
    "invalid-payload-size.yml": [
        "{file}:2: defaults.payload_size: 9000 bytes is out of range; use 16 to 1472 bytes"
    ],
    "invalid-python-tag.yml": [
        "{file}:1: tag !!python/object/apply:os.system is not supported in an inventory; remove it"
    ],
    "invalid-rows.csv": [
        '{file}:3: sites[1].name: "Huyện ủy\\nTiên Du" contains a line break (U+000A); remove it',
        f'{{file}}:5: sites[2].tier: "village" is not allowed here; {SEE_TIERS}',
        f'{{file}}:5: sites[2].address: "300.1.1.1" {BAD_ADDRESS}',
        '{file}:5: sites[2].id: id "bn-tiendu" is already used by sites[1] (line 3); '
        "give every site its own id",
        "{file}:6: sites[3]: the row has 6 cells but the header names 5 columns; "
        "remove the extra cells or add their columns to the header",
        '{file}:8: sites[4].parent: parent "bn-tinh" is not the id of any site '
        '(did you mean "bn-tinh-uy"?); use a listed id',
    ],
    "invalid-sites-not-list.yml": [
        "{file}:1: sites: expected a list, found a mapping; write one '- ' line per item"
    ],
    "invalid-series-site.yml": [
        '{file}:6: series.full.sites[1]: "bn-tiendo" is not a site id in this inventory; '
        'use the id of a listed site (did you mean "bn-tiendu"?)'
    ],
    "invalid-series-tier.yml": [
        f'{{file}}:3: series.full.tiers[1]: "village" is not allowed here; {SEE_TIERS}'
    ],
    "invalid-source-key.yml": [
        "{file}:1: source: source is set by vcmon, not by the inventory; remove it"
    ],
    "invalid-top-level-list.yml": [
        "{file}:1: the inventory is a list, not a mapping; start it with sites:"
    ],
    "invalid-unknown-key.yml": [
        '{file}:2: defaults.intervall: unknown key "intervall" (did you mean "interval"?); '
        f"allowed keys are: {PROBE_KEYS}"
    ],
    "invalid-unknown-kind.yml": [
        '{file}:2: defaults.kind: unknown probe kind "icmpp" (did you mean "icmp"?); '
        "allowed probe kinds are: icmp"
    ],
    "invalid-unknown-top-level.yml": [
        '{file}:1: mqttt: unknown key "mqttt" (did you mean "mqtt"?); '
        "allowed keys are: listen, defaults, health, schedule, mqtt, reports, shard, web, "
        "diagnosis, series, user, group, sites"
    ],
    "invalid-window-short.yml": [
        "{file}:3: defaults.window: the window of 60 s is shorter than the interval of 120 s "
        "and would hold no probe cycle; raise window or lower interval"
    ],
    "invalid-yaml-syntax.yml": [
        "{file}:7: invalid YAML (while parsing a flow sequence, expected ',' or ']', "
        "but got ':'); correct the document at this line"
    ],
}


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == "\n".join(map(str, caught.value.problems))
    return str(caught.value).splitlines()


def test_every_invalid_file_has_its_expectation() -> None:
    assert sorted(p.name for p in TESTDATA.glob("invalid-*")) == sorted(INVALID)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_file_reports_exact_problems(name: str) -> None:
    path = TESTDATA / name
    assert problems_of(path) == [line.format(file=path) for line in INVALID[name]]


def test_all_problems_of_a_file_are_reported_at_once_in_line_order() -> None:
    path = TESTDATA / "many-problems.yml"
    assert problems_of(path) == [
        f'{path}:1: listen: "localhost" is not host:port; '
        "write e.g. 127.0.0.1:9470, 0.0.0.0:9470 or [::1]:9470",
        f'{path}:4: defaults.windw: unknown key "windw" (did you mean "window"?); '
        f"allowed keys are: {PROBE_KEYS}",
        f"{path}:5: defaults.burst: 0 packets is out of range; use 1 to 100 packets",
        f'{path}:15: sites[1].address: address "127.10.0.1" is already used by sites[0] '
        "(line 7); give every site its own address",
        f"{path}:16: sites[1].contract: contract details belong to contracted sites only; "
        "set provision: contract, or remove contract",
        f'{path}:17: sites[2].id: id "bn-tiendu" is already used by sites[1] (line 11); '
        "give every site its own id",
        f'{path}:19: sites[2].tier: "xa" is not allowed here; {SEE_TIERS}',
        f'{path}:20: sites[2].parent: parent "bn-tien-du" is not the id of any site '
        '(did you mean "bn-tiendu"?); use a listed id',
        f'{path}:21: sites[2].address: "vc_lac_ve.example.vn" {BAD_ADDRESS}',
        f'{path}:23: sites[2].probe.timeout: "2 seconds" is not a duration; write {DURATIONS}',
        f'{path}:27: sites[3].parent: the parents go round in a loop: "bn-quevo" -> "bn-quevo"; '
        "give one of these sites another parent",
        f'{path}:29: sites[3].address: key "address" appears twice (first on line 28); keep one',
    ]


def test_minimal_inventory_gets_defaults() -> None:
    config = parse_config(HALL)
    assert config.listen == "127.0.0.1:9470"
    assert config.defaults == ProbeSettings()
    assert config.source == "<string>"
    hall = config.site("hall")
    assert (hall.provision, hall.district, hall.parent, hall.probe) == ("vnpt", "hall", None, None)


def test_a_loaded_site_knows_its_district() -> None:
    config = parse_config(
        """
sites:
  - {id: hall, name: Tỉnh ủy, tier: province, address: 127.10.0.1}
  - {id: tiendu, name: Huyện ủy Tiên Du, tier: district, parent: hall, address: 127.10.5.1}
  - {id: lac-ve, name: UBND xã Lạc Vệ, tier: commune, parent: tiendu, address: 127.10.5.8}
  - {id: lac-ve-nvh, name: Nhà văn hóa, tier: unit, parent: lac-ve, address: 127.10.5.9}
  - {id: qs, name: Đảng ủy Quân sự, tier: district, parent: hall, address: 127.10.9.1,
     district: tiendu}
"""
    )
    districts = {site.id: site.district for site in config.sites}
    assert districts == {
        "hall": "hall",
        "tiendu": "tiendu",
        "lac-ve": "tiendu",
        "lac-ve-nvh": "tiendu",
        "qs": "tiendu",
    }
    assert [site.id for site in config.children("hall")] == ["tiendu", "qs"]
    assert config.children("lac-ve-nvh") == []
    with pytest.raises(KeyError):
        config.site("nowhere")
    with pytest.raises(KeyError):
        config.children("nowhere")


def test_settings_for_merges_overrides_with_defaults() -> None:
    config = parse_config(
        "defaults: {interval: 2s, burst: 3, window: 5m}\n"
        + HALL
        + "    probe: {interval: 250ms, timeout: 2s}\n"
        + "  - {id: plain, name: x, tier: commune, parent: hall, address: 127.10.0.2}\n"
    )
    merged = config.settings_for(config.site("hall"))
    assert merged == ProbeSettings(interval=0.25, timeout=2.0, burst=3, window=300.0)
    assert config.settings_for(config.site("plain")) is config.defaults


def test_overrides_inherit_what_they_leave_out() -> None:
    assert ProbeOverrides().model_dump(exclude_none=True) == {}


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("250ms", 0.25),
        ("1s", 1.0),
        ("1.5s", 1.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1.5", 1.5),
        (2, 2.0),
        (0.5, 0.5),
        (" 3 s ", 3.0),
        (".5s", 0.5),
    ],
)
def test_durations(written: object, seconds: float) -> None:
    assert ProbeSettings.model_validate({"interval": written, "window": "2h"}).interval == seconds


@pytest.mark.parametrize("written", ["1 sec", "-1s", "1e3", "s", "", "1d", True, None, [1]])
def test_bad_durations(written: object) -> None:
    with pytest.raises(ValidationError, match="is not a duration; write seconds as a number"):
        ProbeSettings.model_validate({"timeout": written})


def site_with_address(address: str) -> dict[str, Any]:
    return {"id": "hall", "name": "x", "tier": "province", "address": address}


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.5",
        "2001:db8::5",
        "fe80::1%eth0",
        "vc-xa.example.vn",
        "vc-xa.example.vn.",
        "localhost",
        "VC-XA.Example.VN",
        "a" * 63 + ".vn",
    ],
)
def test_good_addresses(address: str) -> None:
    assert Site.model_validate(site_with_address(address)).address == address


@pytest.mark.parametrize(
    "address",
    [
        "300.1.1.1",
        "10.0.0",
        "-vc.example.vn",
        "vc-.example.vn",
        "a..b",
        "vc xa",
        "",
        "vc_xa",
        "a" * 64 + ".vn",
        "xã.vn",
        "10.0.0.5:80",
        "http://vc.example.vn",
        "vc.example.\u212avn",
    ],
)
def test_bad_addresses(address: str) -> None:
    with pytest.raises(ValidationError, match="is not an IPv4/IPv6 address or a valid hostname"):
        Site.model_validate(site_with_address(address))


@pytest.mark.parametrize(
    "listen", ["127.0.0.1:9470", "0.0.0.0:9470", "[::1]:9470", "[::]:80", "localhost:9470"]
)
def test_good_listen(listen: str) -> None:
    assert Config(sites=[Site.model_validate(site_with_address("10.0.0.5"))], listen=listen)


@pytest.mark.parametrize(
    "listen",
    [
        "9470",
        "127.0.0.1",
        "127.0.0.1:65536",
        "[127.0.0.1]:80",
        "::1:9470",
        ":9470",
        "x:+80",
        "127.0.0.1:٩٤٧٠",
    ],
)
def test_bad_listen(listen: str) -> None:
    site = Site.model_validate(site_with_address("10.0.0.5"))
    with pytest.raises(ValidationError, match="is not host:port"):
        Config(sites=[site], listen=listen)


def test_names_are_kept_in_nfc() -> None:
    decomposed = unicodedata.normalize("NFD", "UBND xã Lạc Vệ")
    site = Site.model_validate({**site_with_address("10.0.0.5"), "name": f" {decomposed} "})
    assert site.name == "UBND xã Lạc Vệ"


def test_config_built_in_code_is_checked_across_sites_too() -> None:
    hall = Site.model_validate(site_with_address("10.0.0.5"))
    with pytest.raises(ValidationError, match=r'sites\[1\]\.id: id "hall" is already used'):
        Config(sites=[hall, hall.model_copy(update={"address": "10.0.0.6"})])


def test_models_are_frozen() -> None:
    config = parse_config(HALL)
    with pytest.raises(ValidationError):
        config.site("hall").name = "x"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        config.listen = "0.0.0.0:1"  # type: ignore[misc]


def test_yaml_merge_keys_and_anchors_work() -> None:
    config = parse_config(
        HALL + "    probe: &fast {interval: 100ms, window: 10s}\n"
        "  - id: other\n    name: x\n    tier: commune\n    parent: hall\n"
        "    address: 127.10.0.2\n    probe: {<<: *fast, window: 20s}\n"
    )
    assert config.settings_for(config.site("other")).interval == 0.1
    assert config.settings_for(config.site("other")).window == 20.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\n---\nb: 2\n", "<string>:2: invalid YAML (expected a single document in the"),
        ("[" * 5000, "<string>:1: the document nests more than 64 levels deep here"),
        ("a: \x00", "<string>:1: character U+0000 is not allowed in YAML; remove it"),
        (
            "defaults:\n  burst: " + "9" * 5000,
            '<string>:2: "99999999999999999999…" is far too large; correct it, or quote it',
        ),
        ("sites: 2021-02-30", '<string>:1: "2021-02-30" is not valid (day is out of range'),
        ("{? [a] : 1}", "<string>:1: a key must be plain text, not a list or mapping"),
        ('"": 1\n' + HALL, '<string>:1: "": unknown key ""; allowed keys are: listen, defaults'),
    ],
)
def test_unreadable_yaml_is_a_config_error(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert str(caught.value).startswith(expected)


def test_load_config_names_an_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert str(caught.value) == (
        f"{missing}: cannot read the inventory (No such file or directory); "
        "check the path and its permissions"
    )
    with pytest.raises(
        ConfigError, match=r"format is unknown; name the file \.yaml, \.yml or \.csv"
    ):
        load_config(tmp_path / "inventory.json")


def test_load_config_rejects_text_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yml"
    # a file saved as Latin-1: "à" is the single byte 0xe0
    path.write_bytes(HALL.encode() + "# Hà Nội\n".encode("latin-1", "replace"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(
        f"{path}:6: byte 0xe0 is not UTF-8: the file is saved in another encoding, for "
        "Vietnamese often Windows-1258, TCVN3 (ABC) or VNI; save the file as UTF-8 (Excel: ")


def test_load_config_accepts_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + HALL.encode())
    config = load_config(path)
    assert (config.source, config.site("hall").name) == (str(path), "Hội trường Tỉnh ủy")


def test_csv_site_list() -> None:
    path = TESTDATA / "sites.csv"
    config = load_config(path)
    assert config.source == str(path)
    assert config.defaults == ProbeSettings()
    assert [site.id for site in config.sites] == [
        "bn-tinh-uy",
        "bn-tiendu",
        "bn-tiendu-xa-lac-ve",
        "bn-qs-truong-quan-su",
    ]
    hall, tiendu, lac_ve, school = config.sites
    assert hall.contact is not None and hall.contact.phone == "+84 222 000 0001"
    assert (hall.contact.name, hall.contact.email) == ("Tổ kỹ thuật", None)
    assert (tiendu.contact, lac_ve.district, lac_ve.name) == (None, "bn-tiendu", "UBND xã Lạc Vệ")
    assert school.name == "Trường Quân sự tỉnh, Bộ CHQS"
    assert school.contract is not None
    assert (school.provision, school.contract.reference) == ("contract", "HĐ-2021/QS-04")


def test_csv_problem_in_a_row_after_a_multiline_cell(tmp_path: Path) -> None:
    path = tmp_path / "sites.csv"
    path.write_text(
        'id,name,tier,address\nhall,"Hội trường\r\nTỉnh ủy",province,127.10.0.1\n'
        "tiendu,Huyện ủy Tiên Du,district,127.10.0.1\n",
        encoding="utf-8",
    )
    assert problems_of(path) == [
        f'{path}:2: sites[0].name: "Hội trường\\r\\nTỉnh ủy" contains a line break (U+000D); '
        "remove it",
        f'{path}:4: sites[1].address: address "127.10.0.1" is already used by sites[0] (line 2); '
        "give every site its own address",
    ]


def test_problem_text_without_line_or_field() -> None:
    assert str(Problem("a.yml", None, "", "cannot read")) == "a.yml: cannot read"
    assert str(Problem("a.yml", 3, "listen", "bad")) == "a.yml:3: listen: bad"


# --- random documents: the loader answers with a Config or a ConfigError, nothing else

KEYS = st.sampled_from(
    [*Config.model_fields, *Site.model_fields, *ProbeSettings.model_fields, "<<", "", "a.b"]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["hall", "127.10.0.1", "::1", "province", "vnpt", "1s", "250ms", "icmp"])
    | st.sampled_from(["vc.example.vn", "300.1.1.1", "127.0.0.1:9470", "Hội trường"])
)
TREES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(KEYS | st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=30,
)
SITE = st.fixed_dictionaries({}, optional=dict.fromkeys(Site.model_fields, SCALARS | TREES))
# sites that are often valid, so that links between them (ids, parents, addresses) and
# probe overrides merged with the defaults are exercised too
IDS = st.sampled_from(["hall", "tiendu", "lac-ve", "Lạc Vệ"])
LIKELY_SITE = st.fixed_dictionaries(
    {
        "id": IDS,
        "name": st.sampled_from(["UBND xã Lạc Vệ", " "]),
        "tier": st.sampled_from(["province", "district", "commune", "unit"]),
        "address": st.sampled_from(["127.10.5.8", "127.10.5.9", "vc.example.vn", "::1", "0::1"]),
    },
    optional={
        "parent": IDS,
        "district": IDS,
        "provision": st.sampled_from(["vnpt", "contract"]),
        "contract": st.just({"contractor": "VNPT Bắc Ninh"}),
        "probe": st.fixed_dictionaries(
            {},
            optional=dict.fromkeys(["interval", "window", "burst"], st.sampled_from([1, 50, "2m"])),
        ),
    },
)
DOCUMENTS = st.fixed_dictionaries(
    {"sites": st.lists(SITE | LIKELY_SITE, max_size=5)},
    optional={"defaults": TREES, "listen": SCALARS, "source": SCALARS},
)


def loads_or_explains(text: str) -> None:
    try:
        config = parse_config(text)
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, Problem) for p in exc.problems)
        assert len(str(exc).splitlines()) == len(exc.problems)
    else:
        assert all(site.district for site in config.sites)
        assert all(config.settings_for(site) for site in config.sites)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENTS | TREES)
def test_random_documents_load_or_raise_config_error(document: object) -> None:
    loads_or_explains(yaml.safe_dump(document, allow_unicode=True))


# YAML's own punctuation, line breaks it knows (\x85) and characters it refuses (\x00)
YAMLISH = st.text(alphabet=st.sampled_from(list("sites:-[]{}&*!|>'\"%@`#,?<=~ \n\t\x00aé1.\x85")))


@settings(max_examples=300)
@given(YAMLISH | st.text())
def test_random_text_loads_or_raises_config_error(text: str) -> None:
    loads_or_explains(text)


CSV_CELLS = st.sampled_from(["id", "name", "tier", "address", "parent", "hall", "127.10.0.1"])


@settings(max_examples=200)
@given(
    st.lists(st.lists(CSV_CELLS | st.text(max_size=10), max_size=6), max_size=5)
    | st.text(alphabet=st.sampled_from(list('id,name"\n\r\x00x'))),
)
def test_random_csv_loads_or_raises_config_error(table: list[list[str]] | str) -> None:
    rows = table if isinstance(table, str) else "\n".join(",".join(row) for row in table)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sites.csv"
        path.write_text(rows, encoding="utf-8")
        try:
            load_config(path)
        except ConfigError as exc:
            assert len(str(exc).splitlines()) == len(exc.problems)
