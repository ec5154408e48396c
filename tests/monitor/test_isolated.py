"""The daemon's inventory reader runs in a child process: same answers as in-process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from monitor import _isolated
from monitor._isolated import load_config_isolated, load_config_isolated_async
from monitor.config import ConfigError, load_config

DATA = Path(__file__).parent / "testdata"


def test_a_valid_inventory_arrives_whole(tmp_path: Path) -> None:
    path = tmp_path / "sites.yaml"
    path.write_text("defaults:\n"
                    "  dscp: AF41\n"
                    "  probes:\n"  # one of every kind: models made at import must pickle
                    "    - {kind: icmp, name: icmp-be, dscp: 0}\n"
                    "    - {kind: tcp, port: h323}\n"
                    "    - {kind: tls}\n"
                    "    - {kind: sip, transport: tcp}\n"
                    "    - {kind: http, url: 'http://127.0.0.1/'}\n"
                    "sites:\n"
                    "  - {id: tinh, name: Tỉnh, tier: province, address: 127.0.0.10}\n"
                    "  - {id: xa, name: Xã, tier: commune, parent: tinh, address: 127.0.0.11}\n")
    config = load_config_isolated(str(path))
    assert config.model_dump() == load_config(path).model_dump()
    assert [p.kind for p in config.defaults.probes] == ["icmp", "tcp", "tls", "sip", "http"]
    # the private indexes come along: lookups work without re-validation
    assert config.site("xa").parent == "tinh"
    assert [site.id for site in config.children("tinh")] == ["xa"]


@pytest.mark.parametrize("name", ["invalid-bad-address.yml", "invalid-billion-laughs.yml",
                                  "invalid-alias-loop.yml"])
async def test_problems_arrive_with_their_lines(name: str) -> None:
    path = str(DATA / name)
    with pytest.raises(ConfigError) as in_process:
        load_config(path)
    with pytest.raises(ConfigError) as child:
        load_config_isolated(path)
    with pytest.raises(ConfigError) as awaited:
        await load_config_isolated_async(path)
    assert child.value.problems == in_process.value.problems == awaited.value.problems


async def test_a_child_that_dies_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def dying(path: str) -> list[str]:
        return [sys.executable, "-c", "import sys; sys.stderr.write('MemoryError\\n'); "
                "sys.exit(3)"]

    monkeypatch.setattr(_isolated, "_command", dying)
    with pytest.raises(ConfigError) as failed:
        load_config_isolated("/etc/vcmon/x.yaml")
    assert str(failed.value) == (
        "/etc/vcmon/x.yaml: reading the inventory failed (MemoryError); "
        "run `vcmon check-config /etc/vcmon/x.yaml` to see why")
    with pytest.raises(ConfigError) as failed_async:
        await load_config_isolated_async("/etc/vcmon/x.yaml")
    assert "reading the inventory failed (MemoryError)" in str(failed_async.value)


async def test_an_interpreter_that_cannot_start_reads_in_process(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """After dropping to a user who may not run the interpreter, reloads still work."""
    path = tmp_path / "sites.yaml"
    path.write_text("sites:\n  - {id: tinh, name: Tỉnh, tier: province, address: 127.0.0.10}\n")
    monkeypatch.setattr(_isolated, "_command", lambda _: [str(tmp_path / "no-such-python")])
    assert load_config_isolated(str(path)).site("tinh").address == "127.0.0.10"
    assert (await load_config_isolated_async(str(path))).site("tinh").address == "127.0.0.10"
    with pytest.raises(ConfigError):
        await load_config_isolated_async(str(DATA / "invalid-bad-address.yml"))


def test_the_child_reads_where_setrlimit_is_forbidden(
        monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes],
        tmp_path: Path) -> None:
    """Under the shipped systemd unit (SystemCallFilter=~@resources) setrlimit fails
    with EPERM: the child must read the inventory all the same."""
    import pickle
    import resource

    def forbidden(*_: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(resource, "setrlimit", forbidden)
    monkeypatch.setattr(resource, "getrlimit", lambda _: (resource.RLIM_INFINITY,) * 2)
    path = tmp_path / "sites.yaml"
    path.write_text("sites:\n  - {id: tinh, name: Tỉnh, tier: province, address: 127.0.0.10}\n")
    assert _isolated.main(str(path)) == 0
    config = pickle.loads(capsysbinary.readouterr().out)
    assert config.site("tinh").address == "127.0.0.10"
