"""Three ``vcmon run --shard I/3`` on the embedded inventory, scraped by a real Prometheus
through the shipped sharded configuration (file-based discovery, the shipped rules)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.inventory import default_config
from monitor.inventory.selection import select
from monitor.inventory.shard import Shard
from tests.conftest import free_port, stop_process, wait_until
from tests.deploy.conftest import PROMETHEUS_DIR, ROOT, run, tool

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMP sockets need root here")

COUNT = 3


@dataclass
class Deployment:
    prometheus: str
    instances: list[str]  # host:port, by shard index

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"http://{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float:
        [sample] = self.query(expr)
        return float(sample["value"][1])


def _inventory(tmp: Path) -> Path:
    """The embedded inventory, probed every 50 ms so that the test settles in seconds."""
    text = resources.files("monitor").joinpath("data/default-inventory.yaml").read_text("utf-8")
    document = yaml.safe_load(text)
    document["defaults"] = {**document.get("defaults", {}),
                            "interval": "50ms", "timeout": "500ms", "window": "5s"}
    path = tmp / "inventory.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path


def _prometheus_config(tmp: Path, instances: list[str]) -> Path:
    """The shipped prometheus-shards.yml, with the test's targets and a 1 s scrape."""
    targets = tmp / "targets" / "vcmon.yml"
    targets.parent.mkdir()
    targets.write_text(yaml.safe_dump(
        [{"targets": [address], "labels": {"shard": str(i)}}
         for i, address in enumerate(instances)]))
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus-shards.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS_DIR / rules) for rules in config["rule_files"]]
    del config["alerting"]  # no Alertmanager here: the paging tests have theirs
    [job] = config["scrape_configs"]
    [discovery] = job["file_sd_configs"]
    discovery["files"] = [str(tmp / pattern) for pattern in discovery["files"]]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("shards")
    inventory = _inventory(tmp)
    instances = [f"127.0.0.1:{free_port()}" for _ in range(COUNT)]
    prometheus = f"127.0.0.1:{free_port()}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for index, listen in enumerate(instances):
            with (tmp / f"vcmon-{index}.log").open("wb") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "monitor.cli", "run", "--config", str(inventory),
                     "--shard", f"{index}/{COUNT}", "--listen", listen, "--log-format", "json"],
                    cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log))
        with (tmp / "prometheus.log").open("wb") as log:
            procs.append(subprocess.Popen(
                [tool("prometheus", "prometheus"),
                 f"--config.file={_prometheus_config(tmp, instances)}",
                 f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address={prometheus}",
                 "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log))
        scn = Deployment(prometheus, instances)

        def settled() -> bool:
            return (scn.value('count(up{job="vcmon"} == 1)') == COUNT
                    and scn.value('count(vcmon_site_status{status="ok"} == 1)') == 240
                    and scn.value('sum(status:vcmon_sites:sum{status="ok"})') == 240)

        wait_until("three shards scraped, every site ok", settled, 90, *procs)
        yield scn
    finally:
        for proc in procs:
            stop_process(proc, 10.0)


def test_the_sharded_prometheus_config_is_valid() -> None:
    for name in ("prometheus-shards.yml", "prometheus-national.yml"):
        done = run([tool("promtool", "prometheus"), "check", "config", name], cwd=PROMETHEUS_DIR)
        assert done.returncode == 0, done.stdout + done.stderr


def test_every_site_appears_exactly_once_across_the_instances(deployment: Deployment) -> None:
    ids = {site.id for site in default_config().sites}
    for metric in ("vcmon_site_info", "vcmon_site_up", "vcmon_probe_packets_sent_total",
                   'vcmon_site_status{status="ok"}', "vcmon_site_unreachable_behind"):
        per_site = deployment.query(f"count by (site) ({metric})")
        assert {sample["metric"]["site"] for sample in per_site} == ids, metric
        assert {sample["value"][1] for sample in per_site} == {"1"}, metric


def test_the_counts_add_up_to_240(deployment: Deployment) -> None:
    assert deployment.value('sum(vcmon_sites_configured{job="vcmon"})') == 240
    assert deployment.value("count(vcmon_site_info)") == 240
    # the instances do probe other shards' sites (for root cause), but export none
    assert deployment.value("sum(vcmon_sites_upstream)") > 0


def test_each_instance_exports_its_own_shard(deployment: Deployment) -> None:
    embedded = default_config()
    for index, address in enumerate(deployment.instances):
        [info] = deployment.query(f'vcmon_shard_info{{instance="{address}"}}')
        assert (info["metric"]["index"], info["metric"]["count"]) == (str(index), str(COUNT))
        owned = select(embedded.model_copy(
            update={"shard": Shard(index=index, count=COUNT)})).owned
        sites = deployment.query(f'vcmon_site_info{{instance="{address}"}}')
        assert {sample["metric"]["site"] for sample in sites} == owned
        configured = deployment.value(f'sum(vcmon_sites_configured{{instance="{address}"}})')
        assert configured == len(owned)
