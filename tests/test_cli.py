"""The technician-facing commands: check-config, inventory, probe."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

from monitor.cli import main

VALID = """\
defaults:
  interval: 500ms
sites:
  - id: tinh
    name: Hội trường Tỉnh ủy
    tier: province
    address: 127.0.0.10
  - id: huyen
    name: Huyện ủy Tiên Du
    tier: district
    parent: tinh
    address: 127.0.0.11
"""


def test_check_config_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sites.yaml"
    path.write_text(VALID, encoding="utf-8")
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: ok (2 sites)\n"


def test_check_config_lists_every_problem(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sites.yaml"
    path.write_text(VALID.replace("500ms", "soon").replace("parent: tinh", "parent: nowhere")
                    .replace("127.0.0.11", "127.0.0.10"), encoding="utf-8")
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3, err
    assert err[0].startswith(f"{path}:2: defaults.interval: ")
    assert any(line.startswith(f"{path}:11: sites[1].parent: ") for line in err)
    assert any(line.startswith(f"{path}:12: sites[1].address: ") for line in err)


def test_check_config_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_inventory_of_the_embedded_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inventory"]) == 0
    out = capsys.readouterr().out
    assert "Bắc Ninh" in out
    assert re.search(r"\b240\b", out)
    assert re.search(r"\b160\b", out) and re.search(r"\b80\b", out)


@pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMP sockets need root here")
def test_probe_prints_replies_and_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "127.0.0.1", "--count", "4", "--interval", "0.05"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "PROBE 127.0.0.1 (127.0.0.1): 56 data bytes, 4 probes every 0.05 s"
    replies = [line for line in out if line.startswith("reply from 127.0.0.1: seq=")]
    assert len(replies) == 4
    assert all(float(line.split("time=")[1].split()[0]) < 1.0 for line in replies)
    assert "4 sent, 4 received, 0.0% loss" in out
    assert any(line.startswith("rtt min/avg/median/p95/max/stddev = ") for line in out)
    assert any(line.startswith("jitter ") and " MOS 4.4" in line for line in out)


def test_probe_unresolvable_name(capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # No DNS query leaves the machine: the resolver itself answers "no such name".
    def no_such_name(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    assert main(["probe", "no-such-host.invalid", "--count", "1"]) == 2
    assert "cannot resolve no-such-host.invalid" in capsys.readouterr().err


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["probe", "127.0.0.1", "--count", "0"])
    assert exc.value.code == 2
    assert "0 is not a count between 1 and 1000000" in capsys.readouterr().err
