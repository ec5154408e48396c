"""Scale benchmark: the vcmon daemon at 20,000 loopback sites against fping and smokeping_prober.

Not part of the test run; it prints figures. Run as root from the repository root:

    .venv/bin/python tests/bench/bench_scale.py --targets 20000 --seconds 60
    .venv/bin/python tests/bench/bench_scale.py --targets 240 1000 --seconds 45 \
        --tools vcmon fping smokeping-udp     # the province's own sizes, side by side

Several ``--targets`` run one after another, each with every tool, and a summary table
across the sizes closes the output (CPU per 1,000 probes of each tool, vcmon over fping).

Everything runs in a throw-away network namespace with only ``lo`` (so the tens of
thousands of packets per second stay out of every other program's raw sockets), on N
addresses 127.20.X.Y; the script refuses to start unless they are all in 127.0.0.0/8
and ``ip route get`` sends the first and last through ``lo``. Each tool then probes
every target once per second for ``--seconds``, one tool after another:

- ``vcmon``: the daemon as an operator starts it, ``vcmon run --config FILE``, on an
  inventory of N sites (interval 1 s, timeout ``--timeout``), with unprivileged ICMP
  sockets allowed in the namespace (``ping_group_range`` 0-2147483647, Debian 12's
  default), so it uses them; ``vcmon-raw``: the same with them forbidden (the kernel's
  default), so it falls back to a raw socket. ``/metrics`` is scraped every
  ``--scrape-every`` s (5) with ``Accept-Encoding: gzip`` throughout, as Prometheus does,
  and the JSON API's summary and site list are fetched after each scrape (``--no-api``:
  not); health runs as always, and vcmon publishes to a real Mosquitto in the namespace
  (``--no-mqtt``: not).
  Right after the window, ``tcpdump`` on ``lo`` records the echo requests of
  ``--spread-seconds`` (2) intervals: the spread of their send times over the interval
  is printed as the largest gap between their distribution and the uniform one (KS
  distance, 10 % at most) and the most sent in one 10 ms slot against the uniform mean.
- ``fping``: as in ``bench_engine.py`` (one process per 5,000 targets).
- ``smokeping-udp``: Debian's ``prometheus-smokeping-prober --no-privileged`` (ICMP
  datagram sockets, ``ping_group_range`` open as for vcmon; 0.6.1 reads
  ``--privileged=false`` as a host name), hosts on the command line, an empty
  ``--config.file`` (Debian's default one adds ``localhost``), its ``/metrics`` scraped
  like vcmon's. ``smokeping-raw``: ``--privileged`` (one raw socket per target). Every
  raw ICMP socket receives a copy of every ICMP packet, so N raw sockets cost N² packet
  copies a second: it runs on the first ``--smokeping-raw-targets`` (1,000) targets only,
  named in its row. Both modes need one socket per target: they get at most the
  open-files limit less 256 targets (named in the row when fewer than N).

How the columns are measured:

- Daemons (vcmon, smokeping): scraping starts once the daemon is up (vcmon:
  ``/-/ready`` answers 200, i.e. every site has had its first probe; smokeping:
  ``/metrics`` answers, which it serves after starting every pinger). The window runs
  from the middle of the first scrape to the middle of the last (a busy daemon takes
  seconds to answer, and where in that time it read its counters is not known; the
  notes give ``window_s``, the shortest and longest the window can have been). CPU:
  ``/proc/PID/stat`` at the same points; probes: the counters of the two pages, vcmon's
  ``vcmon_probe_packets_sent_total`` (resolved probes) and ``…_received_total``,
  smokeping's ``smokeping_requests_total`` and ``smokeping_response_duration_seconds_count``.
  fping: its whole run (it starts in milliseconds), as in ``bench_engine.py``.
- ``CPU s/1k``: CPU seconds per 1,000 resolved probes; ``xfping``: over fping's;
  ``CPU %``: of one core; ``RSS MiB``: peak resident set (``VmHWM``) at the end of the
  window (vcmon's includes loading the inventory; its reloads come after).
- ``rate %``: resolved probes over N x window; ``recv %``: replies over probes sent
  (vcmon: ``vcmon_scheduler_sends_total``, so a probe sent but not yet resolved when the
  last page was taken counts as not received; the ``resolved`` beside ``received`` in
  its detail line tells the two apart).
- ``RTT med`` / ``RTT p99``: fping: of every reply. vcmon: the median of the per-site
  medians it exports (``vcmon_site_rtt_seconds{stat="median"}``, over its window), and
  p99 from the window's increase of the ``vcmon_probe_rtt_seconds`` histogram of the
  one site in ``FULL_EVERY`` (20) that the inventory gives the full series set (the
  others export the default budget, docs/metrics.md#series-per-site).
  smokeping: both from its ``smokeping_response_duration_seconds`` histogram. Both
  histograms have buckets 50 us x 2^n, so a histogram quantile is shown as ``<=`` the
  upper bound of its bucket (on loopback everything is in the first, 0.05 ms); the
  exact mean (histogram sum / count over the window) is in the notes for both.

``--prometheus S``: Debian's Prometheus scrapes vcmon every S s; its first three scrapes
(which create every series) come before the window and are printed apart, then it
scrapes through the whole window (the bench then reads the page only at the window's
start, middle and end); printed: its CPU over the window, its resident memory, head
series and last scrape time (the whole system's cost). ``--busy-core``: a second
process keeps one core busy for the whole run. After each vcmon window ``/metrics`` is
fetched five times gzipped and three times as plain text, one after another: the median
wall time of each is printed.

Under the table, for vcmon: start-up (process start to ``/-/healthy`` and to
``/-/ready``), the scrapes (wall time per scrape, page size compressed and not), its
own ``vcmon_metrics_render_seconds``, the scheduler lag over the window
(``vcmon_scheduler_lag_seconds``: every wake-up of the sender, with a scrape every 5 s),
skipped probe cycles, the time ``POST /-/reload`` takes to answer for the unchanged
inventory and for one with one site renamed, what the reloads cost in lag and skipped
cycles, and the time from SIGTERM to exit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import _profile
from _common import assert_loopback, target_addresses
from _tools import Row, cpu_ratio, fmt, fmt_rtt, machine, run_fping, table
from service import (
    Exposition,
    Response,
    Scraper,
    Service,
    Stopped,
    bucket_delta,
    bucket_quantile,
    open_files_limit,
    ping_sockets,
    private_network,
    require_root,
)

from tests.conftest import free_port
from tests.mqtt.broker import Broker
from tests.netns import NetNamespace

TOOLS = ("vcmon", "vcmon-raw", "fping", "smokeping-udp", "smokeping-raw")
SMOKEPING = "prometheus-smokeping-prober"
START_WITHIN = 120.0  # seconds a daemon may take to become ready
FULL_EVERY = 20  # 1 site in 20 exports every series (5 %: 12 of the province's 240)
SMOKEPING_SPARE_FILES = 256
VCMON_FAMILIES = ("vcmon_probe_packets_sent", "vcmon_probe_packets_received",
                  "vcmon_scheduler_sends", "vcmon_site_rtt_seconds", "vcmon_probe_rtt_seconds",
                  "vcmon_scheduler_skipped_cycles", "vcmon_scheduler_lag_seconds",
                  "vcmon_metrics_render_seconds")


def vcmon_binary() -> str:
    found = Path(sys.executable).parent / "vcmon"
    if not found.exists():
        raise SystemExit(f"{found} not found: install vcmon into this venv "
                         "(.venv/bin/pip install -e '.[test]')")
    return str(found)


def inventory(addresses: list[str], interval: float, timeout: float,
              renamed: int | None = None, mqtt_port: int | None = None) -> str:
    """One unit per address; ``renamed``: that site's name changed (a 1-site edit);
    ``mqtt_port``: publish to the broker there."""
    lines = [f"defaults: {{interval: {interval:g}s, timeout: {timeout:g}s}}",
             # every FULL_EVERY-th site exports its RTT histogram, as a province's
             # province and district tiers do: RTT p99 comes from theirs
             "series: {full: {sites: [" + ", ".join(
                 f"s{i:05d}" for i in range(0, len(addresses), FULL_EVERY)) + "]}}"]
    if mqtt_port is not None:
        lines.append(f"mqtt: {{host: 127.0.0.1, port: {mqtt_port}, prefix: vcmon-bench, "
                     "client_id: vcmon-bench}")
    lines.append("sites:")
    for i, address in enumerate(addresses):
        name = f"Bench site {i}" + (" (renamed)" if i == renamed else "")
        lines.append(f"  - {{id: s{i:05d}, name: {name}, tier: unit, address: {address}}}")
    return "\n".join(lines) + "\n"


def socket_mode(log: Path) -> str:
    """The ``icmp_socket`` of vcmon's ``started`` log event (JSON lines)."""
    for line in log.read_text(errors="replace").splitlines():
        if '"started"' in line:
            try:
                return str(json.loads(line).get("icmp_socket", "?"))
            except ValueError:
                break
    return "?"


