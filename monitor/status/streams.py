"""TWAMP-light streams of the sites (``twamp`` under ``probes:``): what each has found,
per direction (forward: to the site; reverse: back).

Each stream probe is keyed ``<site>/<probe name>`` like the service probes and resolves
to one ``StreamResult`` per interval, which ``StreamTable.record`` takes. A stream
state keeps the streams of the site's statistics window and sums them into
``StreamWindowStats``: the figures health judges and every sink shows.

Per direction, ``jitter`` is the mean |IPDV| of consecutive packets (RFC 3393 with
RFC 5481's selection): the same definition as the ICMP window's jitter (mean |ΔRTT|),
so the thresholds mean the same for both; RFC 3550's interarrival jitter is beside it.
A direction's MOS is the E-model fed by the stream's RTT and that direction's jitter
and loss: what a one-way media flow meets on that path.

The stream also counts as one service probe of the site (up after ``recover_after``
streams with a reply, down after ``down_after`` without), so a silent reflector reads
"service twamp failed N times in a row" like any service.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from monitor.inventory import Config, ServiceProbe, Site
from monitor.inventory.selection import owned_sites
from monitor.probing.services import key_of
from monitor.status.services import ServiceTable
from probes import KINDS, Outcome, ProbeResult, StreamResult
from probes.emodel import mos_from_r, r_factor

DIRECTIONS = ("forward", "reverse")


@dataclass(frozen=True, slots=True)
class DirectionWindow:
    """One direction over the window. Seconds and ratios; ``lost`` / ``loss_ratio`` are
    None when no stream could attribute its losses (a reflector echoing our sequence)."""

    lost: int | None
    loss_ratio: float | None
    jitter: float | None
    jitter_rfc3550: float | None
    ipdv_p95: float | None
    reordered: int
    duplicates: int | None
    delay: float | None
    mos: float | None


@dataclass(frozen=True, slots=True)
class StreamWindowStats:
    """The streams of one window, summed; ``delay`` of a direction only when every
    stream's reflector said its clock is synchronised."""

    streams: int
    sent: int
    received: int
    lost: int
    loss_ratio: float | None
    lost_unattributed: int
    longest_loss_burst: int
    duplicates: int
    rtt_min: float | None
    rtt_avg: float | None
    rtt_max: float | None
    rtt_jitter: float | None
    synchronized: bool
    mos: float | None
    forward: DirectionWindow
    reverse: DirectionWindow

    def direction(self, name: str) -> DirectionWindow:
        return self.forward if name == "forward" else self.reverse


def _weighted(pairs: list[tuple[float | None, int]]) -> float | None:
    """The mean of the values present, each weighted by its stream's replies."""
    known = [(value, weight) for value, weight in pairs if value is not None and weight]
    total = sum(weight for _, weight in known)
    return sum(value * weight for value, weight in known) / total if total else None


def _direction(results: list[StreamResult], name: str, rtt_avg: float | None,
               synchronized: bool) -> DirectionWindow:
    stats = [(r.stats, getattr(r.stats, name)) for r in results]
    attributed = [(s, d) for s, d in stats if d.lost is not None]
    lost = sum(d.lost for _, d in attributed) if attributed else None
    sent = sum(s.sent for s, _ in attributed)
    loss_ratio = lost / sent if lost is not None and sent else None
    jitter = _weighted([(d.ipdv_mean, s.received) for s, d in stats])
    delay = _weighted([(d.delay_mean, s.received) for s, d in stats]) if synchronized else None
    mos = None
    if rtt_avg is not None:
        mos = mos_from_r(r_factor(rtt_avg, jitter or 0.0, loss_ratio or 0.0))
    return DirectionWindow(
        lost=lost,
        loss_ratio=loss_ratio,
        jitter=jitter,
        jitter_rfc3550=_weighted([(d.jitter, s.received) for s, d in stats]),
        ipdv_p95=max((d.ipdv_p95 for _, d in stats if d.ipdv_p95 is not None), default=None),
        reordered=sum(d.reordered for _, d in stats),
        duplicates=(sum(d.duplicates or 0 for _, d in attributed) if attributed else None),
        delay=delay,
        mos=mos,
    )


def summarize_streams(results: list[StreamResult]) -> StreamWindowStats:
    """The figures of the streams of one window (oldest first)."""
    sent = sum(r.stats.sent for r in results)
    received = sum(r.stats.received for r in results)
    lost = sent - received
    loss_ratio = lost / sent if sent else None
    rtt_avg = _weighted([(r.stats.rtt_mean, r.stats.received) for r in results])
    rtt_jitter = _weighted([(r.stats.rtt_jitter, r.stats.received) for r in results])
    answered = [r for r in results if r.stats.received]
    synchronized = bool(answered) and all(r.stats.synchronized for r in answered)
    mos = None
    if sent:
        # every packet lost: R floors at 0, as the ICMP window says
        mos = mos_from_r(r_factor(rtt_avg, rtt_jitter or 0.0, loss_ratio or 0.0)
                         if rtt_avg is not None else 0.0)
    return StreamWindowStats(
        streams=len(results),
        sent=sent,
        received=received,
        lost=lost,
        loss_ratio=loss_ratio,
        lost_unattributed=sum(r.stats.lost_unattributed for r in results),
        longest_loss_burst=max((r.stats.longest_loss_burst for r in results), default=0),
        duplicates=sum(r.stats.duplicates for r in results),
        rtt_min=min((r.stats.rtt_min for r in answered if r.stats.rtt_min is not None),
                    default=None),
        rtt_avg=rtt_avg,
        rtt_max=max((r.stats.rtt_max for r in answered if r.stats.rtt_max is not None),
                    default=None),
        rtt_jitter=rtt_jitter,
        synchronized=synchronized,
        mos=mos,
        forward=_direction(results, "forward", rtt_avg, synchronized),
        reverse=_direction(results, "reverse", rtt_avg, synchronized),
    )


