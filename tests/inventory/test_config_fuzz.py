"""The inventory loader against hostile documents.

Bombs (billion laughs, merge bombs, deep nesting, huge values, huge inventories), a wrong
type at every field, odd Unicode in names, ids and keys, duplicate keys and mangled
text. The property, for every document: ``parse_config`` returns a Config or raises
vcmon's ConfigError, each of whose problems names a line (or a field), within a bounded
time and memory; never any other exception.

The bulk is a seeded generator, fast enough for the default run: ``VCMON_FUZZ_DOCS``
documents (default 10,000) from ``VCMON_FUZZ_SEED`` (default 11). A failing document is
written to ``$TMPDIR/vcmon-fuzz-failure-<seed>-<n>.yaml``. The figures (documents, time,
slowest document, peak memory) are printed; see them with ``pytest -s``:

    VCMON_FUZZ_DOCS=10000 .venv/bin/pytest -s tests/inventory/test_config_fuzz.py
"""

from __future__ import annotations

import copy
import os
import random
import resource
import tempfile
import time
import tracemalloc
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.inventory import Config, ConfigError, limits, parse_config
from monitor.inventory.reading import MAX_NAME_CHARS

DOCS = int(os.environ.get("VCMON_FUZZ_DOCS", "10000"))
SEED = int(os.environ.get("VCMON_FUZZ_SEED", "11"))
# Bounds a document must load within; the slowest documents here take ~0.5 s alone, and
# the machine running the tests may be busy with other work.
SECONDS_PER_DOCUMENT = 10.0
MEGABYTES_PER_DOCUMENT = 200.0

BASE: dict[str, Any] = {
    "listen": "127.0.0.1:9470",
    "defaults": {"kind": "icmp", "interval": "1s", "timeout": "1s", "burst": 3,
                 "burst_spacing": "20ms", "payload_size": 56, "window": "60s", "down_after": 3,
                 "resolve_interval": "5m"},
    "health": {"evaluate_every": "5s", "enter_after": 3, "leave_after": 2, "recover_after": 2,
               "thresholds": {"rtt": "150ms", "loss": "1%"},
               "tiers": {"commune": {"rtt": "500ms", "loss": "2%"}}},
    "schedule": {"timezone": "Asia/Ho_Chi_Minh", "preflight": "1h",
                 "conferences": [{"name": "sang-27", "start": "2026-03-27 07:30",
                                  "end": "2026-03-27 11:30"}],
                 "maintenance": [{"sites": ["xa"], "start": "2026-03-27 07:00",
                                  "end": "2026-03-27 08:00", "reason": "thay bộ định tuyến"}]},
    "mqtt": {"host": "mqtt.bacninh.example.vn", "port": 1883, "prefix": "vcmon", "qos": 1},
    "reports": {"times": ["8:45", "14:45"], "directory": "reports", "formats": ["csv", "json"]},
    "sites": [
        {"id": "tinh", "name": "Hội trường Tỉnh ủy", "tier": "province", "address": "127.10.0.1",
         "contact": {"name": "Tổ kỹ thuật", "phone": "+84 222 000 0001",
                     "email": "kythuat@example.vn"}},
        {"id": "huyen", "name": "Huyện ủy Tiên Du", "tier": "district", "parent": "tinh",
         "address": "127.10.1.1", "probe": {"interval": "500ms", "burst": 2}},
        {"id": "xa", "name": "UBND xã Lạc Vệ", "tier": "commune", "parent": "huyen",
         "address": "vc-lacve.example.vn", "thresholds": {"rtt": "300ms"}},
        {"id": "qs", "name": "Trường Quân sự tỉnh", "tier": "unit", "parent": "tinh",
         "provision": "contract", "address": "2001:db8::5",
         "contract": {"contractor": "VNPT Bắc Ninh", "reference": "HĐ-2021/QS-04"}},
    ],
}

