"""The simulated network: in-memory byte streams between simulated validators.

`SimNet` implements the transport's `StreamNet` (`node.transport`): `start_server` and
`open_connection` give asyncio `StreamReader`s fed by the simulator and writers whose
`write` hands each chunk to the simulated link. The node's transport writes one
length-prefixed frame per `write` (after the connection's hello), so a chunk is a frame,
and the link's faults act on whole frames of the real QKD frame layer: per directed link
(i -> j), from the run's generator,

- delay: a base latency plus seeded jitter; frames of one connection arrive in order
  (TCP) unless the reorder fault lets one overtake;
- drop, duplicate, reorder, corrupt (one bit flipped after the length prefix, so the
  receiver's MAC check is what rejects it);
- partition: frames are silently lost and new connections are refused.

A twin (a second validator with a node's identity, `devnet.simnet.world`) runs as an
owner of its own and sits at its original's site: the links' faults are looked up by
site (`sites`), connections and crashes by owner. An outsider (the fault kit's attacker)
is an owner at no site: its links are clean, and partitions between sites do not cut it.

A crashed node's connections are torn down: the other end reads end of stream. Every
delivery decision is written to the run's trace.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devnet.simnet.loop import OWNER
from node.streamnet import Accept, Listening

IN_ORDER_S = 1e-6
"""The least time between two frames of one connection arriving (in order, as TCP)."""


@dataclass
class LinkFaults:
    """Perturbations of one directed link (percentages 0..100, times in seconds)."""

    latency_s: float = 0.002
    jitter_s: float = 0.003
    drop_pct: float = 0.0
    duplicate_pct: float = 0.0
    reorder_pct: float = 0.0
    corrupt_pct: float = 0.0
    partitioned: bool = False


class _Server:
    def __init__(self, net: SimNet, address: tuple[str, int]) -> None:
        self.net = net
        self.address = address

    def close(self) -> None:
        self.net.listeners.pop(self.address, None)

    async def wait_closed(self) -> None:
        return None


class SimWriter:
    """One direction of a simulated connection (the subset of `asyncio.StreamWriter` the
    transport uses). It is also its own `transport` (for `abort`)."""

    def __init__(self, net: SimNet, conn: _Conn, src: int, dst: int, peer: asyncio.StreamReader):
        self.net = net
        self.conn = conn
        self.src = src
        self.dst = dst
        self.peer = peer
        self.chunks = 0
        self.last_due = 0.0
        self.transport = self

    def write(self, data: bytes) -> None:
        if self.conn.closed:
            return
        self.chunks += 1
        self.net.carry(self, bytes(data), first=self.chunks == 1)

    async def drain(self) -> None:
        if self.conn.closed:
            raise ConnectionResetError("connection closed")
        await asyncio.sleep(0)

    def is_closing(self) -> bool:
        return self.conn.closed

    def close(self) -> None:
        self.conn.close(self.net)

    def abort(self) -> None:
        self.conn.close(self.net)

    async def wait_closed(self) -> None:
        return None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return (f"10.0.0.{self.dst}", 27000)
        return default


class _Conn:
    def __init__(self, a: int, b: int, number: int) -> None:
        self.ends = (a, b)
        self.number = number
        """Connections are numbered as made: the order a crash closes them in."""
        self.readers: list[asyncio.StreamReader] = []
        self.writers: list[SimWriter] = []
        self.closed = False

    def close(self, net: SimNet) -> None:
        if self.closed:
            return
        self.closed = True
        net.conns.discard(self)
        for w in self.writers:
            # End of stream after what is already on the wire.
            net.at(max(w.last_due + IN_ORDER_S, net.loop.time()), _eof, w.peer)


def _eof(reader: asyncio.StreamReader) -> None:
    if not reader.at_eof():
        reader.feed_eof()


def _feed(conn: _Conn, reader: asyncio.StreamReader, data: bytes) -> None:
    if not conn.closed and not reader.at_eof():
        reader.feed_data(data)


class SimNet:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        rng: random.Random,
        trace: Callable[..., None],
        n: int,
    ) -> None:
        self.loop = loop
        self.rng = rng
        self.trace = trace
        self.listeners: dict[tuple[str, int], tuple[int, Accept]] = {}
        self.conns: set[_Conn] = set()
        self._made = 0
        self.links = {(i, j): LinkFaults() for i in range(n) for j in range(n) if i != j}
        self.outside = LinkFaults()
        """The link of an owner at no site (an outsider) to a node."""
        self.sites: dict[int, int] = {}
        """owner -> the site whose links it uses, for owners that are not sites (twins)."""
        self._sim = contextvars.copy_context()
        self._sim.run(OWNER.set, None)

    def at(self, when: float, fn: Callable[..., object], *args: Any) -> None:
        """A callback of the network itself (no node owns it: a crash does not stop it)."""
        self.loop.call_at(when, fn, *args, context=self._sim)

    def site(self, owner: int) -> int:
        return self.sites.get(owner, owner)

    def link(self, src: int, dst: int) -> LinkFaults:
        return self.links.get((self.site(src), self.site(dst)), self.outside)

    # --- StreamNet ------------------------------------------------------------------------

    async def start_server(self, accept: Accept, host: str, port: int) -> Listening:
        owner = OWNER.get()
        if owner is None:
            raise RuntimeError("a simulated listener belongs to a node")
        self.listeners[(host, port)] = (owner, accept)
        return _Server(self, (host, port))

    async def open_connection(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        src = OWNER.get()
        if src is None:
            raise RuntimeError("a simulated connection is made by a node")
        listener = self.listeners.get((host, port))
        faults = self.link(src, listener[0]) if listener else None
        await asyncio.sleep(faults.latency_s if faults else 0.001)
        listener = self.listeners.get((host, port))
        if listener is None or faults is None or faults.partitioned:
            self.trace("connect-refused", src, host, port)
            raise ConnectionRefusedError(f"simulated: nothing listens on {host}:{port}")
        dst, accept = listener
        self._made += 1
        conn = _Conn(src, dst, self._made)
        mine, theirs = asyncio.StreamReader(), asyncio.StreamReader()
        out = SimWriter(self, conn, src, dst, theirs)
        back = SimWriter(self, conn, dst, src, mine)
        conn.readers, conn.writers = [mine, theirs], [out, back]
        self.conns.add(conn)
        self.trace("connect", src, dst)
        ctx = contextvars.copy_context()
        ctx.run(OWNER.set, dst)
        self.loop.create_task(accept(theirs, back), context=ctx)  # type: ignore[arg-type]
        return mine, out  # type: ignore[return-value]

    # --- the links ------------------------------------------------------------------------

    def carry(self, w: SimWriter, data: bytes, *, first: bool) -> None:
        f = self.link(w.src, w.dst)
        rng = self.rng
        now = self.loop.time()
        if f.partitioned:
            self.trace("lost", w.src, w.dst, len(data))
            return
        copies = 1
        fate = "ok"
        if not first:
            if f.drop_pct and rng.random() * 100 < f.drop_pct:
                self.trace("drop", w.src, w.dst, len(data))
                return
            if f.corrupt_pct and len(data) > 4 and rng.random() * 100 < f.corrupt_pct:
                bit = rng.randrange(32, len(data) * 8)
                flipped = bytearray(data)
                flipped[bit // 8] ^= 1 << (bit % 8)
                data, fate = bytes(flipped), "corrupt"
            if f.duplicate_pct and rng.random() * 100 < f.duplicate_pct:
                copies, fate = 2, "duplicate"
        due = now + f.latency_s + (rng.random() * f.jitter_s if f.jitter_s else 0.0)
        if not first and f.reorder_pct and rng.random() * 100 < f.reorder_pct:
            fate = "reorder"
        else:
            # Strictly after the connection's previous frame: asyncio's timer heap does not
            # keep the order of callbacks due at the same time, and a frame overtaken
            # that way is refused by the frame layer (a stale sequence number) as if the
            # network had reordered it.
            due = max(due, w.last_due + IN_ORDER_S)
            w.last_due = due
        self.trace(fate, w.src, w.dst, len(data))
        for _ in range(copies):
            self.at(due, _feed, w.conn, w.peer, data)

    def crash(self, node: int) -> None:
        """Tear down every connection of a node and its listeners."""
        for address, (owner, _) in sorted(self.listeners.items()):
            if owner == node:
                del self.listeners[address]
        for conn in sorted((c for c in self.conns if node in c.ends), key=lambda c: c.number):
            conn.close(self)
