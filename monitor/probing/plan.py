"""Which engine each site's continuous probe goes out through, and the targets that
the scheduler sends: one engine (one socket per address family) per probe kind and
payload size, shared by every site that probes alike."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable

from monitor.inventory import Config, ProbeSettings
from monitor.inventory.selection import select
from monitor.probing.scheduler import SendFn, Target
from probes import KINDS, IcmpEngine, ProbeResult


@functools.cache
def marked(send: SendFn, tos: int) -> SendFn:
    """An ICMP engine's send with the TOS byte ``tos``; the same object for the same
    pair, so that a reload keeps the schedule. Unmarked sends call the engine as is
    (a plain ``sendto``; marked ones go out with ``sendmsg`` and IP_TOS/IPV6_TCLASS)."""
    return functools.partial(send, tos=tos) if tos else send  # type: ignore[call-arg]


class ProbePlan:
    """The open engines and the send function of each (engine, DSCP) pair."""

    def __init__(self, record: Callable[[ProbeResult], None]) -> None:
        self._record = record
        self.engines: dict[tuple[str, int], IcmpEngine] = {}
        self._sends: dict[tuple[str, int, int], SendFn] = {}

    async def _engine_for(self, settings: ProbeSettings) -> SendFn:
        # One engine (one socket per family) per probe kind and payload size: the
        # payload is built once per engine, and all sites share the same few.
        key = (settings.kind, settings.payload_size)
        engine = self.engines.get(key)
        if engine is None:
            kind = KINDS[settings.kind].engine
            assert kind is not None, "config admits engine kinds only"
            engine = kind(self._record, payload_size=settings.payload_size)
            await engine.start()
            self.engines[key] = engine
        # the site's DSCP; tos= is passed to the engine only when it is not 0. One
        # function per engine and DSCP, shared by the sites (one each: 3 MB at 20,000)
        tos = settings.dscp << 2
        send = self._sends.get((*key, tos))
        if send is None:
            send = self._sends[(*key, tos)] = marked(engine.send, tos)
        return send

    async def targets(self, config: Config) -> list[Target]:
        """The sites this instance probes: its shard's and the upstream chain of those."""
        targets = []
        selection = select(config)
        for site in config.sites:
            if selection.role(site.id) is None:
                continue
            s = config.settings_for(site)
            targets.append(Target(
                site_id=site.id, address=site.address, send=await self._engine_for(s),
                interval=s.interval, timeout=s.timeout, burst=s.burst,
                burst_spacing=s.burst_spacing, resolve_interval=s.resolve_interval))
        return targets

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

    @property
    def pending(self) -> int:
        """Probes sent and not yet resolved, over every engine."""
        return sum(engine.pending_count for engine in self.engines.values())

    async def close(self) -> None:
        for engine in self.engines.values():
            await engine.close()
        self.engines.clear()
        self._sends.clear()
