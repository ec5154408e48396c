"""Long-running tools measured from outside: the process, its HTTP endpoints, its /metrics.

Used by ``bench_scale.py`` (vcmon and smokeping_prober) and ``bench_soak.py`` (vcmon).
A tool runs as its own process (``vcmon run --config FILE``, as an operator starts it);
CPU, memory and open files come from ``/proc/PID``, everything else from what the tool
serves over HTTP, so the scripts work against any version of the daemon.

``private_network()`` moves the calling thread into a throw-away network namespace
(only ``lo``): processes it starts and threads it creates inherit it, so the benchmarks'
tens of thousands of packets per second stay out of the raw sockets of everything else
on the machine, and a per-namespace sysctl (``ping_group_range``) can be set for one
tool without touching the host.
"""

from __future__ import annotations

import atexit
import contextlib
import gzip
import os
import re
import resource
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _common import vmhwm_kib

from tests.netns import NetNamespace

ROOT = Path(__file__).resolve().parents[2]
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def private_network(prefix: str) -> Iterator[NetNamespace]:
    """A new namespace with only ``lo``; the calling thread lives in it for the block."""
    with NetNamespace(prefix) as ns, ns.entered():
        yield ns


def require_root(script: str, why: str) -> None:
    if os.geteuid() != 0:
        raise SystemExit(f"{script} needs root ({why})")


def ping_sockets(ns: NetNamespace, allowed: bool) -> None:
    """Let every group open unprivileged ICMP sockets in ``ns`` (Debian 12's default with
    systemd), or nobody (the kernel's default: raw sockets only)."""
    ns.sysctl("net.ipv4.ping_group_range", "0 2147483647" if allowed else "1 0")


def proc_stat_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a running process so far, with those of the children
    it has waited for: vcmon renders /metrics and reads inventories in child processes,
    whose work is its own (None once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime: fields 14 to 17
    return sum(int(value) for value in fields[11:15]) / _CLK_TCK


def proc_status_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


@dataclass
class Response:
    status: int  # 0: no answer (refused, timed out)
    body: bytes
    seconds: float
    gzipped: bool = False


def http(url: str, *, method: str = "GET", gzip_ok: bool = False,
         timeout: float = 60.0) -> Response:
    headers = {"Accept-Encoding": "gzip"} if gzip_ok else {}
    request = urllib.request.Request(url, method=method, headers=headers)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            body: bytes = answer.read()
            return Response(answer.status, body, time.monotonic() - started,
                            answer.headers.get("Content-Encoding") == "gzip")
    except urllib.error.HTTPError as exc:
        return Response(exc.code, exc.read(), time.monotonic() - started)
    except (urllib.error.URLError, OSError):
        return Response(0, b"", time.monotonic() - started)


@dataclass
class Stopped:
    cpu: float  # whole life, from wait4
    exit_code: int
    stop_seconds: float  # SIGTERM to exit
    killed: bool


# Sessions of the services started and not yet stopped: a bench that dies between the
# two (an exception, Ctrl-C) kills them on its way out instead of leaving a daemon of
# 20,000 sites running beside the next measurement.
_RUNNING: set[int] = set()


@atexit.register
def _kill_left_behind() -> None:
    for pid in list(_RUNNING):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


class Service:
    """A tool's process (its own session, output in ``log``) and its HTTP address."""

    def __init__(self, argv: Sequence[str], log: Path, base_url: str) -> None:
        self.base_url = base_url
        self.log = log
        self.started = time.monotonic()
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=ROOT, start_new_session=True, preexec_fn=_raise_nofile)
        self.pid = self.proc.pid
        _RUNNING.add(self.pid)

    def cpu(self) -> float | None:
        return proc_stat_cpu(self.pid)

    def rss_kib(self) -> int | None:
        return proc_status_kib(self.pid, "VmRSS")

    def hwm_kib(self) -> int | None:
        return vmhwm_kib(self.pid)

    def open_fds(self) -> int | None:
        return proc_open_fds(self.pid)

    def running(self) -> bool:
        return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None

    def get(self, path: str, *, gzip_ok: bool = False, timeout: float = 60.0) -> Response:
        return http(self.base_url + path, gzip_ok=gzip_ok, timeout=timeout)

    def post(self, path: str, timeout: float = 60.0) -> Response:
        return http(self.base_url + path, method="POST", timeout=timeout)

    def wait_for(self, path: str, within: float) -> float | None:
        """Seconds from the process's start until ``path`` answers 200 (polled every
        20 ms); None if it did not within ``within`` s or the process ended."""
        deadline = self.started + within
        while time.monotonic() < deadline and self.running():
            if self.get(path, timeout=5).status == 200:
                return time.monotonic() - self.started
            time.sleep(0.02)
        return None

    def stop(self, grace: float = 15.0) -> Stopped:
        """SIGTERM; SIGKILL to the whole session after ``grace`` s; reap with wait4."""
        started = time.monotonic()
        killed = False
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        while self.running():
            if time.monotonic() - started > grace:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.02)
        _, status, usage = os.wait4(self.pid, 0)
        _RUNNING.discard(self.pid)
        self.proc.returncode = code = os.waitstatus_to_exitcode(status)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)  # anything it left behind in its session
        return Stopped(usage.ru_utime + usage.ru_stime, code, time.monotonic() - started,
                       killed)

    def log_tail(self, lines: int = 5) -> list[str]:
        try:
            return self.log.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return []


