"""Benchmark runner: vcmon's scheduler feeding its ICMP engine, as the daemon wires them.

Usage: _run_vcmon.py TARGETS_FILE SECONDS TIMEOUT [MODE]

Every target is probed once per second for SECONDS (the scheduler spreads the
targets over the second by their stable phase); then the scheduler stops, the
runner waits TIMEOUT (+0.5 s) for the last replies or timeouts, closes the engine
and prints one JSON line. Per result it only appends the RTT (or counts the outcome).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from array import array
from collections import Counter

from _common import emit, read_targets, rtt_summary_ms, vmhwm_kib

from monitor.probing.scheduler import Scheduler, Target
from probes import ProbeResult
from probes.icmp import IcmpEngine


async def run(addresses: list[str], seconds: float, timeout_s: float, mode: str) -> None:
    rtts = array("d")
    others: Counter[str] = Counter()

    def on_result(result: ProbeResult) -> None:
        if result.rtt is not None:
            rtts.append(result.rtt)
        else:
            others[result.outcome] += 1

    engine = IcmpEngine(on_result, payload_size=56, mode=mode)
    await engine.start()
    scheduler = Scheduler(on_result)
    loop = asyncio.get_running_loop()
    start = loop.time()
    scheduler.set_targets(
        Target(site_id=f"site-{i}", address=ip, send=engine.send, interval=1.0,
               timeout=timeout_s)
        for i, ip in enumerate(addresses)
    )
    task = loop.create_task(scheduler.run())
    await asyncio.sleep(seconds - (loop.time() - start))
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    window = loop.time() - start
    await asyncio.sleep(timeout_s + 0.5)
    await engine.close()
    peak_kib = vmhwm_kib()  # before the summary's temporary list of floats
    summary = rtt_summary_ms([rtt * 1000.0 for rtt in rtts])
    emit({
        "mode": str(engine.mode),
        "sent": scheduler.sends,
        "resolved": len(rtts) + sum(others.values()),
        "received": len(rtts),
        "outcomes": {str(k): v for k, v in others.items()},
        "skipped_cycles": scheduler.skipped_cycles,
        "ignored": getattr(engine, "ignored", None),
        "window": window,
        "vmhwm_kib": peak_kib,
        **summary,
    })


def main() -> None:
    path, seconds, timeout = sys.argv[1:4]
    mode = sys.argv[4] if len(sys.argv) > 4 else "auto"
    asyncio.run(run(read_targets(path), float(seconds), float(timeout), mode))


if __name__ == "__main__":
    main()
