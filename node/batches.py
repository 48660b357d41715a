"""Dissemination apart from ordering: batches of transactions, and proposals that name them.

Each validator sends its own clients' transactions to every peer as they arrive, in
batches (`OriginBatch`: origin, sequence number, transactions; its digest binds all
three; one frame, one key, as any envelope). Every validator keeps the batches it
received in a `BatchStore`, bounded per origin in count and bytes (a hostile origin only
ever evicts its own batches).

A leader's `Propose` leaves as `ProposeRefs` (`Dissemination.compact`): the chain block's
header, the batches its transactions come from and each transaction's place in one of
them, a few bytes a transaction instead of its bytes. Transactions the leader holds in no
batch (its own clients' of this very turn, or batches evicted since) go first in a batch
of the leader's own, to every peer, ahead of the proposal on each link. The consensus
value stays the hash of the whole block, so receipts, the commit, the store and catch-up
(`BlockReq`, whole bodies) do not change.

A follower rebuilds the `Propose` (`Dissemination.proposal`) and gives it to the engine
only when every named batch is at hand: a value is valid only when all its batches are
available (CONSENSUS.md §3.1 rule 5, Revision 1.9). A missing batch is asked of the
leader, then of its origin, then of the other peers in turn, one every `retry_s` (a
fraction of the round timeout); an answer is taken only for a digest this node asked for
and only when it hashes to that digest. A proposal that waits for batches nobody sends is
dropped when every peer was asked; the engine never saw it, so its round timer moves the
height to the next leader (a Byzantine leader naming an unknown batch costs a round, not
a stall). Each peer has one waiting proposal (its latest) and a fetch budget.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from consensus.events import Event, MessageIn
from consensus.messages import Block as CBlock
from consensus.messages import Propose
from consensus.messages import block_hash as consensus_value
from consensus.params import Params
from node.alarms import Alarms
from node.budget import BATCH_FETCHES, BATCH_LOOKUPS, Budgets
from node.links import Links
from node.wire import (
    BATCH_REQ_MAX,
    REF_BYTES,
    BatchRef,
    BatchReq,
    BatchResp,
    Envelope,
    Kind,
    OriginBatch,
    ProposeRefs,
    origin_batches,
)
from qchain.errors import CodecError, QChainError
from qchain.hashing import Domain, hash_domain
from qchain.limits import BATCH_RESP_FRAMING, MAX_BLOCK_BODY, MAX_MESSAGE
from qchain.types import (
    BLOCK_LIMITS,
    MAX_BLOCK_TXS,
    Block,
    BlockHeader,
    Transaction,
    array_header,
    decode_transaction,
)

log = logging.getLogger("qchain.node")

MAX_ORIGIN_BATCHES = 1024
"""Batches kept per origin; beyond, its oldest go."""
MAX_ORIGIN_BYTES = 16 * 1024 * 1024
"""Bytes of batches kept per origin, each counted with INDEX_COST per transaction; beyond,
its oldest go."""
INDEX_COST = 160
"""What a kept transaction's index entry (its hash to its place) is counted as, in bytes:
a batch of many tiny transactions costs its index, not only its encoding."""
MAX_WAITING = 8
"""Proposals kept while their batches are fetched (one per sender, the latest); beyond,
the oldest is dropped."""
COMPACT_CACHE = 8
"""Proposals whose compact form is kept (a leader sends one to each peer)."""
UNKNOWN_BATCH = "unknown-batch"
"""The test-only Byzantine mode in which a leader names a batch that does not exist."""


class BlockSource(Protocol):
    """The chain application as dissemination sees it (`node.chain.ChainApp`)."""

    def block_of(self, cblock: CBlock) -> Block | None: ...

    def offer(self, cblock: CBlock, block: Block) -> None: ...


def _below(n: int) -> Callable[[int], bool]:
    return lambda j: 0 <= j < n


class BatchStore:
    """Batches by digest, bounded per origin in count and bytes; a transaction's place
    (digest, index) by its hash."""

    def __init__(
        self,
        n: int | Callable[[int], bool],
        max_batches: int = MAX_ORIGIN_BATCHES,
        max_bytes: int = MAX_ORIGIN_BYTES,
    ) -> None:
        """n: the validators' count (origins 0..n−1), or whether an id is a validator's
        (a set that changes, §10.6)."""
        self.known: Callable[[int], bool] = n if callable(n) else _below(n)
        self.max_batches = max_batches
        self.max_bytes = max_bytes
        self._by_origin: dict[int, OrderedDict[bytes, OriginBatch]] = {}
        self._bytes: Counter[int] = Counter()
        self._by_digest: dict[bytes, OriginBatch] = {}
        self._where: dict[bytes, tuple[bytes, int]] = {}
        self._hashes: dict[bytes, tuple[bytes, ...]] = {}
        """Each kept batch's transaction hashes, in its order."""
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._by_digest)

    def bytes_of(self, origin: int) -> int:
        """What origin's kept batches count against its allowance (`cost`)."""
        return self._bytes[origin]

    @staticmethod
    def cost(batch: OriginBatch) -> int:
        return batch.size + INDEX_COST * len(batch.txs)

    def count_of(self, origin: int) -> int:
        return len(self._by_origin.get(origin, ()))

    def get(self, digest: bytes) -> OriginBatch | None:
        return self._by_digest.get(digest)

    def locate(self, tx_hash: bytes) -> tuple[bytes, int] | None:
        """(digest, index) of a kept batch holding the transaction."""
        return self._where.get(tx_hash)

    def hashes(self, digest: bytes) -> tuple[bytes, ...]:
        """The transaction hashes of a kept batch, in its order."""
        return self._hashes[digest]

    def add(self, batch: OriginBatch) -> bool:
        """Keep batch (False: a known digest, an origin that is no validator, or larger
        than an origin's whole allowance)."""
        digest, size = batch.digest, self.cost(batch)
        if digest in self._by_digest or not self.known(batch.origin) or size > self.max_bytes:
            return False
        mine = self._by_origin.setdefault(batch.origin, OrderedDict())
        while mine and (
            len(mine) >= self.max_batches or self._bytes[batch.origin] + size > self.max_bytes
        ):
            self._drop(batch.origin, mine.popitem(last=False)[1])
        mine[digest] = batch
        self._bytes[batch.origin] += size
        self._by_digest[digest] = batch
        hashes = self._hashes[digest] = tuple(hash_domain(Domain.TX, raw) for raw in batch.txs)
        for i, h in enumerate(hashes):
            # The first place stays: the batch every peer got, not a later copy to one.
            self._where.setdefault(h, (digest, i))
        return True

    def _drop(self, origin: int, batch: OriginBatch) -> None:
        self.evicted += 1
        digest = batch.digest
        self._bytes[origin] -= self.cost(batch)
        del self._by_digest[digest]
        for h in self._hashes.pop(digest):
            if self._where.get(h, (b"",))[0] == digest:
                del self._where[h]


