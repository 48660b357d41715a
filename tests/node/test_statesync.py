"""State sync against hostile sources (`node.statesync`): a snapshot is taken only when
its certificate and root check, a corrupted chunk is refused, counted and fetched again
from another source, a forged certificate or a manifest of another root is refused, and
the state written is the serving validator's, in one batch."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from pathlib import Path

import pytest

from devnet.network import plan_network, validator_key, write_network
from node import snapshots
from node.chainstore import ChainStore
from node.runtime import Validator
from node.statesync import StateSync, Trust, check_block, check_offer
from node.statesync_run import sync_store
from qchain.config import load_config
from qchain.errors import (
    BadSignature,
    ConfigError,
    InvalidSnapshot,
    QChainError,
    StorageError,
    StoreMismatch,
)
from qchain.keys import dev_key
from qchain.store import Batch, MemoryStore, schema
from qchain.store.testing import flip_byte
from qchain.types import CommitCertificate, CommitSignature, commit_sign_digest

INTERVAL = 4


class Source:
    """Serves a validator's kept snapshots in process, optionally altering what it sends."""

    def __init__(self, v: Validator, name: str, bad_chunks: frozenset[int] = frozenset()):
        self.v = v
        self.name = name
        self.bad_chunks = bad_chunks
        self.chunk_calls: list[int] = []
        self.offer_bytes: bytes | None = None
        self.block_bytes: bytes | None = None
        self.down = False

    async def snapshot_heights(self) -> list[int]:
        if self.down:
            raise OSError("connection refused")
        return snapshots.heights(self.v.store)

    async def snapshot_offer(self, height: int) -> bytes:
        if self.down:
            raise OSError("connection refused")
        if self.offer_bytes is not None:
            return self.offer_bytes
        offer = snapshots.offer(self.v.chain, height)
        assert offer is not None
        return offer.encode()

    async def snapshot_block(self, height: int) -> bytes:
        if self.block_bytes is not None:
            return self.block_bytes
        found = snapshots.block_answer(self.v.chain, height)
        assert found is not None
        return found.encode()

    async def snapshot_chunk(self, height: int, index: int) -> bytes:
        self.chunk_calls.append(index)
        raw = snapshots.chunk(self.v.chain, height, index)
        assert raw is not None
        return flip_byte(raw) if index in self.bad_chunks else raw


def _serving_validator(tmp_path: Path, blocks: int = 5) -> Validator:
    plan = plan_network(base_port=None, scheme="ed25519", state_root_interval=INTERVAL)
    write_network(tmp_path, plan)
    store = MemoryStore()
    v = Validator(load_config(tmp_path / "nodes" / "node0" / "config.toml"), store=store)
    bulk = Batch()
    for i in range(12_000):
        bulk.put(schema.state_key("notary", schema.u64(i)), bytes([i % 256]) * 200)
    store.write(bulk)
    for _ in range(blocks):
        height = v.chain.height() + 1
        parent = v.app.committed_value(height - 1)
        assert parent is not None
        p = v.app.build(height, 0, parent, height * 3 % 4, [], now_ms=1_000 * height)
        store.write(v.app.commit_batch(p), sync=True)
        digest = commit_sign_digest(plan.chain_id, height, p.block.hash)
        sigs = tuple(CommitSignature(i, validator_key(i).sign(digest)) for i in range(3))
        v.chain.put_certificate(CommitCertificate(height, p.block.hash, sigs))
    return v


def _trust(v: Validator, value_quorum: int | None = None) -> Trust:
    trust = Trust.of_genesis(v.genesis)
    assert trust.value_quorum == 2
    return trust if value_quorum is None else dataclasses.replace(trust, value_quorum=value_quorum)


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Validator:
    return _serving_validator(tmp_path_factory.mktemp("net"))


async def test_sync_from_honest_sources_copies_the_state(serving: Validator) -> None:
    store = MemoryStore()
    sources = [Source(serving, "a"), Source(serving, "b")]
    done = await StateSync(_trust(serving), sources).run(store)
    assert done.height == 4 and done.rejected_chunks == 0 and done.chunks > 4
    assert list(store.iterate(schema.STATE)) == list(serving.store.iterate(schema.STATE))
    assert store.get(schema.META_BASE_HEIGHT) == schema.u64(4)
    assert store.get(schema.META_LAST_HEIGHT) == schema.u64(4)
    assert store.get(schema.META_AMNESIA) == b""  # silent until peers show their heights
    header = serving.chain.header(4)
    assert header is not None and store.get(schema.header_key(4)) == header.encode()
    # Both sources served chunks (parallel fetch from several peers).
    assert sources[0].chunk_calls and sources[1].chunk_calls