def send_spread(interval: float, intervals: float) -> dict[str, Any]:
    """Echo requests on ``lo`` for ``intervals`` x ``interval`` s, by tcpdump: how evenly
    their send times cover the interval (phase = time since the capture's start, modulo
    the interval)."""
    try:
        # a second more than asked: tcpdump takes a moment to start capturing
        capture = subprocess.run(
            ["timeout", f"{interval * intervals + 1:g}", "tcpdump", "-i", "lo", "-nn", "-tt",
             "-q", "-l", "icmp[icmptype] == icmp-echo"], capture_output=True, text=True,
            timeout=interval * intervals + 30)
    except FileNotFoundError:
        return {"spread": "tcpdump not found"}
    times = [float(line.split()[0]) for line in capture.stdout.splitlines() if line[:1].isdigit()]
    if len(times) < 10:
        return {"spread": f"{len(times)} packets captured"}
    # whole intervals only: a part of one would count its phases twice
    start = times[0]
    times = [t for t in times if t < start + intervals * interval]
    phases = sorted(((t - start) % interval) / interval for t in times)
    n = len(phases)
    ks = max(max(abs(ph - i / n), abs(ph - (i + 1) / n)) for i, ph in enumerate(phases))
    slots = [0] * 100
    for ph in phases:
        slots[min(99, int(ph * 100))] += 1
    return {"spread_ks_percent": round(ks * 100, 2), "spread_packets": n,
            "spread_max_per_10ms": max(slots), "spread_uniform_per_10ms": round(n / 100, 1)}


