"""Paths and tools shared by the deploy tests: the real promtool, amtool and Alertmanager."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"


def tool(name: str, package: str) -> str:
    """The path of a Debian tool, or skip: tests/run.sh and CI install it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not found: install Debian's {package} (tests/run.sh does)")
    return path


def run(args: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60,
                          check=False)
