"""Soak benchmark: the vcmon daemon for an hour with flapping sites, broker restarts and reloads.

Not part of the test run; it prints figures. Run as root from the repository root:

    .venv/bin/python tests/bench/bench_soak.py                  # issue 11: 60 min, all of it
    .venv/bin/python tests/bench/bench_soak.py --minutes 30 --no-flap \\
        --broker-restart-every 0 --reload-every 0               # issue 6: the plain soak

Everything runs in a throw-away network namespace with only ``lo`` (the loopback sites'
packets stay out of other programs' raw sockets), where it starts:

- a lab (``monitor.lab``, a random /24 of 198.19.128.0/17, joined to the private
  namespace) of ``--flap`` sites (40) in a province → district → commune tree: the
  province steady, every other site down for the second half of its own flap period
  (30-120 s, seeded), so sites behind a flapping district go unreachable with it;
- Mosquitto on a free port, with persistence, restarted (SIGTERM, down for
  ``--broker-down`` s, started again) every ``--broker-restart-every`` minutes (10);
- an MQTT subscriber in this process, with a persistent session (QoS 1), on
  ``<prefix>/events``: it keeps every event's ``run`` and ``seq``, so events the
  daemon queued while the broker was down must arrive once it is back;
- ``vcmon run --config FILE`` (an operator's start) on ``--sites`` sites (5,000): the lab
  sites and the rest on loopback 127.20.X.Y, all at 1 probe/s. Every
  ``--reload-every`` s (60) one site's name is changed in the file and the daemon is
  told to reload, by ``POST /-/reload`` and SIGHUP in turn.

No address is probed before ``ip route get`` has shown every lab address leaving
through the lab's link and every other one staying on ``lo``.

Every ``--sample-every`` s (10) it records the daemon's resident memory (``VmRSS``),
open file descriptors (``/proc/PID/fd``), CPU (``/proc/PID/stat``) and, from one
``/metrics`` page: ``vcmon_site_state_changes_total`` (summed: status changes made),
``vcmon_mqtt_published_total{kind="event"}``, ``vcmon_mqtt_dropped_total{kind="event"}``,
``vcmon_mqtt_queue_depth``, ``vcmon_mqtt_connected``, reloads, skipped probe cycles and
the scheduler lag. After the last minute it keeps the broker up and waits (at most
``--drain`` s) until the daemon's queue is empty and the subscriber has every event.

It prints one line per minute, then: RSS after the warm-up (``--warmup`` minutes, 5,
or a third of a shorter run) and at the end, the growth in %, the same for open fds,
and the events: state changes made by the daemon, published, dropped, received by the
subscriber (distinct ``seq``), duplicates, and which ``seq`` never arrived. ``--csv``
writes every sample.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import paho.mqtt.client as mqtt
import yaml
from _common import target_addresses
from paho.mqtt.enums import CallbackAPIVersion
from service import (
    Exposition,
    Service,
    bucket_delta,
    bucket_quantile,
    ping_sockets,
    private_network,
    require_root,
)

from monitor.inventory import parse_config
from monitor.lab import control, netlab
from monitor.lab.netlab import Lab
from monitor.lab.profiles import Profile
from monitor.lab.sites import synthetic_inventory
from tests.conftest import free_port
from tests.lab.conftest import make_lab
from tests.lab.harness import check_routes
from tests.mqtt.broker import MOSQUITTO, Broker

PREFIX = "vcmon-soak"
FAMILIES = ("vcmon_site_state_changes", "vcmon_mqtt_published", "vcmon_mqtt_dropped",
            "vcmon_mqtt_queue_depth", "vcmon_mqtt_connected", "vcmon_config_reloads",
            "vcmon_scheduler_skipped_cycles", "vcmon_scheduler_lag_seconds")
FLAP_PERIODS = (30.0, 40.0, 60.0, 90.0, 120.0)  # s; down in the second half of each
START_WITHIN = 120.0
SAMPLE_TIMEOUT = 20.0  # s for a page of /metrics; a sample without one counts as unanswered


class EventLog:
    """What the subscriber received on ``<prefix>/events``, from its own network thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seqs: dict[str, set[int]] = {}  # run → seq received
        self.duplicates = 0
        self.subscribed = threading.Event()

    def add(self, payload: bytes | bytearray) -> None:
        event = json.loads(payload)
        with self.lock:
            seen = self.seqs.setdefault(event["run"], set())
            if event["seq"] in seen:
                self.duplicates += 1  # a QoS 1 re-delivery
            seen.add(event["seq"])

    def received(self) -> int:
        with self.lock:
            return sum(map(len, self.seqs.values()))

    def missing(self) -> dict[str, list[int]]:
        """Per run, the seq below the highest received that never arrived."""
        with self.lock:
            return {run: sorted(set(range(1, max(seqs) + 1)) - seqs)
                    for run, seqs in self.seqs.items() if seqs}