def prometheus_server(work: Path, target_port: int, every: float) -> Service | None:
    """Debian's Prometheus scraping vcmon every ``every`` s (the whole system's cost)."""
    config = work / "prometheus.yml"
    config.write_text(f"global: {{scrape_interval: {every:g}s, scrape_timeout: "
                      f"{min(every, 10):g}s}}\nscrape_configs:\n  - job_name: vcmon\n"
                      f"    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n")
    port = free_port()
    service = Service(["prometheus", f"--config.file={config}",
                       f"--storage.tsdb.path={work / 'tsdb'}", "--log.level=warn",
                       f"--web.listen-address=127.0.0.1:{port}"], work / "prometheus.log",
                      f"http://127.0.0.1:{port}")
    if service.wait_for("/-/ready", START_WITHIN) is None:
        service.stop()
        return None
    return service


PROMETHEUS_WARM_UP = 3  # scrapes before the window: the first ones create every series


def prometheus_warm_up(prometheus: Service, every: float) -> str:
    """Let Prometheus scrape ``PROMETHEUS_WARM_UP`` times before the window starts: its
    first scrapes create every series (memory, index) and cost far more than the
    scrapes of a running system. Their CPU is printed apart."""
    before = prometheus.cpu() or 0.0
    started = time.monotonic()
    time.sleep(PROMETHEUS_WARM_UP * every)
    cpu = (prometheus.cpu() or 0.0) - before
    wall = time.monotonic() - started
    return (f"  Prometheus warm-up ({PROMETHEUS_WARM_UP} scrapes, {wall:.0f} s, not in the "
            f"window): CPU {cpu / wall * 100:.1f} % of a core, RSS "
            f"{(prometheus.rss_kib() or 0) / 1024:.0f} MiB")


def prometheus_notes(prometheus: Service, cpu_before: float | None,
                     row: Row | None) -> list[str]:
    """Prometheus's CPU over the window, its memory, series and scrape time; stops it."""
    cpu = (prometheus.cpu() or 0.0) - (cpu_before or 0.0)
    rss, hwm = prometheus.rss_kib() or 0, prometheus.hwm_kib() or 0

    def query(expr: str) -> str:
        answer = prometheus.get("/api/v1/query?query=" + urllib.parse.quote(expr))
        try:
            found = json.loads(answer.body)["data"]["result"]
        except (ValueError, KeyError):
            return "?"
        return found[0]["value"][1] if found else "-"

    try:
        status = json.loads(prometheus.get("/api/v1/status/tsdb").body)
        series = str(status["data"]["headStats"]["numSeries"])
    except (ValueError, KeyError):
        series = "?"
    scrape = query('scrape_duration_seconds{job="vcmon"}')
    scrapes = query('count_over_time(up{job="vcmon"}[1h])')
    prometheus.stop()
    wall = row.window if row is not None else 0.0
    return [f"  Prometheus 2.42 scraping vcmon (window {wall:.0f} s): CPU "
            f"{cpu / wall * 100 if wall else 0:.1f} % of a core, RSS {rss / 1024:.0f} MiB "
            f"(peak {hwm / 1024:.0f} MiB), head series {series}, last scrape {scrape} s, "
            f"{scrapes} scrapes"]


