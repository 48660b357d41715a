"""Hostile test-only modes of a validator: a Byzantine peer with a valid key that uses
the real transport (every frame sealed with its own one-time QKD keys).

They exist to attack a devnet on purpose (the fault kit's `byzantine` action) and are
enabled only when the node runs with `admin.byzantine = true`. Besides the modes below,
`ByzantineSwitch` holds the older ones that bend the node's own consensus messages
(`misbehave`: silent, withhold, double-vote, equivocate) or its frames (`Sealer`:
forge-mac).

- `far-height-vote`: one VOTE claiming height 2^64-1 to every peer, resent once a second;
- `vote-flood`: VOTEs with distinct rounds and random values, at height 2^64-1 and at its
  current height with a huge round, up to `FLOOD_PER_PEER_S` per peer and second;
- `future-time`: when it builds a block as leader, the block time is 2^64-1 (the block is
  otherwise valid);
- `far-claims`: SyncResp (1,024 hashes ending at height 2^64-1), BlockReq (64 unknown
  hashes) and CERT_SIG (height 2^64-1, an 8 KiB signature) frames, `CLAIMS_PER_PEER_S`
  per peer and second;
- `unknown-batch`: its proposals as leader name, besides their own batches, one that no
  validator has (`node.batches`): no follower can rebuild them.

The message builders are plain functions over a seeded `random.Random`; `Hostile` is the
periodic task that sends them through the node's transport. Every mode is off unless the
admin API sets one on a node that allows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from consensus.engine import Engine
from consensus.messages import (
    BlockReq,
    Done,
    Message,
    Propose,
    SyncResp,
    Vote,
    encode_message,
)
from consensus.params import Params
from node.chain import ChainApp
from node.transport import Transport
from node.wire import CertSig, Envelope, Kind
from qchain import clock
from qchain.errors import QChainError
from qchain.hashing import Domain, hash_domain
from qchain.qkd.frame import LinkSender

log = logging.getLogger("qchain.node")

MODES = ("far-height-vote", "vote-flood", "future-time", "far-claims", "unknown-batch")
"""The modes of this module (the admin API accepts them besides the runtime's own)."""

FAR_HEIGHT = 2**64 - 1
"""The largest U64: a height (and a block time) no honest chain ever reaches."""
FAR_TIME_MS = 2**64 - 1
HUGE_ROUND = 2**40
"""Rounds the flood claims at the current height start here."""
FLOOD_PER_PEER_S = 2000
CLAIMS_PER_PEER_S = 20
TICK_S = 0.05
SYNC_HASHES = 1024
BLOCK_REQ_HASHES = 64
CERT_SIG_BYTES = 8192


class HostileNode(Protocol):
    """What the hostile task needs of the validator (`node.runtime.Validator`)."""

    me: int
    params: Params
    engine: Engine

    @property
    def transport(self) -> Transport | None: ...


def block_time_ms(mode: str | None) -> int | None:
    """The block time a leader in this mode builds with (None: the honest clock)."""
    return FAR_TIME_MS if mode == "future-time" else None


def _vote(chain_id: str, height: int, rnd: int, rng: random.Random) -> Envelope:
    vote = Vote(chain_id, height, rnd, rng.randint(1, 4), rng.randbytes(32))
    return Envelope(Kind.CONSENSUS, encode_message(vote))


def far_height_vote(chain_id: str, value: bytes) -> Envelope:
    """The VOTE at height 2^64-1, round 0, phase 1 for value (resent as is: one claim,
    not an equivocation)."""
    return Envelope(Kind.CONSENSUS, encode_message(Vote(chain_id, FAR_HEIGHT, 0, 1, value)))


def flood_votes(
    chain_id: str, height: int, first_round: int, count: int, rng: random.Random
) -> list[Envelope]:
    """`count` VOTEs with distinct rounds from `first_round` and random values: even ones
    at height 2^64-1, odd ones at `height` with round HUGE_ROUND + their round."""
    out = []
    for i in range(count):
        rnd = first_round + i
        if i % 2 == 0:
            out.append(_vote(chain_id, FAR_HEIGHT, rnd, rng))
        else:
            out.append(_vote(chain_id, height, HUGE_ROUND + rnd, rng))
    return out


def far_claims(chain_id: str, rng: random.Random) -> list[Envelope]:
    """A SyncResp claiming 1,024 committed heights up to 2^64-1, a BlockReq for 64 unknown
    hashes and a CERT_SIG for height 2^64-1 with an 8 KiB signature."""
    sync = SyncResp(
        chain_id,
        FAR_HEIGHT - SYNC_HASHES + 1,
        tuple(rng.randbytes(32) for _ in range(SYNC_HASHES)),
    )
    req = BlockReq(chain_id, tuple(rng.randbytes(32) for _ in range(BLOCK_REQ_HASHES)))
    sig = CertSig(FAR_HEIGHT, rng.randbytes(32), rng.randbytes(CERT_SIG_BYTES))
    return [
        Envelope(Kind.CONSENSUS, encode_message(sync)),
        Envelope(Kind.CONSENSUS, encode_message(req)),
        Envelope(Kind.CERT_SIG, sig.encode()),
    ]


class Hostile:
    """The periodic sends of the flood modes. `set_mode` starts or stops the task; modes
    without periodic sends (future-time, the runtime's own) stop it."""

    def __init__(self, node: HostileNode, rng: random.Random | None = None) -> None:
        self.node = node
        self.rng = rng or clock.new_rng("byzantine")
        self.sent = 0
        self._task: asyncio.Task[None] | None = None
        self._round = 0

    def set_mode(self, mode: str | None) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        loops: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            "far-height-vote": self._far_height,
            "vote-flood": self._flood,
            "far-claims": self._claims,
        }
        run = loops.get(mode or "")
        if run is not None:
            self._task = asyncio.get_running_loop().create_task(run(), name=f"byzantine {mode}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def _chain_id(self) -> str:
        return self.node.params.chain_id

    def _to_all(self, envelopes: list[Envelope]) -> None:
        transport = self.node.transport
        if transport is None:
            return
        for j in range(self.node.params.n):
            if j == self.node.me:
                continue
            for env in envelopes:
                transport.send(j, env)
                self.sent += 1

    async def _far_height(self) -> None:
        vote = far_height_vote(self._chain_id, self.rng.randbytes(32))
        while True:
            self._to_all([vote])
            await asyncio.sleep(1.0)

    async def _ticks(self, send: Callable[[], None]) -> None:
        """Call send every TICK_S on a fixed schedule (a slow tick is not made up for)."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            send()
            due = max(due + TICK_S, loop.time())
            await asyncio.sleep(due - loop.time())

    async def _flood(self) -> None:
        per_tick = max(1, int(FLOOD_PER_PEER_S * TICK_S))

        def send() -> None:
            cur = self.node.engine.view().height
            self._to_all(flood_votes(self._chain_id, cur, self._round, per_tick, self.rng))
            self._round += per_tick

        await self._ticks(send)

    async def _claims(self) -> None:
        per_tick = max(1, int(CLAIMS_PER_PEER_S * TICK_S))

        def send() -> None:
            for _ in range(per_tick):
                self._to_all(far_claims(self._chain_id, self.rng))

        await self._ticks(send)


class Sealer:
    """The sending side of one link, as the transport sees it. In the test-only
    `forge-mac` mode it flips a bit of every tag it produces."""

    def __init__(self, inner: LinkSender) -> None:
        self.inner = inner
        self.forge = False

    async def seal(self, body: bytes) -> bytes:
        frame = await self.inner.seal(body)
        if self.forge:
            frame = frame[:-1] + bytes([frame[-1] ^ 1])
        return frame

    def reconnected(self) -> None:
        self.inner.resync()


def misbehave(mode: str, to: int, msg: Message, me: int, n: int, app: ChainApp) -> Message | None:
    """What a node in `mode` sends to peer `to` instead of msg (None: nothing); the
    misbehaviour is aimed at half of the peers."""
    odd = to % 2 == 1
    if mode == "silent":
        return None
    if mode == "withhold":
        return msg if to == min(j for j in range(n) if j != me) else None
    if mode == "double-vote" and isinstance(msg, Vote) and odd:
        fake = hash_domain(Domain.HEADER, msg.value)
        return Vote(msg.chain_id, msg.height, msg.round, msg.phase, fake)
    if mode == "equivocate" and isinstance(msg, Propose) and odd:
        try:
            twin = app.build(
                msg.height,
                msg.round,
                msg.block.parent,
                me,
                [],
                now_ms=int(clock.wall() * 1000) + 1 + to,
            )
        except QChainError:
            return msg
        return Propose(msg.chain_id, msg.height, msg.round, twin.cblock)
    return msg


class ByzantineSwitch:
    """The test-only mode of one validator: None (honest) unless `allowed` (the devnet's
    `admin.byzantine` flag) and the admin API set one."""

    def __init__(self, allowed: bool, me: int, n: int, app: ChainApp, hostile: Hostile) -> None:
        self.allowed = allowed
        self.mode: str | None = None
        self.me = me
        self.n = n
        self.app = app
        self.sealers: dict[int, Sealer] = {}
        """The link sealers, for forge-mac (set when the links start)."""
        self.hostile = hostile

    def set(self, mode: str | None) -> None:
        if not self.allowed:
            return
        self.mode = mode
        for sealer in self.sealers.values():
            sealer.forge = mode == "forge-mac"
        self.hostile.set_mode(mode)
        log.warning("byzantine mode set to %s", mode)

    def outgoing(self, to: int, msg: Message) -> Message | None:
        """The consensus message actually sent to `to` (None: nothing)."""
        if self.mode is None or not isinstance(msg, Propose | Vote | Done):
            return msg
        return misbehave(self.mode, to, msg, self.me, self.n, self.app)

    def block_time_ms(self) -> int | None:
        """The block time this node builds with as leader (None: the honest clock)."""
        return block_time_ms(self.mode)
