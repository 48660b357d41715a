"""A committed block's body is written once: the pending record the engine wrote when it
voted (or, on catch-up, the commit itself) holds it, and the block's row references it.
A store written under schema version 1 (every committed body inline under `b`, pending
bodies keyed by consensus value alone) is migrated when a node opens it; a reference whose
record is missing or damaged is never served."""

from __future__ import annotations

from pathlib import Path

import pytest

from consensus.events import Commit
from consensus.messages import Block as CBlock
from consensus.messages import block_hash as consensus_value
from devnet.network import plan_network, write_network
from node.chain import Prepared
from node.chainstore import ChainStore
from node.runtime import Validator
from qchain.config import load_config
from qchain.errors import StorageCorrupt, StorageError, StoreMismatch
from qchain.store import KVStore, MemoryStore, schema
from qchain.store.kv import Batch
from qchain.store.testing import AlteringStore, flip_byte


def _validator(tmp_path: Path, store: KVStore) -> Validator:
    if not (tmp_path / "network.json").exists():
        write_network(tmp_path, plan_network(base_port=None, scheme="ed25519"))
    return Validator(load_config(tmp_path / "nodes" / "node0" / "config.toml"), store=store)


def _next(v: Validator, rnd: int = 0) -> Prepared:
    """A (empty) next block built by v on its committed tip."""
    height = v.chain.height() + 1
    parent = v.app.committed_value(height - 1)
    assert parent is not None
    return v.app.build(height, rnd, parent, 0, [], now_ms=1_000 * height + rnd)


def _persist(store: KVStore, cblock: CBlock) -> None:
    """What the driver writes for the engine's `PersistBlock` (test_driver_plan)."""
    key = schema.pending_body_key(cblock.height, consensus_value(cblock))
    store.put(key, cblock.encode(), sync=True)


def _copies(store: KVStore, body: bytes) -> int:
    """How many stored values hold body."""
    return sum(1 for _, value in store.iterate() if body in value)


async def test_a_voted_block_commits_by_reference_and_the_other_rounds_are_pruned(
    tmp_path: Path,
) -> None:
    store = MemoryStore()
    v = _validator(tmp_path, store)
    p = _next(v)
    other = _next(v, rnd=1)
    _persist(store, p.cblock)
    _persist(store, other.cblock)
    v.committer.commit(Commit(1, p.cblock, 1))
    assert v.chain.height() == 1
    assert store.get(schema.block_key(1)) == p.value
    assert _copies(store, p.block.encode()) == 1
    assert store.get(schema.pending_body_key(1, other.value)) is None
    assert v.chain.block(1) == p.block
    assert v.app.committed_cblock(p.value) == p.cblock
    assert v.fetcher.local_body(p.value) == p.cblock
    assert v.fetcher.local_body(other.value) is None


async def test_a_block_the_engine_never_persisted_is_written_once_at_commit(
    tmp_path: Path,
) -> None:
    store = MemoryStore()
    v = _validator(tmp_path, store)
    p = _next(v)
    later = _next(v, rnd=3)
    v.committer.commit(Commit(1, p.cblock, 1))
    assert _copies(store, p.block.encode()) == 1
    assert store.get(schema.pending_body_key(1, p.value)) == p.cblock.encode()
    assert v.chain.block(1) == p.block
    # A body above the committed height is the engine's: found by value, loaded at boot.
    nxt = _next(v)
    _persist(store, nxt.cblock)
    assert v.fetcher.local_body(nxt.value) == nxt.cblock
    assert v.fetcher.local_body(later.value) is None


def _v1_store(tmp_path: Path) -> tuple[MemoryStore, list[Prepared], Prepared]:
    """A store as version 1 wrote it: two committed blocks inline under `b`, and a
    pending body for height 3 keyed by its consensus value alone."""
    store = MemoryStore()
    v = _validator(tmp_path, store)
    committed = []
    for _ in range(2):
        p = _next(v)
        batch = Batch()
        p.result.to_batch(batch)
        v.chain.commit_batch(p.block, p.result.receipts, (), batch)  # inline, as v1 did
        batch.put(schema.consensus_value_key(p.block.height), p.value)
        batch.put(schema.block_hash_key(p.value), schema.u64(p.block.height))
        store.write(batch, sync=True)
        v.app.forget(p.value)
        committed.append(p)
    pending = _next(v)
    store.put(schema.v1_pending_body_key(pending.value), pending.cblock.encode())
    store.put(schema.META_SCHEMA_VERSION, schema.u64(1), sync=True)
    return store, committed, pending