async def test_a_corrupted_chunk_is_refused_and_fetched_again(serving: Validator) -> None:
    hostile = Source(serving, "hostile", bad_chunks=frozenset(range(0, 100)))
    honest = Source(serving, "honest")
    store = MemoryStore()
    done = await StateSync(_trust(serving), [hostile, honest], parallel=3).run(store)
    assert done.rejected_chunks == len(hostile.chunk_calls) > 0
    assert sorted(honest.chunk_calls) == list(range(done.chunks))
    assert list(store.iterate(schema.STATE)) == list(serving.store.iterate(schema.STATE))


async def test_only_hostile_sources_write_nothing(serving: Validator) -> None:
    store = MemoryStore()
    store.put(schema.state_key("membership", b"x"), b"genesis state")
    ChainStore(store).init_meta(serving.genesis.chain_id, serving.genesis.hash)
    before = list(store.iterate())
    bad = [Source(serving, "h1", frozenset({2})), Source(serving, "h2", frozenset({2}))]
    with pytest.raises(InvalidSnapshot):
        await StateSync(_trust(serving), bad).run(store)
    assert list(store.iterate()) == before


async def test_a_forged_certificate_is_refused(serving: Validator) -> None:
    offer = snapshots.offer(serving.chain, 4)
    assert offer is not None
    digest = commit_sign_digest(serving.genesis.chain_id, 4, offer.header.hash)
    outsiders = [dev_key("forger", f"v{i}") for i in range(4)]
    forged = CommitCertificate(
        4,
        offer.header.hash,
        tuple(CommitSignature(i, k.sign(digest)) for i, k in enumerate(outsiders)),
    )
    raw = dataclasses.replace(offer, certificate=forged).encode()
    with pytest.raises(BadSignature):
        check_offer(raw, 4, _trust(serving))
    too_many = CommitCertificate(4, offer.header.hash, offer.certificate.signatures * 2)
    with pytest.raises(InvalidSnapshot, match="more signatures"):
        check_offer(dataclasses.replace(offer, certificate=too_many).encode(), 4, _trust(serving))
    source = Source(serving, "forger")
    source.offer_bytes = raw
    with pytest.raises(InvalidSnapshot):
        await StateSync(_trust(serving, 1), [source]).run(MemoryStore())
    assert source.chunk_calls == []


async def test_a_manifest_of_another_root_is_refused(serving: Validator) -> None:
    offer = snapshots.offer(serving.chain, 4)
    assert offer is not None
    m = snapshots.manifest(serving.chain, 4)
    assert m is not None
    other = type(m)(m.height, m.chained, m.entry_count - 1, m.chunks)
    with pytest.raises(InvalidSnapshot, match="app hash"):
        check_offer(
            dataclasses.replace(offer, manifest=other.encode()).encode(), 4, _trust(serving)
        )
    # An honest offer of a height that is not a checkpoint of this genesis.
    trust = dataclasses.replace(_trust(serving), state_root_interval=3)
    with pytest.raises(InvalidSnapshot, match="checkpoint"):
        check_offer(offer.encode(), 4, trust)
    with pytest.raises(InvalidSnapshot, match="height"):
        check_offer(offer.encode(), 8, _trust(serving))


async def test_a_source_that_is_down_is_skipped(serving: Validator) -> None:
    down = Source(serving, "down")
    down.down = True
    store = MemoryStore()
    done = await StateSync(_trust(serving, 1), [down, Source(serving, "up")]).run(store)
    assert done.height == 4 and done.failed_fetches >= 1


async def test_a_store_with_blocks_is_not_overwritten(serving: Validator) -> None:
    with pytest.raises(StorageError, match="empty chain"):
        await StateSync(_trust(serving), [Source(serving, "a")]).run(serving.store)


async def test_the_consensus_value_needs_f_plus_one_offers(serving: Validator) -> None:
    offer = snapshots.offer(serving.chain, 4)
    assert offer is not None and offer.value == serving.app.committed_value(4)
    liar = Source(serving, "liar")
    liar.offer_bytes = dataclasses.replace(offer, value=bytes(32)).encode()
    with pytest.raises(InvalidSnapshot):
        await StateSync(_trust(serving), [liar, Source(serving, "honest")]).run(MemoryStore())
    store = MemoryStore()
    sources = [liar, Source(serving, "a"), Source(serving, "b")]
    done = await StateSync(_trust(serving), sources).run(store)
    assert done.height == 4
    assert store.get(schema.consensus_value_key(4)) == offer.value
    assert store.get(schema.block_hash_key(offer.value)) == schema.u64(4)