def render_times(service: Service, gzipped: int = 5, plain: int = 3) -> str:
    """After the window: /metrics fetched one after another, gzip (as Prometheus does)
    and plain text (a client without gzip), wall time median of each."""
    gz = sorted(service.get("/metrics", gzip_ok=True, timeout=120).seconds
                for _ in range(gzipped))
    text = sorted(service.get("/metrics", timeout=120).seconds for _ in range(plain))
    return (f"  /metrics one after another: gzip p50 {gz[len(gz) // 2]:.3f} s (max "
            f"{gz[-1]:.3f}), plain text p50 {text[len(text) // 2]:.3f} s (max {text[-1]:.3f})"
            f"{'; one core kept busy by a second process' if BUSY else ''}")


BUSY: list[subprocess.Popen[bytes]] = []


@contextlib.contextmanager
def busy_core(wanted: bool) -> Iterator[None]:
    """A second process keeping one core busy, for the whole run (render under load)."""
    if wanted:
        BUSY.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
    try:
        yield
    finally:
        for proc in BUSY:
            proc.kill()
            proc.wait()
        BUSY.clear()


def window_row(tool: str, targets: int, service: Service, scraper: Scraper) -> Row | None:
    """The row's CPU, window and peak RSS; None when fewer than two pages were scraped."""
    if scraper.first is None or scraper.last is None or scraper.first is scraper.last:
        return None
    (first, _), (last, _) = scraper.first, scraper.last
    row = Row(tool=tool, targets=targets, status="ok")
    row.window = row.wall = last.mid - first.mid
    row.cpu = (last.cpu_mid or 0.0) - (first.cpu_mid or 0.0)
    row.maxrss_mib = (service.hwm_kib() or 0) / 1024
    # The counters were read somewhere inside each of the two scrapes.
    row.notes["window_s"] = [round(last.at - first.at - first.seconds, 1),
                             round(last.at + last.seconds - first.at, 1)]
    return row


def scrape_notes(scraper: Scraper) -> dict[str, Any]:
    answered = [s for s in scraper.scrapes if s.status == 200]
    seconds = sorted(s.seconds for s in answered)
    return {"scrapes": len(scraper.scrapes), "scrape_failures": len(scraper.scrapes)
            - len(answered), "scrape_s_median": round(statistics.median(seconds), 3)
            if seconds else None, "scrape_s_max": round(seconds[-1], 3) if seconds else None,
            "page_kb_wire": round(answered[-1].size / 1024) if answered else None}


def failed_row(tool: str, targets: int, status: str, service: Service) -> Row:
    row = Row(tool=tool, targets=targets, status=status)
    row.notes["log"] = service.log_tail()
    return row


def histogram_rtt(row: Row, hist: dict[float, float], rtt_sum: float, count: float) -> None:
    """p99 as a bucket bound, and the exact mean, from a window's histogram increase."""
    interpolated, p99 = bucket_quantile(hist, 0.99)
    row.rtt_p99_ms = None if p99 is None else p99 * 1000
    row.rtt_p99_is_bound = True
    # Prometheus' histogram_quantile (linear inside the bucket: an overstatement when
    # the values sit at the bottom of it, as on loopback)
    row.notes["rtt_p99_interpolated_ms"] = _ms(interpolated)
    row.notes["rtt_mean_ms"] = round(rtt_sum / count * 1000, 4) if count else None


