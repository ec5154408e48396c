"""Stream probes of the sites (``twamp`` under ``probes:``): when each runs, and running it.

A stream probe is keyed ``<site>/<probe name>`` like a service probe and runs on its
own absolute schedule; each run is one TWAMP-light stream (``probes.TwampSender``, one
socket per address family for every site), resolved to one ``StreamResult`` for the
caller's ``record`` (``monitor.status.streams`` keeps them). The stream runs in a task
of its own: the sender paces its packets on the event loop, and nothing of the figures
is computed on the ICMP probe path.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import structlog

from monitor.inventory import Config, ServiceProbe, Site
from monitor.inventory.selection import owned_sites
from monitor.probing.scheduler import Scheduler, Target
from monitor.probing.services import key_of
from probes import KINDS, Outcome, ProbeResult, StreamResult, TwampSender, TwampSpec
from probes.twamp_sender import IGNORE_REASONS

log = structlog.get_logger("vcmon.streams")

StreamRecord = Callable[[str, float, StreamResult], None]


class StreamRunner:
    """Sends each site's streams when they are due; each finished stream goes to
    ``record(key, started_at, result)``, and a stream that could not start (an address
    that does not resolve, a socket the kernel refused) to ``failed`` as a ProbeResult."""

    def __init__(self, record: StreamRecord, failed: Callable[[ProbeResult], None]) -> None:
        self.record = record
        self.failed = failed
        self.scheduler = Scheduler(failed)
        # one sender (one socket per family) per source port: ephemeral (0) for most
        self.senders: dict[int, TwampSender] = {}
        # what every sender read that answered none of its packets, by reason: one
        # counter for all of them, which /metrics reads through the stream table
        self.ignored: Counter[str] = Counter(dict.fromkeys(IGNORE_REASONS, 0))
        self._running: dict[str, asyncio.Task[None]] = {}
        # the same send callable for an unchanged probe across reloads, so that the
        # scheduler keeps its place
        self._sends: dict[tuple[str, ServiceProbe], _StreamSend] = {}

    async def open_senders(self, config: Config) -> list[int]:
        """Open the senders ``config``'s streams need that are not open yet (one per
        source port); the ports opened. Done before a reload swaps anything, so that a
        port the kernel refuses refuses the reload; what this call opened is closed again
        when it fails."""
        opened: list[int] = []
        try:
            for _, spec in self._streams(config):
                source_port = getattr(spec, "source_port", None) or 0
                if source_port not in self.senders:
                    sender = TwampSender(source_port=source_port)
                    sender.ignored = self.ignored
                    self.senders[source_port] = sender
                    opened.append(source_port)
                    await sender.start()
        except BaseException:
            await self.close_senders(opened)
            raise
        return opened

    async def close_senders(self, ports: list[int]) -> None:
        for port in ports:
            sender = self.senders.pop(port, None)
            if sender is not None:
                await sender.close()

    def targets(self, config: Config) -> list[Target]:
        """The streams of ``config`` for the scheduler; their senders are open
        (``open_senders``)."""
        targets, sends = [], {}
        for site, spec in self._streams(config):
            key = key_of(site.id, spec.label)
            send = self._sends.get((key, spec)) or _StreamSend(self, spec)
            sends[(key, spec)] = send
            targets.append(Target(site_id=key, address=spec.host(site.address), send=send,
                                  interval=spec.interval, timeout=spec.timeout,
                                  resolve_interval=config.settings_for(site).resolve_interval))
        self._sends = sends
        return targets

    @staticmethod
    def _streams(config: Config) -> list[tuple[Site, ServiceProbe]]:
        # another shard's sites are its to check, upstream ones included
        return [(site, spec) for site in owned_sites(config)
                for spec in config.services_for(site) if KINDS[spec.kind].stream is not None]

    def start(self, key: str, ip: str, timeout: float, spec: TwampSpec) -> None:
        if key in self._running:
            # only when the loop stalled: a stream ends before its next interval
            log.debug("stream_still_running", probe=key)
            return
        task = asyncio.get_running_loop().create_task(self._run(key, ip, timeout, spec),
                                                      name=f"stream {key}")
        self._running[key] = task
        task.add_done_callback(lambda _: self._running.pop(key, None))

    async def _run(self, key: str, ip: str, timeout: float, spec: TwampSpec) -> None:  # noqa: ASYNC109 - each packet's wait
        started = time.time()
        try:
            sender = self.senders[spec.source_port or 0]
            result = await sender.stream(ip, spec.port, count=spec.packets,
                                              spacing=spec.spacing, size=spec.size,
                                              timeout=timeout, tos=spec.tos)
        except (OSError, ValueError) as exc:
            log.warning("stream_not_started", probe=key, error=str(exc))
            self.failed(ProbeResult(key, ip, 0, started, Outcome.SEND_ERROR,
                                    detail=f"stream not started: {exc}",
                                    values={"reason": "send_error"}))
            return
        self.record(key, started, result)

    @property
    def in_flight(self) -> int:
        return len(self._running)

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
        for sender in self.senders.values():
            await sender.close()
        self.senders.clear()


class _StreamSend:
    """``send(key, ip, timeout)`` for the scheduler: starts one stream as a task."""

    __slots__ = ("_runner", "_spec")

    def __init__(self, runner: StreamRunner, spec: ServiceProbe) -> None:
        assert isinstance(spec, TwampSpec), "only stream kinds reach the stream runner"
        self._runner: StreamRunner = runner
        self._spec: TwampSpec = spec

    def __call__(self, key: str, ip: str, timeout: float) -> None:
        self._runner.start(key, ip, timeout, self._spec)