def open_files_limit() -> int:
    """The most files a child may open: smokeping_prober needs one socket per target.
    (Above the hard limit only with CAP_SYS_RESOURCE, which containers often lack.)"""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def _raise_nofile() -> None:
    limit = open_files_limit()
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


class Exposition:
    """The samples of some metric families on a Prometheus text page, read in one pass of
    one regular expression: the client library's parser takes tens of seconds over
    vcmon's page at 20,000 sites, and the soak reads a page every 10 s."""

    def __init__(self, response: Response, families: Collection[str]) -> None:
        text = gzip.decompress(response.body) if response.gzipped else response.body
        self.size = len(text)
        names = b"|".join(re.escape(f.encode()) for f in sorted(families, key=len, reverse=True))
        pattern = re.compile(rb"^((?:" + names + rb")(?:_bucket|_sum|_count|_total)?)"
                             rb"(?:\{(.*)\})? (\S+)", re.MULTILINE)
        self._samples: dict[str, list[tuple[str, float]]] = {}
        for match in pattern.finditer(text):
            self._samples.setdefault(match.group(1).decode(), []).append(
                ((match.group(2) or b"").decode(), float(match.group(3))))

    def samples(self, name: str, **labels: str) -> Iterator[tuple[str, float]]:
        """(label text, value) of every sample of ``name`` carrying all ``labels``."""
        wanted = [f'{k}="{v}"' for k, v in labels.items()]
        for label_text, value in self._samples.get(name, ()):
            if all(w in label_text for w in wanted):
                yield label_text, value

    def total(self, name: str, **labels: str) -> float:
        return sum(value for _, value in self.samples(name, **labels))

    def values(self, name: str, **labels: str) -> list[float]:
        return [value for _, value in self.samples(name, **labels)]

    def buckets(self, name: str, *, bucketed_only: bool = False,
                **labels: str) -> dict[float, float]:
        """A histogram's cumulative buckets, summed over every series of ``name``;
        ``bucketed_only``: over those with finite buckets only (vcmon's sites with the
        full series set; the others have only ``+Inf``)."""
        series: dict[str, dict[float, float]] = {}
        for label_text, value in self.samples(f"{name}_bucket", **labels):
            found = _LE.search(label_text)
            assert found is not None, label_text
            key = label_text[:found.start()] + label_text[found.end():]
            series.setdefault(key, {})[float(found.group(1))] = value
        summed: dict[float, float] = {}
        for bucket in series.values():
            if bucketed_only and len(bucket) < 2:
                continue
            for le, value in bucket.items():
                summed[le] = summed.get(le, 0.0) + value
        return summed


_LE = re.compile(r'le="([^"]+)"')


def bucket_delta(after: dict[float, float], before: dict[float, float]) -> dict[float, float]:
    return {le: count - before.get(le, 0.0) for le, count in after.items()}


def bucket_quantile(buckets: dict[float, float], q: float) -> tuple[float | None, float | None]:
    """(Prometheus' histogram_quantile: linear inside the bucket, the bucket's upper bound).

    The interpolation assumes values spread evenly inside a bucket, so for values far
    below the first bound it overstates them; the bound is what the histogram knows."""
    bounds = sorted(buckets)
    if not bounds or not buckets[bounds[-1]]:
        return None, None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for le in bounds:
        if buckets[le] >= rank:
            if le == float("inf"):
                return lower, None
            inside = buckets[le] - below
            return lower + (le - lower) * ((rank - below) / inside if inside else 1.0), le
        lower, below = le, buckets[le]
    return None, None


@dataclass
class Scrape:
    at: float  # monotonic, when it was asked for
    seconds: float
    status: int
    size: int  # bytes on the wire (gzipped when the tool compressed)
    cpu: float | None  # the tool's CPU seconds when it was asked for…
    cpu_done: float | None  # …and when the page had arrived

    @property
    def mid(self) -> float:
        """When the page's values were probably read: a busy tool may take seconds to
        answer, and where in that time it read its counters is not known."""
        return self.at + self.seconds / 2

    @property
    def cpu_mid(self) -> float | None:
        if self.cpu is None or self.cpu_done is None:
            return None
        return (self.cpu + self.cpu_done) / 2


@dataclass
class Scraper:
    """Scrapes ``/metrics`` every ``every`` s with ``Accept-Encoding: gzip`` in its own
    thread, on an absolute schedule, as Prometheus does; keeps the first and last pages
    that answered, with their scrapes."""

    service: Service
    every: float
    scrapes: list[Scrape] = field(default_factory=list)
    first: tuple[Scrape, Response] | None = None
    last: tuple[Scrape, Response] | None = None
    # Other pages fetched after each scrape (a client of the JSON API, say)
    also: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)

    def start(self) -> Scraper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(120)

    def _run(self) -> None:
        start = time.monotonic()
        for n in range(1, 1_000_000):
            at = time.monotonic()
            cpu = self.service.cpu()
            response = self.service.get("/metrics", gzip_ok=True)
            scrape = Scrape(at, response.seconds, response.status, len(response.body), cpu,
                            self.service.cpu())
            self.scrapes.append(scrape)
            if response.status == 200:
                self.first = self.first or (scrape, response)
                self.last = (scrape, response)
            for path in self.also:
                self.service.get(path, gzip_ok=True)
            if self._stop.wait(max(0.0, start + n * self.every - time.monotonic())):
                return