def run_vcmon(args: argparse.Namespace, addresses: list[str], ns: NetNamespace, raw: bool,
              work: Path) -> tuple[Row, list[str]]:
    tool = "vcmon-raw" if raw else "vcmon"
    ping_sockets(ns, allowed=not raw)
    config = work / f"{tool}.yaml"
    config.write_text(inventory(addresses, 1.0, args.timeout, mqtt_port=args.mqtt_port))
    port = free_port()
    service = Service([vcmon_binary(), "run", "--config", str(config), "--listen",
                       f"127.0.0.1:{port}", "--log-format", "json"], work / f"{tool}.log",
                      f"http://127.0.0.1:{port}")
    healthy = service.wait_for("/-/healthy", START_WITHIN)
    ready = service.wait_for("/-/ready", START_WITHIN)
    if ready is None:
        service.stop()
        return failed_row(tool, len(addresses), "no start", service), []
    prometheus = prometheus_server(work, port, args.prometheus) if args.prometheus else None
    extra: list[str] = []
    if prometheus is not None:
        extra.append(prometheus_warm_up(prometheus, args.prometheus))
    # With a real Prometheus scraping, the bench reads the page only at the window's
    # start, middle and end (for its counters), so as not to add a scraper of its own.
    every = args.seconds / 2 if prometheus else args.scrape_every
    prometheus_cpu = prometheus.cpu() if prometheus else None
    api = ("/api/v1/summary", "/api/v1/sites") if args.api else ()
    scraper = Scraper(service, every, also=api).start()
    profile = work / f"{tool}-{len(addresses)}.pyspy"
    spy = _profile.start(service.pid, args.seconds, profile) if args.profile else None
    time.sleep(args.seconds + min(every / 2, 2.5))
    scraper.stop()
    if spy is not None:
        spy.wait(60)
        extra += _profile.summary(profile)
    row = window_row(tool, len(addresses), service, scraper)
    extra += prometheus_notes(prometheus, prometheus_cpu, row) if prometheus else []
    if row is None:
        service.stop()
        return failed_row(tool, len(addresses), "no scrape", service), []
    row.notes.update(send_spread(1.0, args.spread_seconds))
    extra.append(render_times(service))
    # Reloads after the window, so that they do not count in it.
    unchanged = service.post("/-/reload", timeout=120)
    config.write_text(inventory(addresses, 1.0, args.timeout, renamed=0,
                                mqtt_port=args.mqtt_port))
    renamed = service.post("/-/reload", timeout=120)
    time.sleep(2.0)  # what the reloads did to the schedule shows in the next page
    after = service.get("/metrics", gzip_ok=True)
    hwm_after = service.hwm_kib()
    stopped = service.stop()
    assert scraper.first is not None and scraper.last is not None
    first, last = (Exposition(page, VCMON_FAMILIES) for _, page in (scraper.first, scraper.last))

    def delta(name: str) -> float:
        return last.total(name) - first.total(name)

    row.resolved = round(delta("vcmon_probe_packets_sent_total"))
    row.received = round(delta("vcmon_probe_packets_received_total"))
    row.sent = round(delta("vcmon_scheduler_sends_total"))
    medians = sorted(last.values("vcmon_site_rtt_seconds", stat="median"))
    row.rtt_median_ms = statistics.median(medians) * 1000 if medians else None
    maxima = last.values("vcmon_site_rtt_seconds", stat="max")
    row.rtt_max_ms = max(maxima) * 1000 if maxima else None
    hist = bucket_delta(last.buckets("vcmon_probe_rtt_seconds", bucketed_only=True),
                        first.buckets("vcmon_probe_rtt_seconds", bucketed_only=True))
    histogram_rtt(row, hist, delta("vcmon_probe_rtt_seconds_sum"),
                  delta("vcmon_probe_rtt_seconds_count"))
    row.notes.update(mode=socket_mode(service.log), sites_with_median=len(medians),
                     per_site_median_p99_ms=_ms(_quantile(medians, 0.99)),
                     skipped_cycles=delta("vcmon_scheduler_skipped_cycles_total"),
                     **scrape_notes(scraper))
    reloaded = Exposition(after, VCMON_FAMILIES) if after.status == 200 else None
    details = vcmon_details(row, first, last, scraper, healthy, ready, (unchanged, renamed),
                            reloaded, stopped)
    details.append(f"  peak RSS after the reloads {(hwm_after or 0) / 1024:.0f} MiB; "
                   f"whole life: {stopped.cpu:.1f} CPU-s")
    return row, details + extra