def compact_refs(
    store: BatchStore, txs: Sequence[Transaction]
) -> tuple[list[BatchRef], bytes, list[Transaction]]:
    """The batches txs come from and each one's place (REF_BYTES each), or the
    transactions that are in no kept batch (then the refs are not complete)."""
    positions: dict[bytes, int] = {}
    batches: list[BatchRef] = []
    refs = bytearray()
    missing: list[Transaction] = []
    for tx in txs:
        where = store.locate(tx.hash)
        if where is None:
            missing.append(tx)
            continue
        digest, index = where
        pos = positions.get(digest)
        if pos is None:
            batch = store.get(digest)
            assert batch is not None
            pos = positions[digest] = len(batches)
            batches.append(BatchRef(batch.origin, digest))
        refs += pos.to_bytes(2, "big") + index.to_bytes(2, "big")
    return batches, bytes(refs), missing


def rebuild(m: ProposeRefs, store: BatchStore) -> Propose:
    """The `Propose` m stands for; raises `CodecError` when a place is out of range or the
    body is too large, `KeyError` when a batch is missing."""
    return _rebuild(m, store)[0]


def _rebuild(m: ProposeRefs, store: BatchStore) -> tuple[Propose, list[tuple[bytes, bytes]]]:
    """`rebuild`, with each transaction's (encoding, hash) in block order."""
    batches = []
    for r in m.batches:
        b = store.get(r.digest)
        if b is None:
            raise KeyError(r.digest)
        batches.append(b)
    hashes = [store.hashes(b.digest) for b in batches]
    if len(m.refs) % REF_BYTES:
        raise CodecError("ProposeRefs.refs: not a whole number of places")
    parts = [b"\x92", m.header, array_header(len(m.refs) // REF_BYTES)]
    size = sum(len(p) for p in parts)
    txs: list[tuple[bytes, bytes]] = []
    for k in range(0, len(m.refs), REF_BYTES):
        pos = int.from_bytes(m.refs[k : k + 2], "big")
        index = int.from_bytes(m.refs[k + 2 : k + 4], "big")
        if pos >= len(batches) or index >= len(batches[pos].txs):
            raise CodecError("ProposeRefs.refs: a place outside the named batches")
        raw = batches[pos].txs[index]
        size += len(raw)
        if size > MAX_BLOCK_BODY:
            raise CodecError("ProposeRefs: the block is larger than a block body")
        parts.append(raw)
        txs.append((raw, hashes[pos][index]))
    cblock = CBlock(m.height, m.parent, m.block_round, m.proposer, b"".join(parts))
    return Propose(m.chain_id, m.height, m.round, cblock), txs


def decoded_block(
    cblock: CBlock,
    header: bytes,
    txs: Sequence[tuple[bytes, bytes]],
    known: Callable[[bytes], Transaction | None],
) -> Block | None:
    """The chain block of a rebuilt proposal without decoding its body again: its header
    decoded alone, each transaction the one this node already decoded from the same bytes
    (`known`, by hash: the pool's), or decoded here. None when anything does not decode
    (validation then decodes the body and refuses it for what it is). The result encodes
    to exactly cblock's body, which is checked, so it is what decoding the body gives."""
    if len(txs) > MAX_BLOCK_TXS:
        return None
    out: list[Transaction] = []
    try:
        head = BlockHeader.decode(header, BLOCK_LIMITS)
        for raw, h in txs:
            tx = known(h)
            if tx is None or tx.encoded != raw:
                tx = decode_transaction(raw)
            out.append(tx)
        block = Block(head, tuple(out))
        if block.encode() != cblock.body:
            return None
    except QChainError:
        # Anything a lone transaction's decoding refuses (a size a block allows, too).
        return None
    return block


@dataclass
class _Fetch:
    """One missing batch: the peers to ask, in order, and how many were asked."""

    peers: list[int]
    asked: int = 0


@dataclass
class _Waiting:
    sender: int
    msg: ProposeRefs
    needs: list[bytes] = field(default_factory=list)
    """The named batches not at hand yet, in the proposal's order (so that what this node
    asks for, and when, is a function of what it received)."""


class Dissemination:
    """The batches of one validator: sending its own, keeping its peers', proposals by
    reference and the fetches they need."""

    def __init__(
        self,
        params: Params,
        links: Links,
        budgets: Budgets,
        alarms: Alarms,
        feed: Callable[[Event], None],
        app: BlockSource,
        known_tx: Callable[[bytes], Transaction | None] = lambda h: None,
    ) -> None:
        """Sets itself as the links' way to send a proposal (`Links.compact`). A missing
        batch is asked of the next peer after an eighth of the round-0 timeout; `app`
        knows the chain blocks this node built or validated lately, and is offered the
        chain block of each proposal rebuilt here, from the transactions `known_tx`
        (by hash) already holds decoded."""
        self.chain_id = params.chain_id
        self.links = links
        self.me = links.me
        self.budgets = budgets
        self.alarms = alarms
        self.feed = feed
        self.retry_s = params.timeout_ms(0) / 1000 / 8
        self.block_of = app.block_of
        self.offer = app.offer
        self.known_tx = known_tx
        links.compact = self.compact
        self.store = BatchStore(links.knows)
        self.seq = 0
        self.fetched = 0
        """Batches received in answer to this node's requests."""
        self.refused = 0
        """Batches dropped: not from their origin, or not asked for (a forged digest)."""
        self.given_up = 0
        """Proposals dropped because no peer sent a batch they name."""
        self.proposed = 0
        """The highest height a proposal was heard for (by reference from a peer, or
        compacted here): while it is above the committed height, the next leader builds
        only after a commit (`node.forwarding` holds this node's batch until then). A
        peer can claim any height; the reader bounds what it believes."""
        self._compact: OrderedDict[bytes, Envelope] = OrderedDict()
        self._waiting: OrderedDict[int, _Waiting] = OrderedDict()
        self._fetching: dict[bytes, _Fetch] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._scheduled = False

    def cancel_timers(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None

    # --- this node's own batches ------------------------------------------------------

    def send(
        self, raw_txs: Sequence[bytes], to: Sequence[int], lazy: Callable[[int], float]
    ) -> int:
        """raw_txs as this node's next batches, kept here and sent to each of `to`
        (lazily by `lazy(peer)` seconds); the number of batches."""
        batches = origin_batches(self.me, self.seq, raw_txs)
        self.seq += len(batches)
        for b in batches:
            self.store.add(b)
            env = Envelope(Kind.BATCH, b.encode())
            for j in to:
                if j != self.me:
                    self.links.send_all(env, [j], lazy(j))
        return len(batches)

    # --- proposals by reference ---------------------------------------------------------

    def compact(self, msg: Propose) -> Envelope | None:
        """The PROPOSE_REFS envelope of msg (None: its body is no chain block of this
        node's, it goes whole). Transactions in no kept batch go first, to everyone, in a
        batch of this node's."""
        blk = msg.block
        value = consensus_value(blk)
        key = value + msg.round.to_bytes(8, "big")
        known = self._compact.get(key)
        if known is not None:
            return known
        if blk.height != msg.height:
            return None
        self.proposed = max(self.proposed, msg.height)
        block = self.block_of(blk)
        if block is None:
            try:
                block = Block.decode(blk.body, BLOCK_LIMITS)
            except CodecError:
                return None
        if block.encode() != blk.body:
            return None
        txs = block.txs
        batches, refs, missing = compact_refs(self.store, txs)
        if missing:
            self.send([tx.encoded for tx in missing], self.links.others(), lambda j: 0.0)
            batches, refs, missing = compact_refs(self.store, txs)
            if missing:
                return None
        if self.links.byzantine.mode == UNKNOWN_BATCH:
            batches.append(BatchRef(self.me, hash_domain(Domain.BATCH, value)))
        m = ProposeRefs(
            msg.chain_id,
            msg.height,
            msg.round,
            blk.parent,
            blk.round,
            blk.proposer,
            block.header.encode(),
            tuple(batches),
            refs,
        )
        env = Envelope(Kind.PROPOSE_REFS, m.encode())
        self._compact[key] = env
        while len(self._compact) > COMPACT_CACHE:
            self._compact.popitem(last=False)
        return env

    def proposal(self, sender: int, m: ProposeRefs) -> None:
        """A proposal by reference from sender: to the engine when its batches are at
        hand, otherwise kept (the sender's latest only) while they are fetched, as many
        as the sender's fetch budget pays for."""
        if m.chain_id != self.chain_id:
            return
        self.proposed = max(self.proposed, m.height)
        needs = list(dict.fromkeys(r.digest for r in m.batches if self.store.get(r.digest) is None))
        if not needs:
            self._deliver(sender, m)
            return
        if self.budgets.take(sender, BATCH_FETCHES, len(needs)) < len(needs):
            self.refused += 1
            return
        self._waiting.pop(sender, None)
        self._waiting[sender] = _Waiting(sender, m, needs)
        while len(self._waiting) > MAX_WAITING:
            self._waiting.popitem(last=False)
        self._drop_unneeded()
        origins = {r.digest: r.origin for r in m.batches}
        for d in needs:
            if d not in self._fetching:
                order = [sender, origins[d], *self._rotation(sender)]
                peers = list(
                    dict.fromkeys(j for j in order if j != self.me and self.links.knows(j))
                )
                self._fetching[d] = _Fetch(peers)
        # Batches that travel in the same frame as the proposal land before this runs.
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._ask)

    def _rotation(self, start: int) -> list[int]:
        """The other linked validators, in id order from the one after `start`."""
        ids = sorted({*self.links.others(), self.me})
        after = [j for j in ids if j > start] + [j for j in ids if j < start]
        return after

    def _deliver(self, sender: int, m: ProposeRefs) -> None:
        try:
            msg, txs = _rebuild(m, self.store)
        except CodecError as e:
            self.alarms.alert("bad-message", f"from {sender}: {e.message}")
            return
        block = decoded_block(msg.block, m.header, txs, self.known_tx)
        if block is not None:
            self.offer(msg.block, block)
        self.feed(MessageIn(sender, msg))

    def committed(self, height: int) -> None:
        """Height was committed: proposals up to it are no longer wanted."""
        for key in [k for k, w in self._waiting.items() if w.msg.height <= height]:
            del self._waiting[key]
        self._drop_unneeded()

    def _drop_unneeded(self) -> None:
        wanted = {d for w in self._waiting.values() for d in w.needs}
        for d in [d for d in self._fetching if d not in wanted]:
            del self._fetching[d]

    # --- fetching ----------------------------------------------------------------------------

    def _ask(self) -> None:
        """Ask the next peer for each missing batch; give up on a batch every peer was
        asked for, with the proposals that need it."""
        self._scheduled = False
        self.cancel_timers()
        per_peer: dict[int, list[bytes]] = {}
        for d, f in list(self._fetching.items()):
            if self._fetching.get(d) is not f:
                continue  # dropped by a give-up earlier in this loop (its proposal went)
            if self.store.get(d) is not None:
                del self._fetching[d]
                continue
            if f.asked >= len(f.peers):
                del self._fetching[d]
                self._give_up(d)
                continue
            per_peer.setdefault(f.peers[f.asked], []).append(d)
            f.asked += 1
        for peer, digests in per_peer.items():
            for k in range(0, len(digests), BATCH_REQ_MAX):
                req = BatchReq(self.chain_id, tuple(digests[k : k + BATCH_REQ_MAX]))
                self.links.send(peer, Envelope(Kind.BATCH_REQ, req.encode()))
        if self._fetching and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.retry_s, self._ask)

    def _give_up(self, digest: bytes) -> None:
        for key, w in list(self._waiting.items()):
            if digest in w.needs:
                del self._waiting[key]
                self.given_up += 1
                log.info(
                    "proposal of height %d round %d from %d names a batch no peer sent",
                    w.msg.height,
                    w.msg.round,
                    w.sender,
                )
        self._drop_unneeded()

    def serve(self, sender: int, req: BatchReq) -> None:
        """Answer with the asked batches this node keeps, up to one message."""
        if req.chain_id != self.chain_id:
            return
        granted = self.budgets.take(sender, BATCH_LOOKUPS, len(req.digests))
        out: list[OriginBatch] = []
        size = BATCH_RESP_FRAMING
        for d in req.digests[:granted]:
            b = self.store.get(d)
            if b is None:
                continue
            size += b.size
            if size > MAX_MESSAGE:
                break
            out.append(b)
        if out:
            resp = BatchResp(self.chain_id, tuple(out))
            self.links.send(sender, Envelope(Kind.BATCH_RESP, resp.encode()))

    def answered(self, sender: int, resp: BatchResp) -> None:
        """Batches a peer answered with: each kept only if this node asked for its digest."""
        if resp.chain_id != self.chain_id:
            return
        for b in resp.batches:
            if self.store.get(b.digest) is not None:
                continue  # another peer answered first
            if b.digest not in self._fetching:
                self.refused += 1
                continue
            del self._fetching[b.digest]
            self.store.add(b)
            self.fetched += 1
        self._ready()

    # --- peers' batches ---------------------------------------------------------------------

    def received(self, sender: int, batch: OriginBatch) -> bool:
        """A peer's own batch: kept (False: it claims another origin and is refused)."""
        if batch.origin != sender:
            self.refused += 1
            self.alarms.alert("bad-message", f"from {sender}: a batch of origin {batch.origin}")
            return False
        self.store.add(batch)
        self._fetching.pop(batch.digest, None)
        if self._waiting:
            self._ready()
        return True

    def _ready(self) -> None:
        """Deliver the waiting proposals whose batches are all at hand now."""
        for key, w in list(self._waiting.items()):
            w.needs = [d for d in w.needs if self.store.get(d) is None]
            if not w.needs:
                del self._waiting[key]
                self._deliver(w.sender, w.msg)
