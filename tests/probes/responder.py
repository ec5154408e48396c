"""A user-space ICMP echo responder that answers after a set delay (IPv4, raw socket).

For tests inside a network namespace whose kernel does not answer pings itself
(``net.ipv4.icmp_echo_ignore_all=1``); this kernel has no ``netem``, so a slow or
far-away site is simulated by answering late. Needs CAP_NET_RAW.

In-process (the socket is opened in the current thread's namespace)::

    responder = DelayedResponder(delay=0.3)
    responder.start()
    ...
    responder.close()

Or as a process, which prints ``ready`` once it answers and stops on SIGTERM:
``ip netns exec NS python tests/probes/responder.py --delay 0.3``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
from pathlib import Path
from struct import Struct

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from probes._icmp_packet import ECHO_HEADER, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, checksum
from probes._icmp_socket import ICMP_FILTER, SOL_RAW

# ICMP_FILTER: a set bit drops that type; only echo requests get through.
_ONLY_REQUESTS = Struct("=I").pack(0xFFFFFFFF & ~(1 << ICMP_ECHO_REQUEST))


class DelayedResponder:
    """Answers every IPv4 echo request it sees with an echo reply ``delay`` s later."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.answered = 0
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Open the raw socket (in the calling thread's namespace) and start answering."""
        self._loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        sock.setblocking(False)
        sock.setsockopt(SOL_RAW, ICMP_FILTER, _ONLY_REQUESTS)
        self._sock = sock
        self._loop.add_reader(sock.fileno(), self._read)

    def _read(self) -> None:
        assert self._sock is not None and self._loop is not None
        while True:
            try:
                packet, (source, _) = self._sock.recvfrom(65535)
            except BlockingIOError:
                return
            # Raw IPv4 reads include the IP header; the reply echoes the request's
            # id, seq and payload (RFC 792) with a new type and checksum.
            icmp = bytearray(packet[(packet[0] & 0x0F) * 4 :])
            if len(icmp) < ECHO_HEADER.size:
                continue
            icmp[0] = ICMP_ECHO_REPLY
            icmp[2:4] = b"\0\0"
            icmp[2:4] = checksum(icmp).to_bytes(2, "big")
            self._loop.call_later(self.delay, self._answer, bytes(icmp), source)

    def _answer(self, reply: bytes, destination: str) -> None:
        if self._sock is None:  # closed while the reply was waiting
            return
        with contextlib.suppress(OSError):
            self._sock.sendto(reply, (destination, 0))
            self.answered += 1

    def close(self) -> None:
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None


async def _serve(delay: float) -> None:
    responder = DelayedResponder(delay)
    responder.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)  # the socket is open: requests from now on are answered
    await stop.wait()
    responder.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each reply")
    asyncio.run(_serve(parser.parse_args().delay))