def vcmon_details(row: Row, first: Exposition, last: Exposition, scraper: Scraper,
                  healthy: float | None, ready: float | None, reloads: tuple[Response, ...],
                  after: Exposition | None, stopped: Stopped) -> list[str]:
    lag = bucket_delta(last.buckets("vcmon_scheduler_lag_seconds"),
                       first.buckets("vcmon_scheduler_lag_seconds"))
    row.notes["lag_p99"] = _bound(lag)
    render = bucket_delta(last.buckets("vcmon_metrics_render_seconds"),
                          first.buckets("vcmon_metrics_render_seconds"))
    render_count = render.get(float("inf"), 0.0)
    render_sum = (last.total("vcmon_metrics_render_seconds_sum")
                  - first.total("vcmon_metrics_render_seconds_sum"))
    wall = sorted(s.seconds for s in scraper.scrapes if s.status == 200)
    lines = [
        f"{row.tool} ({row.notes['mode']} socket), {row.targets} sites:",
        f"  start-up: /-/healthy after {_s(healthy)} s, /-/ready (first cycle done) after "
        f"{_s(ready)} s",
        f"  /metrics: {len(wall)} scrapes, wall median {_s(_quantile(wall, 0.5))} s, max "
        f"{_s(wall[-1] if wall else None)} s; page {last.size / 1e6:.1f} MB, "
        f"{scraper.scrapes[-1].size / 1e6:.1f} MB gzipped; render (vcmon_metrics_render_seconds)"
        f" mean {_s(render_sum / render_count if render_count else None)} s, p99 "
        f"{_bound(render)} s over {render_count:.0f} renders",
        f"  scheduler lag over the window (scraped every {scraper.every:g} s): p50 "
        f"{_bound(lag, 0.5)} s, p99 {_bound(lag)} s, {lag.get(float('inf'), 0):.0f} wake-ups; "
        f"skipped cycles {row.notes['skipped_cycles']:.0f}",
        f"  send times over one interval ({row.notes.get('spread_packets', 0)} requests on lo): "
        f"{row.notes.get('spread_ks_percent', '-')} % from uniform (KS distance; target "
        f"<= 10 %), at most {row.notes.get('spread_max_per_10ms', '-')} in one 10 ms slot "
        f"(uniform: {row.notes.get('spread_uniform_per_10ms', '-')})",
        "  reload (POST /-/reload): " + ", ".join(
            f"{what} {r.seconds:.2f} s (HTTP {r.status})"
            for what, r in zip(("unchanged", "1 site renamed"), reloads, strict=True)),
    ]
    if after is not None:
        lag_reload = bucket_delta(after.buckets("vcmon_scheduler_lag_seconds"),
                                  last.buckets("vcmon_scheduler_lag_seconds"))
        skipped = (after.total("vcmon_scheduler_skipped_cycles_total")
                   - last.total("vcmon_scheduler_skipped_cycles_total"))
        lines.append(f"  during the reloads: scheduler lag p99 {_bound(lag_reload)} s, max "
                     f"bucket {_max_bucket(lag_reload)} s, skipped cycles {skipped:.0f}")
    lines.append(f"  stop: SIGTERM to exit {stopped.stop_seconds:.2f} s, exit code "
                 f"{stopped.exit_code}{' (killed)' if stopped.killed else ''}")
    return lines


def run_smokeping(args: argparse.Namespace, addresses: list[str], ns: NetNamespace, raw: bool,
                  work: Path) -> Row:
    tool = "smokeping-raw" if raw else "smokeping-udp"
    # One socket per target: at most what the open-files limit allows, with room for the
    # Go runtime and the HTTP server.
    most = min(args.smokeping_raw_targets if raw else len(addresses),
               open_files_limit() - SMOKEPING_SPARE_FILES)
    if most < len(addresses):
        addresses = addresses[:most]
        tool = f"{tool} ({most})"
    ping_sockets(ns, allowed=not raw)
    empty = work / "smokeping.yml"
    empty.write_text("targets: []\n")
    port = free_port()
    service = Service([SMOKEPING, f"--web.listen-address=127.0.0.1:{port}",
                       f"--config.file={empty}", "--ping.interval=1s", "--log.level=warn",
                       "--privileged" if raw else "--no-privileged", *addresses],
                      work / f"{tool.split()[0]}.log", f"http://127.0.0.1:{port}")
    started = service.wait_for("/metrics", START_WITHIN)
    if started is None:
        service.stop()
        return failed_row(tool, len(addresses), "no start", service)
    scraper = Scraper(service, args.scrape_every).start()
    time.sleep(args.seconds + args.scrape_every / 2)
    scraper.stop()
    row = window_row(tool, len(addresses), service, scraper)
    stopped = service.stop()
    if row is None:
        return failed_row(tool, len(addresses), "no scrape", service)
    assert scraper.first is not None and scraper.last is not None
    name = "smokeping_response_duration_seconds"
    families = ("smokeping_requests", name)
    first, last = (Exposition(page, families) for _, page in (scraper.first, scraper.last))

    def delta(metric: str) -> float:
        return last.total(metric) - first.total(metric)

    row.sent = row.resolved = round(delta("smokeping_requests_total"))
    row.received = round(delta(f"{name}_count"))
    hist = bucket_delta(last.buckets(name), first.buckets(name))
    _, median = bucket_quantile(hist, 0.5)
    row.rtt_median_ms = None if median is None else median * 1000
    row.rtt_median_is_bound = True
    histogram_rtt(row, hist, delta(f"{name}_sum"), delta(f"{name}_count"))
    row.notes.update(start_s=round(started, 2), whole_life_cpu=round(stopped.cpu, 1),
                     **scrape_notes(scraper))
    return row


