"""The ``vcmon`` command: run, check-config, inventory, probe, trace, reflect."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

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
from probes import Outcome, ip_version
from probes.icmp import IcmpPermissionError, ping
from probes.trace import MAX_CYCLES, PathSnapshot, render, trace_blocking

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


# Reverse names are a courtesy: all of them together get this long, then the report
# goes out with the addresses that resolved by then.
NAME_WAIT = 1.0


def _names(addresses: list[str]) -> dict[str, str]:
    """Reverse DNS names of ``addresses``, those found within ``NAME_WAIT`` seconds.

    Daemon threads: a resolver that hangs on an address must not keep the command alive."""
    found: dict[str, str] = {}

    def look_up(address: str) -> None:
        with contextlib.suppress(OSError):
            found[address] = socket.gethostbyaddr(address)[0]

    threads = [threading.Thread(target=look_up, args=(a,), daemon=True) for a in addresses]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, NAME_WAIT / len(threads)))
    return dict(found)


def _trace_target(args: argparse.Namespace) -> tuple[str | None, str]:
    """(site id or None, IP address) of ``SITE|ADDRESS``: a site of the inventory first."""
    target: str = args.target
    if args.config is not None or ip_version(target) is None:
        config = _load(args.config)
        try:
            site = config.site(target)
        except KeyError:
            site = None
        if site is not None:
            return site.id, _resolve(site.address)
    return None, _resolve(target)


def _resolve(address: str) -> str:
    if ip_version(address) is not None:
        return address
    try:
        infos = socket.getaddrinfo(address, None, type=socket.SOCK_RAW)
    except OSError as exc:
        raise _Refused(f"{address} is neither a site of the inventory nor an address that "
                       f"resolves ({exc}); give a site id, an IP address or a host name") from None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    return str(infos[0][4][0])


class _Refused(Exception):
    """The command cannot run as asked; the message says why and what to do."""


def _cmd_trace(args: argparse.Namespace) -> int:
    """Exit 0: the path is clean to the end; 1: a bad hop is named or the end was not
    reached; 2: the target or arguments are wrong."""
    try:
        site_id, address = _trace_target(args)
        snapshot: PathSnapshot = trace_blocking(address, cycles=args.cycles,
                                                interval=args.interval,
                                                max_hops=args.max_hops)
    except (_Refused, ValueError) as exc:
        print(f"vcmon trace: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    names = _names([hop.address for hop in snapshot.hops if hop.address])
    if args.json:
        print(json.dumps({"site": site_id, **snapshot.to_dict(), "names": names},
                         ensure_ascii=False, indent=2))
    else:
        if site_id is not None:
            print(f"site {site_id}")
        print(render(snapshot))
        for hop in snapshot.hops:
            if hop.address in names:
                print(f"  hop {hop.ttl}: {hop.address} is {names[hop.address]}")
    return 0 if snapshot.reached and snapshot.bad_hop is None and not snapshot.error else 1


async def _reflect(args: argparse.Namespace) -> int:
    import signal

    import structlog

    from monitor.system.sdnotify import Notifier
    from probes.twamp import clock_error_estimate
    from probes.twamp_reflector import TwampReflector

    log = structlog.get_logger("vcmon.reflect")
    # S=1 only when asked and the kernel says its clock is synchronised (adjtimex):
    # a sender then trusts one-way delays, which an unsynchronised clock would fake.
    estimate = clock_error_estimate(synchronized=None if args.clock_synchronized else False)
    try:
        reflector = TwampReflector(args.allow, listen=args.listen or ("0.0.0.0", "::"),
                                   port=args.port, tos=args.tos, rate=args.rate,
                                   burst=args.burst, error_estimate=estimate)
        await reflector.start()
    except (ValueError, OSError) as exc:
        print(f"vcmon reflect: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    notifier = Notifier()
    addresses = ", ".join(f"[{a}]:{p}" if ":" in a else f"{a}:{p}"
                          for a, p in reflector.addresses)
    log.info("reflecting", listen=addresses, allow=",".join(args.allow), rate=args.rate,
             burst=args.burst, synchronized=estimate.synchronized)
    notifier.ready(f"reflecting on {addresses}")
    try:
        while not stop.is_set():
            # the counters now and then: what it answered, and what it would not and why
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.stats_every)
            log.info("reflector_counters", reflected=reflector.reflected,
                     **{f"dropped_{reason}": count for reason, count in reflector.dropped.items()})
    finally:
        notifier.stopping()
        await reflector.close()
        notifier.close()
    return 0


def _cmd_reflect(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    return asyncio.run(_reflect(args))


def _dscp_tos(text: str) -> int | None:
    from probes import parse_dscp, tos_byte

    if text == "copy":
        return None
    try:
        return tos_byte(parse_dscp(int(text) if text.isdigit() else text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, or copy") from None


def _add_reflect_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reflect = sub.add_parser(
        "reflect", help="answer TWAMP-light test packets (RFC 5357) from the senders allowed",
        description="A stateless TWAMP-light session-reflector for vcmon's twamp probes "
                    "(docs/twamp.md). Answers only the --allow networks, at most --rate "
                    "packets/s per source, never with more bytes than it received.")
    reflect.add_argument("--allow", metavar="CIDR", action="append", required=True,
                         help="a sender network to answer (repeat for more), e.g. 10.0.0.5/32")
    reflect.add_argument("--listen", metavar="ADDRESS", action="append",
                         help="an address to listen on (repeat; default 0.0.0.0 and ::)")
    reflect.add_argument("--port", type=_port, default=862,
                         help="UDP port (default 862, twamp-test)")
    reflect.add_argument("--rate", type=_rate, default=100.0,
                         help="packets/s answered per source address (default 100)")
    reflect.add_argument("--burst", type=_count, default=100,
                         help="packets a source may send at once above the rate (default 100)")
    reflect.add_argument("--dscp", dest="tos", type=_dscp_tos, default=None, metavar="DSCP",
                         help="DSCP of the replies: copy (the request's, default), a name "
                              "(EF, AF41, CS0) or 0..63")
    reflect.add_argument("--clock-synchronized", action="store_true",
                         help="claim a synchronised clock while the kernel says it is (NTP/"
                              "PTP): senders then report one-way delays")
    reflect.add_argument("--stats-every", type=_seconds, default=300.0,
                         help="seconds between counter log lines (default 300)")
    reflect.add_argument("--log-level", default="info",
                         choices=["debug", "info", "warning", "error"])
    reflect.add_argument("--log-format", default="auto", choices=["auto", "json", "console"])
    reflect.set_defaults(func=_cmd_reflect)


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


N = TypeVar("N", int, float)


def _number(cast: Callable[[str], N], low: N, high: N, what: str, *,
            above: bool = False) -> Callable[[str], N]:
    """An argument type: a number from ``low`` (or above it) to ``high``; argparse's
    refusal names ``what`` the argument is."""
    def parse(text: str) -> N:
        value = cast(text)
        if not (low < value if above else low <= value) or not value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value
    return parse


_count = _number(int, 1, 1_000_000, "a count between 1 and 1000000")
_seconds = _number(float, 0.001, 3600.0, "a number of seconds in 0.001..3600")
_cycles = _number(int, 1, MAX_CYCLES, f"a number of cycles in 1..{MAX_CYCLES}")
_rate = _number(float, 0.0, 100_000.0, "a rate in (0, 100000] packets/s", above=True)
_port = _number(int, 1, 65535, "a port in 1..65535")


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
    tracing = sub.add_parser(
        "trace", help="MTR-style path report to a site or address: per-hop loss and RTT, "
                      "and the first bad hop; exit 1 if one is named")
    tracing.add_argument("target", metavar="SITE|ADDRESS",
                         help="a site id of the inventory, an IP address or a host name")
    tracing.add_argument("--cycles", "-c", type=_cycles, default=10,
                         help="rounds of one echo request per hop (default 10)")
    tracing.add_argument("--interval", "-i", type=float, default=0.2,
                         help="seconds between rounds, 0.01 to 5 (default 0.2)")
    tracing.add_argument("--max-hops", type=int, default=30, help="1 to 64 (default 30)")
    tracing.add_argument("--json", action="store_true", help="the snapshot as JSON")
    tracing.add_argument("--config", metavar="FILE",
                         help="inventory to find SITE in; default: the embedded demo")
    tracing.set_defaults(func=_cmd_trace)
    hashing = sub.add_parser(
        "hash-password", help="bcrypt hash of a password (from stdin) for basic_auth_users")
    hashing.add_argument("--cost", type=int, choices=range(10, 16), default=10, metavar="10-15",
                         help="bcrypt cost; each step doubles the work per login (default 10)")
    hashing.set_defaults(func=_cmd_hash_password)
    add_lab_parser(sub)
    add_report_parser(sub)
    _add_reflect_parser(sub)
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
