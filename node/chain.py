"""The application side of a validator: building, validating and committing blocks.

`ChainApp` joins the consensus engine's opaque blocks to the chain's real ones. A
consensus `Block` carries `height`, `parent` (the consensus value of the block below),
`round`, `proposer` and a `body`: the canonical encoding of the chain `Block` (header and
transactions). A body is valid for a consensus block when its header repeats the same
height, round and proposer, names the previous chain block as parent, has a later time
than it but not past `MAX_BLOCK_TIME_MS` (at that limit, the same time: a block can
always follow), and executes (on an overlay over committed state) to the header's receipts root
and app hash. Everything checked is a function of the block and the parent state: no
clock is read (CONSENSUS.md §3.1).

Results of execution are cached by consensus value, so a validated block commits without
executing again.

Heights are pipelined (CONSENSUS.md §3.3, Revision 1.13): once a decided block is executed
(`executed`) its commit batch may still be on its way to the disk while the next height
is built and validated. Until the batch is durable (`durable`), the tip is that executed
block and execution reads the state through its write set (`state`, `HeadState`); what
is read back as committed (`committed_value`, the chain store) stays the durable chain.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from consensus.messages import Block as CBlock
from consensus.messages import block_hash as consensus_value
from contracts.execution import (
    BlockContext,
    BlockResult,
    build_block,
    validate_block,
)
from contracts.state import Overlay, StateSource
from node import setchains, snapshots
from node.chainstore import ChainStore
from node.sigcache import SignatureCache
from qchain import clock
from qchain.errors import CodecError, InvalidBlock
from qchain.store import schema
from qchain.store.kv import Batch, KVStore
from qchain.types import BLOCK_LIMITS, Block, BlockHeader, Transaction, tx_root

MAX_BLOCK_TIME_MS = 253_402_300_799_999
"""The last millisecond of the year 9999 (UTC): no block time is later (CONSENSUS.md §3.7).
Validators vote only for fresh proposals whose time is near their own clock, so honest
chains never come near it; the bound keeps a block built by a Byzantine leader from
leaving no representable time for the next block."""
DECODED_KEPT = 8
"""Chain blocks offered for proposals (`ChainApp.offer`) kept until validated."""


def time_follows(parent_ms: int, block_ms: int) -> bool:
    """Whether block_ms may follow parent_ms: later, within the limit; at the limit, equal."""
    if block_ms > MAX_BLOCK_TIME_MS:
        return False
    return block_ms > parent_ms or block_ms == parent_ms == MAX_BLOCK_TIME_MS


def next_block_time(parent_ms: int, now_ms: int) -> int:
    """The time an honest leader gives its block: its clock, or just after the parent."""
    return min(max(now_ms, parent_ms + 1), MAX_BLOCK_TIME_MS)


@dataclass(frozen=True)
class Prepared:
    """A chain block with its execution result, ready to commit."""

    value: bytes
    cblock: CBlock
    block: Block
    result: BlockResult


class ChainApp:
    def __init__(
        self,
        store: KVStore,
        chain: ChainStore,
        chain_id: str,
        genesis_hash: bytes,
        genesis_app_hash: bytes,
        sig_cache: SignatureCache,
        state_root_interval: int = 0,
        snapshot_keep: int = snapshots.DEFAULT_KEEP,
    ) -> None:
        """state_root_interval is the genesis's K (`contracts.snapshot`); the snapshots
        of the newest snapshot_keep checkpoints are kept (`node.snapshots`)."""
        self.store = store
        self.chain = chain
        self.chain_id = chain_id
        self.genesis_hash = genesis_hash
        self.genesis_app_hash = genesis_app_hash
        self.sig_cache = sig_cache
        self.state_root_interval = state_root_interval
        self.snapshot_keep = snapshot_keep
        self._prepared: OrderedDict[bytes, Prepared] = OrderedDict()
        self._decoded: OrderedDict[bytes, Block] = OrderedDict()
        """Chain blocks offered for the consensus values of proposals (`offer`)."""
        self.rejected_builds = 0
        self._head: tuple[Prepared, Overlay] | None = None
        """The executed block whose commit batch is in flight, and its state writes."""
        self._head_txs: frozenset[bytes] = frozenset()
        """The hashes of that block's transactions."""

    # --- the parent of the next block ------------------------------------------------

    def tip(self) -> tuple[int, bytes, bytes, int]:
        """(height, chain hash, app hash, time) of the last committed block, or of the
        executed one whose commit is in flight."""
        if self._head is not None:
            top = self._head[0].block.header
            return top.height, top.hash, top.app_hash, top.time
        h = self.chain.height()
        if h == 0:
            return 0, self.genesis_hash, self.genesis_app_hash, 0
        header = self.chain.header(h)
        if header is None:
            raise InvalidBlock(f"committed block {h} is missing from the store")
        return h, header.hash, header.app_hash, header.time

    def committed_value(self, height: int) -> bytes | None:
        """The consensus value decided at height (the genesis hash for 0)."""
        if height == 0:
            return self.genesis_hash
        return self.store.get(schema.consensus_value_key(height))

    def committed_cblock(self, value: bytes) -> CBlock | None:
        """The consensus block of a committed value, rebuilt from the chain store."""
        raw = self.store.get(schema.block_hash_key(value))
        if raw is None:
            return None
        h = schema.read_u64(raw)
        stored = self.chain.block_bytes(h)
        if isinstance(stored, CBlock):
            # Stored by reference: the chain store hashed it already (a cached hash).
            if consensus_value(stored) != value:
                raise self.store.corrupt(schema.block_key(h), f"block {h} is not the decided value")
            return stored
        parent = self.committed_value(h - 1)
        header = self.chain.header(h)
        if stored is None or parent is None or header is None:
            return None
        cblock = CBlock(h, parent, header.round, header.proposer, stored)
        if consensus_value(cblock) != value:
            # One hash over the body: what is served to peers is what was decided.
            raise self.store.corrupt(schema.block_key(h), f"block {h} is not the decided value")
        return cblock

    def pending_cblock(self, value: bytes) -> CBlock | None:
        """A body the engine keeps above the committed height, by its consensus value
        (a handful of keys: the bodies of the heights being decided)."""
        above = schema.pending_prefix(self.chain.height() + 1)
        for key, raw in self.store.iterate(schema.PENDING_BODY, start=above):
            if schema.split_pending_key(key)[1] == value:
                return CBlock.decode(raw)
        return None

    def verify_recent(self, count: int) -> int:
        """`ChainStore.verify_recent` (which checks each block against the consensus value
        decided at its height), and that each of those values is indexed at its height, as
        serving it to a peer needs; the lowest height checked."""
        low = self.chain.verify_recent(count)
        for h in range(low, self.chain.height() + 1):
            value = self.committed_value(h)
            if value is None or self.chain.height_of(value) != h:
                raise self.store.corrupt(
                    schema.consensus_value_key(h), f"consensus value of {h} is not indexed"
                )
        return low

    # --- the executed block whose commit is in flight --------------------------------

    def executed(self, p: Prepared) -> None:
        """p's block is executed and its commit batch is being written: the next block is
        built and validated on top of it."""
        overlay = Overlay(self.store)
        overlay.apply(p.result.write_set)
        self._head = (p, overlay)
        self._head_txs = frozenset(tx.hash for tx in p.block.txs)

    def durable(self, value: bytes) -> None:
        """The commit batch of value is durable: the store is the tip again."""
        if self._head is not None and self._head[0].value == value:
            self._head = None
            self._head_txs = frozenset()
        self.forget(value)

    def in_flight(self, tx_hash: bytes) -> bool:
        """Whether tx_hash is in the executed block whose commit batch is being written:
        out of the mempool, its nonce spent in `state`, and not yet in the store's index
        (nor announced) until the batch is durable."""
        return tx_hash in self._head_txs

    def head_height(self) -> int:
        """The height of the tip: committed, or executed with its commit in flight."""
        return self.tip()[0] if self._head is not None else self.chain.height()

    def head_value(self, height: int) -> bytes | None:
        """The consensus value at height, the executed one in flight included."""
        if self._head is not None and self._head[0].block.height == height:
            return self._head[0].value
        return self.committed_value(height)

    def state(self) -> StateSource:
        """The state the next block executes on."""
        return self.store if self._head is None else self._head[1]

    # --- build, validate, commit -----------------------------------------------------

    def _remember(self, p: Prepared) -> Prepared:
        self._prepared[p.value] = p
        while len(self._prepared) > 64:
            self._prepared.popitem(last=False)
        return p

    def build(
        self,
        height: int,
        rnd: int,
        parent_value: bytes,
        proposer: int,
        candidates: list[Transaction],
        now_ms: int | None = None,
    ) -> Prepared:
        tip_h, tip_hash, tip_app, tip_time = self.tip()
        if tip_h != height - 1:
            raise InvalidBlock(f"cannot build height {height} on top of {tip_h}")
        now = int(clock.wall() * 1000) if now_ms is None else now_ms
        block_time = next_block_time(tip_time, now)
        ctx = BlockContext(self.chain_id, height, block_time, tip_app, self.state_root_interval)
        result, included, rejected = build_block(
            self.state(), ctx, candidates, verifier=self.sig_cache
        )
        self.rejected_builds += len(rejected)
        header = BlockHeader(
            chain_id=self.chain_id,
            height=height,
            round=rnd,
            time=block_time,
            parent=tip_hash,
            proposer=proposer,
            tx_root=tx_root(included),
            receipts_root=result.receipts_root,
            app_hash=result.app_hash,
        )
        block = Block(header, tuple(included))
        cblock = CBlock(height, parent_value, rnd, proposer, block.encode())
        return self._remember(Prepared(consensus_value(cblock), cblock, block, result))

    def block_of(self, cblock: CBlock) -> Block | None:
        """The chain block of a consensus block this node built or validated lately."""
        p = self._prepared.get(consensus_value(cblock))
        return None if p is None else p.block

    def offer(self, cblock: CBlock, block: Block) -> None:
        """block is what cblock's body decodes to (`node.batches.decoded_block`: a
        proposal rebuilt from transactions this node decoded already): `validate` takes it
        instead of decoding the body again. The last few are kept."""
        self._decoded[consensus_value(cblock)] = block
        while len(self._decoded) > DECODED_KEPT:
            self._decoded.popitem(last=False)

    def validate(self, cblock: CBlock) -> Prepared:
        """Raise `InvalidBlock` unless cblock's body is a valid next chain block."""
        value = consensus_value(cblock)
        known = self._prepared.get(value)
        if known is not None:
            return known
        block = self._decoded.pop(value, None)
        try:
            # Not `decode_block`: `validate_block` checks the tx_root (once).
            if block is None:
                block = Block.decode(cblock.body, BLOCK_LIMITS)
        except CodecError as e:
            raise InvalidBlock(f"body does not decode: {e.message}") from e
        h = block.header
        tip_h, tip_hash, tip_app, tip_time = self.tip()
        if h.chain_id != self.chain_id:
            raise InvalidBlock("header names another chain")
        if (h.height, h.round, h.proposer) != (cblock.height, cblock.round, cblock.proposer):
            raise InvalidBlock("header height, round or proposer differ from the proposal")
        if h.height != tip_h + 1:
            raise InvalidBlock(f"height {h.height} does not follow {tip_h}")
        if h.parent != tip_hash:
            raise InvalidBlock("header parent is not the last executed block")
        if not time_follows(tip_time, h.time):
            raise InvalidBlock(
                f"block time {h.time} does not follow {tip_time} (at most {MAX_BLOCK_TIME_MS})"
            )
        result = validate_block(
            self.state(),
            block,
            tip_app,
            verifier=self.sig_cache,
            state_root_interval=self.state_root_interval,
        )
        return self._remember(Prepared(value, cblock, block, result))

    def commit_batch(self, p: Prepared) -> Batch:
        """One batch with everything a commit writes (the caller adds the consensus
        record changes and writes it synced)."""
        batch = Batch()
        p.result.to_batch(batch)
        self.chain.commit_batch(p.block, p.result.receipts, (), batch, cblock=p.cblock)
        batch.put(schema.consensus_value_key(p.block.height), p.value)
        batch.put(schema.block_hash_key(p.value), schema.u64(p.block.height))
        if p.result.checkpoint is not None:
            snapshots.add_to_batch(self.store, p.result.checkpoint, self.snapshot_keep, batch)
        if p.result.set_state is not None:
            setchains.add_to_batch(batch, p.block.height, p.result.set_state, p.result.write_set)
        return batch

    def forget(self, value: bytes) -> None:
        self._prepared.pop(value, None)


class HeadState:
    """The state the next block executes on (`ChainApp.state`), for readers that live
    across commits (the mempool's account facts): reads go to the store, or through the
    write set of the block whose commit is in flight."""

    def __init__(self, app: ChainApp) -> None:
        self.app = app

    def get(self, key: bytes) -> bytes | None:
        return self.app.state().get(key)

    def iterate(
        self, prefix: bytes = b"", *, start: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        return self.app.state().iterate(prefix, start=start, reverse=reverse)
