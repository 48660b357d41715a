"""The seeded client workload of a simulated network (`Client`): notary anchors from the
dev partner accounts, resent until committed, with bursts on demand."""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING, Any

from devnet.faults.history import Op
from devnet.network import account_key
from devnet.testing import anchor_tx
from qchain.errors import QChainError

if TYPE_CHECKING:
    from devnet.simnet.world import World

RESUBMIT_AFTER_S = 1.0
ACKED_PATIENCE_S = 6.0
"""How long a patient client waits for an acknowledged transaction before it sends it
again, while the node that acknowledged it has not crashed: an acknowledged transaction
is the node's to commit, and the node sends it again to every validator after its
inclusion timeout (5 s in the test profile)."""


CLIENT_MODES = ("careful", "eager", "patient")
"""How the client behaves: `careful` holds a sender's later nonces in a burst while one of
its transactions is refused (a well-behaved client under load); `eager` goes on sending
them, so they reach the pools behind the refused one's gap; `patient` is careful, and
trusts an acknowledgement: it sends an acknowledged transaction again only after
`ACKED_PATIENCE_S` (or after `RESUBMIT_AFTER_S` when the node that acknowledged it has
crashed since), so that what the network loses must be found again by the nodes."""


class Client:
    """The seeded workload: notary anchors from the dev partner accounts, each to a node
    that is up; a transaction not committed after `RESUBMIT_AFTER_S` is sent again (the
    same bytes: the hash is the idempotency key) to another node; bursts on demand."""

    def __init__(self, world: World, stop_at: float, mode: str = "careful") -> None:
        self.world = world
        self.mode = mode
        self.rng = world.clock.rng("client")
        self.stop_at = stop_at
        self.keys = [account_key(r, "ed25519") for r in ("partner1", "partner2")]
        self.nonces = [0, 0]
        self.txs: dict[int, Any] = {}
        self.last_sent: dict[int, float] = {}
        self.tasks: list[asyncio.Task[None]] = []
        """Bursts under way."""
        self.refused: list[set[int]] = [set() for _ in self.keys]
        """Per sender, its transactions refused and not yet accepted."""

    def _up(self) -> list[int]:
        return [i for i, v in enumerate(self.world.nodes) if v is not None]

    async def run(self) -> None:
        loop = self.world.loop
        while True:
            await asyncio.sleep(self.rng.uniform(0.05, 0.4))
            if loop.time() < self.stop_at:
                self._new()
            self._poll()

    def start_burst(self, rate: int, seconds: float, peak: int) -> None:
        self.tasks.append(self.world.loop.create_task(self._burst(rate, seconds, peak)))

    async def _burst(self, rate: int, seconds: float, peak: int) -> None:
        """`rate` new transactions a second for `seconds`, then `peak` at once (none
        after the workload's end)."""
        loop = self.world.loop
        end = loop.time() + seconds
        while loop.time() < min(end, self.stop_at):
            self._send_new(max(1, rate // 10))
            await asyncio.sleep(0.1)
        while loop.time() < self.stop_at and peak > 0:
            peak -= self._send_new(peak)
            await asyncio.sleep(0.1)

    def _send_new(self, count: int) -> int:
        """Up to `count` new transactions. A careful client sends as a well-behaved
        client does under load: while one of a sender's transactions is refused (waiting
        to be sent again), its later nonces wait too (they could only queue behind the
        gap). An eager one sends them regardless. Returns how many were sent."""
        sent = 0
        while sent < count:
            k = len(self.world.rec.ops) % len(self.keys)
            if self.mode != "eager" and self.refused[k]:
                k = 1 - k
                if self.refused[k]:
                    break
            self._new(k)
            sent += 1
        return sent

    def _new(self, sender: int | None = None) -> None:
        w = self.world
        k = len(w.rec.ops) % len(self.keys) if sender is None else sender
        nonce = self.nonces[k]
        self.nonces[k] += 1
        digest = hashlib.sha256(f"{w.seed}/{k}/{nonce}".encode()).digest()
        v0 = next(v for v in w.nodes if v is not None)
        tx = anchor_tx(self.keys[k], v0.chain_id, nonce, digest)
        op = Op(len(w.rec.ops), "anchor", f"partner{k + 1}", nonce, tx.hash.hex(), w.loop.time())
        w.rec.ops.append(op)
        self.txs[op.op_id] = tx
        self._send(op)

    def _send(self, op: Op) -> None:
        w = self.world
        up = self._up()
        others = [i for i in up if w.names[i] != op.node]
        if not up:
            return
        # A retry goes to another node when one is up (as a client fails over).
        i = self.rng.choice(others or up)
        v = w.nodes[i]
        assert v is not None
        op.attempts += 1
        op.node = w.names[i]
        self.last_sent[op.op_id] = w.loop.time()
        try:
            v.submit_tx(self.txs[op.op_id])
        except QChainError as e:
            op.error = e.code
            self.refused[self._sender(op)].add(op.op_id)
            w.trace("refused", op.op_id, i, e.code)
            return
        self.refused[self._sender(op)].discard(op.op_id)
        if op.acked_at is None:
            op.acked_at = round(w.loop.time(), 3)
        w.trace("submitted", op.op_id, i)

    def _sender(self, op: Op) -> int:
        return int(op.sender.removeprefix("partner")) - 1

    def _poll(self) -> None:
        w = self.world
        now = w.loop.time()
        for op in w.rec.ops:
            if op.height is not None:
                continue
            for v in w.nodes:
                st = v.tx_status(bytes.fromhex(op.tx_hash)) if v is not None else None
                if st is not None and st.state == "committed":
                    self.refused[self._sender(op)].discard(op.op_id)
                    op.height = st.height
                    op.committed_at = round(now, 3)
                    break
            else:
                if now - self.last_sent.get(op.op_id, 0.0) > self._patience(op):
                    self._send(op)

    def _patience(self, op: Op) -> float:
        """How long after its last sending a transaction not yet committed is sent again:
        `RESUBMIT_AFTER_S`; for a patient client, `ACKED_PATIENCE_S` when a node
        acknowledged that sending and has not crashed since."""
        if self.mode != "patient" or op.op_id in self.refused[self._sender(op)]:
            return RESUBMIT_AFTER_S
        if self.world.rec.crashed_at.get(op.node, -1.0) >= self.last_sent[op.op_id]:
            return RESUBMIT_AFTER_S
        return ACKED_PATIENCE_S