# Characters that make text look or behave other than it reads.
ODD = [
    "\u0301", "\u0323\u0302", "\u0301" * 50,  # combining marks, alone and piled up
    "\u202e", "\u202d", "\u2066", "\u2069", "\u200e", "\u061c",  # bidi controls
    "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad",  # zero-width, BOM, soft hyphen
    "\x00", "\x07", "\x1b[31m", "\x7f", "\x85", "\x9b",  # C0, DEL, C1
    "\u2028", "\u2029", "\t", "\r\n", "\n",  # line breaks YAML knows and does not
    "\ud800", "\udfff", "\ud83d\ude00",  # surrogates, alone and as a pair
    "\ue000", "\U0010fffd", "\ufffe", "\uffff",  # private use, non-characters
    "🇻🇳", "👨\u200d👩\u200d👧", "Ｌạｃ", "İ", "ß", "ﬁ",  # emoji, full width, case traps
    unicodedata.normalize("NFD", "Lạc Vệ"), "Lạc Vệ", "UBND xã",
    "=HYPERLINK(\"http://x\")", "@SUM(1)", "+84", "-2+3", "'", '"', "\\",
    ": ", "- ", "#", "&a", "*a", "!!python/name:os.system", "{", "[", "%", "`", "<<",
]
WRONG: list[Any] = [
    None, True, False, 0, -1, 1, 2**63, 10**30, 1.5, -0.0, float("inf"), float("nan"),
    "", " ", "x", "1s", "-1s", "0s", "1e400", "0x10", "0o7", "1_000", "2026-02-30", "25:61",
    "127.10.0.1", "::1", "300.1.1.1", "province", "contract", "icmp", "Asia/Nowhere",
    "../../etc/passwd", "a" * 300, date(2026, 1, 1), datetime(2026, 1, 1, 7, 30),
    [], {}, [None], {"": None}, ["a", 1], {"k": [1, {"x": []}]}, {"id": "tinh"},
]
# any character, surrogates too (only a YAML escape can carry one into a document)
CHARACTERS = (st.characters() | st.characters(categories=["Cs"])
              | st.sampled_from([c for c in ODD if len(c) == 1]))


def odd_text(rng: random.Random) -> str:
    parts = [rng.choice(ODD) for _ in range(rng.randint(1, 4))]
    if rng.random() < 0.5:
        parts.insert(rng.randint(0, len(parts)), "Lạc Vệ")
    return "".join(parts)


def deep(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


def places(doc: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path in a document, the root excepted."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc)
    for key, value in items:
        yield (*path, key)
        if isinstance(value, (dict, list)) and value:
            yield from places(value, (*path, key))


def at(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def dump(doc: Any) -> str:
    # libyaml's emitter where there is one, as the pure-Python one would take most of the
    # time; it cannot write a lone surrogate (as an escape), which the pure-Python one can
    try:
        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        return yaml.dump(doc, Dumper=dumper, allow_unicode=True, sort_keys=False, width=1000)
    except UnicodeEncodeError:
        return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=1000)


BASE_TEXT = dump(BASE)


# --- the mutations; each takes a fresh copy of BASE and returns YAML text

def wrong_type(rng: random.Random) -> str:
    doc = copy.deepcopy(BASE)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(list(places(doc)))
        value = rng.choice([*WRONG, deep(rng.choice((3, 70))), odd_text(rng)])
        at(doc, path[:-1])[path[-1]] = value
    return dump(doc)


def odd_strings(rng: random.Random) -> str:
    doc = copy.deepcopy(BASE)
    for _ in range(rng.randint(1, 3)):
        site = rng.choice(doc["sites"])
        target = rng.choice(["id", "name", "name", "parent", "contact", "key", "address"])
        if target == "contact":
            site["contact"] = {"name": odd_text(rng)}
        elif target == "key":
            site[odd_text(rng)] = odd_text(rng)
        else:
            site[target] = odd_text(rng)
    return dump(doc)


def renamed_or_dropped(rng: random.Random) -> str:
    doc = copy.deepcopy(BASE)
    path = rng.choice([p for p in places(doc) if isinstance(p[-1], str)])
    parent = at(doc, path[:-1])
    value = parent.pop(path[-1])
    if rng.random() < 0.7:
        key = rng.choice([path[-1].upper(), path[-1] + "s", path[-1][:-1], odd_text(rng), ""])
        parent[key] = value
    return dump(doc)


def raw_text(rng: random.Random) -> str:
    """Characters put into the text itself, where no YAML escaping protects them."""
    text = BASE_TEXT
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(text))
        text = text[:i] + rng.choice(ODD) + text[i:]
    return text


def duplicated_lines(rng: random.Random) -> str:
    lines = BASE_TEXT.splitlines(keepends=True)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(lines))
        lines.insert(rng.choice((i, i + 1)), lines[i])
    return "".join(lines)


