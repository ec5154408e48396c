"""Sharding: the stable split of an inventory, and root cause across shards."""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from monitor.cli import main
from monitor.daemon import Daemon
from monitor.inventory import Config, default_config, parse_config
from monitor.inventory.selection import select
from monitor.inventory.shard import Shard, jump, parse_shard, shard_of, site_key
from monitor.lab.sites import synthetic_inventory
from monitor.metrics.instance import DaemonCollector
from monitor.metrics.page import render
from monitor.status.health import HealthTracker, Status
from monitor.status.records import site_records
from monitor.status.sites import SiteTable
from probes import Outcome, ProbeResult
from tests.conftest import free_port

T0 = 1_774_569_600.0


def sharded(config: Config, index: int, count: int) -> Config:
    return config.model_copy(update={"shard": Shard(index=index, count=count)})


@pytest.fixture(scope="module")
def embedded() -> Config:
    return default_config()


@pytest.fixture(scope="module")
def big() -> Config:
    """20,000 sites in the province's proportions (1 : 11/239 : the rest)."""
    document = synthetic_inventory(20_000)
    for i, site in enumerate(document["sites"]):
        site["address"] = str(ipaddress.IPv4Address("127.10.0.1") + i)
    return Config.model_validate(document)


@pytest.mark.parametrize("count", range(1, 9))
def test_the_shards_cover_every_site_exactly_once(
        count: int, embedded: Config, big: Config) -> None:
    for config in (embedded, big):
        owners: Counter[str] = Counter()
        for index in range(count):
            owners.update(select(sharded(config, index, count)).owned)
        assert set(owners) == {site.id for site in config.sites}
        assert set(owners.values()) == {1}


def test_without_a_shard_one_instance_owns_everything(embedded: Config) -> None:
    selection = select(embedded)
    assert len(selection.owned) == 240 and not selection.upstream
    assert select(sharded(embedded, 0, 1)) == selection


def test_the_split_is_balanced(big: Config) -> None:
    ids = [site.id for site in big.sites]
    for count in range(2, 9):
        sizes = Counter(shard_of(site_id, count) for site_id in ids)
        mean = len(ids) / count
        # binomial standard deviation at 8 shards is ~47 sites (1.9 %); 6 % is > 3 sigma
        assert max(abs(size - mean) for size in sizes.values()) < 0.06 * mean, sizes


def test_adding_a_site_moves_no_other_site(embedded: Config) -> None:
    document: dict[str, Any] = {"sites": [
        site.model_dump(exclude_none=True, exclude={"district"}) for site in embedded.sites]}
    document["sites"].append({"id": "bn-tiendu-xa-moi", "name": "Xã mới", "tier": "commune",
                              "parent": "bn-tiendu", "address": "127.10.250.1"})
    grown = Config.model_validate(document)
    for count in (2, 3, 5, 8):
        for index in range(count):
            before = select(sharded(embedded, index, count)).owned
            after = select(sharded(grown, index, count)).owned
            assert after - {"bn-tiendu-xa-moi"} == before


def test_growing_the_count_moves_sites_only_to_the_new_shard(big: Config) -> None:
    ids = [site.id for site in big.sites]
    for count in range(1, 8):
        moved = [i for i in ids if shard_of(i, count + 1) != shard_of(i, count)]
        assert all(shard_of(i, count + 1) == count for i in moved)
        # the new instance takes its fair share, 1/(n+1), and nothing else moves
        assert len(moved) == pytest.approx(len(ids) / (count + 1), rel=0.08)


def test_the_hash_is_the_same_everywhere() -> None:
    # The reference implementation's vectors (Lamping and Veach's C++, as in Go's
    # dgryski/go-jump tests) …
    assert [jump(1, 1), jump(42, 57), jump(0xDEAD10CC, 1), jump(0xDEAD10CC, 666),
            jump(256, 1024)] == [0, 43, 0, 361, 520]
    # … and pinned ids: every instance of a deployment (other machines, other Python
    # versions, later vcmon releases) must compute the same owner for the same id.
    assert site_key("bn-tinh-uy") == 0xA9F854B9A81D45CB
    assert [shard_of("bn-tien-du-lac-ve", n) for n in range(1, 9)] == [
        0, 1, 2, 2, 2, 2, 2, 2]


