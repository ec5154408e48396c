"""Service probes of the sites (``probes:``): when each runs, and running it.

Each probe of a site is keyed ``<site>/<probe name>`` (a site id holds no "/"), runs
on its own absolute schedule from a scheduler of its own, and resolves to one
``ProbeResult`` for the caller's ``record`` (``monitor.status.services`` keeps them).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from monitor.inventory import Config, ServiceProbe
from monitor.inventory.selection import owned_sites
from monitor.probing.plan import marked
from monitor.probing.scheduler import Scheduler, SendFn, Target
from probes import KINDS, Outcome, ProbeFn, ProbeResult
from probes.icmp import IcmpEngine

log = structlog.get_logger("vcmon.services")


def key_of(site_id: str, probe: str) -> str:
    return f"{site_id}/{probe}"


class ServiceRunner:
    """Sends the service probes when they are due; each result goes to ``record``."""

    def __init__(self, record: Callable[[ProbeResult], None]) -> None:
        self.record = record
        self.scheduler = Scheduler(record)
        self._running: dict[str, asyncio.Task[None]] = {}
        # the same send callable for an unchanged probe across reloads, so that the
        # scheduler keeps its place
        self._sends: dict[tuple[str, ServiceProbe], _Send] = {}
        self._echo: IcmpEngine | None = None

    async def targets(self, config: Config) -> list[Target]:
        planned = await self.prepare(config)
        planned.commit()
        return planned.targets

    async def prepare(self, config: Config) -> PlannedProbes:
        """The service probes of ``config``, with the ICMP engine they need open, and
        the runner unchanged until ``commit()``; what fails to open raises ``OSError``."""
        planned = PlannedProbes(self)
        try:
            # another shard's sites are its to check, upstream ones included
            for site in owned_sites(config):
                for spec in config.services_for(site):
                    if KINDS[spec.kind].stream is not None:
                        continue  # a stream kind: monitor.probing.streams runs it
                    key = key_of(site.id, spec.label)
                    send = await planned.send_for(key, spec)
                    planned.targets.append(Target(
                        site_id=key, address=spec.host(site.address), send=send,
                        interval=spec.interval, timeout=spec.timeout,
                        resolve_interval=config.settings_for(site).resolve_interval))
        except BaseException:
            await planned.discard()
            raise
        return planned

    def adopt(self, sends: dict[tuple[str, ServiceProbe], _Send], echo: IcmpEngine | None) -> None:
        """A prepared set of probes takes over (``PlannedProbes.commit``)."""
        self._sends = sends
        if echo is not None:
            self._echo = echo

    def known_send(self, key: str, spec: ServiceProbe) -> _Send | None:
        return self._sends.get((key, spec))

    @property
    def echo(self) -> IcmpEngine | None:
        return self._echo

    def start(self, key: str, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if key in self._running:
            # only when the loop stalled: a probe's timeout is at most its interval
            log.debug("probe_still_running", probe=key)
            return
        task = asyncio.get_running_loop().create_task(run(), name=f"probe {key}")
        self._running[key] = task
        task.add_done_callback(lambda _: self._running.pop(key, None))

    @property
    def in_flight(self) -> int:
        return len(self._running)

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
        if self._echo is not None:
            await self._echo.close()
            self._echo = None


class _Send:
    """``send(key, ip, timeout)`` for the scheduler: starts one probe as a task."""

    __slots__ = ("_probe", "_runner", "_spec")

    def __init__(self, runner: ServiceRunner, probe: ProbeFn[Any], spec: ServiceProbe) -> None:
        self._runner, self._probe, self._spec = runner, probe, spec

    def __call__(self, key: str, ip: str, timeout: float) -> None:
        self._runner.start(key, functools.partial(self._run, key, ip, timeout))

    async def _run(self, key: str, ip: str, timeout: float) -> None:  # noqa: ASYNC109 - the probe's budget
        try:
            result = await self._probe(key, ip, timeout, self._spec)
        except Exception as exc:  # a bug in a probe must not stop the others
            log.exception("probe_crashed", probe=key)
            result = ProbeResult(key, ip, 0, 0.0, Outcome.FAILED, detail=f"probe error: {exc!r}",
                                 values={"reason": "probe_error"})
        self._runner.record(result)


class PlannedProbes:
    """Service probes for a new inventory, and the echo engine opened for them."""

    def __init__(self, runner: ServiceRunner) -> None:
        self._runner = runner
        self.targets: list[Target] = []
        self._sends: dict[tuple[str, ServiceProbe], _Send] = {}
        self._echo: IcmpEngine | None = None

    async def send_for(self, key: str, spec: ServiceProbe) -> SendFn:
        kind = KINDS[spec.kind]
        if kind.probe is None:
            echo = self._runner.echo or self._echo
            if echo is None:
                echo = IcmpEngine(self._runner.record)
                try:
                    await echo.start()
                except OSError as exc:
                    raise OSError(exc.errno, "cannot open the ICMP socket of the icmp service "
                                  f"probes ({exc.strerror or exc})") from None
                self._echo = echo
            return marked(echo.send, spec.tos)
        # the same send callable for an unchanged probe: the scheduler keeps its place
        send = self._runner.known_send(key, spec) or _Send(self._runner, kind.probe, spec)
        self._sends[(key, spec)] = send
        return send

    def commit(self) -> None:
        self._runner.adopt(self._sends, self._echo)

    async def discard(self) -> None:
        if self._echo is not None:
            await self._echo.close()
            self._echo = None
