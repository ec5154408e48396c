"""The MQTT client's socket watches: never left on a socket that closed (or its reuse)."""

from __future__ import annotations

import asyncio
import socket

from monitor.mqtt.client import SafeClient


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_watches_follow_the_clients_socket() -> None:
    loop = asyncio.get_running_loop()
    client = SafeClient("127.0.0.1", 1)
    paho = client._client
    ours, peer = socket.socketpair()
    try:
        paho._sock = ours  # connected: watches go on the client's socket
        client._on_socket_open(paho, None, ours)
        client._on_socket_register_write(paho, None, ours)
        await _settle()
        assert loop.remove_writer(ours.fileno()) and loop.remove_reader(ours.fileno())
        if client._misc_task is not None:
            client._misc_task.cancel()
    finally:
        paho._sock = None
        ours.close()
        peer.close()


async def test_no_watch_outlives_a_connection_that_dropped_before_it_was_added() -> None:
    """A broker restart while publishes wait: paho asks for the watches, then closes
    the socket before the loop adds them; the number goes to the next socket opened
    (a scrape's). Neither watch may land there: a write watch spun the loop at 100 %
    CPU and a read watch took the scrape's place."""
    loop = asyncio.get_running_loop()
    client = SafeClient("127.0.0.1", 1)
    paho = client._client
    dropped, peer = socket.socketpair()
    number = dropped.fileno()
    paho._sock = dropped
    client._on_socket_open(paho, None, dropped)
    client._on_socket_register_write(paho, None, dropped)
    paho._sock = None  # paho forgets its socket before it reports the close
    client._on_socket_close(paho, None, dropped)
    dropped.close()
    peer.close()
    scrape, other = socket.socketpair()
    try:
        await _settle()
        assert number in (scrape.fileno(), other.fileno())  # the number was reused
        for sock in (scrape, other):
            assert not loop.remove_writer(sock.fileno())
            assert not loop.remove_reader(sock.fileno())
        if client._misc_task is not None:
            client._misc_task.cancel()
    finally:
        scrape.close()
        other.close()