def run_tool(tool: str, args: argparse.Namespace, addresses: list[str], ns: NetNamespace,
             work: Path, target_file: Path) -> tuple[Row, list[str]]:
    if tool.startswith("vcmon"):
        return run_vcmon(args, addresses, ns, tool == "vcmon-raw", work)
    if tool == "fping":
        return run_fping(args, len(addresses), str(target_file)), []
    return run_smokeping(args, addresses, ns, tool == "smokeping-raw", work), []


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 4)


def _s(value: float | None) -> str:
    return fmt(value, 3)


def _bound(buckets: dict[float, float], q: float = 0.99) -> str:
    above, bound = bucket_quantile(buckets, q)
    if bound is None:
        return "-" if above is None else f">{above:g}"  # in the +Inf bucket
    return f"<={bound:g}"


def _max_bucket(buckets: dict[float, float]) -> str:
    """The upper bound of the highest bucket that gained anything."""
    bounds = sorted(buckets)
    for lower, upper in zip([0.0, *bounds], bounds, strict=False):
        if buckets[upper] >= buckets[bounds[-1]] and buckets[bounds[-1]]:
            return f"<={upper:g}" if upper != float("inf") else f">{lower:g}"
    return "-"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, nargs="+", default=[20000],
                        help="loopback targets (20000); several sizes run one after another")
    parser.add_argument("--seconds", type=int, default=60, help="per tool (60)")
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--timeout", type=float, default=1.0, help="per-probe timeout, s")
    parser.add_argument("--scrape-every", type=float, default=5.0,
                        help="seconds between scrapes of the daemons' /metrics (5)")
    parser.add_argument("--smokeping-raw-targets", type=int, default=1000,
                        help="targets for smokeping in raw mode (1000; see above)")
    parser.add_argument("--fping-interval", type=float, metavar="MS",
                        help="fping -i (default: fit a round into 0.9 s, see bench_engine)")
    parser.add_argument("--no-mqtt", dest="mqtt", action="store_false",
                        help="vcmon without its MQTT publisher (default: a Mosquitto in the "
                             "namespace)")
    parser.add_argument("--no-api", dest="api", action="store_false",
                        help="no JSON API reads after each scrape (default: summary and sites)")
    parser.add_argument("--spread-seconds", type=int, default=2,
                        help="whole intervals of echo requests captured for the spread (2)")
    parser.add_argument("--prometheus", type=float, metavar="S",
                        help="a real Prometheus scrapes vcmon every S s (the bench itself "
                             "then reads the page only at the window's start, middle, end)")
    parser.add_argument("--busy-core", action="store_true",
                        help="a second process keeps one core busy throughout")
    parser.add_argument("--profile", action="store_true",
                        help="sample vcmon with py-spy through the window and print where "
                             "its time goes (a profiled run's CPU is not one to quote)")
    parser.add_argument("--keep", metavar="DIR", help="keep inventories and logs here")
    parser.add_argument("--json", metavar="FILE", help="also write all results here")
    args = parser.parse_args()
    if not 10 <= args.seconds <= 3600 or not all(1 <= n <= 62500 for n in args.targets):
        parser.error("--seconds must be 10..3600 and --targets 1..62500")
    if not 1 <= args.scrape_every <= args.seconds / 2:
        parser.error("--scrape-every must be at least 1 s and at most half of --seconds")
    if args.profile and _profile.py_spy() is None:
        # before any daemon starts: found missing later, the exit left vcmon running
        parser.error("--profile needs py-spy: .venv/bin/pip install py-spy")
    return args