class StreamState:
    """What one stream probe of one site has found: its last stream, the window's
    streams, and running totals (the counters of /metrics)."""

    __slots__ = ("_cached", "last", "last_at", "length", "lost", "received", "sent", "site",
                 "spec", "streams", "window")

    def __init__(self, site: Site, spec: ServiceProbe, window: float) -> None:
        self.streams = 0
        self.sent = 0
        self.received = 0
        # per direction; losses before the first or after the last reply stay unattributed
        self.lost = {"forward": 0, "reverse": 0, "unattributed": 0}
        self.last: StreamResult | None = None
        self.last_at: float | None = None
        self.window: deque[tuple[float, StreamResult]] = deque()
        self._cached: tuple[tuple[float, float, int], StreamWindowStats] | None = None
        self.configure(site, spec, window)

    def configure(self, site: Site, spec: ServiceProbe, window: float) -> None:
        self.site, self.spec, self.length = site, spec, window

    def record(self, started_at: float, result: StreamResult) -> None:
        stats = result.stats
        self.streams += 1
        self.sent += stats.sent
        self.received += stats.received
        self.lost["forward"] += stats.forward.lost or 0
        self.lost["reverse"] += stats.reverse.lost or 0
        self.lost["unattributed"] += stats.lost_unattributed
        self.last, self.last_at = result, started_at
        self.window.append((started_at, result))
        while self.window[0][0] < started_at - self.length:
            self.window.popleft()
        # Summed here, on the loop, once per stream: /metrics renders in a forked child,
        # where a summary made would be lost with it, and made again at every scrape.
        self._summary(started_at - self.length)

    def stats(self, now: float, since: float = 0.0) -> StreamWindowStats | None:
        """The window's figures, or None before the first stream of the window."""
        found = self._summary(max(now - self.length, since))
        # what fell out of the window goes (from the event loop only: see records)
        while self.window and self.window[0][0] < now - self.length:
            self.window.popleft()
        return found

    def current_stats(self, now: float) -> StreamWindowStats | None:
        """As ``stats`` without changing anything: safe from another thread."""
        return self._summary(now - self.length)

    def _summary(self, horizon: float) -> StreamWindowStats | None:
        # The figures change only when a stream comes or goes, not at each scrape: the
        # last summary is kept with the streams it sums (2,000 sites scraped every
        # second summed them again each time).
        found = [(at, result) for at, result in list(self.window) if at >= horizon]
        if not found:
            return None
        key = (found[0][0], found[-1][0], len(found))
        cached = self._cached
        if cached is not None and cached[0] == key:
            return cached[1]
        summary = summarize_streams([result for _, result in found])
        self._cached = (key, summary)  # one assignment: a reader sees old or new
        return summary


def stream_document(state: StreamState, now: float) -> dict[str, Any]:
    """One stream probe as the JSON API, MQTT and the reports show it: what it sends
    where, and its window (None before the first stream); seconds and ratios."""
    spec = state.spec
    stats = state.current_stats(now)
    return {
        "probe": spec.label,
        "reflector": spec.host(state.site.address),
        "port": getattr(spec, "port", None),
        "dscp": spec.dscp,
        "last_stream_at": state.last_at,
        "window": dataclasses.asdict(stats) if stats is not None else None,
    }


def _as_probe_result(key: str, result: StreamResult, started_at: float) -> ProbeResult:
    """The stream as one service probe: answered if any packet came back."""
    stats = result.stats
    if stats.received:
        return ProbeResult(key, result.address, 0, started_at, Outcome.REPLY, stats.rtt_mean,
                           f"{stats.received} of {stats.sent} packets came back")
    detail = (f"the kernel refused {result.send_errors} of {stats.sent} sends"
              if result.send_errors else
              f"no reply to {stats.sent} packets from the reflector at port {result.port}")
    return ProbeResult(key, result.address, 0, started_at, Outcome.TIMEOUT, None, detail)


class StreamTable:
    """Every site's stream probes, keyed ``<site>/<probe>``; kept across reloads."""

    def __init__(self, config: Config, services: ServiceTable) -> None:
        self.services = services
        # replies the stream sender read and matched to no packet, by reason (foreign,
        # unmatched, late, duplicate, malformed): the daemon hands over its runner's
        self.ignored: Counter[str] = Counter()
        self.probes: dict[str, StreamState] = {}
        self._by_site: dict[str, list[StreamState]] = {}
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        """Kept probes keep their counters and window; removed ones vanish."""
        probes: dict[str, StreamState] = {}
        by_site: dict[str, list[StreamState]] = {}
        for site in owned_sites(config):
            window = config.settings_for(site).window
            for spec in config.services_for(site):
                if KINDS[spec.kind].stream is None:
                    continue
                key = key_of(site.id, spec.label)
                state = self.probes.get(key)
                if state is None:
                    state = StreamState(site, spec, window)
                else:
                    state.configure(site, spec, window)
                probes[key] = state
                by_site.setdefault(site.id, []).append(state)
        self.probes, self._by_site = probes, by_site

    def record(self, key: str, started_at: float, result: StreamResult) -> None:
        state = self.probes.get(key)
        if state is None:  # a probe of a site or probe a reload removed
            return
        state.record(started_at, result)
        self.services.record(_as_probe_result(key, result, started_at))

    def of_site(self, site_id: str) -> list[StreamState]:
        return self._by_site.get(site_id, [])

    def __iter__(self) -> Iterator[StreamState]:
        return iter(self.probes.values())

    def __len__(self) -> int:
        return len(self.probes)