async def test_an_offer_without_the_parent_header_is_refused(serving: Validator) -> None:
    offer = snapshots.offer(serving.chain, 4)
    assert offer is not None and offer.parent[0].hash == offer.header.parent
    for parent in ((), (offer.header,)):
        raw = dataclasses.replace(offer, parent=parent).encode()
        with pytest.raises(InvalidSnapshot, match="header of 3"):
            check_offer(raw, 4, _trust(serving))


@pytest.mark.parametrize("tenure", [1, 2, 3, 5, 64])
def test_the_next_anchor_is_the_engines(serving: Validator, tenure: int) -> None:
    """anchor(5) from the offer of 4 equals the one `Params.next_anchor` gives walking
    the chain from genesis, whatever the tenure (proposers differ from height to
    height in this chain)."""
    params = dataclasses.replace(serving.params, tenure=tenure)
    anchor = params.first_leader
    for h in range(1, 5):
        header = serving.chain.header(h)
        assert header is not None
        anchor = params.next_anchor(h, anchor, header.proposer)
    offer = snapshots.offer(serving.chain, 4)
    assert offer is not None
    trust = dataclasses.replace(_trust(serving), tenure=tenure)
    assert trust.next_anchor(offer) == anchor


class DyingStore(MemoryStore):
    """A store whose process dies (raises) in the middle of its first large batch: a
    synced batch is atomic, so none of it is applied."""

    def __init__(self) -> None:
        super().__init__()
        self.died = False

    def write(self, batch: Batch, *, sync: bool = True) -> None:
        if len(batch) > 100 and not self.died:
            self.died = True
            raise SystemExit("killed")
        super().write(batch, sync=sync)


async def test_a_crash_while_writing_leaves_the_store_to_sync_again(serving: Validator) -> None:
    store = DyingStore()
    store.put(schema.state_key("membership", b"x"), b"genesis state")
    ChainStore(store).init_meta(serving.genesis.chain_id, serving.genesis.hash)
    before = list(store.iterate())
    with pytest.raises(SystemExit):
        await StateSync(_trust(serving), [Source(serving, "a"), Source(serving, "b")]).run(store)
    assert list(store.iterate()) == before
    done = await StateSync(_trust(serving), [Source(serving, "a"), Source(serving, "b")]).run(store)
    assert done.height == 4
    assert list(store.iterate(schema.STATE)) == list(serving.store.iterate(schema.STATE))


@pytest.mark.parametrize("seed", range(4))
def test_fuzz_offers(serving: Validator, seed: int) -> None:
    """Mutated offers are refused with the chain's own errors; none is accepted."""
    rng = random.Random(seed)
    offer = snapshots.offer(serving.chain, 4)
    assert offer is not None
    good = offer.encode()
    trust = _trust(serving)
    for _ in range(150):
        raw = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(raw))
            if rng.random() < 0.7:
                raw[pos] ^= 1 << rng.randrange(8)
            else:
                del raw[pos : pos + rng.randint(1, 16)]
        if bytes(raw) == good:
            continue
        try:
            got, _ = check_offer(bytes(raw), 4, trust)
        except QChainError:
            continue
        # A mutation that still checks can only have touched bytes no check covers:
        # the certificate's surplus signatures or the value (taken by quorum only).
        assert got.header == offer.header and got.manifest == offer.manifest


async def test_sync_store_refuses_what_it_cannot_sync(tmp_path: Path, serving: Validator) -> None:
    genesis = serving.genesis
    with pytest.raises(ConfigError, match="holds blocks"):
        await sync_store(serving.store, genesis, [], force=True, after=1)
    assert await sync_store(serving.store, genesis, [], force=False, after=1) is None
    with pytest.raises(ConfigError, match="state_root_interval"):
        await sync_store(
            MemoryStore(),
            dataclasses.replace(genesis, state_root_interval=0),
            [],
            force=True,
            after=1,
        )
    empty = MemoryStore()
    with pytest.raises(ConfigError, match="api address"):
        await sync_store(empty, genesis, [], force=True, after=1)
    assert await sync_store(empty, genesis, [], force=False, after=1) is None
    assert empty.get(schema.META_LAST_HEIGHT) == schema.u64(0)


