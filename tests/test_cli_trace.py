"""``vcmon trace SITE|ADDRESS``: the MTR-style report, JSON, exit codes, bad input.

Sites live in a routed lab the test makes (host → core → district → commune), routes
checked before the first packet; the rest traces loopback only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.cli import EXIT_CONFIG, main
from monitor.lab.routed import RoutedLab
from tests.netns import skip_unless_available


@pytest.fixture
def lab() -> Iterator[RoutedLab]:
    with RoutedLab(("core", "district", "commune")) as made:
        made.check_route(made.target)
        made.check_route(made.target6)
        yield made


def inventory(tmp_path: Path, lab: RoutedLab) -> Path:
    path = tmp_path / "sites.yaml"
    path.write_text(f"""\
sites:
  - {{id: xa-a, name: Xã A, tier: commune, address: {lab.target}}}
  - {{id: xa-v6, name: Xã B, tier: commune, address: "{lab.target6}"}}
""")
    return path


@skip_unless_available
def test_a_site_of_the_inventory_is_traced_and_its_bad_hop_named(
        lab: RoutedLab, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(inventory(tmp_path, lab))
    assert main(["trace", "xa-a", "--config", config, "-c", "5", "-i", "0.05"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"site xa-a\ntrace to {lab.target}: 5 cycles")
    assert "no bad hop" in out.splitlines()
    lab.lose(1, 0.5)
    assert main(["trace", "xa-v6", "--config", config, "-c", "20", "-i", "0.05",
                 "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["site"] == "xa-v6" and document["target"] == lab.target6
    assert document["bad_hop"]["ttl"] == 2
    assert document["bad_hop"]["address"] == lab.hop_address(1, v6=True)
    assert [hop["address"] for hop in document["hops"]] == lab.path(v6=True)


@skip_unless_available
def test_a_dead_end_is_reported_with_silent_hops_and_exit_1(
        lab: RoutedLab, capsys: pytest.CaptureFixture[str]) -> None:
    lab.down(1)
    assert main(["trace", lab.target, "-c", "3", "-i", "0.05", "--max-hops", "6"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[3].split()[:2] == ["2", "*"]
    assert lines[-1] == ("first bad hop: 2: no reply from hop 2 on; the destination was "
                         "not reached")


@pytest.mark.parametrize(("argv", "expected"), [
    (["trace", "no-such-site.invalid"],
     "vcmon trace: no-such-site.invalid is neither a site of the inventory nor an address "
     "that resolves"),
    (["trace", "127.0.0.1", "--interval", "9"],
     "vcmon trace: interval must be 0.01 to 5.0 s, not 9.0"),
    (["trace", "127.0.0.1", "--max-hops", "0"],
     "vcmon trace: max_hops must be 1 to 64, not 0"),
])
def test_bad_input_is_refused_with_exit_2(argv: list[str], expected: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == EXIT_CONFIG
    assert capsys.readouterr().err.startswith(expected)


def test_cycles_out_of_range_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["trace", "127.0.0.1", "--cycles", "0"])
    assert exited.value.code == 2
    assert "0 is not a number of cycles in 1..100" in capsys.readouterr().err
