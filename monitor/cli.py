"""The ``vcmon`` command: run, check-config, inventory, probe."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import socket
import sys
from collections.abc import Sequence

from monitor import __version__
from monitor.inventory import Config, ConfigError, default_config, load_config
from monitor.inventory.isolated import load_config_isolated
from monitor.inventory.selection import describe
from monitor.inventory.shard import Shard, parse_shard
from monitor.lab.cli import add_lab_parser
from monitor.report.cli import add_report_parser
from monitor.status.window import summarize
from monitor.system.garbage import collector_paused
from monitor.system.logs import configure_logging
from monitor.system.privileges import PrivilegeError
from probes import Outcome
from probes.icmp import IcmpPermissionError, ping

EXIT_CONFIG = 2


def _load(path: str | None, shard: Shard | None = None) -> Config:
    config = default_config() if path is None else load_config(path)
    return config if shard is None else config.model_copy(update={"shard": shard})


def _cmd_run(args: argparse.Namespace) -> int:
    from monitor.daemon import Daemon

    configure_logging(args.log_level, args.log_format)
    _tune_malloc()
    if args.config is None and not args.demo:
        # 240 green demo sites on loopback look like a working province: never by default
        print("vcmon run: no inventory given. Monitor your sites with --config FILE "
              "(YAML or CSV, see docs/inventory.md), or try the embedded 240-site demo with "
              "--demo.", file=sys.stderr)
        return EXIT_CONFIG
    if args.config is not None and args.demo:
        print("vcmon run: --demo runs the embedded inventory; give it or --config FILE, "
              "not both.", file=sys.stderr)
        return EXIT_CONFIG
    # a child process parses: the daemon keeps neither its memory nor its pauses
    config = default_config() if args.config is None else load_config_isolated(args.config)
    with collector_paused():
        daemon = Daemon(config, config_path=args.config, listen=args.listen, shard=args.shard)
    asyncio.run(daemon.serve())
    return 0


def _tune_malloc() -> None:
    """glibc keeps freed memory per thread arena and grows its mmap threshold with
    each large free: every /metrics scrape (megabytes of text in a worker thread)
    would then leave the daemon bigger. One arena, and large blocks always mapped and
    unmapped, keep its memory flat (~15 MB less at 20,000 sites)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc (musl): nothing to tune
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    libc.mallopt(m_arena_max, 1)
    libc.mallopt(m_mmap_threshold, 256 << 10)
    libc.mallopt(m_trim_threshold, 1 << 20)


def _cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.file, args.shard)
    shard = f"; {describe(config)}" if config.shard is not None else ""
    print(f"{args.file}: ok ({len(config.sites)} sites){shard}")
    return 0


def _cmd_inventory(args: argparse.Namespace) -> int:
    from monitor.report.tree import render_tree

    config = _load(args.config, args.shard)
    print(render_tree(config))
    if config.shard is not None:
        print(describe(config))
    return 0


def _cmd_hash_password(args: argparse.Namespace) -> int:
    import getpass

    import bcrypt

    # From stdin, never argv: the command line of a process is visible to every user.
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password or len(password.encode()) > 72:
        print("vcmon hash-password: the password must be 1 to 72 bytes long", file=sys.stderr)
        return EXIT_CONFIG
    print(bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=args.cost)).decode())
    return 0


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.3f}"


