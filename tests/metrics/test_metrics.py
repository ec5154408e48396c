"""The collector renders site state on scrape; real promtool checks the exposition."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from monitor.inventory import parse_config
from monitor.metrics import sites as exposition
from monitor.metrics.instance import DaemonCollector, DaemonMetrics
from monitor.metrics.page import SitePage, render
from monitor.metrics.sites import render_sites
from monitor.status.health import HealthTracker
from monitor.status.sites import SiteTable
from probes import Outcome, ProbeResult
from tests.conftest import promtool_check_metrics

CONFIG = """
defaults:
  interval: 1s
  window: 60s
  down_after: 2
sites:
  - id: tinh
    name: Hội trường Tỉnh ủy
    tier: province
    address: 127.0.0.10
  - id: xa-lac-ve
    name: UBND xã Lạc Vệ
    tier: commune
    parent: tinh
    provision: contract
    contract: {contractor: VNPT Bắc Ninh, reference: HĐ-01}
    address: 127.0.0.11
series:
  full: {tiers: [province]}  # tinh writes every series, the commune the default budget
"""

NOW = 1_000_000.0


class Source:
    def __init__(self) -> None:
        config = parse_config(CONFIG)
        self.config = config
        self.table = SiteTable(config, clock=lambda: NOW)
        self.health = HealthTracker(config, NOW - 60)
        self.ignored_packets: Counter[str] = Counter(foreign=3, late=1)
        self.skipped_cycles = 0
        self.receive_dropped = 2
        self.scheduler_sends = 7


def reply(site: str, at: float, rtt: float) -> ProbeResult:
    return ProbeResult(site, "127.0.0.10", 1, at, Outcome.REPLY, rtt)


def lost(site: str, at: float, outcome: Outcome = Outcome.TIMEOUT) -> ProbeResult:
    return ProbeResult(site, "127.0.0.11", 1, at, outcome)


class Scrape:
    """One rendering of /metrics, parsed back as Prometheus would read it."""

    def __init__(self, source: Source, registry: CollectorRegistry) -> None:
        self.source, self.registry = source, registry
        self.text = render(source, registry).decode()
        self.samples = [sample for family in text_string_to_metric_families(self.text)
                        for sample in family.samples]

    def get_sample_value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        for sample in self.samples:
            if sample.name == name and sample.labels == (labels or {}):
                return float(sample.value)
        return None

    def again(self) -> Scrape:
        return Scrape(self.source, self.registry)


@pytest.fixture
def scraped() -> tuple[Scrape, Source]:
    source = Source()
    for i, rtt in enumerate([0.010, 0.020, 0.030, 0.020]):
        source.table.record(reply("tinh", NOW - 10 + i, rtt))
    source.table.record(reply("tinh", NOW - 100, 5.0))  # outside the 60 s window
    source.table.record(lost("xa-lac-ve", NOW - 3))
    source.table.record(lost("xa-lac-ve", NOW - 2, Outcome.UNREACHABLE))
    # down at NOW - 2, confirmed once the two-interval hold for an upstream outage is over
    source.health.update(source.table, NOW - 2, evaluate=True)
    source.health.update(source.table, NOW, evaluate=True)
    registry = CollectorRegistry()
    DaemonMetrics(registry)
    registry.register(DaemonCollector(source))
    return Scrape(source, registry), source


LABELS = {"site": "tinh", "tier": "province", "district": "tinh", "provision": "vnpt"}
# no district-level ancestor: the site is its own district
XA = {"site": "xa-lac-ve", "tier": "commune", "district": "xa-lac-ve", "provision": "contract"}


def test_counters_and_window_stats(scraped: tuple[Scrape, Source]) -> None:
    registry, _ = scraped
    value = registry.get_sample_value
    assert value("vcmon_probe_packets_sent_total", LABELS) == 5
    assert value("vcmon_probe_packets_received_total", LABELS) == 5
    assert value("vcmon_site_up", LABELS) == 1
    assert value("vcmon_site_loss_ratio", LABELS) == 0
    assert value("vcmon_site_window_packets", LABELS) == 4
    assert value("vcmon_site_rtt_seconds", {**LABELS, "stat": "median"}) == pytest.approx(0.020)
    assert value("vcmon_site_rtt_seconds", {**LABELS, "stat": "max"}) == pytest.approx(0.030)
    assert value("vcmon_site_jitter_seconds", LABELS) == pytest.approx(0.010)
    # EL = 20 + 20 + 10 = 50 ms, no loss → R = 93.2 − 1.25
    assert value("vcmon_site_r_factor", LABELS) == pytest.approx(91.95)
    assert value("vcmon_site_mos", LABELS) == pytest.approx(  # 1 + .035R + 7e-6 R(R-60)(100-R)
        1 + 0.035 * 91.95 + 7e-6 * 91.95 * 31.95 * 8.05)


def test_window_statistics_are_the_judging_s_until_it_judges_again() -> None:
    """Once a site's window is whole, the page shows the statistics the last judging
    took (within REUSE_WITHIN); the counters are live."""
    source = Source()
    for k in range(60):  # one reply a second over the whole 60 s window
        source.table.record(reply("tinh", NOW - 60 + k, 0.010))
    source.health.update(source.table, NOW, evaluate=True)
    registry = CollectorRegistry()
    registry.register(DaemonCollector(source))
    judged = Scrape(source, registry)
    assert judged.get_sample_value("vcmon_site_window_packets", LABELS) == 60
    source.table.record(reply("tinh", NOW, 0.500))
    again = judged.again()
    assert again.get_sample_value("vcmon_probe_packets_sent_total", LABELS) == 61
    assert again.get_sample_value("vcmon_site_window_packets", LABELS) == 60
    assert again.get_sample_value("vcmon_site_rtt_seconds",
                                  {**LABELS, "stat": "max"}) == pytest.approx(0.010)
    source.health.update(source.table, NOW + 1, evaluate=True)
    anew = judged.again()
    assert anew.get_sample_value("vcmon_site_rtt_seconds",
                                 {**LABELS, "stat": "max"}) == pytest.approx(0.500)


def test_histogram_buckets(scraped: tuple[Scrape, Source]) -> None:
    registry, _ = scraped
    value = registry.get_sample_value
    assert value("vcmon_probe_rtt_seconds_count", LABELS) == 5
    assert value("vcmon_probe_rtt_seconds_sum", LABELS) == pytest.approx(5.08)
    # 10 ms lands in le=0.0128 (50 µs·2⁸), 20 ms and 30 ms in le=0.0512 (…·2¹⁰)
    assert value("vcmon_probe_rtt_seconds_bucket", {**LABELS, "le": "0.0064"}) == 0
    assert value("vcmon_probe_rtt_seconds_bucket", {**LABELS, "le": "0.0128"}) == 1
    assert value("vcmon_probe_rtt_seconds_bucket", {**LABELS, "le": "0.0512"}) == 4
    assert value("vcmon_probe_rtt_seconds_bucket", {**LABELS, "le": "+Inf"}) == 5


def test_down_site_and_errors(scraped: tuple[Scrape, Source]) -> None:
    registry, _ = scraped
    value = registry.get_sample_value
    assert value("vcmon_site_up", XA) == 0
    assert value("vcmon_site_loss_ratio", XA) == 1
    assert value("vcmon_site_mos", XA) == 1
    assert value("vcmon_site_rtt_seconds", {**XA, "stat": "median"}) is None
    assert value("vcmon_probe_errors_total", {**XA, "reason": "unreachable"}) == 1
    assert value("vcmon_probe_packets_received_total", XA) == 0


def test_info_carries_vietnamese_names(scraped: tuple[Scrape, Source]) -> None:
    registry, _ = scraped
    info = {**XA, "name": "UBND xã Lạc Vệ", "parent": "tinh", "address": "127.0.0.11",
            "contact_name": "", "contact_phone": "", "contractor": "VNPT Bắc Ninh",
            "contract_reference": "HĐ-01", "dscp": "0"}
    assert registry.get_sample_value("vcmon_site_info", info) == 1
    assert 'name="UBND xã Lạc Vệ"' in registry.text


def test_self_metrics(scraped: tuple[Scrape, Source]) -> None:
    registry, _ = scraped
    value = registry.get_sample_value
    assert value("vcmon_sites_configured", {"tier": "commune", "provision": "contract"}) == 1
    assert value("vcmon_icmp_packets_ignored_total", {"reason": "foreign"}) == 3
    assert value("vcmon_scheduler_skipped_cycles_total") == 0
    assert value("vcmon_icmp_receive_dropped_total") == 2
    assert value("vcmon_scheduler_sends_total") == 7
    rss = value("process_resident_memory_bytes")
    assert rss is not None and rss > 1e6
    assert value("vcmon_scheduler_lag_seconds_count") == 0
    build = [s for s in registry.samples if s.name == "vcmon_build_info"]
    assert len(build) == 1 and build[0].value == 1


def test_removed_sites_vanish(scraped: tuple[Scrape, Source]) -> None:
    registry, source = scraped
    del source.table.sites["xa-lac-ve"]
    registry = registry.again()
    assert registry.get_sample_value("vcmon_site_up", XA) is None
    assert registry.get_sample_value("vcmon_site_up", LABELS) == 1


def test_promtool_finds_nothing(scraped: tuple[Scrape, Source]) -> None:
    registry, _ = scraped
    assert promtool_check_metrics(registry.text) == ""


def test_health_series(scraped: tuple[Scrape, Source]) -> None:
    registry, _ = scraped
    value = registry.get_sample_value
    # the commune is down: its own two probes were lost (down_after 2)
    assert value("vcmon_site_status", {**XA, "status": "down"}) == 1
    # the default budget writes the status a site is in only; the full set all six
    assert value("vcmon_site_status", {**XA, "status": "ok"}) is None
    assert value("vcmon_site_status", {**LABELS, "status": "ok"}) == 1
    statuses = [s for s in registry.samples
                if s.name == "vcmon_site_status" and s.labels["site"] == "tinh"]
    assert sorted(s.labels["status"] for s in statuses) == [
        "degraded", "down", "maintenance", "ok", "unknown", "unreachable"]
    assert value("vcmon_site_threshold_exceeded", {**LABELS, "threshold": "loss"}) == 0
    assert value("vcmon_site_upstream_down", XA) is None  # full set only
    assert value("vcmon_site_upstream_down", LABELS) == 0
    assert value("vcmon_site_unreachable_behind", XA) == 0
    assert value("vcmon_site_state_changes_total", XA) == 1
    assert value("vcmon_site_status_since_timestamp_seconds", XA) == NOW


def test_conference_phases() -> None:
    config = parse_config(CONFIG + """
