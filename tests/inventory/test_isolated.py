"""The daemon's inventory reader runs in a child process: same answers as in-process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from monitor.inventory import ConfigError, isolated, load_config
from monitor.inventory.isolated import load_config_isolated, load_config_isolated_async

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
def test_problems_arrive_with_their_lines(name: str) -> None:
    path = str(DATA / name)
    with pytest.raises(ConfigError) as in_process:
        load_config(path)
    with pytest.raises(ConfigError) as child:
        load_config_isolated(path)
    assert child.value.problems == in_process.value.problems


def test_a_child_that_dies_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def dying(path: str) -> bytes:
        os._exit(3)

    monkeypatch.setattr(isolated, "read_pickled", dying)
    with pytest.raises(ConfigError) as failed:
        load_config_isolated("/etc/vcmon/x.yaml")
    assert str(failed.value) == (
        "/etc/vcmon/x.yaml: reading the inventory failed (the inventory reader child failed "
        "(exit code 3)); run `vcmon check-config /etc/vcmon/x.yaml` to see why")


async def test_the_daemon_awaits_the_same_answers(tmp_path: Path) -> None:
    path = tmp_path / "sites.yaml"
    path.write_text("sites:\n  - {id: tinh, name: Tỉnh, tier: province, address: 127.0.0.10}\n")
    assert (await load_config_isolated_async(str(path))).site("tinh").address == "127.0.0.10"
    bad = str(DATA / "invalid-bad-address.yml")
    with pytest.raises(ConfigError) as in_process:
        load_config(bad)
    with pytest.raises(ConfigError) as awaited:
        await load_config_isolated_async(bad)
    assert awaited.value.problems == in_process.value.problems


def test_a_bug_in_the_reader_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "sites.yaml"
    path.write_text("sites:\n  - {id: tinh, name: Tỉnh, tier: province, address: 127.0.0.10}\n")

    def broken(_: object) -> None:
        raise KeyError("district")

    monkeypatch.setattr(isolated, "load_config", broken)
    with pytest.raises(ConfigError) as failed:
        load_config_isolated(str(path))
    assert "reading the inventory failed (KeyError: 'district')" in str(failed.value)


def test_where_no_child_can_be_forked_it_reads_in_a_thread(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Out of processes (EAGAIN): reloads still work."""
    path = tmp_path / "sites.yaml"
    path.write_text("sites:\n  - {id: tinh, name: Tỉnh, tier: province, address: 127.0.0.10}\n")

    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    assert load_config_isolated(str(path)).site("tinh").address == "127.0.0.10"
    with pytest.raises(ConfigError):
        load_config_isolated(str(DATA / "invalid-bad-address.yml"))


def test_the_child_reads_where_setrlimit_is_forbidden(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
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
    config = pickle.loads(isolated.read_pickled(str(path)))
    assert config.site("tinh").address == "127.0.0.10"


def test_the_child_is_limited_above_what_the_daemon_maps(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import resource

    limits: dict[int, int] = {}
    monkeypatch.setattr(resource, "setrlimit", lambda which, pair: limits.update({which: pair[0]}))
    monkeypatch.setattr(resource, "getrlimit", lambda _: (resource.RLIM_INFINITY,) * 2)
    path = tmp_path / "sites.yaml"
    path.write_text("sites:\n  - {id: tinh, name: Tỉnh, tier: province, address: 127.0.0.10}\n")
    isolated.read_pickled(str(path))
    with open("/proc/self/statm", "rb") as statm:
        mapped = int(statm.read().split()[0]) * resource.getpagesize()
    assert mapped < limits[resource.RLIMIT_AS] - isolated.MEMORY_LIMIT + (64 << 20)
    assert limits[resource.RLIMIT_AS] >= isolated.MEMORY_LIMIT
    assert limits[resource.RLIMIT_CPU] == isolated.CPU_SECONDS