async def test_a_version_1_store_is_migrated_on_open(tmp_path: Path) -> None:
    store, committed, pending = _v1_store(tmp_path)
    v = _validator(tmp_path, store)
    assert store.get(schema.META_SCHEMA_VERSION) == schema.u64(schema.SCHEMA_VERSION)
    assert store.get(schema.v1_pending_body_key(pending.value)) is None
    assert store.get(schema.pending_body_key(3, pending.value)) == pending.cblock.encode()
    for p in committed:
        assert v.chain.block(p.block.height) == p.block
        assert v.app.committed_cblock(p.value) == p.cblock
    assert v.app.verify_recent(10) == 1
    assert v.fetcher.local_body(pending.value) == pending.cblock
    # The next commit is by reference, on top of the inline blocks.
    v.committer.commit(Commit(3, pending.cblock, 1))
    assert store.get(schema.block_key(3)) == pending.value
    assert [b.height for b in v.chain.blocks(1, 10)] == [1, 2, 3]
    assert _validator(tmp_path, store).chain.height() == 3


async def test_a_version_1_store_with_a_damaged_pending_body_is_refused(tmp_path: Path) -> None:
    store, _, pending = _v1_store(tmp_path)
    store.put(schema.v1_pending_body_key(pending.value), b"\xc1")
    with pytest.raises(StorageCorrupt):
        _validator(tmp_path, store)
    assert store.get(schema.META_SCHEMA_VERSION) == schema.u64(1)


@pytest.mark.parametrize("index", [0, 5, -1])
async def test_a_damaged_referenced_body_is_never_served(tmp_path: Path, index: int) -> None:
    inner = MemoryStore()
    v = _validator(tmp_path, inner)
    p = _next(v)
    v.committer.commit(Commit(1, p.cblock, 1))
    damaged = AlteringStore(
        inner, lambda k: k.startswith(schema.PENDING_BODY), lambda raw: flip_byte(raw, index)
    )
    w = _validator(tmp_path, damaged)
    with pytest.raises(StorageCorrupt):
        w.chain.block(1)
    with pytest.raises(StorageCorrupt):
        w.app.committed_cblock(p.value)


async def test_a_missing_referenced_body_is_damage(tmp_path: Path) -> None:
    store = MemoryStore()
    v = _validator(tmp_path, store)
    p = _next(v)
    v.committer.commit(Commit(1, p.cblock, 1))
    store.delete(schema.pending_body_key(1, p.value), sync=True)
    with pytest.raises(StorageCorrupt):
        _validator(tmp_path, store).chain.block(1)


def test_a_version_1_store_of_another_chain_is_refused_and_left_as_it_is() -> None:
    store = MemoryStore()
    ChainStore(store).init_meta("other-chain", b"\x00" * 32)
    store.put(schema.META_SCHEMA_VERSION, schema.u64(1))
    store.put(schema.v1_pending_body_key(b"\x05" * 32), b"\x95")
    with pytest.raises(StoreMismatch):
        ChainStore(store).init_meta("this-chain", b"\x00" * 32)
    assert store.get(schema.META_SCHEMA_VERSION) == schema.u64(1)
    assert store.get(schema.v1_pending_body_key(b"\x05" * 32)) == b"\x95"


@pytest.mark.parametrize("version", [0, schema.SCHEMA_VERSION + 1])
def test_a_store_of_an_unknown_schema_version_is_refused(version: int) -> None:
    store = MemoryStore()
    ChainStore(store).init_meta("this-chain", b"\x00" * 32)
    store.put(schema.META_SCHEMA_VERSION, schema.u64(version))
    with pytest.raises(StorageError, match=f"schema version {version}"):
        ChainStore(store).init_meta("this-chain", b"\x00" * 32)


async def test_a_node_restarted_before_block_1_executes_the_others_block_1(
    tmp_path: Path,
) -> None:
    """A node that stops after genesis is applied and before block 1 commits (a joiner
    restarted before it replayed block 1, found by the simulator with a twin of the
    joiner) opens the store again: its genesis app hash is the chain's, so block 1 as
    the others built it validates. It used to be computed over the store, where genesis
    was already applied: an empty write set, a wrong parent app hash, and block 1 was
    refused for good ("app hash differs from the header's")."""
    first = _validator(tmp_path, MemoryStore())
    block_1 = _next(first)
    store = MemoryStore()
    _validator(tmp_path, store)  # genesis applied, nothing committed: then it stops
    restarted = _validator(tmp_path, store)
    assert restarted.chain.height() == 0
    assert restarted.app.genesis_app_hash == first.app.genesis_app_hash
    assert restarted.app.validate(block_1.cblock).block == block_1.block