schedule:
  preflight: 30m
  conferences:
    - {name: sang-27, start: "2026-03-27 07:30", end: "2026-03-27 11:30"}
    - {name: chieu-27, start: "2026-03-27 13:30", end: "2026-03-27 17:00"}
""")

    class At(Source):
        def __init__(self, when: str) -> None:
            super().__init__()
            self.health = HealthTracker(config, NOW)
            self.when = datetime.fromisoformat(when).timestamp()
            self.table = SiteTable(config, clock=lambda: self.when)

    def phases(when: str) -> dict[tuple[str, str], float | None]:
        registry = CollectorRegistry()
        source = At(when)
        registry.register(DaemonCollector(source))
        scrape = Scrape(source, registry)
        return {(metric, name): scrape.get_sample_value(metric, {"conference": name})
                for metric in ("vcmon_conference_active", "vcmon_conference_preflight")
                for name in ("sang-27", "chieu-27")}

    at_0715 = phases("2026-03-27T07:15:00+07:00")
    assert at_0715[("vcmon_conference_preflight", "sang-27")] == 1
    assert at_0715[("vcmon_conference_active", "sang-27")] == 0
    assert at_0715[("vcmon_conference_preflight", "chieu-27")] == 0
    source = At("2026-03-27T07:15:00+07:00")
    registry = CollectorRegistry()
    registry.register(DaemonCollector(source))
    scrape = Scrape(source, registry)
    assert scrape.get_sample_value("vcmon_conference_start_timestamp_seconds",
                                   {"conference": "chieu-27"}) == datetime.fromisoformat(
        "2026-03-27T13:30:00+07:00").timestamp()
    assert scrape.get_sample_value("vcmon_conference_end_timestamp_seconds",
                                   {"conference": "sang-27"}) == datetime.fromisoformat(
        "2026-03-27T11:30:00+07:00").timestamp()
    at_0800 = phases("2026-03-27T01:00:00+00:00")  # 08:00 in Hà Nội
    assert at_0800[("vcmon_conference_active", "sang-27")] == 1
    assert at_0800[("vcmon_conference_preflight", "sang-27")] == 0


def test_chunked_rendering_is_the_same_page(scraped: tuple[Scrape, Source],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A family is written a chunk of sites at a time; chunk borders change nothing."""
    registry, source = scraped
    page = SitePage(source)
    texts = page.labels.sites
    monkeypatch.setattr(exposition, "_CHUNK", 1)
    one_by_one = render_sites(source.table, source.health, texts, NOW, page.full)
    monkeypatch.setattr(exposition, "_CHUNK", 1000)
    assert one_by_one == render_sites(source.table, source.health, texts, NOW, page.full)
    assert one_by_one in registry.text
    # each family's lines stay together, as the text format requires
    names = [line.split("{")[0] for line in one_by_one.splitlines() if line[0] != "#"]
    seen: list[str] = []
    for name in names:
        family = name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
        if not seen or seen[-1] != family:
            assert family not in seen, f"{family} is split"
            seen.append(family)


