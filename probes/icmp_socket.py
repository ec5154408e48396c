"""Opening ICMP sockets (datagram or raw), the privileges they need, kernel timestamps.

Linux offers two ways to send echo requests:
- ICMP datagram ("ping") sockets, ``socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)``, for
  processes whose group is inside ``net.ipv4.ping_group_range`` (it covers IPv6 too).
  The kernel sets the echo id to the socket's bound port and fills the checksum.
- raw sockets, which need CAP_NET_RAW and see every ICMP packet on the host.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from struct import Struct
from typing import Any, Final, Literal

from probes._ip import ip_version

Mode = Literal["auto", "dgram", "raw"]

# Linux values that Python 3.11's socket module does not export.
SO_TIMESTAMPNS: Final = 35  # asm-generic/socket.h; SCM_TIMESTAMPNS has the same value
SO_RCVBUFFORCE: Final = 33
IP_RECVERR: Final = 11
IPV6_RECVERR: Final = 25
SOL_RAW: Final = 255
ICMP_FILTER: Final = 1  # linux/icmp.h, on SOL_RAW
SO_ATTACH_FILTER: Final = 26  # asm-generic/socket.h
SO_EE_ORIGIN_ICMP: Final = 2
SO_EE_ORIGIN_ICMP6: Final = 3

RECEIVE_BUFFER: Final = 4 * 1024 * 1024
# recvmsg room for a timestamp, or a sock_extended_err with its offender address
ANCILLARY_SIZE: Final = 512
# tv_sec, tv_nsec: two native longs (the 64-bit SO_TIMESTAMPNS_OLD layout)
_TIMESPEC: Final = Struct("@ll")
# struct sock_extended_err: errno, origin, type, code, pad, info, data
_EXTENDED_ERR: Final = Struct("=IBBBBII")

# Types a raw socket must see: echo reply and the two errors we attribute. Its kernel
# filter (``attach_echo_filter``) drops the rest (notably our own echo requests looping
# back through lo, and other hosts' requests) before they cost a wake-up.
_WANTED_V4: Final = (0, 3, 11)
_WANTED_V6: Final = (129, 1, 3)
_BIND_ATTEMPTS: Final = 16

# Classic BPF (linux/filter.h): struct sock_filter {u16 code; u8 jt, jf; u32 k}, and
# the instruction codes the filter below uses.
_BPF_INSN: Final = Struct("=HBBI")
_BPF_LDX_MSH: Final = 0x01 | 0x10 | 0xA0  # X = 4 * (packet[k] & 0xf): the IPv4 header's length
_BPF_LDX_IMM: Final = 0x01  # X = k
_BPF_LDB_IND: Final = 0x00 | 0x10 | 0x40  # A = packet[X + k], a byte
_BPF_LDH_IND: Final = 0x00 | 0x08 | 0x40  # A = packet[X + k : X + k + 2], big-endian
_BPF_JEQ: Final = 0x05 | 0x10  # A == k: skip jt instructions, else jf
_BPF_RET: Final = 0x06  # keep k bytes of the packet (0: drop it)
# More packets than a RECEIVE_BUFFER socket can hold (each takes 768 bytes of it or more)
_DRAIN_BOUND: Final = RECEIVE_BUFFER // 512


class IcmpPermissionError(OSError):
    """Neither an ICMP datagram socket nor a raw socket may be opened by this process."""


def _permission_error(tried: str) -> IcmpPermissionError:
    try:
        allowed = Path("/proc/sys/net/ipv4/ping_group_range").read_text().split()
        current = f'"{" ".join(allowed)}"'
    except OSError:
        current = "unknown"
    return IcmpPermissionError(
        f"cannot open an ICMP socket ({tried} refused). Either allow unprivileged ping"
        f" sockets for this process's group {os.getgid()} (net.ipv4.ping_group_range is"
        f' {current}): sysctl -w net.ipv4.ping_group_range="0 2147483647", kept across'
        " reboots by a drop-in such as /etc/sysctl.d/60-vcmon.conf containing"
        " net.ipv4.ping_group_range = 0 2147483647; or grant CAP_NET_RAW: setcap"
        " cap_net_raw+ep on the Python interpreter, AmbientCapabilities=CAP_NET_RAW in the"
        " systemd unit, or run as root."
    )


def open_icmp_socket(v6: bool, mode: Mode) -> tuple[socket.socket, Literal["dgram", "raw"], int]:
    """Open and configure a non-blocking ICMP socket; return it, its mode and its echo id.

    ``auto`` tries the datagram socket first and falls back to raw when the datagram
    socket is refused. Raises IcmpPermissionError when every allowed kind is refused.
    """
    family = socket.AF_INET6 if v6 else socket.AF_INET
    protocol = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    if mode != "raw":
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM, protocol)
        except PermissionError:
            if mode == "dgram":
                raise _permission_error("ICMP datagram socket") from None
        else:
            try:
                _configure(sock, v6)
                # The kernel delivers errors for a ping socket only with RECVERR, and then
                # into the socket's error queue, where they name the failing probe.
                if v6:
                    sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
                else:
                    sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
                return sock, "dgram", _bind_random_port(sock, v6)
            except BaseException:
                sock.close()
                raise
    try:
        sock = socket.socket(family, socket.SOCK_RAW, protocol)
    except PermissionError:
        tried = "raw socket" if mode == "raw" else "ICMP datagram socket and raw socket"
        raise _permission_error(tried) from None
    try:
        _configure(sock, v6)
        ident = secrets.randbits(16)
        attach_echo_filter(sock, v6, ident)
    except BaseException:
        sock.close()
        raise
    return sock, "raw", ident


def attach_echo_filter(sock: socket.socket, v6: bool, ident: int) -> None:
    """Let a raw ICMP socket queue only echo replies with echo id ``ident`` and the two
    errors a probe is answered with (time exceeded, unreachable); the kernel drops the
    rest.

    A raw socket sees every ICMP packet on the host: beside its own replies, every other
    socket's, and on loopback every echo request too. At 20,000 sites probed once a
    second that is 40,000 packets a second, which a trace's thread read and parsed in
    Python only to throw away, at a quarter of a core per trace. Errors are let through
    whatever they carry (they quote the request they answer, and are rare). The same
    program as iputils ping's, stricter: no other type passes.
    """
    reply, first_error, second_error = _WANTED_V6 if v6 else _WANTED_V4
    program = [
        # X: where the ICMP header starts (an IPv4 raw socket reads the IP header too)
        (_BPF_LDX_IMM, 0, 0, 0) if v6 else (_BPF_LDX_MSH, 0, 0, 0),
        (_BPF_LDB_IND, 0, 0, 0),  # the type
        (_BPF_JEQ, 2, 0, reply),  # → 5
        (_BPF_JEQ, 4, 0, first_error),  # → 8
        (_BPF_JEQ, 3, 2, second_error),  # → 8, else → 7
        (_BPF_LDH_IND, 0, 0, 4),  # 5: the echo id
        (_BPF_JEQ, 1, 0, ident),  # → 8, else → 7
        (_BPF_RET, 0, 0, 0),  # 7: drop
        (_BPF_RET, 0, 0, 0xFFFFFFFF),  # 8: keep, whole
    ]
    code = ctypes.create_string_buffer(b"".join(_BPF_INSN.pack(*insn) for insn in program))
    # struct sock_fprog {unsigned short len; struct sock_filter *filter}: the kernel
    # copies the program before setsockopt returns
    fprog = Struct("@HP").pack(len(program), ctypes.addressof(code))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    # what arrived between socket() and the filter is queued all the same: gone now
    for _ in range(_DRAIN_BOUND):
        try:
            sock.recv(1, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return


def _configure(sock: socket.socket, v6: bool) -> None:
    sock.setblocking(False)
    # A large buffer absorbs reply bursts (thousands of targets probed in the same
    # millisecond) while the loop is busy. SO_RCVBUFFORCE passes net.core.rmem_max
    # but needs CAP_NET_ADMIN; SO_RCVBUF is silently capped at rmem_max.
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)


def _bind_random_port(sock: socket.socket, v6: bool) -> int:
    # The bound "port" of a ping socket is the echo id on the wire. A random one
    # keeps stateful firewalls and NAT on the path from matching a previous run's id.
    host = "::" if v6 else "0.0.0.0"
    for _ in range(_BIND_ATTEMPTS):
        port = secrets.randbelow(0xFFFF) + 1
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
        else:
            return port
    sock.bind((host, 0))
    return int(sock.getsockname()[1])


def socket_address(address: str) -> tuple[bool, tuple[Any, ...], str]:
    """``(is_v6, sockaddr for sendto, the kernel's spelling)`` of an IP literal.

    The spelling is what recvmsg reports for replies from that address (inet_ntop),
    so a caller's "0:0::1" or "FE80::1%eth0" still matches. Raises ValueError for
    anything but an IP literal.
    """
    version = ip_version(address)
    if version is None:
        raise ValueError(
            f"{address!r} is not an IP address literal; resolve host names before probing")
    v6 = version == 6
    family = socket.AF_INET6 if v6 else socket.AF_INET
    # getaddrinfo turns an IPv6 "%zone" into the scope id the kernel needs.
    info = socket.getaddrinfo(address, None, family, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST)
    sockaddr = info[0][4]
    if sockaddr[0] == address:
        # spelled as the kernel does: the caller's string, not a copy of it for each
        # destination (60 bytes a site)
        sockaddr = (address, *sockaddr[1:])
    return v6, sockaddr, str(sockaddr[0])


def receive_time_ns(ancillary: list[tuple[int, int, bytes]], now_ns: int) -> int:
    """The kernel's receive timestamp (CLOCK_REALTIME ns) from recvmsg ancillary data.

    ``now_ns`` is returned when the kernel attached none.
    """
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return int(seconds * 1_000_000_000 + nanoseconds)
    return now_ns


def dropped(sock: socket.socket, mode: Literal["dgram", "raw"], v6: bool) -> int:
    """Packets the kernel dropped for ``sock`` because its buffer was full: the
    ``drops`` column of its line in /proc/net/icmp, icmp6, raw or raw6 (this network
    namespace's), found by the socket's inode; 0 where that cannot be read. (Ping
    sockets do not report SO_RXQ_OVFL, so the table is the one way for both kinds.)"""
    table = f"/proc/net/{'icmp' if mode == 'dgram' else 'raw'}{'6' if v6 else ''}"
    inode = str(os.fstat(sock.fileno()).st_ino)
    try:
        with open(table) as lines:
            for line in lines:
                fields = line.split()
                # sl local remote st tx:rx tr:when retrnsmt uid timeout inode ref ptr drops
                if len(fields) >= 13 and fields[9] == inode:
                    return int(fields[12])
    except (OSError, ValueError):
        pass
    return 0


def read_error_queue(
    sock: socket.socket, bufsize: int, v6: bool
) -> Iterator[tuple[bytes, str, tuple[int, int, int, str] | None]]:
    """Drain a RECVERR socket's error queue: ``(data, destination, extended_error)`` each.

    Datagram sockets with RECVERR queue ICMP errors apart from the data, each holding
    the quoted start of our echo request and the probe's destination as its address.
    """
    while True:
        try:
            data, ancillary, _, destination = sock.recvmsg(
                bufsize, ANCILLARY_SIZE, socket.MSG_ERRQUEUE
            )
        except OSError:  # EAGAIN: empty
            return
        yield data, str(destination[0]), extended_error(ancillary, v6)


def extended_error(
    ancillary: list[tuple[int, int, bytes]], v6: bool
) -> tuple[int, int, int, str] | None:
    """``(origin, icmp_type, icmp_code, offender)`` from a MSG_ERRQUEUE read, or None.

    The offender is the address that sent the ICMP error (a router or the target).
    """
    level, kind = (socket.IPPROTO_IPV6, IPV6_RECVERR) if v6 else (socket.IPPROTO_IP, IP_RECVERR)
    for cmsg_level, cmsg_type, data in ancillary:
        if cmsg_level != level or cmsg_type != kind or len(data) < _EXTENDED_ERR.size:
            continue
        _, origin, icmp_type, code, _, _, _ = _EXTENDED_ERR.unpack_from(data)
        # SO_EE_OFFENDER: a sockaddr_in / sockaddr_in6 right after the struct.
        offender = data[_EXTENDED_ERR.size :]
        start, size, family = (8, 16, socket.AF_INET6) if v6 else (4, 4, socket.AF_INET)
        address = offender[start : start + size]
        sender = socket.inet_ntop(family, address) if len(address) == size else "unknown"
        return origin, icmp_type, code, sender
    return None