def summary(by_size: dict[int, list[Row]]) -> str:
    """The sizes side by side: CPU-s per 1,000 probes of each tool, vcmon over fping."""
    tools = [t for t in TOOLS if any(r.tool.split()[0] == t for rows in by_size.values()
                                     for r in rows)]
    lines = ["== summary: CPU-s per 1,000 probes (% of one core); RTT median / p99 ms",
             "| sites | " + " | ".join(tools) + " | vcmon ÷ fping (x) | vcmon RTT med/p99 | "
             "fping RTT med/p99 | vcmon send spread | vcmon lag p99 |",
             "|---" * (len(tools) + 6) + "|"]
    for size, rows in by_size.items():
        found = {r.tool.split()[0]: r for r in rows}
        cells = [f"{fmt(r.cpu_per_1k, 4)} ({fmt(r.cpu_percent)} %)" if (r := found.get(t))
                 else "-" for t in tools]
        vcmon, fping = found.get("vcmon"), found.get("fping")
        ratio = cpu_ratio(vcmon, rows) if vcmon else None

        def rtt(row: Row | None) -> str:
            if row is None:
                return "-"
            return (f"{fmt_rtt(row.rtt_median_ms)} / {'<=' if row.rtt_p99_is_bound else ''}"
                    f"{fmt_rtt(row.rtt_p99_ms)}")

        spread = (f"{vcmon.notes['spread_ks_percent']} %" if vcmon
                  and "spread_ks_percent" in vcmon.notes else "-")
        lag = vcmon.notes.get("lag_p99", "-") if vcmon else "-"
        lines.append(f"| {size:,} | " + " | ".join(cells) + f" | {fmt(ratio, 2)} | "
                     f"{rtt(vcmon)} | {rtt(fping)} | {spread} | {lag} s |")
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    require_root("bench_scale.py", "a network namespace, raw sockets")
    if any(t.startswith("smokeping") for t in args.tools) and not shutil.which(SMOKEPING):
        print(f"{SMOKEPING} not found: apt-get install prometheus-smokeping-prober",
              file=sys.stderr)
        return 2
    print(machine(), flush=True)
    by_size: dict[int, list[Row]] = {}
    details: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp, \
            private_network("vcmon-bscale") as ns, contextlib.ExitStack() as stack, \
            busy_core(args.busy_core):
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        args.mqtt_port = stack.enter_context(Broker(work)).port if args.mqtt else None
        for size in args.targets:
            addresses = target_addresses(size)
            assert_loopback(addresses)
            for address in (addresses[0], addresses[-1]):
                if ns.route_device(address) != "lo":
                    raise SystemExit(f"refusing to probe: {address} does not route via lo")
            target_file = work / "targets"
            target_file.write_text("\n".join(addresses) + "\n")
            rows = by_size[size] = []
            for tool in args.tools:
                time.sleep(5.0)  # let the previous tool's packets, exit and load settle
                load = os.getloadavg()[0]
                row, lines = run_tool(tool, args, addresses, ns, work, target_file)
                row.notes["loadavg_before"] = round(load, 2)
                if row.status == "ok" and (row.rate_percent or 0) < 99:
                    row.status = "behind"
                rows.append(row)
                details += lines
                print(f"  ... {size} {row.tool}: {row.status}, {row.cpu:.1f} CPU-s", flush=True)
            print(table(rows, f"{size} loopback targets x 1 probe/s, {args.seconds} s per "
                              f"tool; daemons' /metrics scraped every {args.scrape_every:g} s"
                              f"{', vcmon publishing to MQTT' if args.mqtt else ''}"
                              f"{', JSON API read after each scrape' if args.api else ''}"))
    print("\n".join(details))
    print(summary(by_size))
    print(f"loadavg after: {os.getloadavg()[0]:.2f} (other programs share this machine)")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": machine(), "details": details,
             "results": [{**asdict(r), "cpu_per_1k": r.cpu_per_1k, "cpu_percent": r.cpu_percent,
                          "rate_percent": r.rate_percent} for rows in by_size.values()
                         for r in rows]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
