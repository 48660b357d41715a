"""Committing a decided block, and the exchange of commit signatures that follows.

A commit writes block, receipts, transaction index, state writes, the consensus value
index and the anchor of the next height in one synced batch. The next height starts as
soon as the block is executed, while that batch is written off the event loop
(`node.commitwriter`); the height is announced once the batch is durable.
After the decision the validator signs the chain block hash with its ML-DSA-65 key and
sends the signature to every peer with its DONE: both ride in the frame of the node's
first consensus message of the next height to that peer (`Links.send_riding`, CONSENSUS.md
§7), or leave after one round-0 timeout when the chain does not move on;
`node.certificates` collects the signatures into the commit certificate stored with the
block. A peer that committed late asks for nothing: when it sends its own
signature for a height whose certificate this node already holds, this node answers once
with its own signature. A height that has no certificate a few seconds after its commit
(this node did not sign it, as a joining validator replaying the heights before its
activation) is asked of the peers' APIs (`node.certbackfill`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from consensus.events import Commit, Event, StartHeight
from consensus.messages import block_hash as consensus_value
from node.accounts import Admission
from node.alarms import Alarms
from node.budget import CERT_SIGS, Budgets
from node.certbackfill import CertificateBackfill
from node.certificates import CertificateCollector
from node.chain import ChainApp, Prepared
from node.chainstore import ChainStore
from node.commitwriter import CommitWriter
from node.events import EventBus
from node.fetcher import BlockFetcher
from node.forwarding import Forwarder
from node.links import Links
from node.metrics import NodeMetrics
from node.pacing import BlockPacer
from node.service import TxStatus
from node.validatorsets import ChainSets
from node.wire import CertSig, Envelope, Kind
from qchain import clock
from qchain.errors import QChainError
from qchain.keys import Scheme, SigningKey, verify
from qchain.store import schema
from qchain.store.kv import KVStore
from qchain.types import ValidatorKey, commit_sign_digest


class Waiters:
    """Clients waiting for their transaction to commit."""

    def __init__(self) -> None:
        self._futures: dict[bytes, list[asyncio.Future[TxStatus]]] = {}

    async def wait(self, tx_hash: bytes, timeout_s: float) -> TxStatus | None:
        fut: asyncio.Future[TxStatus] = asyncio.get_running_loop().create_future()
        self._futures.setdefault(tx_hash, []).append(fut)
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            return None
        finally:
            futs = self._futures.get(tx_hash)
            if futs is not None and fut in futs:
                futs.remove(fut)
                if not futs:
                    del self._futures[tx_hash]

    def notify(self, p: Prepared) -> None:
        for i, (tx, receipt) in enumerate(zip(p.block.txs, p.result.receipts, strict=True)):
            futs = self._futures.pop(tx.hash, None)
            if not futs:
                continue
            status = TxStatus(tx.hash, "committed", p.block.height, i, receipt)
            for fut in futs:
                if not fut.done():
                    fut.set_result(status)

    def cancel(self) -> None:
        for futs in self._futures.values():
            for fut in futs:
                fut.cancel()


class CertificateExchange:
    """Signing what this node committed, sending and receiving the signatures."""

    def __init__(
        self,
        chain_id: str,
        signing_key: SigningKey,
        validator_keys: Sequence[ValidatorKey],
        quorum: int,
        chain: ChainStore,
        links: Links,
        budgets: Budgets,
        alarms: Alarms,
        ride_s: float,
        sets: ChainSets | None = None,
        member: Callable[[int], bool] | None = None,
        apis: Callable[[], Mapping[int, tuple[str, str]]] | None = None,
    ) -> None:
        """ride_s: how long a signature waits for a consensus frame to ride in. sets: on
        a chain whose set changes, the keys and quorum of each height come from it
        (§10.5), and this node signs a height only if it is a member of its set
        (`member`, §10.1); None: the genesis keys and quorum. apis: the other validators'
        names and API addresses by id (`node.peerapis.source_addresses`), asked for a
        certificate the exchange did not bring (`node.certbackfill`); None: no peer is
        asked (a node without its API)."""
        self.chain_id = chain_id
        self.ride_s = ride_s
        self.me = links.me
        self.signing_key = signing_key
        self.validator_keys = validator_keys
        self.chain = chain
        self.links = links
        self.budgets = budgets
        self.alarms = alarms
        self.sets = sets if sets is not None and sets.enabled else None
        self.member = member
        quorum_of = self.sets.quorum if self.sets is not None else quorum
        self.collector = CertificateCollector(self.me, quorum_of, self.signature_ok)
        self.backfill = CertificateBackfill(chain, addresses=apis)

    def signature_ok(self, j: int, h: int, block_hash: bytes, sig: bytes) -> bool:
        if self.sets is not None:
            public = self.sets.key_of(h, j)
            if public is None:
                return False
            key = ValidatorKey(Scheme.ML_DSA_65.value, public)
        else:
            if not 0 <= j < len(self.validator_keys):
                return False
            key = self.validator_keys[j]
        try:
            verify(
                key.scheme, key.public_key, commit_sign_digest(self.chain_id, h, block_hash), sig
            )
        except QChainError:
            return False
        return True

    def sign(self, p: Prepared) -> None:
        h = p.block.height
        self.backfill.committed(h)
        if self.member is not None and not self.member(h):
            return  # a correct node signs only heights where it is a member (§10.1)
        digest = commit_sign_digest(self.chain_id, h, p.block.hash)
        sig = CertSig(h, p.block.hash, self.signing_key.sign(digest))
        self.links.send_riding(
            Envelope(Kind.CERT_SIG, sig.encode()), self.links.others(), self.ride_s
        )
        certified = self.chain.certificate(h) is not None
        cert = self.collector.signed(h, p.block.hash, sig.signature, certified=certified)
        if cert is not None:
            self.chain.put_certificate(cert)

    def received(self, sender: int, sig: CertSig) -> None:
        if not self.budgets.take(sender, CERT_SIGS):
            return
        h = sig.height
        if h < self.chain.base_height():
            return  # below the snapshot this store started from: no block to compare
        committed = self.chain.height()
        if self.collector.early(sender, h, sig.signature, committed=committed):
            return
        ours = self.chain.block_hash(h)
        verdict = self.collector.received(
            sender,
            h,
            sig.block_hash,
            sig.signature,
            committed=committed,
            ours=ours,
            certified=ours == sig.block_hash and self.chain.certificate(h) is not None,
        )
        if verdict.mismatch:
            self.alarms.alert("cert-mismatch", f"validator {sender} signed another block at {h}")
        if verdict.certificate is not None:
            self.chain.put_certificate(verdict.certificate)
        if verdict.answer and ours is not None:
            own = verdict.own if verdict.own is not None else self._stored_own(h)
            if own is not None:
                self.links.send(sender, Envelope(Kind.CERT_SIG, CertSig(h, ours, own).encode()))

    def _stored_own(self, h: int) -> bytes | None:
        cert = self.chain.certificate(h)
        if cert is None:
            return None
        return next((s.signature for s in cert.signatures if s.validator == self.me), None)


@dataclass(frozen=True)
class CommitParts:
    """The parts of the node a commit moves on, in the order `Committer` tells them."""

    alarms: Alarms
    pacer: BlockPacer
    admission: Admission
    forwarder: Forwarder
    metrics: NodeMetrics
    bus: EventBus
    certificates: CertificateExchange
    waiters: Waiters
    fetcher: BlockFetcher
    forget_votes: Callable[[int], None]
    """Drops the equivocation watch of heights the commit left behind."""
    start_height: Callable[[int, bytes, int], StartHeight] = StartHeight
    """The engine's `StartHeight(h, parent, anchor)` with the sets of h and h+1
    (`node.validatorsets.ChainSets.start_height`), built once block h−1 is executed."""


class Committer:
    """Carries out the engine's `Commit` and what a commit sets going, pipelined
    (CONSENSUS.md §3.3, Revision 1.13): the block is executed (its validation result,
    cached), its batch goes to the writer, and the next height starts at once, building
    and validating on the executed block (`ChainApp.executed`). What announces the height
    (receipts to waiting clients and event subscribers, the commit signature, the commit
    metrics) waits until the batch is durable (`_durable`)."""

    def __init__(
        self,
        store: KVStore,
        chain: ChainStore,
        app: ChainApp,
        parts: CommitParts,
        feed: Callable[[Event], None],
    ) -> None:
        self.store = store
        self.chain = chain
        self.app = app
        self.parts = parts
        self.feed = feed
        self.writer = CommitWriter(store, parts.alarms.fail)

    def commit(self, a: Commit) -> None:
        parts = self.parts
        value = consensus_value(a.block)
        self.writer.wait()
        height = self.app.head_height()
        if a.height <= height:
            if self.app.head_value(a.height) != value:
                parts.alarms.fail(
                    f"decided value of height {a.height} differs from the committed one"
                )
            return
        if a.height != height + 1:
            parts.alarms.fail(f"commit of height {a.height} on top of {height}")
            return
        try:
            prepared = self.app.validate(a.block)
        except QChainError as e:
            parts.alarms.fail(f"decided block {a.height} does not execute: {e.message}")
            return
        batch = self.app.commit_batch(prepared)
        batch.put(schema.meta_key("next-anchor"), schema.u64(a.next_anchor))
        for key, _ in self.store.iterate(schema.pending_prefix(a.height)):
            # The decided body stays: the block's row references it.
            if schema.split_pending_key(key)[1] != value:
                batch.delete(key)
        self.app.executed(prepared)
        now = clock.monotonic()
        interval = parts.pacer.committed(now)
        self.writer.write(a.height, batch, lambda: self._durable(value, prepared, interval, now))
        self._executed(a, value, prepared)

    def barrier(self) -> None:
        """The driver's commit barrier (CONSENSUS.md §2.6): the commit in flight, if any,
        is durable when this returns."""
        if self.writer.in_flight is not None:
            self.parts.metrics.commit_barrier_waits.inc()
        self.writer.wait()

    def _executed(self, a: Commit, value: bytes, prepared: Prepared) -> None:
        """The block is executed: out of the mempool, and the next height starts."""
        parts = self.parts
        block = prepared.block
        parts.admission.accounts.invalidate()
        parts.admission.on_commit(block.txs, a.height)
        parts.forwarder.committed(clock.monotonic(), a.height, len(block.txs))
        parts.forwarder.send_became_ready()
        parts.fetcher.forget(value)
        parts.forget_votes(a.height)
        self.feed(parts.start_height(a.height + 1, value, a.next_anchor))
        parts.admission.after_commit()
        if parts.pacer.pending is not None:
            parts.pacer.maybe_build()

    def _durable(self, value: bytes, prepared: Prepared, interval: float, since: float) -> None:
        """The batch is durable: the height may be announced."""
        parts = self.parts
        parts.metrics.commit_write_duration.observe(clock.monotonic() - since)
        self.app.durable(value)
        parts.admission.accounts.invalidate()
        block = prepared.block
        mempool = parts.admission.mempool
        parts.metrics.observe_commit(block.height, len(block.txs), interval)
        parts.metrics.observe_mempool(len(mempool), mempool.size_bytes)
        parts.bus.publish_commit(block, prepared.result.receipts)
        parts.certificates.sign(prepared)
        parts.waiters.notify(prepared)