def test_plain_histogram_renders_as_prometheus_client_does() -> None:
    """The scheduler lag, kept as plain numbers, scrapes exactly as a client Histogram."""
    from prometheus_client import Histogram

    from monitor.metrics.instance import PlainHistogram

    buckets = (0.0001, 0.001, 0.01)
    plain, client = CollectorRegistry(), CollectorRegistry()
    lag = PlainHistogram("vcmon_scheduler_lag_seconds", "lag", buckets)
    plain.register(lag)
    reference = Histogram("vcmon_scheduler_lag_seconds", "lag", buckets=buckets,
                          registry=client)
    for value in (0.0, 0.0001, 0.0004, 0.001, 0.02, 5.0):  # bounds, between, above all
        lag.observe(value)
        reference.observe(value)

    def samples(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...],
                                                          float]]:
        return {(s.name, tuple(sorted(s.labels.items())), s.value)
                for s in next(iter(registry.collect())).samples
                if not s.name.endswith("_created")}

    assert samples(plain) == samples(client)
    assert plain.get_sample_value("vcmon_scheduler_lag_seconds_bucket", {"le": "0.001"}) == 4


SERIES_BUDGET = """
defaults: {interval: 1s, window: 60s}
health:
  thresholds: {jitter: 5ms}
sites:
  - {id: tinh, name: Tinh, tier: province, address: 127.0.0.10}
  - {id: huyen, name: Huyen, tier: district, parent: tinh, address: 127.0.0.11}
  - {id: xa-a, name: Xa A, tier: commune, parent: huyen, address: 127.0.0.12}
  - {id: xa-b, name: Xa B, tier: commune, parent: huyen, address: 127.0.0.13}
series:
  full: {tiers: [district], sites: [xa-b]}
"""


