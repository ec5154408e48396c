"""aiomqtt's ``Client`` with its socket watches kept to the socket they belong to.

paho asks for a read watch (at connect, from the connecting thread) and a write watch
(when a publish cannot be written at once) and aiomqtt adds them with
``call_soon_threadsafe``, that is later, while paho drops its write watch at once when
the connection closes. A connection that drops in between (a broker restart while
messages wait) leaves the watch added after the close: for a closed descriptor, or for
the next socket that reuses its number, such as a Prometheus scrape's connection. A
write watch there calls the dead client's ``loop_write`` at every loop iteration (the
soak benchmark saw 75-100 % CPU after broker restarts) and a read watch replaces the
scrape's own, which is then never answered. Here a watch is added only while its
socket is still the client's, and both are removed whenever that socket closes.

The hooks are aiomqtt 2.x's (pinned ``<3`` in pyproject.toml).
"""

from __future__ import annotations

import contextlib
from typing import Any

import paho.mqtt.client as paho
from aiomqtt import Client

_Socket = Any  # paho's socket, SSL socket or websocket wrapper


class SafeClient(Client):
    def _watch_while_current(self, client: paho.Client, sock: _Socket, *, write: bool,
                             callback: Any) -> None:
        def add() -> None:
            # paho sets its socket to None before it reports the close: a socket that
            # is no longer the client's gets no watch
            current = client.socket()
            if current is None or current is not sock or current.fileno() < 0:
                return
            (self._loop.add_writer if write else self._loop.add_reader)(
                current.fileno(), callback)

        self._loop.call_soon_threadsafe(add)

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: _Socket) -> None:
        def callback() -> None:
            # as aiomqtt's: read until the (TLS) socket has nothing pending; an
            # exception means the connection broke
            try:
                while True:
                    client.loop_read()
                    pending = getattr(client.socket(), "pending", None)
                    if pending is None or pending() <= 0:
                        break
            except Exception as exc:  # handed to the waiting caller
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        def create_misc_task() -> None:
            self._misc_task = self._loop.create_task(self._misc_loop())

        self._watch_while_current(client, sock, write=False, callback=callback)
        self._loop.call_soon_threadsafe(create_misc_task)

    def _on_socket_register_write(self, client: paho.Client, userdata: Any,
                                  sock: _Socket) -> None:
        def callback() -> None:
            try:
                client.loop_write()
            except Exception as exc:  # handed to the waiting caller
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        self._watch_while_current(client, sock, write=True, callback=callback)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: _Socket) -> None:
        fileno = sock.fileno()
        if fileno > -1:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_writer(fileno)
        super()._on_socket_close(client, userdata, sock)