YAML_BITS = [
    ":", "-", "- ", "[", "]", "{", "}", ",", "&a ", "*a", "!!str ", "!!binary ", "!!map ",
    "!!python/object/apply:os.system ", "? ", "|", ">", "'", '"', "#", "%YAML 1.1\n", "---\n",
    "...\n", "<<: *a\n", "  ", "\t", "\n", "\\u00e9", "~", "=", "@", "`",
]


def mangled(rng: random.Random) -> str:
    """Byte-level mutations of a valid inventory, as an editor slip would make."""
    text = BASE_TEXT
    for _ in range(rng.randint(1, 6)):
        i = rng.randrange(len(text))
        what = rng.random()
        if what < 0.4:
            text = text[:i] + rng.choice(YAML_BITS) + text[i:]
        elif what < 0.7:
            text = text[:i] + text[i + rng.randint(1, 20):]
        else:
            j = rng.randrange(len(text))
            text = text[:i] + text[j:j + rng.randint(1, 40)] + text[i:]
    return text


def bomb(rng: random.Random) -> str:
    """Small and large versions of each way a document can explode."""
    kind = rng.randrange(9)
    n = rng.randint(2, 12)
    if kind == 0:  # billion laughs: n levels of n aliases
        lines = ["l0: &l0 [" + ", ".join(["lol"] * n) + "]"]
        lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * n) + "]" for i in range(1, n)]
        return "\n".join(lines) + "\n" + dump({"sites": BASE["sites"]})
    if kind == 1:  # merge bomb: empty mappings merged twice per level
        lines = ["m0: &m0 {}"] + [f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}]}}"
                                  for i in range(1, 10 * n)]
        return "\n".join(lines) + "\n"
    if kind == 2:  # an alias chain that nests the built data deeper than it is written
        lines = ["a0: &a0 x"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 20 * n)]
        return "\n".join(lines) + "\n"
    if kind == 3:  # deep flow nesting, closed or not
        depth = rng.choice((50, 64, 65, 1000))
        opener = rng.choice(("[", "{a: ", "- "))
        closer = {"[": "]", "{a: ": "}", "- ": ""}[opener]
        return "sites: " + opener * depth + "x" + closer * depth * rng.randint(0, 1)
    if kind == 4:  # deep block nesting
        return "".join(" " * i + "k:\n" for i in range(rng.choice((30, 70, 1500))))
    if kind == 5:  # one huge value: plain, quoted, literal block, or a key
        size = rng.choice((limits.MAX_SCALAR_CHARS, limits.MAX_SCALAR_CHARS + 1))
        return rng.choice([
            "sites: " + "x" * size + "\n",
            'sites: "' + "x" * size + '"\n',
            "sites: |\n" + ("  " + "x" * 99 + "\n") * (size // 100 + 1),
            "x" * size + ": 1\n",
            "sites: [{id: a, name: " + "Lạc Vệ " * (size // 7) + "}]\n",
        ])
    if kind == 6:  # numbers no int() reads, and YAML 1.1's sexagesimal ints
        return rng.choice([
            "defaults: {burst: " + "9" * 5000 + "}\n",
            "sites: " + ":".join(["1"] + ["59"] * 3000) + "\n",
            "sites: [{id: a, name: " + ":".join(["1"] + ["59"] * 3000) + "}]\n",
        ]) + dump({"listen": "127.0.0.1:1"})
    if kind == 7:  # an alias of a node inside itself, undefined and duplicate anchors
        return rng.choice(["a: &a {b: *a}\n", "a: &a [*a]\n", "a: {<<: *a}\n",
                           "a: &a 1\nb: &a 2\n", "a: &a {<<: *a}\n", "a: {<<: 1}\n",
                           "a: {<<: [1]}\n"]) + dump({"sites": BASE["sites"]})
    # many keys in one mapping
    return "defaults: {" + ", ".join(f"k{i}: {i}" for i in range(rng.choice((50, 5000)))) + "}\n"


def many_sites(rng: random.Random) -> str:
    """Inventories of many sites, valid or with a fault somewhere (over the limit: BOMBS)."""
    count = rng.choice((200, 1000))
    sites = [{"id": f"s{i}", "name": f"Điểm cầu {i}", "tier": "commune",
              "address": f"127.{i // 65536 + 20}.{i // 256 % 256}.{i % 256}"}
             for i in range(count)]
    if rng.random() < 0.5:
        sites[rng.randrange(count)]["address"] = rng.choice(WRONG[:20])
    return dump({"sites": sites})


# (mutation, weight): bombs and big inventories are the slow ones, so they are rarer
MUTATIONS: list[tuple[Callable[[random.Random], str], float]] = [
    (wrong_type, 30), (odd_strings, 20), (renamed_or_dropped, 10), (raw_text, 10),
    (duplicated_lines, 10), (mangled, 15), (bomb, 3), (many_sites, 0.5),
]


@dataclass
class Tally:
    documents: int = 0
    traced: int = 0
    configs: int = 0
    seconds: float = 0.0
    slowest: float = 0.0
    peak_bytes: int = 0
    by_kind: dict[str, list[float]] = field(default_factory=dict)

    def add(self, kind: str, seconds: float, peak: int, loaded: bool, traced: bool) -> None:
        self.documents += 1
        self.traced += traced
        self.configs += loaded
        self.seconds += seconds
        self.slowest = max(self.slowest, seconds)
        self.peak_bytes = max(self.peak_bytes, peak)
        counts = self.by_kind.setdefault(kind, [0, 0.0, 0.0, 0])
        counts[0] += 1
        counts[1] += seconds
        counts[2] = max(counts[2], seconds)
        counts[3] = max(counts[3], peak)


def check(text: str) -> bool:
    """One document against the property; True if it loaded."""
    try:
        config = parse_config(text, "fuzz.yaml")
    except ConfigError as exc:
        assert exc.problems, "a ConfigError without a problem"
        lines = text.count("\n") + 2
        for problem in exc.problems:
            assert problem.file == "fuzz.yaml"
            assert problem.line is not None or problem.field, f"no place: {problem}"
            assert problem.line is None or 1 <= problem.line <= lines, f"bad line: {problem}"
        message = str(exc)
        message.encode("utf-8")  # printable on any terminal and in any log
        assert len(message.splitlines()) == len(exc.problems)
        return False
    assert isinstance(config, Config)
    for site in config.sites:
        assert unicodedata.is_normalized("NFC", site.name) and site.name == site.name.strip()
        assert len(site.name) <= MAX_NAME_CHARS and site.id.isascii()
        bad = [c for c in site.name if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co")]
        assert not bad, f"{site.name!r} kept {bad}"
    return True


def measured(kind: str, text: str, tally: Tally, trace: bool) -> None:
    """``check(text)``, timed, and with its peak memory traced if ``trace``."""
    if trace:
        tracemalloc.start()
    try:
        start = time.perf_counter()
        loaded = check(text)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seconds < SECONDS_PER_DOCUMENT, f"{kind} took {seconds:.1f} s"
    assert peak < MEGABYTES_PER_DOCUMENT * 1e6, f"{kind} took {peak / 1e6:.0f} MB"
    tally.add(kind, seconds, peak, loaded, trace)


def test_the_base_document_is_a_valid_inventory() -> None:
    config = parse_config(dump(BASE))
    assert [site.id for site in config.sites] == ["tinh", "huyen", "xa", "qs"]


def test_generated_documents_load_or_explain_within_bounds() -> None:
    rng = random.Random(SEED)
    kinds, weights = zip(*MUTATIONS, strict=True)
    tally = Tally()
    for n in range(DOCS):
        mutation = rng.choices(kinds, weights)[0]
        text = mutation(rng)
        # tracing every allocation makes a load 3 to 5 times slower: the bombs are traced,
        # and every tenth of the others; the process's peak RSS covers them all
        trace = mutation is bomb or n % 10 == 0
        try:
            measured(mutation.__name__, text, tally, trace)
        except BaseException:
            failure = Path(tempfile.gettempdir()) / f"vcmon-fuzz-failure-{SEED}-{n}.yaml"
            failure.write_text(text, "utf-8", errors="surrogatepass")
            print(f"\ndocument {n} ({mutation.__name__}) saved as {failure}")
            raise
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nfuzzed {tally.documents} documents (seed {SEED}) in {tally.seconds:.1f} s: "
          f"{tally.configs} loaded, {tally.documents - tally.configs} explained; slowest "
          f"{tally.slowest * 1000:.0f} ms; peak traced memory {tally.peak_bytes / 1e6:.1f} MB "
          f"({tally.traced} documents traced); process max RSS {rss:.0f} MB")
    for kind, (count, total, slowest, peak) in sorted(tally.by_kind.items()):
        print(f"  {kind:20} {count:6.0f} documents, mean {total / count * 1000:5.1f} ms, "
              f"slowest {slowest * 1000:6.0f} ms, peak {peak / 1e6:6.1f} MB")
    assert tally.documents == DOCS
    # every kind ran, and the mutations made both valid and invalid inventories
    assert len(tally.by_kind) == len(MUTATIONS) or DOCS < 1000
    assert 0 < tally.configs < tally.documents


# --- hypothesis: the same property, with shrinking to the smallest failing document

PATHS = list(places(BASE))
HYPOTHESIS_VALUES = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.dates()
    | st.text(CHARACTERS, max_size=20)
    | st.sampled_from(WRONG) | st.sampled_from(ODD)
    | st.lists(st.integers(), max_size=3) | st.dictionaries(st.text(max_size=5), st.none(),
                                                             max_size=3)
)


@settings(max_examples=1000, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(PATHS), HYPOTHESIS_VALUES), min_size=1, max_size=3))
def test_any_field_with_any_value_loads_or_explains(changes: list[tuple[Any, Any]]) -> None:
    doc = copy.deepcopy(BASE)
    for path, value in changes:
        try:
            at(doc, path[:-1])[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed the place
    check(dump(doc))


@settings(max_examples=500, deadline=5000)
@given(st.text(CHARACTERS, min_size=1, max_size=30))
def test_any_site_name_is_stored_clean_or_refused(name: str) -> None:
    doc = copy.deepcopy(BASE)
    doc["sites"][2]["name"] = name
    if check(dump(doc)):
        stored = parse_config(dump(doc)).site("xa").name
        assert stored == unicodedata.normalize("NFC", name).strip()


# --- bombs and limits at their full size, one by one, with the message each gets

LAUGHS = "\n".join(
    ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 10)]
) + "\nsites: [*l9]\n"
BOMBS = {
    "billion laughs": (LAUGHS, "aliases expand the document far beyond any real inventory"),
    "merge bomb": ("m0: &m0 {}\n" + "".join(f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}]}}\n"
                                             for i in range(1, 100)),
                   "aliases expand the document far beyond any real inventory"),
    "alias chain": ("a0: &a0 x\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 2000)),
                    "aliases here nest the data more than 64 levels deep"),
    "merge chain": ("a0: &a0 {k: 0}\n" + "".join(f"a{i}: &a{i} {{<<: *a{i - 1}}}\n"
                                                  for i in range(1, 2000)),
                    "aliases here nest the data more than 64 levels deep"),
    "flow nesting 10^5": ("sites: " + "[" * 100_000 + "]" * 100_000,
                          "the document nests more than 64 levels deep here"),
    "mapping nesting 10^5": ("sites: " + "{a: " * 100_000, "the document nests more than 64"),
    "block nesting 10^5": ("- " * 100_000 + "x\n", "the document nests more than 64"),
    "indented nesting": ("".join(" " * i + "k:\n" for i in range(2000)),
                         "the document nests more than 64"),
    "50 MB value": ("sites: " + "x" * 50_000_000, "a value of 50,000,000 characters starts here"),
    "1 MB key": ("x" * 1_000_000 + ": 1\n", "a value of 1,000,000 characters starts here"),
    "200,001 sites": ("sites: [" + "{}, " * (limits.MAX_SITES + 1) + "]\n",
                      "more than 200,000 items are listed here"),
    "sexagesimal": ("sites: [{id: a, name: " + ":".join(["1"] + ["59"] * 3000) + "}]\n",
                    "sites[0].name: expected text, found a whole number of about 5,"),
    "lone surrogate": ("sites: [\ud800]\n", "character U+D800 is not allowed in YAML"),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_bomb_is_refused_quickly_in_little_memory(name: str) -> None:
    text, expected = BOMBS[name]
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ConfigError) as caught:
            parse_config(text, "bomb.yaml")
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"{name}: {len(text):,} characters refused in {seconds * 1000:.0f} ms, "
          f"{peak / 1e6:.1f} MB peak")
    assert expected in str(caught.value)
    assert str(caught.value).startswith("bomb.yaml:")
    assert seconds < SECONDS_PER_DOCUMENT
    # the text itself and its UTF-8 copy for libyaml, then about 350 bytes per node composed
    # (the 200,000 sites before the one too many)
    assert peak < 2 * len(text) + 100e6