def test_each_instance_also_probes_the_upstream_chain_of_its_sites(embedded: Config) -> None:
    for index in range(3):
        config = sharded(embedded, index, 3)
        selection = select(config)
        assert not selection.owned & selection.upstream
        needed = set()
        for site_id in selection.owned:
            parent = config.site(site_id).parent
            while parent is not None:
                needed.add(parent)
                parent = config.site(parent).parent
        # exactly the other shards' sites that ours hang from, and no others
        assert selection.upstream == needed - selection.owned


def test_parse_shard() -> None:
    assert parse_shard("1/3") == Shard(index=1, count=3)
    assert str(parse_shard("0/1")) == "0/1"
    for text, message in [
        ("3/3", "shard 3/3: index 3 is not below count 3; the 3 instances are numbered 0 to 2"),
        ("0/0", "shard 0/0: 0 is not a valid shard count; use 1 to 1024"),
        ("1", "'1' is not a shard; write INDEX/COUNT, e.g. 0/3 for the first of three"),
        ("-1/3", "'-1/3' is not a shard; write INDEX/COUNT"),
    ]:
        with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")):
            parse_shard(text)


def test_shard_in_the_inventory() -> None:
    config = parse_config("shard: {index: 1, count: 2}\n" + TREE)
    assert config.shard == Shard(index=1, count=2)


# xa-a and xa-b hang from huyen; which instance owns which is the hash's choice, so the
# test finds a shard count that splits a child from its district.
TREE = """
defaults: {interval: 1s, window: 60s, down_after: 3}
health: {recover_after: 2}
sites:
  - {id: tinh, name: Tỉnh, tier: province, address: 127.0.0.10}
  - {id: huyen, name: Huyện, tier: district, parent: tinh, address: 127.0.0.11}
  - {id: xa-a, name: Xã A, tier: commune, parent: huyen, address: 127.0.0.12}
  - {id: xa-b, name: Xã B, tier: commune, parent: huyen, address: 127.0.0.13}
  - {id: xa-c, name: Xã C, tier: commune, parent: huyen, address: 127.0.0.14}
  - {id: huyen2, name: Huyện 2, tier: district, parent: tinh, address: 127.0.0.15}
"""


