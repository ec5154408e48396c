"""Which engine each site's continuous probe goes out through, and the targets that
the scheduler sends: one engine (one socket per address family) per probe kind and
payload size, shared by every site that probes alike."""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import Callable

from monitor.inventory import Config, ProbeSettings
from monitor.inventory.selection import select
from monitor.probing.scheduler import SendFn, Target
from probes import KINDS, IcmpEngine, ProbeResult

# Sites whose targets are built between two turns of the probe loop (a reload builds
# 20,000 in 0.15 s; nothing is swapped until they are all built)
_YIELD_EVERY = 1000


@functools.cache
def marked(send: SendFn, tos: int) -> SendFn:
    """An ICMP engine's send with the TOS byte ``tos``; the same object for the same
    pair, so that a reload keeps the schedule. Unmarked sends call the engine as is
    (a plain ``sendto``; marked ones go out with ``sendmsg`` and IP_TOS/IPV6_TCLASS)."""
    return functools.partial(send, tos=tos) if tos else send  # type: ignore[call-arg]


def probe_rate(targets: list[Target]) -> float:
    """Probes a second that ``targets`` send."""
    return sum(t.burst / t.interval for t in targets)


class ProbePlan:
    """The open engines and the send function of each (engine, DSCP) pair."""

    def __init__(self, record: Callable[[ProbeResult], None]) -> None:
        self._record = record
        self.engines: dict[tuple[str, int], IcmpEngine] = {}
        self._sends: dict[tuple[str, int, int], SendFn] = {}

    async def targets(self, config: Config) -> list[Target]:
        """The sites this instance probes: its shard's and the upstream chain of those."""
        planned = await self.prepare(config)
        planned.commit()
        return planned.targets

    async def prepare(self, config: Config) -> PlannedTargets:
        """The targets of ``config``, with every engine they need open, and the plan
        unchanged until ``commit()``: a reload applies all of it or none. If an engine
        cannot be opened, those opened here are closed again and the error raised."""
        planned = PlannedTargets(self._record, self.engines, self._sends)
        try:
            selection = select(config)
            for i, site in enumerate(config.sites):
                if i % _YIELD_EVERY == _YIELD_EVERY - 1:
                    await asyncio.sleep(0)  # let due probes go out: 0.15 s at 20,000 sites
                if selection.role(site.id) is None:
                    continue
                s = config.settings_for(site)
                planned.targets.append(Target(
                    site_id=site.id, address=site.address, send=await planned.send_for(s),
                    interval=s.interval, timeout=s.timeout, burst=s.burst,
                    burst_spacing=s.burst_spacing, resolve_interval=s.resolve_interval))
        except BaseException:
            await planned.discard()
            raise
        return planned

    @property
    def modes(self) -> list[str]:
        """The socket mode of each open engine (``dgram`` or ``raw``)."""
        return [engine.mode for engine in self.engines.values()]

    @property
    def ignored_packets(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for engine in self.engines.values():
            total.update(engine.ignored)
        return total

    def buffer_seconds(self, rate: float) -> float:
        """How long the sockets hold replies unread at ``rate`` probes a second: what a
        loop that is held up for longer loses (inf with no engine or no probe)."""
        capacity = min((engine.capacity for engine in self.engines.values()), default=0)
        return capacity / rate if rate and capacity else float("inf")

    @property
    def receive_dropped(self) -> int:
        """Packets the kernel dropped because an engine's socket was full."""
        return sum(engine.dropped for engine in self.engines.values())

    @property
    def pending(self) -> int:
        """Probes sent and not yet resolved, over every engine."""
        return sum(engine.pending_count for engine in self.engines.values())

    async def close(self) -> None:
        for engine in self.engines.values():
            await engine.close()
        self.engines.clear()
        self._sends.clear()


class EngineUnavailable(OSError):
    """An engine a new inventory needs cannot be opened; says which and why."""


class PlannedTargets:
    """Targets for a new inventory and the engines opened for them, not yet in the plan."""

    def __init__(self, record: Callable[[ProbeResult], None],
                 engines: dict[tuple[str, int], IcmpEngine],
                 sends: dict[tuple[str, int, int], SendFn]) -> None:
        # the plan's own: read while preparing, added to by commit() alone
        self._record, self._open, self._known = record, engines, sends
        self.targets: list[Target] = []
        self.engines: dict[tuple[str, int], IcmpEngine] = {}
        self._sends: dict[tuple[str, int, int], SendFn] = {}

    async def send_for(self, settings: ProbeSettings) -> SendFn:
        # One engine (one socket per family) per probe kind and payload size: the
        # payload is built once per engine, and all sites share the same few.
        key = (settings.kind, settings.payload_size)
        engine = self._open.get(key) or self.engines.get(key)
        if engine is None:
            kind = KINDS[settings.kind].engine
            assert kind is not None, "config admits engine kinds only"
            engine = kind(self._record, payload_size=settings.payload_size)
            try:
                await engine.start()
            except OSError as exc:
                raise EngineUnavailable(
                    exc.errno, f"cannot open an {settings.kind} socket for payload_size "
                    f"{settings.payload_size} ({exc.strerror or exc})") from None
            self.engines[key] = engine
        # the site's DSCP; tos= is passed to the engine only when it is not 0. One
        # function per engine and DSCP, shared by the sites (one each: 3 MB at 20,000)
        tos = settings.dscp << 2
        send = self._known.get((*key, tos)) or self._sends.get((*key, tos))
        if send is None:
            send = self._sends[(*key, tos)] = marked(engine.send, tos)
        return send

    def commit(self) -> None:
        """The engines opened for these targets join the plan (never fails)."""
        self._open.update(self.engines)
        self._known.update(self._sends)

    async def discard(self) -> None:
        """Close the engines opened for these targets: the plan stays as it was."""
        for engine in self.engines.values():
            await engine.close()
        self.engines.clear()
