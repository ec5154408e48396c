"""Loopback TCP peers for the service probe tests."""

from __future__ import annotations

import asyncio


async def tcp_peer(host: str = "127.0.0.1", reply: bytes | None = None) -> asyncio.Server:
    """A listening server: it closes each connection at once, or (``reply``) reads what
    the client says first and answers ``reply`` before closing."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if reply is not None:
            await reader.read(4096)
            writer.write(reply)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, host, 0)


def port_of(server: asyncio.Server) -> int:
    port: int = server.sockets[0].getsockname()[1]
    return port