async def test_a_failed_sync_falls_back_to_replay_unless_forced(serving: Validator) -> None:
    """By default (the store empty, peers far ahead) a sync that cannot complete leaves
    the node to replay; with --state-sync it is an error."""
    liar = Source(serving, "liar")
    offer = snapshots.offer(serving.chain, 4)
    assert offer is not None
    liar.offer_bytes = dataclasses.replace(offer, manifest=b"").encode()
    sources = [liar]
    store = MemoryStore()
    assert await sync_store(store, serving.genesis, sources, force=False, after=1) is None
    assert store.get(schema.META_LAST_HEIGHT) == schema.u64(0)
    with pytest.raises(InvalidSnapshot):
        await sync_store(store, serving.genesis, sources, force=True, after=1)
    # A peer whose snapshot is below the threshold: no sync without the flag.
    honest = [Source(serving, "a"), Source(serving, "b")]
    assert await sync_store(store, serving.genesis, honest, force=False, after=5) is None
    done = await sync_store(store, serving.genesis, honest, force=False, after=4)
    assert done is not None and done.height == 4


async def test_a_synced_store_opens_as_a_validator_at_its_base(
    serving: Validator, tmp_path: Path
) -> None:
    """The validator over a synced store starts at s: its tip is the certified header of s,
    it holds block s with its receipts and certificate (the startup check covers them),
    the next block builds on s, and the blocks below are not there."""
    store = MemoryStore()
    await StateSync(_trust(serving), [Source(serving, "a"), Source(serving, "b")]).run(store)
    v = Validator(serving.cfg, store=store)
    header = serving.chain.header(4)
    assert header is not None
    assert v.app.tip() == (4, header.hash, header.app_hash, header.time)
    assert v.chain.base_height() == 4 and v.app.verify_recent(64) == 4
    assert v.app.committed_value(4) == serving.app.committed_value(4)
    assert v.chain.block(4) == serving.chain.block(4) and v.chain.block(3) is None
    assert v.chain.receipts(4) == serving.chain.receipts(4)
    assert v.chain.certificate(4) == serving.chain.certificate(4)
    # Block 5 built on the synced state is the serving validator's block 5, byte for byte.
    ours = v.app.build(5, 0, serving.app.committed_value(4) or b"", 5 * 3 % 4, [], now_ms=5_000)
    assert ours.value == serving.app.committed_value(5)
    assert ours.block.header == serving.chain.header(5)


async def test_a_store_of_another_chain_is_refused_before_fetching(serving: Validator) -> None:
    store = MemoryStore()
    ChainStore(store).init_meta("another-chain", bytes(32))
    source = Source(serving, "a")
    with pytest.raises(StoreMismatch):
        await StateSync(_trust(serving, 1), [source]).run(store)
    assert source.chunk_calls == []


async def test_a_block_that_misses_the_certified_header_is_refused(serving: Validator) -> None:
    """The block of s comes from a source whose answer checks against the certified
    header; a forged one is counted and another source's is taken."""
    found = snapshots.block_answer(serving.chain, 4)
    assert found is not None
    header = serving.chain.header(4)
    assert header is not None
    check_block(found.encode(), header)
    receipts = found.receipts
    forged = [
        dataclasses.replace(found, block=flip_byte(found.block)),
        dataclasses.replace(found, receipts=receipts[:-1] if receipts else (b"\x90",)),
        dataclasses.replace(found, receipts=tuple(flip_byte(r) for r in receipts) or (b"",)),
    ]
    for bad in forged:
        with pytest.raises(QChainError):
            check_block(bad.encode(), header)
    liar = Source(serving, "liar")
    liar.block_bytes = forged[0].encode()
    store = MemoryStore()
    done = await StateSync(_trust(serving, 1), [liar, Source(serving, "honest")]).run(store)
    assert done.rejected_blocks == 1
    assert ChainStore(store).block(4) == serving.chain.block(4)


NOW_MS = 1_796_400_000_000  # 2026-12-04T16:00:00Z


def _store_with_leases(floor: bytes | None) -> MemoryStore:
    """A store that holds no block but QKD leases (one `rebuild` left), and a floor."""
    store = MemoryStore()
    store.put(schema.qkd_lease_key("seq/SAE-node3/SAE-node0"), schema.u64(8192))
    if floor is not None:
        store.put(schema.QKD_LEASE_FLOOR, floor)
    return store


async def test_sync_writes_the_lease_floor_and_keeps_the_leases(serving: Validator) -> None:
    """CONSENSUS.md §10.9 (7): the synced store's links number their frames from the floor
    up, above every number an earlier store of this validator drew, which its peers
    remember; its own leases stay as they are."""
    from qchain.qkd.lease import clock_floor

    store = _store_with_leases(schema.u64(clock_floor(NOW_MS) - 1))
    sources = [Source(serving, "a"), Source(serving, "b")]
    await StateSync(_trust(serving), sources, now_ms=lambda: NOW_MS).run(store)
    assert store.get(schema.META_AMNESIA) == b""
    assert dict(store.iterate(schema.QKD_LEASE)) == {
        schema.QKD_LEASE_FLOOR: schema.u64(clock_floor(NOW_MS)),
        schema.qkd_lease_key("seq/SAE-node3/SAE-node0"): schema.u64(8192),
    }