@contextmanager
def subscriber(port: int, events: EventLog) -> Iterator[mqtt.Client]:
    """A persistent session (clean_session False): the broker keeps the subscription and
    the QoS 1 events for it while it is away, and across its own restarts."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="vcmon-soak-subscriber",
                         clean_session=False)
    client.on_connect = lambda c, *_: c.subscribe(f"{PREFIX}/events", qos=1)
    client.on_subscribe = lambda *_: events.subscribed.set()
    client.on_message = lambda _c, _u, message: events.add(message.payload)
    client.reconnect_delay_set(min_delay=1, max_delay=2)
    client.connect("127.0.0.1", port, keepalive=10)
    client.loop_start()
    try:
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def flap_profiles(document: dict[str, Any], rng: random.Random) -> dict[str, Profile]:
    """The province steady; every other site flapping with its own period."""
    profiles = {}
    for site in document["sites"]:
        delay = rng.uniform(0.002, 0.030)
        if site["tier"] == "province":
            profiles[site["id"]] = Profile(label="steady", delay=delay, jitter=delay / 10)
        else:
            profiles[site["id"]] = Profile(label="flapping", delay=delay, jitter=delay / 10,
                                           flap=rng.choice(FLAP_PERIODS))
    return profiles


def inventory(lab_sites: list[dict[str, Any]], loopback: int, port: int,
              reloads: int = 0) -> str:
    """Lab sites plus ``loopback`` units; the first unit's name says how many reloads."""
    sites = list(lab_sites)
    for i, address in enumerate(target_addresses(loopback)):
        name = f"Soak site {i}" + (f" (reload {reloads})" if i == 0 and reloads else "")
        sites.append({"id": f"s{i:05d}", "name": name, "tier": "unit", "address": address})
    document = {
        "defaults": {"interval": "1s", "timeout": "1s"},
        "mqtt": {"host": "127.0.0.1", "port": port, "prefix": PREFIX, "client_id": "vcmon-soak",
                 "reconnect_initial": "1s", "reconnect_max": "10s"},
        "sites": sites,
    }
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


def write_atomically(path: Path, text: str) -> None:
    """As an editor saving the file does: the daemon never reads half of it."""
    part = path.with_suffix(".part")
    part.write_text(text, encoding="utf-8")
    part.replace(path)


@dataclass
class Sample:
    t: float  # s since the daemon was ready
    rss_kib: int
    fds: int
    cpu_s: float
    changes: float
    published: float
    dropped: float
    queue: float
    connected: float
    received: int
    reloads_ok: float
    reloads_failed: float
    skipped: float
    lag: dict[float, float] = field(repr=False)
    broker_restarts: int = 0
    scrape_s: float = 0.0