def test_nesting_up_to_the_limit_is_read() -> None:
    nested = "[" * (limits.MAX_DEPTH - 1) + "]" * (limits.MAX_DEPTH - 1)
    # read whole, so the models have their say
    with pytest.raises(ConfigError, match=r"fuzz\.yaml:1: sites\[0\]: expected a mapping of keys"):
        parse_config("sites: " + nested.replace("[]", "[x]", 1), "fuzz.yaml")


@pytest.mark.parametrize(("limit", "value", "text", "expected"), [
    ("MAX_NODES", 50, dump(BASE), "the document holds more than 50 keys, values and items"),
    ("MAX_SITES", 3, dump(BASE), "more than 3 items are listed here"),
    ("MAX_SCALAR_CHARS", 10, dump(BASE), "characters starts here, longer than the 10 "),
    ("MAX_FILE_BYTES", 100, dump(BASE), "the inventory is longer than 100 characters"),
    ("MAX_DEPTH", 3, dump(BASE), "the document nests more than 3 levels deep here"),
])
def test_each_limit_names_the_line_and_what_to_do(
    monkeypatch: pytest.MonkeyPatch, limit: str, value: int, text: str, expected: str
) -> None:
    monkeypatch.setattr(limits, limit, value)
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "inv.yaml")
    (problem,) = caught.value.problems
    assert problem.line is not None and expected in problem.message
    assert any(what in problem.message for what in ("shorten", "shards", "flatten"))


def test_a_document_libyaml_rejects_is_retold_by_pure_python_unless_large(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = BASE_TEXT + "sites: [{id: x]\n"
    line = text.count("\n")
    with pytest.raises(ConfigError, match=rf"<string>:{line}: .*expected ',' or '}}', but got ']'"):
        parse_config(text)
    monkeypatch.setattr(limits, "MAX_RETOLD_CHARS", 100)
    # libyaml's words for the same fault, on the same line
    with pytest.raises(ConfigError, match=rf"<string>:{line}: .*did not find expected ',' or '}}'"):
        parse_config(text)