def test_series_budget_default_and_full() -> None:
    """A healthy site writes 20 series by default, 49 with the full set (by tier or
    site); a crossed threshold adds its one series to the default."""
    source = Source()
    source.config = config = parse_config(SERIES_BUDGET)
    source.table = SiteTable(config, clock=lambda: NOW)
    source.health = HealthTracker(config, NOW - 60)
    for i in range(20):
        for site, jitter in (("tinh", 0.0), ("huyen", 0.0), ("xa-a", 0.02), ("xa-b", 0.0)):
            source.table.record(reply(site, NOW - 20 + i, 0.010 + jitter * (i % 2)))
    source.health.update(source.table, NOW, evaluate=True)
    text = render(source, CollectorRegistry()).decode()
    per_site = Counter(sample.labels["site"] for family in text_string_to_metric_families(text)
                       for sample in family.samples if "site" in sample.labels)
    assert per_site == {"tinh": 20, "huyen": 49, "xa-a": 21, "xa-b": 49}
    assert 'vcmon_site_threshold_exceeded{site="xa-a",tier="commune",district="huyen",' \
        'provision="vnpt",threshold="jitter"} 1' in text
    assert 'site="tinh",tier="province",district="tinh",provision="vnpt",le="+Inf"} 20' in text
    assert 'site="tinh",tier="province",district="tinh",provision="vnpt",le="0.0128"}' \
        not in text
    assert promtool_check_metrics(text) == ""


