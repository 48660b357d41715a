"""A delay line for TCP: WAN latency in user space, where the kernel has no `netem`.

`tc qdisc add dev eth0 root netem delay 40ms` delays every packet a container sends. Some
kernels are built without `sch_netem` (the CI machine's: "Specified qdisc kind is
unknown"), and no other qdisc delays packets. There, a rehearsal puts this delay line in
front of a site's public listeners instead: it accepts on the advertised port, connects
to the service on loopback, and hands every chunk on, in order, `delay_ms` after it
arrived, in both directions. A request and its answer across the line thus take at least
two delays, as across two containers that each delay their outgoing packets by netem.
Unlike netem it does not delay the TCP handshake itself, only data.

Standard library only: a rehearsal runs it in a container as a plain script,

    python3 delayline.py --delay-ms 40 0.0.0.0:7000=127.0.0.1:7001 0.0.0.0:8000=127.0.0.1:8001
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

CHUNK = 65536


@dataclass(frozen=True)
class Route:
    """Accept on listen_host:listen_port, forward to target_host:target_port."""

    listen_host: str
    listen_port: int
    target_host: str
    target_port: int


def _address(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what}: {text!r} is not HOST:PORT")
    return host, int(port)


def parse_route(text: str) -> Route:
    """`LISTEN_HOST:PORT=TARGET_HOST:PORT`; ValueError naming the part that is wrong."""
    listen, sep, target = text.partition("=")
    if not sep:
        raise ValueError(f"route {text!r}: expected LISTEN=TARGET")
    return Route(*_address(listen, "listen"), *_address(target, "target"))


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    """Copy reader to writer, each chunk delay_s after it was read; EOF likewise."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(CHUNK)
            queue.put_nowait((time.monotonic() + delay_s, data))
            if not data:
                break
        await sender
    finally:
        sender.cancel()


async def _connection(
    route: Route,
    delay_s: float,
    client_r: asyncio.StreamReader,
    client_w: asyncio.StreamWriter,
) -> None:
    try:
        server_r, server_w = await asyncio.open_connection(route.target_host, route.target_port)
    except OSError:
        client_w.close()
        return
    try:
        await asyncio.gather(_pump(client_r, server_w, delay_s), _pump(server_r, client_w, delay_s))
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        client_w.close()
        server_w.close()
        for w in (client_w, server_w):
            with contextlib.suppress(OSError):
                await w.wait_closed()


class DelayLine:
    """The listeners of a set of routes and the connections they carry."""

    def __init__(self, routes: Sequence[Route], delay_ms: int) -> None:
        self.routes = tuple(routes)
        self.delay_s = delay_ms / 1000
        self.servers: list[asyncio.Server] = []
        self.connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        for route in self.routes:

            async def handle(
                r: asyncio.StreamReader, w: asyncio.StreamWriter, route: Route = route
            ) -> None:
                task = asyncio.current_task()
                assert task is not None
                self.connections.add(task)
                try:
                    await _connection(route, self.delay_s, r, w)
                finally:
                    self.connections.discard(task)

            server = await asyncio.start_server(handle, route.listen_host, route.listen_port)
            self.servers.append(server)

    def ports(self) -> list[int]:
        """The port each route listens on (useful with port 0)."""
        return [int(s.sockets[0].getsockname()[1]) for s in self.servers]

    async def close(self) -> None:
        """Stop listening and end every connection."""
        for s in self.servers:
            s.close()
        for task in list(self.connections):
            task.cancel()
        await asyncio.gather(*self.connections, return_exceptions=True)
        for s in self.servers:
            await s.wait_closed()


async def _main(routes: Sequence[Route], delay_ms: int) -> None:
    line = DelayLine(routes, delay_ms)
    await line.start()
    for route in routes:
        print(
            f"delay line {route.listen_host}:{route.listen_port} -> "
            f"{route.target_host}:{route.target_port}, {delay_ms} ms each way",
            flush=True,
        )
    await asyncio.gather(*(s.serve_forever() for s in line.servers))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="delayline", description=__doc__.splitlines()[0])
    p.add_argument("--delay-ms", type=int, required=True, help="delay of each direction")
    p.add_argument("routes", nargs="+", metavar="LISTEN=TARGET")
    args = p.parse_args(argv)
    if args.delay_ms < 0:
        p.error("--delay-ms must not be negative")
    try:
        routes = [parse_route(r) for r in args.routes]
    except ValueError as e:
        p.error(str(e))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(routes, args.delay_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
