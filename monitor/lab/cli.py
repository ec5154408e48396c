"""``vcmon lab up | set | down``: simulated far sites to point vcmon at."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from monitor.lab import control
from monitor.lab.netlab import DEFAULT_NAME, LAB_RANGE, Lab
from monitor.lab.profiles import SCENARIOS, SETTINGS_HELP, LabError
from monitor.lab.routed_cli import add_routed_parser
from monitor.lab.sites import inventory_document, synthetic_inventory
from monitor.lab.state import LabState

EXIT_LAB = 1


def _lab(args: argparse.Namespace) -> Lab:
    network = getattr(args, "network", None) or LAB_RANGE
    return Lab(name=args.name, network=network)


def _summary(state: LabState) -> list[str]:
    by_label: dict[str, list[Any]] = defaultdict(list)
    for site in state.sites:
        by_label[site.profile.label].append(site.profile)
    lines = []
    for label, profiles in by_label.items():
        delays = [p.delay * 1000 for p in profiles]
        jitter = max(p.jitter for p in profiles) * 1000
        loss = max(p.loss for p in profiles) * 100
        down = " down" if all(p.down for p in profiles) else ""
        lines.append(f"  {label:<12} {len(profiles):>5} sites  delay {min(delays):g}-"
                     f"{max(delays):g} ms  jitter ≤ {jitter:g} ms  loss ≤ {loss:g}%{down}")
    return lines


def _cmd_up(args: argparse.Namespace) -> int:
    control.require_root("up")
    lab = _lab(args)
    document = (inventory_document(args.config) if args.config
                else synthetic_inventory(args.sites))
    started = control.up(lab, document, args.profile, seed=args.seed, inventory=args.inventory)
    state = started.state
    print(f"lab {lab.name} is up: {len(state.sites)} sites in namespace {lab.namespace}, "
          f"{lab.network} via {lab.host_link}, profile {state.scenario}, seed {state.seed}")
    print("\n".join(_summary(state)))
    print(f"inventory: {started.inventory}")
    print(f"probe it:  vcmon run --config {started.inventory}")
    return 0


def _cmd_set(args: argparse.Namespace) -> int:
    control.require_root("set")
    before, after, behind = control.set_site(_lab(args), args.site, args.settings)
    print(f"{after.id} ({after.address}): {after.profile.describe()}"
          f"  (was: {before.profile.describe()})")
    if behind and (after.profile.down or after.profile.flap):
        print(f"{len(behind)} sites behind it go silent with it")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    control.require_root("down")
    removed = control.down(_lab(args))
    if removed:
        print(f"lab {args.name} removed: {', '.join(removed)}")
    else:
        print(f"lab {args.name}: nothing to remove")
    return 0


def _run(args: argparse.Namespace) -> int:
    try:
        code: int = args.lab_func(args)
    except LabError as exc:
        print(f"vcmon lab: {exc}", file=sys.stderr)
        return EXIT_LAB
    return code


def _network(text: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text} is not an IPv4 network like 198.18.0.0/16") \
            from None


def add_lab_parser(subparsers: Any) -> None:
    """Add ``lab`` and its commands to the ``vcmon`` command's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", default=DEFAULT_NAME,
                        help=f"the lab's namespace, link prefix and /run directory "
                             f"(default {DEFAULT_NAME}); for a second lab or tests")
    lab = subparsers.add_parser(
        "lab", help="simulated far sites with delay, jitter, loss and outages (root only)",
        description=f"Far sites simulated in a network namespace on {LAB_RANGE} (RFC 2544 "
                    "benchmarking range), answered by a responder with each site's profile.")
    lab.set_defaults(func=_run)
    commands = lab.add_subparsers(dest="lab_command", required=True, metavar="LAB_COMMAND")

    up = commands.add_parser("up", parents=[common], help="build the lab and write an inventory")
    source = up.add_mutually_exclusive_group()
    source.add_argument("--sites", type=int, default=240, metavar="N",
                        help="a synthetic province/district/commune tree of N sites (240)")
    source.add_argument("--config", metavar="FILE",
                        help="the sites of this inventory, ids and tree kept, on lab addresses")
    up.add_argument("--profile", default="conference-day", choices=sorted(SCENARIOS),
                    help="the scenario: profiles of every site (conference-day)")
    up.add_argument("--seed", type=int, default=1, help="makes a scenario and its random "
                    "delays and losses repeatable (1)")
    up.add_argument("--network", type=_network, default=LAB_RANGE,
                    help=f"the lab's addresses: {LAB_RANGE} or a part of it")
    up.add_argument("--inventory", type=Path, metavar="FILE",
                    help="where to write the inventory (default /run/NAME/inventory.yaml)")
    up.set_defaults(lab_func=_cmd_up)

    change = commands.add_parser(
        "set", parents=[common], help="change a site's profile while the lab runs",
        epilog=f"SETTINGS: {SETTINGS_HELP}")
    change.add_argument("site", help="site id or address")
    change.add_argument("settings", nargs="+", metavar="SETTING")
    change.set_defaults(lab_func=_cmd_set)

    remove = commands.add_parser("down", parents=[common],
                                 help="remove the lab, also what a crash left behind")
    remove.set_defaults(lab_func=_cmd_down)
    add_routed_parser(commands)
