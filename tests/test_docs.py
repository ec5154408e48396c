"""Every link and anchor the README, docs/ and deploy/ Markdown give, and every
docs/<page>.md#<anchor> pointer in the code and configuration, leads to a heading that
exists; the README stays the short front door that starts with the two commands.

External http(s) links are not fetched (the tests run without a network)."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Markdown whose [text](target) links are checked
MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
            *sorted((ROOT / "deploy").rglob("*.md"))]
# Text files whose docs/<page>.md#<anchor> and README.md#<anchor> mentions are checked
POINTER_TREES = ["monitor", "probes", "grafana", "deploy", "tests"]
POINTER_FILES = ["Dockerfile", "pyproject.toml"]
SKIPPED = [ROOT / "tests" / "bench", Path(__file__).resolve()]  # this file: wrong on purpose
TEXT_SUFFIXES = {".py", ".md", ".yml", ".yaml", ".toml", ".service", ".conf", ".json",
                 ".html", ".sh", ".txt", ".csv", ".cfg", ".ini", ""}

LINK = re.compile(r"(?<!!)\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
POINTER = re.compile(r"(?<![\w/.-])((?:docs/[\w.-]+\.md|README\.md)#[\w-]+)")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: lowercase, punctuation dropped except `-`
    and `_`, each space a `-`; letters and digits of any script are kept."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)            # code spans keep their text
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)   # links keep their text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()     # inline HTML goes
    kept = []
    for char in text:
        if char in " -_" or unicodedata.category(char)[0] in "LNM":
            kept.append("-" if char == " " else char)
    return "".join(kept)


def anchors(markdown: str) -> set[str]:
    """Every heading's anchor, duplicates numbered as GitHub numbers them (-1, -2 …)."""
    found: set[str] = set()
    counts: dict[str, int] = {}
    fence = ""
    for line in markdown.splitlines():
        opened = FENCE.match(line)
        if opened:
            marker = opened.group(1)
            if not fence:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence):
                fence = ""
            continue
        if fence:
            continue
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(2))
            n = counts.get(base, 0)
            counts[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def without_code(markdown: str) -> str:
    """The text outside fenced blocks and code spans: where links are links."""
    out, fence = [], ""
    for line in markdown.splitlines():
        opened = FENCE.match(line)
        if opened:
            marker = opened.group(1)
            if not fence:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence):
                fence = ""
            out.append("")
            continue
        out.append("" if fence else re.sub(r"`[^`\n]*`", "", line))
    return "\n".join(out)


def problem(source: str, target: str, base: Path, here: Path) -> str | None:
    """What is wrong with one link target (relative to ``base``; a bare ``#anchor`` is
    into ``here``), or None. ``source`` names where the link is, for the message."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
        return None
    path_part, _, anchor = target.partition("#")
    path = (base / path_part).resolve() if path_part else here
    if not path.exists():
        return f"{source}: {target}: no such file {path_part}"
    if anchor:
        if path.suffix != ".md":
            return f"{source}: {target}: an anchor into a file that is not Markdown"
        if anchor not in anchors(path.read_text("utf-8")):
            return f"{source}: {target}: no heading #{anchor} in {path_part or 'this file'}"
    return None


def link_problems(path: Path, text: str | None = None) -> list[str]:
    text = path.read_text("utf-8") if text is None else text
    source = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    found = []
    for target in LINK.findall(without_code(text)):
        wrong = problem(source, target, path.parent, path)
        if wrong:
            found.append(wrong)
    return found


def pointer_problems(path: Path, text: str | None = None) -> list[str]:
    text = path.read_text("utf-8") if text is None else text
    source = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for target in POINTER.findall(line):
            wrong = problem(f"{source}:{number}", target, ROOT, path)
            if wrong:
                found.append(wrong)
    return found


def pointer_files() -> list[Path]:
    files = [ROOT / name for name in POINTER_FILES]
    for tree in POINTER_TREES:
        for path in sorted((ROOT / tree).rglob("*")):
            if (path.is_file() and path.suffix in TEXT_SUFFIXES
                    and not any(path.is_relative_to(skip) for skip in SKIPPED)
                    and "__pycache__" not in path.parts):
                files.append(path)
    return files


def test_every_markdown_link_and_anchor_exists() -> None:
    assert len(MARKDOWN) > 10
    found = [wrong for path in MARKDOWN for wrong in link_problems(path)]
    assert found == []


def test_every_docs_pointer_in_code_and_config_exists() -> None:
    files = pointer_files()
    assert ROOT / "monitor" / "metrics" / "instance.py" in files
    found = []
    for path in files:
        try:
            text = path.read_text("utf-8")
        except UnicodeDecodeError:
            continue
        found += pointer_problems(path, text)
    assert found == []


def test_the_code_points_at_docs_not_at_readme_sections() -> None:
    # "README, section MQTT", "README: How it probes", "README.md, \"Install as a service\""
    stale = re.compile(r"README(\.md)?[,:]\s*(section\s+)?[\"“A-Z]")
    found = []
    for path in pointer_files():
        try:
            text = path.read_text("utf-8")
        except UnicodeDecodeError:
            continue
        found += [f"{path.relative_to(ROOT)}:{n}" for n, line in
                  enumerate(text.splitlines(), start=1) if stale.search(line)]
    assert found == []


def test_the_readme_is_the_front_door() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    assert len(readme.encode("utf-8")) < 8 * 1024
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", readme, re.MULTILINE | re.DOTALL)
    assert "vcmon run" in blocks[0]
    assert "./tests/run.sh" in blocks[1]
    # the two commands come first: nothing but a few lines of text before them
    assert readme.index("```") < 400
    # every page of docs/ is linked from it
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{page.name})" in readme or f"(docs/{page.name}#" in readme, page.name


def test_slugs_are_githubs() -> None:
    assert slug("Several instances (sharding)") == "several-instances-sharding"
    assert slug("`vcmon report`") == "vcmon-report"
    assert slug("Scale: tens of thousands of sites on one core") == (
        "scale-tens-of-thousands-of-sites-on-one-core")
    assert slug("Hội trường Tỉnh ủy") == "hội-trường-tỉnh-ủy"
    assert slug("RTT and one-way latency") == "rtt-and-one-way-latency"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n### A\n") == {"a", "a-1", "a-2"}


def test_the_check_sees_a_wrong_anchor_and_a_missing_file(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n## Real heading\n\n[ok](#real-heading) [ok](page.md#page)\n"
                    "[bad](#no-such-heading) [gone](missing.md) [web](https://example.org/#x)\n"
                    "`[code](#not-a-link)`\n", "utf-8")
    assert link_problems(page) == [
        f"{page}: #no-such-heading: no heading #no-such-heading in this file",
        f"{page}: missing.md: no such file missing.md",
    ]
    code = tmp_path / "code.py"
    code.write_text('"""See docs/operations.md#securing-the-endpoints and\n'
                    'docs/operations.md#no-such-section."""\n', "utf-8")
    assert pointer_problems(code) == [
        f"{code}:2: docs/operations.md#no-such-section: no heading #no-such-section in "
        "docs/operations.md"]
