"""The house's rules that import-linter does not check: a module with a leading underscore
is private to its package, so only modules of that package import it (tests included)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("monitor", "probes", "grafana", "tests")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def private_owner(module: str) -> str | None:
    """The package a module is private to: the one holding its first ``_x`` part."""
    parts = module.split(".")
    for i, part in enumerate(parts[1:], start=1):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    return None


def imported_modules(tree: ast.AST, here: str) -> Iterator[tuple[int, str]]:
    package = here.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            # `from package import _module`
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    candidate = f"{base}.{alias.name}"
                    if (ROOT / (candidate.replace(".", "/") + ".py")).exists():
                        yield node.lineno, candidate


def trespasses(source: str, here: str) -> list[str]:
    found = []
    for line, module in imported_modules(ast.parse(source), here):
        owner = private_owner(module)
        if owner is not None and here != owner and not here.startswith(owner + "."):
            found.append(f"{here}:{line} imports {module}, private to {owner}")
    return found


def test_private_modules_are_imported_only_inside_their_package() -> None:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found += trespasses(path.read_text("utf-8"), module_name(path))
    assert found == []


def test_the_check_sees_a_trespass() -> None:
    assert trespasses("from probes._service import Dscp\n", "monitor.inventory.schema") == [
        "monitor.inventory.schema:1 imports probes._service, private to probes"]
    assert trespasses("from probes import _service\n", "tests.x") == [
        "tests.x:1 imports probes._service, private to probes"]
    assert trespasses("from probes._result import Outcome\n", "probes.icmp") == []
    assert trespasses("from ._ip import ip_version\n", "probes.icmp") == []