def sample(service: Service, t0: float, events: EventLog, restarts: int) -> Sample | None:
    rss, fds, cpu = service.rss_kib(), service.open_fds(), service.cpu()
    page = service.get("/metrics", gzip_ok=True, timeout=SAMPLE_TIMEOUT)
    if page.status != 200 or rss is None or fds is None or cpu is None:
        return None
    metrics = Exposition(page, FAMILIES)
    return Sample(
        t=time.monotonic() - t0, rss_kib=rss, fds=fds, cpu_s=cpu,
        changes=metrics.total("vcmon_site_state_changes_total"),
        published=metrics.total("vcmon_mqtt_published_total", kind="event"),
        dropped=metrics.total("vcmon_mqtt_dropped_total", kind="event"),
        queue=metrics.total("vcmon_mqtt_queue_depth"),
        connected=metrics.total("vcmon_mqtt_connected"),
        received=events.received(),
        reloads_ok=metrics.total("vcmon_config_reloads_total", result="success"),
        reloads_failed=metrics.total("vcmon_config_reloads_total", result="failure"),
        skipped=metrics.total("vcmon_scheduler_skipped_cycles_total"),
        lag=metrics.buckets("vcmon_scheduler_lag_seconds"),
        broker_restarts=restarts, scrape_s=page.seconds)


@dataclass
class Soak:
    """The running parts and what happened to them."""

    args: argparse.Namespace
    service: Service
    broker: Broker
    config: Path
    write_config: Any  # (reloads: int) -> str
    events: EventLog
    samples: list[Sample] = field(default_factory=list)
    reloads: list[tuple[str, float, int]] = field(default_factory=list)  # how, s, status
    restarts: int = 0
    broker_down_s: list[float] = field(default_factory=list)
    unanswered: list[float] = field(default_factory=list)  # s since t0 of failed samples

    def reload(self) -> None:
        n = len(self.reloads) + 1
        write_atomically(self.config, self.write_config(n))
        if n % 2:
            answer = self.service.post("/-/reload", timeout=60)
            self.reloads.append(("POST", answer.seconds, answer.status))
        else:
            os.kill(self.service.pid, signal.SIGHUP)
            self.reloads.append(("SIGHUP", 0.0, 0))

    def stop_broker(self) -> None:
        """As ``systemctl restart mosquitto`` does: SIGTERM (it saves its sessions)."""
        assert self.broker.proc is not None
        self.broker.proc.terminate()
        self.broker.proc.wait(30)
        self.broker.kill()  # only forgets the log, so that start() waits for this start
        self.restarts += 1

    def run(self, t0: float) -> None:
        args = self.args
        end = t0 + args.minutes * 60
        next_sample = t0
        next_reload = t0 + args.reload_every if args.reload_every else float("inf")
        restart_every = args.broker_restart_every * 60
        next_restart = t0 + restart_every if restart_every else float("inf")
        broker_back = float("inf")
        down_at = 0.0
        while True:
            now = time.monotonic()
            if now >= end:
                self.take_sample(t0)
                break
            if now >= next_sample:
                self.take_sample(t0)
                next_sample += args.sample_every
            if now >= next_reload:
                self.reload()
                next_reload += args.reload_every
            if now >= next_restart:
                down_at = time.monotonic()
                self.stop_broker()
                broker_back = down_at + args.broker_down
                next_restart += restart_every
            if now >= broker_back:
                self.broker.start()
                self.broker_down_s.append(time.monotonic() - down_at)
                broker_back = float("inf")
            if not self.service.running():
                raise SystemExit("vcmon exited during the soak: "
                                 + " | ".join(self.service.log_tail()))
            wake = min(next_sample, next_reload, next_restart, broker_back)
            time.sleep(max(0.0, min(wake, end) - time.monotonic()))
        if broker_back != float("inf"):
            self.broker.start()
            self.broker_down_s.append(time.monotonic() - down_at)

    def take_sample(self, t0: float) -> None:
        taken = sample(self.service, t0, self.events, self.restarts)
        if taken is None:
            self.unanswered.append(time.monotonic() - t0)
            if self.args.progress:
                print(f"  t={self.unanswered[-1]:6.0f} s  /metrics unanswered", flush=True)
            return
        before = self.samples[-1] if self.samples else None
        self.samples.append(taken)
        if self.args.progress and before is not None and taken.t > before.t:
            cpu = (taken.cpu_s - before.cpu_s) / (taken.t - before.t) * 100
            print(f"  t={taken.t:6.0f} s  RSS {taken.rss_kib / 1024:6.1f} MiB  fds {taken.fds}"
                  f"  CPU {cpu:5.1f} %  changes {taken.changes:.0f}  received {taken.received}"
                  f"  queue {taken.queue:.0f}", flush=True)

    def drain(self, t0: float) -> float:
        """Wait until the daemon's queue is empty and the subscriber has every change
        the daemon made; seconds it took (or the limit)."""
        started = time.monotonic()
        while time.monotonic() - started < self.args.drain:
            last = self.samples[-1] if self.samples else None
            if last and last.queue == 0 and last.connected and last.received >= last.changes:
                break
            time.sleep(2.0)
            self.take_sample(t0)
        return time.monotonic() - started


