"""Per-site state built from the stream of probe results; sinks read it, never probes."""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Iterator

from monitor.inventory import Config, ProbeSettings, Site
from monitor.inventory.selection import Role, select
from monitor.status.window import SiteWindow
from probes import Outcome, ProbeResult

# Exponential from 50 µs (loopback and LAN) doubling to ~3.3 s (a satellite hop with
# queueing), as smokeping_prober does: 17 buckets cover every RTT a probe can report.
RTT_BUCKETS: tuple[float, ...] = tuple(0.00005 * 2**k for k in range(17))


class SiteState:
    """Counters, RTT histogram, sliding window and up/down of one site."""

    __slots__ = (
        "consecutive_lost",
        "consecutive_received",
        "errors",
        "histogram",
        "last_result_at",
        "received",
        "rtt_sum",
        "sent",
        "settings",
        "site",
        "up",
        "window",
    )

    def __init__(self, site: Site, settings: ProbeSettings, histogram: bool = False) -> None:
        self.site = site
        self.settings = settings
        self.window = _window_for(settings)
        # Counted when a probe resolves (reply, timeout or error), so that
        # 1 - rate(received)/rate(sent) shows no phantom loss for packets in flight.
        self.sent = 0
        self.received = 0
        # by reason; None until the first (most sites never have one: 1 MB at 20,000)
        self.errors: dict[str, int] | None = None
        self.rtt_sum = 0.0
        # The RTT histogram, for a site that exports it (``series: full:``): the count in
        # each of ``RTT_BUCKETS`` and above them, then the sum of those RTTs. None for the
        # others, whose /metrics only has the sum and count (200 bytes a site saved).
        self.histogram: list[float] | None = None
        self.keep_histogram(histogram)
        self.consecutive_lost = 0
        self.consecutive_received = 0
        self.up: bool | None = None  # None until a reply or ``down_after`` losses
        self.last_result_at: float | None = None

    def keep_histogram(self, wanted: bool) -> None:
        """Start (or drop) the RTT histogram. One started by a reload counts from then
        on, its sum too, so that its buckets, sum and count stay one histogram."""
        if not wanted:
            self.histogram = None
        elif self.histogram is None:
            self.histogram = [0] * (len(RTT_BUCKETS) + 1) + [0.0]

    def reconfigure(self, site: Site, settings: ProbeSettings, histogram: bool = False) -> None:
        """A reload changed the site: counters, histogram and samples carry on."""
        self.site = site
        self.keep_histogram(histogram)
        if settings != self.settings:
            window = _window_for(settings)
            for sample in self.window.samples(0.0):
                window.add(*sample)
            self.window = window
        self.settings = settings

    def record(self, result: ProbeResult) -> None:
        """Take one result."""
        self.sent += 1
        self.last_result_at = result.sent_at
        rtt = result.rtt if result.outcome is Outcome.REPLY else None
        self.window.add(result.sent_at, rtt)
        up: bool | None
        if rtt is not None:
            self.received += 1
            self.rtt_sum += rtt
            histogram = self.histogram
            if histogram is not None:
                histogram[bisect.bisect_left(RTT_BUCKETS, rtt)] += 1
                histogram[-1] += rtt
            self.consecutive_lost = 0
            self.consecutive_received += 1
            up = True
        else:
            if result.outcome is not Outcome.TIMEOUT:
                reason = result.outcome.value
                if self.errors is None:
                    self.errors = {}
                self.errors[reason] = self.errors.get(reason, 0) + 1
            self.consecutive_lost += 1
            self.consecutive_received = 0
            # A few lost packets do not change what we know: still up, or still unknown.
            up = False if self.consecutive_lost >= self.settings.down_after else self.up
        self.up = up


def _window_for(settings: ProbeSettings) -> SiteWindow:
    per_window = math.ceil(settings.window / settings.interval) * settings.burst
    # 4 pairs of room past a full window: the pairs move to a fresh array every 5th
    # probe, which costs no measurable time per probe (16 took 2 MB more at 20,000 sites)
    return SiteWindow(settings.window, max_samples=per_window + settings.burst + 4)


class SiteTable:
    """The state of the sites this instance owns (``sites``, what the sinks read) and of
    the other shards' sites upstream of them (``upstream``, for root cause only), keyed
    by site id, fed one ``ProbeResult`` at a time."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.sites: dict[str, SiteState] = {}
        self.upstream: dict[str, SiteState] = {}
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        """Apply a reloaded inventory: kept sites keep their state, removed ones vanish."""
        selection = select(config)
        sites: dict[str, SiteState] = {}
        upstream: dict[str, SiteState] = {}
        for site in config.sites:
            role = selection.role(site.id)
            if role is None:
                continue
            settings = config.settings_for(site)
            # only owned sites are on our /metrics
            histogram = role is Role.OWNED and config.series.full_for(site.id, site.tier)
            state = self.sites.get(site.id) or self.upstream.get(site.id)
            if state is None:
                state = SiteState(site, settings, histogram)
            else:
                state.reconfigure(site, settings, histogram)
            (sites if role is Role.OWNED else upstream)[site.id] = state
        self.sites, self.upstream = sites, upstream

    def __iter__(self) -> Iterator[SiteState]:
        return iter(self.sites.values())

    def __len__(self) -> int:
        return len(self.sites)

    def record(self, result: ProbeResult) -> None:
        state = self.sites.get(result.target) or self.upstream.get(result.target)
        if state is None:
            # A probe sent before a reload removed its site: nobody reads it any more.
            return
        state.record(result)
