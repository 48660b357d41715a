"""An unauthenticated attacker: anyone who can reach a validator's P2P port, with no key.

The transport's hello (`QCH1` + u16 validator index) is not authenticated: it only picks
which link's verifier checks the frames that follow (`node.transport`). These attacks
use that, and nothing else an outsider could not do:

- `hijack`: connect, send a hello claiming another validator's index, then stay silent;
  when the node closes the connection (the real peer reconnected), reconnect, at most
  `rate` times a second per (target, claimed index). Aimed at the inbound slots of one or
  more targets, for every other validator's index by default.
- `forge`: hello claiming a peer's index, then well-formed frames (a valid `FrameHeader`
  naming that peer and the target, a body with a consensus VOTE) with random key ids and
  random tags, `rate` frames a second per connection; reconnect at most twice a second.
- `conn-flood`: up to `connections` concurrent connections from this one process to each
  target, each sending half a hello and then nothing (the node waits for the rest), and
  reopened when the node closes it, at most `rate` new connections a second per target.

A `slow-reader` is not offered: a node never writes on the connections it accepts (its
outgoing traffic goes over connections it dials itself, to the addresses in its
configuration), so an outsider has nothing to read slowly on a P2P port.

Every attack is bounded: it only connects to 127.0.0.1 ports of the devnet's own plan,
runs for at most `MAX_DURATION_S`, and stops by itself at its end or when cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from consensus.messages import Vote, encode_message
from devnet.network import NetworkPlan
from node.transport import HELLO_MAGIC
from node.wire import Envelope, Kind, encode_body
from qchain.qkd.frame import FRAME_VERSION, TAG_LEN, FrameHeader
from qchain.qkd.source import KEY_ID_LEN

ATTACKS = ("hijack", "forge", "conn-flood")
MAX_DURATION_S = 120.0
MAX_RATE = 100.0
MAX_CONNECTIONS = 256
LOOPBACK = ("127.0.0.1", "localhost", "::1")
HELLO = struct.Struct(">4sH")
"""The transport's hello: magic, then the claimed validator index (`node.transport`)."""
FRAME_LEN = struct.Struct(">I")
CONNECT_TIMEOUT_S = 1.0
Session = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Connect = Callable[[str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
"""What an attack does on one connection once the hello is sent."""


class AttackError(ValueError):
    """An attack that would leave the devnet (or its bounds)."""


@dataclass(frozen=True)
class Victim:
    """One validator's P2P listener, as the devnet plan gives it."""

    name: str
    index: int
    host: str
    port: int
    sae_id: str


@dataclass(frozen=True)
class AttackSpec:
    kind: str
    targets: tuple[Victim, ...]
    claims: tuple[Victim, ...]
    """Whose identity the hellos claim (hijack, forge); ignored by conn-flood."""
    chain_id: str
    duration_s: float
    rate: float = 16.0
    """hijack: reconnections per second per (target, claim); forge: frames per second per
    connection; conn-flood: new connections per second per target."""
    connections: int = 64
    """conn-flood: concurrent connections per target."""


@dataclass
class AttackStats:
    connects: int = 0
    refused: int = 0
    closed_by_node: int = 0
    frames: int = 0
    hellos: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, object]:
        return {
            "connects": self.connects,
            "refused": self.refused,
            "closed_by_node": self.closed_by_node,
            "frames": self.frames,
            "hellos": dict(self.hellos),
        }


def check_spec(spec: AttackSpec) -> None:
    """Refuse anything outside the devnet's loopback ports or the bounds."""
    if spec.kind not in ATTACKS:
        raise AttackError(f"attack {spec.kind!r}: one of {', '.join(ATTACKS)}")
    if not spec.targets:
        raise AttackError("no target")
    for v in spec.targets:
        if v.host not in LOOPBACK:
            raise AttackError(
                f"{v.name}: {v.host} is not loopback; the attacker only hits 127.0.0.1"
            )
    if not 0 < spec.duration_s <= MAX_DURATION_S:
        raise AttackError(f"duration {spec.duration_s}s: in (0, {MAX_DURATION_S:.0f}]")
    if not 0 < spec.rate <= MAX_RATE:
        raise AttackError(f"rate {spec.rate}: in (0, {MAX_RATE:.0f}]")
    if not 0 < spec.connections <= MAX_CONNECTIONS:
        raise AttackError(f"connections {spec.connections}: in (0, {MAX_CONNECTIONS}]")
    if spec.kind != "conn-flood" and not pairs(spec):
        raise AttackError("no identity to claim: name a validator other than the target")


def pairs(spec: AttackSpec) -> list[tuple[Victim, Victim]]:
    """(target, claimed identity) pairs: every claim but the target itself."""
    return [(t, c) for t in spec.targets for c in spec.claims if c.index != t.index]


def hello(index: int) -> bytes:
    return HELLO.pack(HELLO_MAGIC, index)


def forged_frame(spec: AttackSpec, target: Victim, claim: Victim, rng: random.Random) -> bytes:
    """A frame as the claimed peer would send it to the target (header, a body with one
    VOTE), with a random key id and a random tag; length-prefixed for the stream."""
    vote = Vote(spec.chain_id, 1, rng.randrange(1 << 32), rng.randint(1, 4), rng.randbytes(32))
    body = encode_body([Envelope(Kind.CONSENSUS, encode_message(vote))])
    header = FrameHeader(
        version=FRAME_VERSION,
        chain_id=spec.chain_id,
        sender=claim.sae_id,
        receiver=target.sae_id,
        seq=rng.randrange(1, 1 << 62),
        key_id=rng.randbytes(KEY_ID_LEN),
        announce=(),
    ).encode()
    frame = struct.pack(">H", len(header)) + header + body + rng.randbytes(TAG_LEN)
    return FRAME_LEN.pack(len(frame)) + frame


class Attacker:
    """Runs one attack until its duration passes (or it is cancelled)."""

    def __init__(
        self,
        spec: AttackSpec,
        rng: random.Random | None = None,
        *,
        connect: Connect = asyncio.open_connection,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`connect` and `clock`: the network and the time the attack runs on (the
        simulator gives its own: `devnet.simnet`)."""
        check_spec(spec)
        self.spec = spec
        self.rng = rng or random.Random()
        self.connect = connect
        self.clock = clock
        self.stats = AttackStats()
        self._deadline = 0.0

    def _left(self) -> float:
        return self._deadline - self.clock()

    async def run(self) -> AttackStats:
        self._deadline = self.clock() + self.spec.duration_s
        if self.spec.kind == "conn-flood":
            jobs = [self._conn_flood(t) for t in self.spec.targets]
        elif self.spec.kind == "hijack":
            jobs = [self._hijack(t, c) for t, c in pairs(self.spec)]
        else:
            jobs = [self._forge(t, c) for t, c in pairs(self.spec)]
        tasks = [asyncio.create_task(j) for j in jobs]
        try:
            await asyncio.wait(tasks, timeout=max(0.0, self._left()) + 1.0)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return self.stats

    async def _open(self, v: Victim) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            conn = await asyncio.wait_for(
                self.connect(v.host, v.port), min(CONNECT_TIMEOUT_S, self._left())
            )
        except (OSError, TimeoutError, ValueError):
            self.stats.refused += 1
            return None
        self.stats.connects += 1
        return conn

    async def _until_closed(self, reader: asyncio.StreamReader, limit_s: float) -> bool:
        """Wait until the node closes the connection (True) or limit_s passes."""
        try:
            await asyncio.wait_for(reader.read(), max(0.0, limit_s))
        except (OSError, TimeoutError):
            return False
        return True

    async def _paced(self, started: float, rate: float) -> None:
        await asyncio.sleep(max(0.0, min(started + 1.0 / rate - self.clock(), self._left())))

    async def _as_claim(
        self, target: Victim, claim: Victim, per_second: float, session: Session
    ) -> None:
        """Until the attack ends: connect to target, send the hello of `claim`, run
        `session` on the connection and close it; at most `per_second` connections a
        second."""
        while self._left() > 0:
            started = self.clock()
            conn = await self._open(target)
            if conn is not None:
                reader, writer = conn
                try:
                    writer.write(hello(claim.index))
                    self.stats.hellos[f"{target.name}<-as-{claim.name}"] += 1
                    await session(reader, writer)
                finally:
                    writer.close()
            await self._paced(started, per_second)

    async def _hijack(self, target: Victim, claim: Victim) -> None:
        async def stay_silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if await self._until_closed(reader, self._left()):
                self.stats.closed_by_node += 1

        await self._as_claim(target, claim, self.spec.rate, stay_silent)

    async def _forge(self, target: Victim, claim: Victim) -> None:
        async def send_forged(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while self._left() > 0 and not reader.at_eof():
                    writer.write(forged_frame(self.spec, target, claim, self.rng))
                    await writer.drain()
                    self.stats.frames += 1
                    if await self._until_closed(reader, min(1.0 / self.spec.rate, self._left())):
                        self.stats.closed_by_node += 1
                        break
            except (OSError, ConnectionError):
                self.stats.closed_by_node += 1

        await self._as_claim(target, claim, 2.0, send_forged)

    async def _conn_flood(self, target: Victim) -> None:
        held: set[asyncio.Task[None]] = set()

        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                writer.write(HELLO_MAGIC[:3])
                if await self._until_closed(reader, self._left()):
                    self.stats.closed_by_node += 1
            finally:
                writer.close()

        try:
            while self._left() > 0:
                started = self.clock()
                held = {t for t in held if not t.done()}
                if len(held) < self.spec.connections:
                    conn = await self._open(target)
                    if conn is not None:
                        held.add(asyncio.create_task(hold(*conn)))
                await self._paced(started, self.spec.rate)
        finally:
            for t in held:
                t.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*held, return_exceptions=True)


def victims(plan: NetworkPlan) -> dict[str, Victim]:
    """Every validator of a devnet plan by name."""
    return {n.name: Victim(n.name, n.index, n.host, n.p2p_port, n.sae_id) for n in plan.nodes}
