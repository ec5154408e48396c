"""``vcmon lab routed``: a chain of routers in namespaces to trace through, with a fault
at a chosen hop, for as long as the command runs.

    sudo vcmon lab routed --fault district=loss:0.3 --inventory /tmp/routed.yaml
    vcmon trace commune --config /tmp/routed.yaml      # in another terminal

The routers answer with real time-exceeded messages; faults are the routed lab's
(``monitor.lab.routed``): ``loss:P`` drops P (0-1] of what reaches the router, ``down``
drops everything, ``rate-limit:MS`` makes it answer time-exceeded at most once per MS ms
(a noisy router that is not the fault). The lab is taken down when the command ends
(Ctrl-C, SIGTERM or ``--hold`` seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
from pathlib import Path
from typing import Any

import yaml

from monitor.lab import control
from monitor.lab.profiles import LabError
from monitor.lab.routed import RoutedLab

DEFAULT_ROUTERS = ("core", "district", "commune")


def _routers(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _fault(text: str) -> tuple[str, str, float]:
    """``ROUTER=loss:P``, ``ROUTER=down`` or ``ROUTER=rate-limit:MS``."""
    router, _, fault = text.partition("=")
    kind, _, value = fault.partition(":")
    if kind == "down" and not value:
        return router, kind, 0.0
    with contextlib.suppress(ValueError):
        if kind in ("loss", "rate-limit") and value:
            return router, kind, float(value)
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a fault; write ROUTER=loss:0.3, ROUTER=down or ROUTER=rate-limit:1000")


def inventory(lab: RoutedLab) -> dict[str, Any]:
    """One site per router, each the parent of the next: the first is the province, the
    last (the trace target) a commune, those between districts."""
    sites = []
    last = len(lab.roles) - 1
    for index, role in enumerate(lab.roles):
        tier = "province" if index == 0 else "commune" if index == last else "district"
        site: dict[str, Any] = {"id": role, "name": f"Router {role}", "tier": tier,
                                "address": lab.target if index == last
                                else lab.hop_address(index)}
        if index:
            site["parent"] = lab.roles[index - 1]
        sites.append(site)
    return {"diagnosis": {"cycles": 10}, "sites": sites}


def _apply(lab: RoutedLab, router: str, kind: str, value: float) -> str:
    if router not in lab.roles:
        raise LabError(f"no router {router!r} in this lab; the routers are "
                       f"{', '.join(lab.roles)}")
    index = lab.roles.index(router)
    if kind == "loss":
        lab.lose(index, value)
        return f"{router} (hop {index + 1}) drops {value:g} of what reaches it"
    if kind == "down":
        lab.down(index)
        return f"{router} (hop {index + 1}) drops everything"
    lab.rate_limit(index, int(value))
    return f"{router} (hop {index + 1}) answers time-exceeded once per {int(value)} ms"


def _cmd_routed(args: argparse.Namespace) -> int:
    control.require_root("routed")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with RoutedLab(args.routers) as lab:
            lab.check_route(lab.target)
            lab.check_route(lab.target6)
            notes = [_apply(lab, *fault) for fault in args.fault]
            path: Path = args.inventory or Path(f"/run/{lab.prefix}-inventory.yaml")
            path.write_text(yaml.safe_dump(inventory(lab), allow_unicode=True,
                                           sort_keys=False), encoding="utf-8")
            print(f"routed lab {lab.prefix} is up: {lab.network} and {lab.network6} via "
                  f"{lab.host_link}")
            for index, role in enumerate(lab.roles):
                print(f"  hop {index + 1}  {role:<16} {lab.path()[index]:<16} "
                      f"{lab.path(v6=True)[index]}")
            for note in notes:
                print(f"  fault: {note}")
            print(f"inventory: {path}")
            print(f"trace it:  vcmon trace {lab.roles[-1]} --config {path}")
            print("Ctrl-C takes the lab down", flush=True)
            stop.wait(args.hold)
            path.unlink(missing_ok=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("routed lab removed")
    return 0


def add_routed_parser(commands: Any) -> None:
    """``vcmon lab routed``, in the ``lab`` command's subparsers."""
    routed = commands.add_parser(
        "routed", help="routers in namespaces to trace through, a fault at a chosen hop; "
                       "runs until Ctrl-C",
        description=__doc__.split("\n\n")[0] if __doc__ else None)
    routed.add_argument("--routers", type=_routers, default=DEFAULT_ROUTERS,
                        metavar="A,B,C", help="router names, nearest first (core,district,"
                                              "commune); the last holds the target")
    routed.add_argument("--fault", type=_fault, action="append", default=[],
                        metavar="ROUTER=FAULT",
                        help="loss:P (0-1], down or rate-limit:MS at that router; repeatable")
    routed.add_argument("--inventory", type=Path, metavar="FILE",
                        help="where to write an inventory of the routers "
                             "(default /run/PREFIX-inventory.yaml)")
    routed.add_argument("--hold", type=float, default=None, metavar="SECONDS",
                        help="take the lab down after this long (default: at Ctrl-C)")
    routed.set_defaults(lab_func=_cmd_routed)
