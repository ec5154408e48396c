"""Shared by the engine benchmark and its runner scripts: targets, safety check, summary."""

from __future__ import annotations

import ipaddress
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def target_addresses(count: int) -> list[str]:
    """127.20.X.Y with X = i // 250, Y = i % 250 + 1: all on loopback, never .0 or .255."""
    return [f"127.20.{i // 250}.{i % 250 + 1}" for i in range(count)]


def assert_loopback(addresses: Sequence[str]) -> None:
    """Refuse to go on unless every address is inside 127.0.0.0/8."""
    for address in addresses:
        if ipaddress.ip_address(address) not in LOOPBACK:
            raise SystemExit(f"refusing to probe {address}: not in {LOOPBACK}")


def read_targets(path: str) -> list[str]:
    addresses = Path(path).read_text().split()
    assert_loopback(addresses)
    return addresses


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty sequence."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def rtt_summary_ms(rtts_ms: Sequence[float]) -> dict[str, float | None]:
    if not rtts_ms:
        return {"rtt_median_ms": None, "rtt_p99_ms": None, "rtt_max_ms": None}
    ordered = sorted(rtts_ms)
    return {
        "rtt_median_ms": percentile(ordered, 0.5),
        "rtt_p99_ms": percentile(ordered, 0.99),
        "rtt_max_ms": ordered[-1],
    }


def vmhwm_kib(pid: int | str = "self") -> int | None:
    """Peak RSS of a process's current image (``VmHWM``), or None once it has exited.

    Unlike ``ru_maxrss``, this does not include the launching process: on Linux a
    child's ``ru_maxrss`` keeps the high-water mark of the memory it was forked with
    (here the benchmark's own Python, about 12 MiB) across ``exec``.
    """
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def emit(record: dict[str, Any]) -> None:
    """One JSON line on stdout; the benchmark reads the last one."""
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()