async def _probe(address: str, count: int, interval: float, wait: float, size: int) -> int:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(address, None, type=socket.SOCK_RAW)
    except OSError as exc:
        print(f"vcmon probe: cannot resolve {address}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    ip = str(infos[0][4][0])
    print(f"PROBE {address} ({ip}): {size} data bytes, {count} probes every {interval:g} s")
    samples: list[tuple[float, float | None]] = []
    async for result in ping(ip, count=count, interval=interval, timeout=wait,
                             payload_size=size):
        samples.append((result.sent_at, result.rtt))
        if result.outcome is Outcome.REPLY:
            print(f"reply from {ip}: seq={result.seq} time={_ms(result.rtt)} ms")
        else:
            detail = f" ({result.detail})" if result.detail else ""
            print(f"{result.outcome.value} for seq={result.seq}{detail}")
    s = summarize(sorted(samples, key=lambda sample: sample[0]))
    loss = 100.0 * (s.loss_ratio or 0.0)
    print(f"--- {address} vcmon probe statistics ---")
    print(f"{s.sent} sent, {s.received} received, {loss:.1f}% loss")
    if s.received:
        print(f"rtt min/avg/median/p95/max/stddev = {_ms(s.rtt_min)}/{_ms(s.rtt_avg)}/"
              f"{_ms(s.rtt_median)}/{_ms(s.rtt_p95)}/{_ms(s.rtt_max)}/{_ms(s.rtt_stddev)} ms")
        print(f"jitter {_ms(s.jitter)} ms, MOS {s.mos:.2f} (R {s.r_factor:.1f})")
    return 0 if s.received else 1


def _cmd_probe(args: argparse.Namespace) -> int:
    return asyncio.run(_probe(args.address, args.count, args.interval, args.timeout, args.size))


def _count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"{text} is not a count between 1 and 1000000")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0.001 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds in 0.001..3600")
    return value


def _payload(text: str) -> int:
    value = int(text)
    if not 16 <= value <= 1472:
        raise argparse.ArgumentTypeError(f"{text} is not a payload size in 16..1472 bytes")
    return value


def _shard(text: str) -> Shard:
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_shard(parser: argparse.ArgumentParser, doing: str) -> None:
    parser.add_argument("--shard", metavar="I/N", type=_shard,
                        help=f"{doing} only shard I of N (0 <= I < N) of the inventory; "
                             "overrides the inventory's shard:")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vcmon", description="Monitor video-conference endpoints: RTT, jitter, loss, MOS.")
    parser.add_argument("--version", action="version", version=f"vcmon {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="probe every site continuously and serve /metrics")
    run.add_argument("--config", metavar="FILE", help="inventory (YAML or CSV)")
    run.add_argument("--demo", action="store_true",
                     help="run the embedded 240-site Bắc Ninh demo on loopback addresses "
                          "(marked as a demo on the board, API, metrics, MQTT and reports)")
    run.add_argument("--listen", metavar="HOST:PORT",
                     help="address for /metrics (overrides the config's listen)")
    run.add_argument("--log-level", default="info",
                     choices=["debug", "info", "warning", "error"])
    run.add_argument("--log-format", default="auto", choices=["auto", "json", "console"],
                     help="auto: console on a terminal, JSON lines otherwise")
    _add_shard(run, "probe")
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check-config", help="validate an inventory; exit 2 if invalid")
    check.add_argument("file")
    _add_shard(check, "count")
    check.set_defaults(func=_cmd_check_config)

    inv = sub.add_parser("inventory", help="print the sites as a tree with counts")
    inv.add_argument("--config", metavar="FILE", help="default: the embedded demo inventory")
    _add_shard(inv, "count")
    inv.set_defaults(func=_cmd_inventory)

    probe = sub.add_parser("probe", help="ping one address with vcmon's engine")
    probe.add_argument("address")
    probe.add_argument("--count", "-c", type=_count, default=5)
    probe.add_argument("--interval", "-i", type=_seconds, default=1.0, help="seconds")
    probe.add_argument("--timeout", "-W", type=_seconds, default=1.0, help="seconds per packet")
    probe.add_argument("--size", "-s", type=_payload, default=56, help="payload bytes")
    probe.set_defaults(func=_cmd_probe)
    hashing = sub.add_parser(
        "hash-password", help="bcrypt hash of a password (from stdin) for basic_auth_users")
    hashing.add_argument("--cost", type=int, choices=range(10, 16), default=10, metavar="10-15",
                         help="bcrypt cost; each step doubles the work per login (default 10)")
    hashing.set_defaults(func=_cmd_hash_password)
    add_lab_parser(sub)
    add_report_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    except (IcmpPermissionError, PrivilegeError) as exc:
        print(f"vcmon: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
