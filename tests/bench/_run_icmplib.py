"""Benchmark runner: icmplib.async_multiping over all targets once per second.

Usage: _run_icmplib.py TARGETS_FILE SECONDS TIMEOUT CONCURRENCY

Rounds start on absolute seconds after the start; a round that takes longer than a
second delays the next one (no catch-up), so a slow library shows as a low rate.
After each round a progress line is printed, so a run killed for taking too long
still reports what it finished. No new round starts after SECONDS.
"""

from __future__ import annotations

import asyncio
import sys
import time
from array import array

import icmplib
from _common import emit, read_targets, rtt_summary_ms, vmhwm_kib


async def run(addresses: list[str], seconds: float, timeout_s: float, concurrency: int) -> None:
    loop = asyncio.get_running_loop()
    rtts_ms = array("d")
    sent = received = rounds = 0
    round_seconds: list[float] = []
    start = loop.time()
    end = start
    for k in range(int(seconds)):
        due = start + k
        now = loop.time()
        if now >= start + seconds:
            break
        if due > now:
            await asyncio.sleep(due - now)
        began = loop.time()
        hosts = await icmplib.async_multiping(
            addresses, count=1, interval=1.0, timeout=timeout_s,
            concurrent_tasks=concurrency, privileged=True,
        )
        end = loop.time()
        for host in hosts:
            sent += host.packets_sent
            received += host.packets_received
            rtts_ms.extend(host.rtts)
        rounds += 1
        round_seconds.append(round(end - began, 3))
        emit({"progress": True, "sent": sent, "resolved": sent, "received": received,
              "rounds": rounds, "window": max(seconds, end - start),
              "round_seconds": round_seconds, "vmhwm_kib": vmhwm_kib()})
    emit({"sent": sent, "resolved": sent, "received": received, "rounds": rounds,
          "window": max(seconds, end - start), "round_seconds": round_seconds,
          "vmhwm_kib": vmhwm_kib(), **rtt_summary_ms(rtts_ms)})


def main() -> None:
    path, seconds, timeout, concurrency = sys.argv[1:5]
    addresses = read_targets(path)
    t0 = time.monotonic()
    asyncio.run(run(addresses, float(seconds), float(timeout), int(concurrency)))
    sys.stderr.write(f"icmplib runner done in {time.monotonic() - t0:.1f} s\n")


if __name__ == "__main__":
    main()