@pytest.mark.parametrize(
    ("floor", "message"),
    [
        (schema.u64(1_796_400_000_001 * 2**16 + 2**40), "clock is behind"),
        (schema.u64(2**64 - 1), "above the largest floor"),
        (b"\x00" * 3, "3 bytes, not 8"),
    ],
)
async def test_sync_refuses_a_floor_above_the_clock_or_damaged(
    serving: Validator, floor: bytes, message: str
) -> None:
    """Refused before anything is fetched; nothing of the sync is written."""
    store = _store_with_leases(floor)
    before = list(store.iterate())
    assert all(k.startswith(schema.QKD_LEASE) for k, _ in before)
    sources = [Source(serving, "a"), Source(serving, "b")]
    with pytest.raises(StorageError, match=message):
        await StateSync(_trust(serving), sources, now_ms=lambda: NOW_MS).run(store)
    assert all(not s.chunk_calls for s in sources)
    assert list(store.iterate(schema.QKD_LEASE)) == before
    assert not list(store.iterate(schema.STATE))
    assert store.get(schema.META_AMNESIA) is None and ChainStore(store).height() == 0


class Silent(Source):
    """A source that accepts every request and never answers it (but the list of its
    snapshots, if `lists`)."""

    def __init__(self, v: Validator, name: str, lists: bool = False) -> None:
        super().__init__(v, name)
        self.lists = lists
        self.asked: list[str] = []
        self.never = asyncio.Event()

    async def snapshot_heights(self) -> list[int]:
        self.asked.append("heights")
        if self.lists:
            return snapshots.heights(self.v.store)
        await self.never.wait()
        return []

    async def snapshot_offer(self, height: int) -> bytes:
        self.asked.append("offer")
        await self.never.wait()
        return b""

    async def snapshot_block(self, height: int) -> bytes:
        self.asked.append("block")
        await self.never.wait()
        return b""

    async def snapshot_chunk(self, height: int, index: int) -> bytes:
        self.asked.append("chunk")
        await self.never.wait()
        return b""


async def test_a_silent_source_does_not_hold_the_sync(serving: Validator) -> None:
    """f+1 agreeing offers decide without the source that does not answer, and only the
    vouching sources are asked for chunks and the block (a silent peer would otherwise
    hold a fetch until the client's timeout)."""
    silent = Silent(serving, "silent", lists=True)
    sources = [silent, Source(serving, "a"), Source(serving, "b")]
    store = MemoryStore()
    done = await asyncio.wait_for(StateSync(_trust(serving), sources).run(store), 60)
    assert done.height == 4
    assert silent.asked == ["heights", "offer"]
    assert list(store.iterate(schema.STATE)) == list(serving.store.iterate(schema.STATE))


async def test_the_block_is_fetched_while_the_chunks_are(serving: Validator) -> None:
    """The chunks and the block of s are fetched together: a source whose chunks wait for
    the block's request is served (fetched one after the other, neither would come)."""
    block_asked = asyncio.Event()

    class Together(Source):
        async def snapshot_block(self, height: int) -> bytes:
            block_asked.set()
            return await super().snapshot_block(height)

        async def snapshot_chunk(self, height: int, index: int) -> bytes:
            await block_asked.wait()
            return await super().snapshot_chunk(height, index)

    store = MemoryStore()
    sync = StateSync(_trust(serving, 1), [Together(serving, "a")])
    done = await asyncio.wait_for(sync.run(store), 60)
    assert done.height == 4 and done.rejected_chunks == 0


async def test_the_peers_that_answer_the_probe_decide(serving: Validator) -> None:
    """A peer that never answers which snapshots it keeps is counted as failed when the
    probe's time is up; the others' answers decide, and the node syncs instead of
    replaying the whole chain."""
    silent = Silent(serving, "silent")
    sources = [Source(serving, "a"), silent, Source(serving, "b")]
    store = MemoryStore()
    done = await asyncio.wait_for(
        sync_store(store, serving.genesis, sources, force=False, after=1, probe_timeout_s=0.2),
        60,
    )
    assert done is not None and done.height == 4
    assert done.failed_fetches >= 1
    assert silent.asked == ["heights"]
    assert list(store.iterate(schema.STATE)) == list(serving.store.iterate(schema.STATE))
