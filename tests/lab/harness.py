"""vcmon's daemon, in-process, against a lab: optional loopback sites and scrapes.

Used by the lab's accuracy tests and by tests/bench/bench_lab.py. Nothing is probed
before ``check_routes`` has seen every lab address leave through the lab's own veth
and every other address stay on ``lo``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from monitor.daemon import Daemon
from monitor.inventory import Config, parse_config
from monitor.lab import netlab
from monitor.lab.netlab import Lab
from monitor.status.window import Sample, WindowStats, summarize
from tests.conftest import free_port

LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


def loopback_sites(count: int) -> list[dict[str, Any]]:
    """127.30.X.Y, never .0 or .255: other engineers' tests use 127.10/127.20."""
    return [{"id": f"loop-{i:05d}", "name": f"Loopback {i}", "tier": "unit",
             "address": f"127.30.{i // 250}.{i % 250 + 1}"} for i in range(count)]


def inventory(path: Path, extra_sites: list[dict[str, Any]] | None = None,
              defaults: dict[str, Any] | None = None) -> Config:
    """The lab's inventory file as ``vcmon run`` reads it, plus ``extra_sites``."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    document["sites"] += extra_sites or []
    if defaults is not None:
        document["defaults"] = defaults
    # every series of every site: the accuracy checks read window packets from /metrics
    document["series"] = {"full": {"tiers": ["province", "district", "commune", "unit"]}}
    return parse_config(yaml.safe_dump(document, allow_unicode=True), str(path))


def check_routes(config: Config, lab: Lab) -> None:
    """Refuse (AssertionError) unless every address stays on lo or goes into the lab."""
    in_lab = [s.address for s in config.sites if ipaddress.ip_address(s.address) in lab.network]
    others = [s.address for s in config.sites if s.address not in set(in_lab)]
    assert all(ipaddress.ip_address(a) in LOOPBACK for a in others), others
    netlab.check_routes(lab, in_lab)
    devices = netlab.route_devices(others)
    assert all(devices.get(a) == "lo" for a in others), "a loopback site does not route via lo"


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body


@dataclass
class Running:
    daemon: Daemon
    url: str
    scrape_seconds: list[float] = field(default_factory=list)
    last_scrape: bytes = b""

    async def scrape(self) -> bytes:
        started = time.monotonic()
        # from a thread, as Prometheus would: the daemon's loop serves it meanwhile
        self.last_scrape = await asyncio.to_thread(_fetch, self.url)
        self.scrape_seconds.append(time.monotonic() - started)
        return self.last_scrape

    async def scrape_forever(self, every: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for n in range(1, 100_000):
            await self.scrape()
            await asyncio.sleep(max(0.0, start + n * every - loop.time()))

    def samples(self) -> dict[str, list[Sample]]:
        now = self.daemon.table.clock()
        return {state.site.id: state.window.samples(now) for state in self.daemon.table}


@contextlib.asynccontextmanager
async def running(config: Config, lab: Lab, scrape_every: float | None = None
                  ) -> AsyncIterator[Running]:
    check_routes(config, lab)
    port = free_port()
    daemon = Daemon(config, listen=f"127.0.0.1:{port}", registry=CollectorRegistry())
    run = Running(daemon, f"http://127.0.0.1:{port}/metrics")
    await daemon.startup()
    scraper = None
    try:
        if scrape_every is not None:
            scraper = asyncio.create_task(run.scrape_forever(scrape_every))
        yield run
    finally:
        if scraper is not None:
            scraper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scraper
        await daemon.shutdown()


@dataclass
class Measured:
    samples: dict[str, list[Sample]]
    stats: dict[str, WindowStats]
    # per site, from the last scrape: rtt_avg, jitter, loss, window_packets
    scraped: dict[str, dict[str, float]]
    scrapes: int
    slowest_scrape: float
    skipped_cycles: int
    # what vcmon_site_up says at the end (None: not known yet)
    up: dict[str, bool | None]


def parse_scrape(body: bytes) -> dict[str, dict[str, float]]:
    wanted = {("vcmon_site_rtt_seconds", "avg"): "rtt_avg", ("vcmon_site_jitter_seconds", ""):
              "jitter", ("vcmon_site_loss_ratio", ""): "loss",
              ("vcmon_site_window_packets", ""): "window_packets"}
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            key = wanted.get((sample.name, sample.labels.get("stat", "")))
            if key is not None:
                found.setdefault(sample.labels["site"], {})[key] = sample.value
    return found


async def measure(config: Config, lab: Lab, seconds: float,
                  scrape_every: float | None = None) -> Measured:
    """Run the daemon for ``seconds``; the window statistics and samples of every site."""
    async with running(config, lab, scrape_every) as run:
        await asyncio.sleep(seconds)
        samples = run.samples()
        up = {state.site.id: state.up for state in run.daemon.table}
        scraped = parse_scrape(await run.scrape()) if scrape_every is not None else {}
        return Measured(samples, {site: summarize(s) for site, s in samples.items()}, scraped,
                        len(run.scrape_seconds), max(run.scrape_seconds, default=0.0),
                        run.daemon.skipped_cycles, up)
