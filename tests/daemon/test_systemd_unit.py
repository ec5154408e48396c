"""The shipped unit passes systemd's own checks."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.http.listener import FD_SHARE, MAX_CONNECTIONS

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "vcmon.service"

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze missing: tests/run.sh installs systemd")


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's vcmon, which verify requires."""
    vcmon = Path(sys.executable).with_name("vcmon")
    assert vcmon.exists(), "the package is not installed in this environment"
    text = UNIT.read_text().replace("/opt/vcmon/bin/vcmon", str(vcmon))
    path = tmp_path / "vcmon.service"
    path.write_text(text)
    return path


def test_verify_prints_nothing(unit: Path) -> None:
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60, check=False)
    # verify only warns on unknown keys and bad values: any output is a finding
    assert done.returncode == 0
    assert done.stdout + done.stderr == ""


def test_security_exposure_is_at_most_2(unit: Path) -> None:
    done = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                          capture_output=True, text=True, timeout=60, check=False)
    match = re.search(r"Overall exposure level for vcmon\.service: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= 2.0, done.stdout


def test_unit_asks_for_what_the_daemon_does() -> None:
    text = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=", "ExecReload=/bin/kill -HUP $MAINPID",
                 "DynamicUser=yes", "AmbientCapabilities=CAP_NET_RAW",
                 "CapabilityBoundingSet=CAP_NET_RAW", "ProtectSystem=strict",
                 "RestrictAddressFamilies=AF_INET AF_INET6 AF_NETLINK AF_UNIX",
                 "SystemCallFilter=@system-service"):
        assert line in text, line
    # room for the HTTP connection cap: a quarter of the soft limit, at most 1,024
    limit = int(re.search(r"^LimitNOFILE=(\d+)$", text, re.M).group(1))  # type: ignore[union-attr]
    assert limit // FD_SHARE >= MAX_CONNECTIONS


def test_the_example_config_is_valid_and_sets_every_option() -> None:
    from monitor.inventory import Config, ProbeSettings, load_config
    from monitor.inventory.calendar import Schedule
    from monitor.inventory.schema import SERVICE_MODELS
    from monitor.inventory.thresholds import HealthSettings

    example = UNIT.parents[1] / "vcmon.example.yaml"
    config = load_config(example)
    text = example.read_text(encoding="utf-8")
    # every option is shown (and so documented) in the example
    for model in (Config, ProbeSettings, HealthSettings, Schedule, *SERVICE_MODELS.values()):
        for name in model.model_fields:
            if name != "source":
                assert re.search(rf"^\s*{name}:", text, re.M), f"{model.__name__}.{name}"
    assert len(config.sites) == 3