def per_minute(samples: list[Sample], minutes: float) -> list[str]:
    """One line per minute: the last sample in it; samples after the end (the final one,
    those of the drain) count in the last minute."""
    last_minute = math.ceil(minutes)
    lines = [f"{'min':>4} {'RSS MiB':>8} {'fds':>4} {'CPU %':>6} {'changes':>8} "
             f"{'received':>8} {'dropped':>7} {'queue':>5} {'broker':>6} {'reloads':>7} "
             f"{'skipped':>7} {'lag p99 s':>9} {'scrape s':>8}"]
    previous = samples[0]
    for minute in range(last_minute):
        inside = [s for s in samples[1:]
                  if min(last_minute, max(1, math.ceil(s.t / 60 - 1e-3))) == minute + 1]
        if not inside:
            continue
        last = inside[-1]
        cpu = f"{(last.cpu_s - previous.cpu_s) / (last.t - previous.t) * 100:.1f}"
        _, bound = bucket_quantile(bucket_delta(last.lag, previous.lag), 0.99)
        lag = "-" if bound is None else f"<={bound:g}"
        lines.append(f"{minute + 1:>4} {last.rss_kib / 1024:>8.1f} {last.fds:>4} {cpu:>6} "
                     f"{last.changes:>8.0f} {last.received:>8} {last.dropped:>7.0f} "
                     f"{last.queue:>5.0f} {last.broker_restarts:>6} {last.reloads_ok:>7.0f} "
                     f"{last.skipped:>7.0f} {lag:>9} {max(s.scrape_s for s in inside):>8.2f}")
        previous = last
    return lines


def growth(samples: list[Sample], warmup_s: float, value: str) -> tuple[float, float, float]:
    """(at the end of the warm-up, at the end, highest after the warm-up)."""
    after = [s for s in samples if s.t >= warmup_s] or samples[-1:]
    values = [float(getattr(s, value)) for s in after]
    return values[0], values[-1], max(values)