class Instance:
    """One shard's table and tracker, fed second by second for the sites it probes."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.now = T0
        self.table = SiteTable(config, clock=lambda: self.now)
        self.health = HealthTracker(config, T0)
        self.ignored_packets: Counter[str] = Counter()
        self.skipped_cycles = self.scheduler_sends = self.receive_dropped = 0

    def seconds(self, n: int, down: set[str]) -> None:
        for _ in range(n):
            for site_id in [*self.table.sites, *self.table.upstream]:
                lost = site_id in down
                self.table.record(ProbeResult(
                    site_id, "127.0.0.1", 0, self.now,
                    Outcome.TIMEOUT if lost else Outcome.REPLY, None if lost else 0.001))
            self.now += 1
            self.health.update(self.table, self.now, evaluate=False)


def split_child_from_parent() -> tuple[Config, str]:
    """A shard that owns a commune of huyen but not huyen itself, and that commune."""
    base = parse_config(TREE)
    for count in range(2, 9):
        for index in range(count):
            config = sharded(base, index, count)
            selection = select(config)
            mine = [s for s in ("xa-a", "xa-b", "xa-c") if s in selection.owned]
            if mine and "huyen" not in selection.owned:
                return config, mine[0]
    raise AssertionError("no shard count up to 8 splits a commune from its district")


def test_a_child_is_unreachable_when_its_parent_in_another_shard_is_down() -> None:
    config, child = split_child_from_parent()
    instance = Instance(config)
    assert "huyen" in instance.table.upstream and "huyen" not in instance.table.sites
    assert "huyen" in instance.health.upstream and "huyen" not in instance.health.sites
    instance.seconds(5, down=set())
    assert instance.health.sites[child].status is Status.OK
    # the district's uplink fails: its communes go silent with it
    instance.seconds(8, down={"huyen", "xa-a", "xa-b", "xa-c"})
    h = instance.health.sites[child]
    assert h.status is Status.UNREACHABLE, h.reason
    assert h.reason == "upstream site huyen is down"
    assert instance.health.root_cause(h) == "huyen"
    [record] = [r for r in site_records(instance.table, instance.health, config, instance.now)
                if r["id"] == child]
    assert record["root_cause"] == "huyen"
    # back: the child follows its uplink without ever reading down
    instance.seconds(6, down=set())
    assert instance.health.sites[child].status is Status.OK
    assert Status.DOWN not in {s.status for s in instance.health.sites.values()}


def test_the_root_cause_counts_the_sites_behind_it_in_every_shard() -> None:
    base = parse_config(TREE)
    for count in range(2, 9):
        owner = sharded(base, shard_of("huyen", count), count)
        if select(owner).owned >= {"xa-a", "xa-b", "xa-c"}:
            continue  # all in one shard: proves nothing here
        instance = Instance(owner)
        instance.seconds(8, down={"huyen", "xa-a", "xa-b", "xa-c"})
        h = instance.health.sites["huyen"]
        assert h.status is Status.DOWN
        assert h.unreachable_behind == 3
        break
    else:
        raise AssertionError("no shard count up to 8 splits huyen's communes")


def scrape(instance: Instance) -> dict[str, list[Any]]:
    registry = CollectorRegistry()
    registry.register(DaemonCollector(instance))
    text = render(instance, registry).decode()
    found: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def test_only_owned_sites_are_exported_counted_and_listed(embedded: Config) -> None:
    seen: Counter[str] = Counter()
    configured = 0.0
    for index in range(3):
        config = sharded(embedded, index, 3)
        instance = Instance(config)
        instance.seconds(1, down=set())
        selection = select(config)
        assert selection.upstream  # the province and some districts belong elsewhere
        samples = scrape(instance)
        exported = {s.labels["site"] for name, found in samples.items()
                    if name.startswith("vcmon_site_") or name.startswith("vcmon_probe_")
                    for s in found}
        assert exported == selection.owned
        seen.update(s.labels["site"] for s in samples["vcmon_site_info"])
        configured += sum(s.value for s in samples["vcmon_sites_configured"])
        [info] = samples["vcmon_shard_info"]
        assert info.labels == {"index": str(index), "count": "3"}
        assert samples["vcmon_sites_upstream"][0].value == len(selection.upstream)
        records = site_records(instance.table, instance.health, config, instance.now)
        assert {r["id"] for r in records} == selection.owned
        assert set(instance.health.sites) == selection.owned
    assert configured == 240
    assert len(seen) == 240 and set(seen.values()) == {1}


def test_the_cli_shows_what_a_shard_takes(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    path = tmp_path / "sites.yaml"
    path.write_text(TREE, encoding="utf-8")
    count = 3
    owned = select(sharded(parse_config(TREE), 0, count))
    assert main(["check-config", str(path), "--shard", f"0/{count}"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: ok (6 sites); shard 0/{count} owns {len(owned.owned)} of 6 ")
    assert out.endswith(f"probes {len(owned.upstream)} more upstream of them for root "
                        "cause only\n")
    assert main(["inventory", "--shard", "1/3"]) == 0
    assert "\nTotal: 240 sites\nshard 1/3 owns 81 of 240 sites (district 4, commune 55, " \
           "unit 22)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main(["run", "--shard", "3/3"])
    assert exited.value.code == 2
    assert "argument --shard: shard 3/3: index 3 is not below count 3" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMP sockets need root here")
async def test_the_daemon_probes_upstream_sites_and_keeps_its_shard_over_a_reload(
        tmp_path: Path) -> None:
    path = tmp_path / "sites.yaml"
    fast = TREE.replace("interval: 1s", "interval: 20ms, timeout: 200ms")
    path.write_text(fast, encoding="utf-8")
    config, child = split_child_from_parent()
    daemon = Daemon(parse_config(fast), config_path=str(path), registry=CollectorRegistry(),
                    listen=f"127.0.0.1:{free_port()}", shard=config.shard)
    await daemon.startup()
    try:
        await asyncio.sleep(0.5)
        selection = select(config)
        assert set(daemon.table.sites) == selection.owned and child in selection.owned
        assert set(daemon.table.upstream) == selection.upstream >= {"huyen"}
        assert daemon.table.upstream["huyen"].received > 0  # probed, not exported
        assert "huyen" not in daemon.health.sites
        # the file says nothing of shards; --shard holds across the reload
        path.write_text(fast + "  - {id: xa-d, name: Xã D, tier: commune, parent: huyen, "
                        "address: 127.0.0.16}\n", encoding="utf-8")
        assert await daemon.reload() == []
        assert daemon.config.shard == config.shard
        grown = select(daemon.config)
        assert grown.owned - {"xa-d"} == selection.owned
        assert set(daemon.table.sites) == grown.owned
    finally:
        await daemon.shutdown()