def test_reload_to_full_starts_the_histogram_and_back_drops_it() -> None:
    """A site a reload puts in the full set counts its buckets, sum and count from
    then on (one consistent histogram); taken out again, it is back to sum and count."""
    source = Source()
    source.config = parse_config(SERIES_BUDGET)
    source.table = SiteTable(source.config, clock=lambda: NOW)
    source.health = HealthTracker(source.config, NOW - 60)
    for i in range(5):
        source.table.record(reply("tinh", NOW - 20 + i, 0.010))
    assert source.table.sites["tinh"].histogram is None
    source.config = parse_config(SERIES_BUDGET.replace("sites: [xa-b]", "sites: [xa-b, tinh]"))
    source.table.reconfigure(source.config)
    source.health.reconfigure(source.config, NOW)
    for i in range(3):
        source.table.record(reply("tinh", NOW - 10 + i, 0.002))
    text = render(source, CollectorRegistry()).decode()
    tinh = 'site="tinh",tier="province",district="tinh",provision="vnpt"'
    assert f'vcmon_probe_rtt_seconds_bucket{{{tinh},le="0.0032"}} 3' in text
    assert f'vcmon_probe_rtt_seconds_bucket{{{tinh},le="+Inf"}} 3' in text
    assert f"vcmon_probe_rtt_seconds_count{{{tinh}}} 3" in text
    assert f"vcmon_probe_rtt_seconds_sum{{{tinh}}} 0.006" in text
    assert f"vcmon_probe_packets_received_total{{{tinh}}} 8" in text
    assert promtool_check_metrics(text) == ""
    source.config = parse_config(SERIES_BUDGET)
    source.table.reconfigure(source.config)
    source.health.reconfigure(source.config, NOW)
    assert source.table.sites["tinh"].histogram is None
    text = render(source, CollectorRegistry()).decode()
    assert f'vcmon_probe_rtt_seconds_bucket{{{tinh},le="+Inf"}} 8' in text
    assert f'{tinh},le="0.0032"' not in text


def test_info_labels_keep_quotes_and_backslashes_of_the_inventory() -> None:
    """vcmon_site_info is written at each scrape from the site's own strings: what the
    text format must escape comes back as written, in a page promtool accepts."""
    config = parse_config(r"""
sites:
  - id: xa
    name: 'UBND xã "Lạc Vệ" \ cũ'
    tier: commune
    provision: contract
    address: 127.0.0.11
    contact: {name: 'Anh "Ba"', phone: '0912\345'}
    contract: {contractor: 'VNPT "BN"', reference: 'HĐ\01'}
""")
    source = Source()
    source.config, source.table = config, SiteTable(config, clock=lambda: NOW)
    source.health = HealthTracker(config, NOW - 60)
    page = SitePage(source)  # type: ignore[arg-type]
    text = render_sites(source.table, source.health, page.labels.sites, NOW, page.full)
    assert promtool_check_metrics(text) == ""
    (info,) = [s for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "vcmon_site_info"]
    assert info.labels == {
        "site": "xa", "tier": "commune", "district": "xa", "provision": "contract",
        "name": 'UBND xã "Lạc Vệ" \\ cũ', "parent": "", "address": "127.0.0.11",
        "contact_name": 'Anh "Ba"', "contact_phone": "0912\\345",
        "contractor": 'VNPT "BN"', "contract_reference": "HĐ\\01", "dscp": "0"}