def summary(soak: Soak, warmup_s: float, drained_s: float) -> list[str]:
    samples, events, args = soak.samples, soak.events, soak.args
    first, final = samples[0], samples[-1]
    rss0, rss1, rss_max = growth(samples, warmup_s, "rss_kib")
    fd0, fd1, fd_max = growth(samples, warmup_s, "fds")
    missing = events.missing()
    lost = sum(map(len, missing.values()))
    posts = [s for how, s, _ in soak.reloads if how == "POST"]
    failed_posts = sum(1 for how, _, status in soak.reloads if how == "POST" and status != 200)
    lines = [
        f"RSS: {rss0 / 1024:.1f} MiB after the {warmup_s / 60:g}-min warm-up, "
        f"{rss1 / 1024:.1f} MiB at the end ({(rss1 - rss0) / rss0 * 100:+.2f} %), "
        f"highest {rss_max / 1024:.1f} MiB ({(rss_max - rss0) / rss0 * 100:+.2f} %)",
        f"open fds: {fd0:.0f} after the warm-up, {fd1:.0f} at the end ({fd1 - fd0:+.0f}), "
        f"highest {fd_max:.0f}",
        f"CPU: {final.cpu_s - first.cpu_s:.1f} s in {(final.t - first.t) / 60:.1f} min "
        f"({(final.cpu_s - first.cpu_s) / (final.t - first.t) * 100:.1f} % of a core on "
        f"average; {first.cpu_s:.1f} s before, starting)",
        f"broker restarts: {soak.restarts} (down "
        f"{', '.join(f'{d:.1f}' for d in soak.broker_down_s) or '-'} s); reloads: "
        f"{len(soak.reloads)} asked ({len(posts)} POST, max {max(posts, default=0):.2f} s, "
        f"{failed_posts} failed; {len(soak.reloads) - len(posts)} SIGHUP), "
        f"{final.reloads_ok - 1:.0f} succeeded and {final.reloads_failed:.0f} failed by the "
        f"daemon's count; skipped probe cycles: {final.skipped:.0f}",
        f"events: {final.changes:.0f} state changes made, {final.published:.0f} published "
        f"(acknowledged by the broker), {final.dropped:.0f} dropped, {final.queue:.0f} still "
        f"queued; {final.received} received by the subscriber ({events.duplicates} "
        f"duplicates), {lost} seq never received"
        + (f": {json.dumps({r: m[:20] for r, m in missing.items() if m})}" if lost else "")
        + f"; drained {drained_s:.1f} s after the last minute",
        f"/metrics: {len(samples)} samples answered, {len(soak.unanswered)} not within "
        f"{SAMPLE_TIMEOUT:g} s" + (f" (at t = {', '.join(f'{t:.0f}' for t in soak.unanswered)}"
                                   " s)" if soak.unanswered else ""),
    ]
    complete = (final.dropped == 0 and lost == 0 and final.received == final.changes
                and len(missing) == 1)
    lines.append("verdict: " + ("no lost state-change events" if complete else
                                "EVENTS LOST OR UNACCOUNTED (see above)")
                 + f"; RSS growth after warm-up {(rss1 - rss0) / rss0 * 100:+.2f} % (target "
                 f"< 2 %); fd growth {fd1 - fd0:+.0f}; /metrics unanswered "
                 f"{len(soak.unanswered)} times")
    if args.minutes * 60 < 3 * 5 * 60:
        lines.append(f"note: a {args.minutes:g}-min run; the warm-up was shortened to a third")
    return lines


def lab_sites(lab: Lab, count: int, seed: int) -> list[dict[str, Any]]:
    """Bring the flapping lab up; its sites as inventory entries."""
    document = synthetic_inventory(count)
    started = control.up(lab, document, flap_profiles(document, random.Random(seed)), seed=seed)
    return [site.model_dump(mode="json", exclude_none=True, exclude={"district"})
            for site in started.config.sites]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=5000, help="sites in all (5000)")
    parser.add_argument("--minutes", type=float, default=60.0, help="length (60)")
    parser.add_argument("--flap", type=int, default=40, help="flapping lab sites (40)")
    parser.add_argument("--no-flap", dest="flap", action="store_const", const=0,
                        help="no lab: every site on loopback")
    parser.add_argument("--broker-restart-every", type=float, default=10.0, metavar="MIN",
                        help="restart Mosquitto this often (10 min; 0: never)")
    parser.add_argument("--broker-down", type=float, default=5.0, metavar="S",
                        help="how long it stays down each time (5 s)")
    parser.add_argument("--reload-every", type=float, default=60.0, metavar="S",
                        help="change the inventory and reload this often (60 s; 0: never)")
    parser.add_argument("--sample-every", type=float, default=10.0, metavar="S")
    parser.add_argument("--warmup", type=float, default=5.0, metavar="MIN",
                        help="growth is measured from its end (5 min, at most a third)")
    parser.add_argument("--drain", type=float, default=120.0, metavar="S",
                        help="at most this long for the last events to arrive (120 s)")
    parser.add_argument("--socket", choices=("dgram", "raw"), default="dgram",
                        help="dgram: unprivileged ICMP sockets allowed (Debian 12's "
                             "default); raw: forbidden, so vcmon uses a raw socket")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--csv", metavar="FILE", help="every sample, as CSV")
    parser.add_argument("--keep", metavar="DIR", help="keep the inventory and logs here")
    parser.add_argument("--progress", action="store_true", help="print every sample")
    args = parser.parse_args()
    if not 1 <= args.minutes <= 24 * 60 or not 1 <= args.sites <= 62500:
        parser.error("--minutes must be 1..1440 and --sites 1..62500")
    if not 0 <= args.flap < args.sites or args.flap > 250:
        parser.error("--flap must be 0..250 (a /24 lab) and less than --sites")
    if args.sample_every < 1 or args.reload_every < 0 or args.broker_restart_every < 0:
        parser.error("--sample-every must be at least 1 s; 0 turns a restart or reload off")
    return args


