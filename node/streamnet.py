"""Where the validator transport's connections come from (`node.transport`): TCP in
production (`TCP`), or the whole-network simulator's in-memory links
(`devnet.simnet.net`), behind one small interface."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

Accept = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Listening(Protocol):
    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


class StreamNet(Protocol):
    """Where the transport's connections come from: TCP (`TCP`), or the whole-network
    simulator's in-memory links (`devnet.simnet.net`)."""

    async def open_connection(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]: ...

    async def start_server(self, accept: Accept, host: str, port: int) -> Listening: ...


class _Tcp:
    async def open_connection(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(host, port)

    async def start_server(self, accept: Accept, host: str, port: int) -> Listening:
        return await asyncio.start_server(accept, host, port)


TCP: StreamNet = _Tcp()
