"""``vcmon lab routed``: the routers come up with the fault at the chosen hop, the
written inventory traces through them, and the lab goes at SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from monitor.cli import main
from tests.netns import skip_unless_available

pytestmark = skip_unless_available


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                         check=True, timeout=10).stdout
    return {line.split()[0] for line in out.splitlines() if line}


def test_a_fault_at_the_chosen_router_is_named_and_sigterm_removes_the_lab(
        tmp_path: Path) -> None:
    inventory = tmp_path / "routed.yaml"
    lab = subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", "lab", "routed", "--routers", "core,dist,xa",
         "--fault", "dist=loss:0.5", "--inventory", str(inventory), "--hold", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert lab.stdout is not None
        lines = [lab.stdout.readline() for _ in range(8)]
        assert lines[-1] == "Ctrl-C takes the lab down\n", lines
        prefix = lines[0].split()[2]
        assert {f"{prefix}-{router}" for router in ("core", "dist", "xa")} <= namespaces()
        assert lines[4] == "  fault: dist (hop 2) drops 0.5 of what reaches it\n"
        document = yaml.safe_load(inventory.read_text())
        assert [(s["id"], s["tier"], s.get("parent")) for s in document["sites"]] == [
            ("core", "province", None), ("dist", "district", "core"), ("xa", "commune", "dist")]
        hop2 = document["sites"][1]["address"]
        assert main(["trace", "xa", "--config", str(inventory), "-c", "20", "-i",
                     "0.05"]) == 1
        assert main(["trace", "core", "--config", str(inventory), "-c", "5", "-i",
                     "0.05"]) == 0
        assert hop2.startswith("198.19.")
    finally:
        lab.send_signal(signal.SIGTERM)
        out, err = lab.communicate(timeout=30)
    assert lab.returncode == 0, err
    assert out.endswith("routed lab removed\n") and not inventory.exists()
    assert not any(name.startswith(prefix) for name in namespaces())


@pytest.mark.parametrize(("argv", "expected"), [
    (["--fault", "dist=slow"], "is not a fault; write ROUTER=loss:0.3, ROUTER=down or "
                               "ROUTER=rate-limit:1000"),
])
def test_a_bad_fault_is_a_usage_error(argv: list[str], expected: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["lab", "routed", *argv])
    assert expected in capsys.readouterr().err


def test_an_unknown_router_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "routed", "--fault", "nowhere=down", "--hold", "0"]) == 1
    assert capsys.readouterr().err == (
        "vcmon lab: no router 'nowhere' in this lab; the routers are core, district, "
        "commune\n")