def main() -> int:
    args = parse_args()
    require_root("bench_soak.py", "network namespaces, the lab")
    if not shutil.which(MOSQUITTO) and not Path(MOSQUITTO).exists():
        print("mosquitto not found: apt-get install mosquitto", file=sys.stderr)
        return 2
    vcmon = Path(sys.executable).parent / "vcmon"
    warmup_s = min(args.warmup * 60, args.minutes * 60 / 3)
    print(f"soak: {args.sites} sites ({args.flap} flapping lab sites), {args.minutes:g} min, "
          f"broker restart every {args.broker_restart_every:g} min, reload every "
          f"{args.reload_every:g} s; nproc {os.cpu_count()}, loadavg {os.getloadavg()[0]:.2f}",
          flush=True)
    with ExitStack() as stack:
        work = Path(args.keep or stack.enter_context(tempfile.TemporaryDirectory(
            prefix="bench-soak-")))
        work.mkdir(parents=True, exist_ok=True)
        ns = stack.enter_context(private_network("vcmon-bsoak"))
        ping_sockets(ns, allowed=args.socket == "dgram")
        lab = make_lab() if args.flap else None
        entries: list[dict[str, Any]] = []
        if lab is not None:
            stack.callback(control.down, lab)
            entries = lab_sites(lab, args.flap, args.seed)
        broker = stack.enter_context(Broker(work, extra="\n".join([
            "persistence true", f"persistence_location {work}/",
            "max_queued_messages 1000000"])))
        events = EventLog()
        stack.enter_context(subscriber(broker.port, events))
        if not events.subscribed.wait(10):
            raise SystemExit("the subscriber did not subscribe within 10 s")
        loopback = args.sites - args.flap

        def write_config(reloads: int) -> str:
            return inventory(entries, loopback, broker.port, reloads)

        config = work / "soak.yaml"
        write_atomically(config, write_config(0))
        loaded = parse_config(config.read_text(encoding="utf-8"), str(config))
        if lab is not None:
            check_routes(loaded, lab)
        elif set(netlab.route_devices([s.address for s in loaded.sites]).values()) != {"lo"}:
            raise SystemExit("refusing to probe: a loopback site does not route via lo")
        port = free_port()
        service = Service([str(vcmon), "run", "--config", str(config), "--listen",
                           f"127.0.0.1:{port}", "--log-format", "json"], work / "vcmon.log",
                          f"http://127.0.0.1:{port}")
        stack.callback(service.stop)
        ready = service.wait_for("/-/ready", START_WITHIN)
        if ready is None:
            raise SystemExit("vcmon did not become ready: " + " | ".join(service.log_tail()))
        print(f"vcmon ready after {ready:.1f} s (pid {service.pid}); lab "
              f"{lab.network if lab else '-'}; broker on port {broker.port}", flush=True)
        soak = Soak(args, service, broker, config, write_config, events)
        t0 = time.monotonic()
        soak.run(t0)
        drained = soak.drain(t0)
        if not soak.samples:
            raise SystemExit("no sample: /metrics never answered")
        print("\n".join(per_minute(soak.samples, args.minutes)))
        print("\n".join(summary(soak, warmup_s, drained)))
        if args.csv:
            with open(args.csv, "w", newline="") as out:
                writer = csv.writer(out)
                names = [k for k in asdict(soak.samples[0]) if k != "lag"]
                writer.writerow(names)
                for s in soak.samples:
                    writer.writerow([getattr(s, k) for k in names])
    return 0


if __name__ == "__main__":
    sys.exit(main())
