"""State sync on a chain whose validator set changes (`node.statesync`,
`node.statesync_sets`): the snapshot height's certificate is checked under the set a
source's set chain proves from the genesis, never under the genesis set.

The chain (`tests.contracts.setchain_chain`) goes through an add, a remove of validator 1
and a second add below its last checkpoint heights, so the set of the snapshot height is
{0, 2, 3, 4, 5} and the genesis set {0, 1, 2, 3}. Sources serve a node store that holds
what the node keeps (blocks, set-chain rows, snapshots, certificates) in process; some
alter their set chain or offer."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import pytest

from consensus.messages import Block as CBlock
from consensus.messages import block_hash as consensus_value
from consensus.sets import VSet, next_anchor
from contracts import validators
from contracts.setchain import MAX_SETCHAIN_BYTES, SetChain, SetState
from contracts.state import StateReader
from node import setchains, snapshots
from node.chainstore import ChainStore
from node.setchains import SetChains
from node.statesync import StateSync, Trust, check_certificate, check_offer, read_offer
from node.statesync_run import sync_store
from qchain.errors import BadSignature, InvalidSnapshot, SetChainUnavailable
from qchain.store import MemoryStore, schema
from qchain.types import Block, CommitCertificate
from tests.contracts.setchain_chain import (
    CertifiedChain,
    add_then_remove,
    certified_chain,
    schedule_change,
)
from tests.contracts.validators_chain import add_args

K = 4
"""Checkpoint heights: every multiple of K."""


@dataclasses.dataclass
class Served:
    cc: CertifiedChain
    store: MemoryStore
    chain: ChainStore
    sets: SetChains

    @property
    def top_snapshot(self) -> int:
        return max(snapshots.heights(self.store))


def _serve(cc: CertifiedChain, certs: dict[int, CommitCertificate] | None = None) -> Served:
    """The chain committed into a node store as the node commits it, with its snapshots
    (the newest two), consensus values and certificates (certs: some replaced)."""
    store = MemoryStore()
    chain = ChainStore(store)
    chain.init_meta(cc.chain_id, cc.chain.genesis.hash)
    value = cc.chain.genesis.hash
    for h in range(1, cc.chain.height + 1):
        result = cc.results[h]
        block = Block(cc.headers[h], cc.txs[h])
        value = consensus_value(CBlock(h, value, 0, block.header.proposer, block.encode()))
        batch = chain.commit_batch(block, result.receipts, result.write_set)
        assert result.set_state is not None
        setchains.add_to_batch(batch, h, result.set_state, result.write_set)
        if result.checkpoint is not None:
            snapshots.add_to_batch(store, result.checkpoint, 2, batch)
        batch.put(schema.consensus_value_key(h), value)
        store.write(batch, sync=True)
        chain.put_certificate((certs or {}).get(h) or cc.certificate(h))
    return Served(cc, store, chain, SetChains(store, chain, cc.delay))


class Source:
    """Serves a node store's snapshots and set chains; `chain_bytes` replaces the set
    chain it sends, `down_sets` makes that fetch fail."""

    def __init__(self, served: Served, name: str) -> None:
        self.served = served
        self.name = name
        self.chain_bytes: bytes | None = None
        self.set_calls: list[int] = []
        self.down_sets = False

    async def snapshot_heights(self) -> list[int]:
        return snapshots.heights(self.served.store)

    async def snapshot_offer(self, height: int) -> bytes:
        offer = snapshots.offer(self.served.chain, height)
        assert offer is not None
        return offer.encode()

    async def snapshot_block(self, height: int) -> bytes:
        found = snapshots.block_answer(self.served.chain, height)
        assert found is not None
        return found.encode()

    async def snapshot_chunk(self, height: int, index: int) -> bytes:
        raw = snapshots.chunk(self.served.chain, height, index)
        assert raw is not None
        return raw

    async def set_chain(self, height: int) -> bytes:
        self.set_calls.append(height)
        if self.down_sets:
            raise OSError("connection reset")
        if self.chain_bytes is not None:
            return self.chain_bytes
        return self.served.sets.build(height).encode()


@pytest.fixture(scope="module")
def cc() -> CertifiedChain:
    cc = certified_chain(4, delay=2, state_root_interval=K)
    cc.block()
    add_then_remove(cc)
    _, e3 = schedule_change(cc, add_args(1, cc.chain.address("outsider")), 1, ("op0", "op2", "op3"))
    while cc.chain.height < e3 + 2 * K + 2:
        cc.block()
    return cc


@pytest.fixture(scope="module")
def served(cc: CertifiedChain) -> Served:
    return _serve(cc)


def _trust(cc: CertifiedChain) -> Trust:
    trust = Trust.of_genesis(cc.chain.genesis)
    assert trust.start is not None and trust.delay == cc.delay
    return trust


def _ids(records: tuple[validators.Record, ...]) -> list[int]:
    return [r.id for r in records]


def _sources(served: Served, n: int = 3) -> list[Source]:
    return [Source(served, f"peer{i}") for i in range(n)]


async def test_sync_checks_the_snapshot_under_the_proven_set(served: Served) -> None:
    cc = served.cc
    s = served.top_snapshot
    assert _ids(cc.set_at(s)) == [0, 2, 3, 4, 5] and _ids(cc.set_at(1)) == [0, 1, 2, 3]
    store = MemoryStore()
    sync = StateSync(_trust(cc), _sources(served))
    done = await sync.run(store)
    assert done.height == s
    assert done.rejected_set_chains == 0 and done.rejected_offers == 0
    assert done.set_source == "peer0"
    synced = ChainStore(store)
    assert synced.height() == s and synced.base_height() == s
    assert store.get(schema.META_AMNESIA) is not None
    manifest = snapshots.manifest(served.chain, s)
    assert manifest is not None and done.entries == manifest.entry_count
    assert len(list(store.iterate(schema.STATE))) == done.entries
    assert _ids(validators.set_at(StateReader(store, validators.NAME), s).records) == [
        0,
        2,
        3,
        4,
        5,
    ]
    # The anchor of s+1 by §10.4 over V(s) and V(s+1) (ids), from the proposer of s.
    header = cc.headers[s]
    cur, nxt = VSet(tuple(_ids(cc.set_at(s)))), VSet(tuple(_ids(cc.set_at(s + 1))))
    want = next_anchor(
        s, cc.chain.genesis.consensus.tenure, header.proposer, header.proposer, cur, nxt
    )
    assert store.get(schema.meta_key("next-anchor")) == schema.u64(want)
    # A synced store holds no set-chain rows below its base: it serves none.
    with pytest.raises(SetChainUnavailable, match="state-synced"):
        SetChains(store, synced, cc.delay).build(s)


async def test_a_certificate_good_only_under_the_proven_set_is_taken(cc: CertifiedChain) -> None:
    """Signed by 2, 3, 4, 5 (q(5) = 4 of V(s)): under the genesis set two signatures
    count, and the offer would be refused; under the proven set it is taken."""
    s = max(h for h in range(1, cc.chain.height + 1) if h % K == 0)
    signers = [r for r in cc.set_at(s) if r.id in (2, 3, 4, 5)]
    served = _serve(cc, {s: cc.certificate(s, signers)})
    offer = await Source(served, "x").snapshot_offer(s)
    genesis_only = dataclasses.replace(_trust(cc), start=None)
    with pytest.raises(BadSignature):
        check_offer(offer, s, genesis_only)
    done = await StateSync(_trust(cc), _sources(served)).run(MemoryStore())
    assert done.height == s


async def test_a_certificate_of_the_removed_validator_is_refused(cc: CertifiedChain) -> None:
    """Signed by the genesis set 0, 1, 2, 3 (1 removed): three of V(s), q(5) = 4. The
    genesis set would take it; the snapshot is refused and the one below is taken."""
    s = max(h for h in range(1, cc.chain.height + 1) if h % K == 0)
    served = _serve(cc, {s: cc.certificate(s, cc.set_at(1))})
    offer = await Source(served, "x").snapshot_offer(s)
    check_offer(offer, s, dataclasses.replace(_trust(cc), start=None))
    sync = StateSync(_trust(cc), _sources(served))
    done = await sync.run(MemoryStore())
    assert done.height == s - K
    assert sync.result.rejected_offers == 3


def _forged(served: Served, s: int) -> tuple[bytes, bytes]:
    """Two set chains of s made from the builder's own: the remove's link omitted, and
    the remove's link claiming the genesis set (a proof made over it)."""
    chain = served.sets.build(s)
    assert len(chain.links) == 3
    omitted = replace(chain, links=(chain.links[0], chain.links[2]))
    link = chain.links[1]
    state = served.sets.state(link.header.height)
    genesis_set = validators.ValidatorSet(served.cc.set_at(1)).encode()
    made = SetState(state.chained, (genesis_set, *state.values[1:]), state.state_root)
    swapped = replace(
        chain, links=(chain.links[0], replace(link, proof=made.prove()), chain.links[2])
    )
    return omitted.encode(), swapped.encode()


async def test_forged_set_chains_are_refused_and_another_peers_used(served: Served) -> None:
    s = served.top_snapshot
    a, b, c = _sources(served)
    a.chain_bytes, b.chain_bytes = _forged(served, s)
    sync = StateSync(_trust(served.cc), [a, b, c])
    done = await sync.run(MemoryStore())
    assert done.height == s and done.set_source == "peer2"
    assert done.rejected_set_chains == 2 and done.rejected_offers == 0
    # Each set chain was asked once: a refused one is not asked again.
    assert (a.set_calls, b.set_calls, c.set_calls) == ([s], [s], [s])


async def test_only_forged_or_missing_set_chains_write_nothing(served: Served) -> None:
    s = served.top_snapshot
    a, b, c = _sources(served)
    a.chain_bytes, b.chain_bytes = _forged(served, s)
    c.down_sets = True
    store = MemoryStore()
    sync = StateSync(_trust(served.cc), [a, b, c])
    with pytest.raises(InvalidSnapshot, match="no snapshot could be fetched whole"):
        await sync.run(store)
    assert ChainStore(store).height() == 0 and store.get(schema.META_AMNESIA) is None
    assert sync.result.rejected_offers >= 3 and sync.result.failed_fetches >= 1


async def test_set_chain_bounds_and_other_heights(served: Served) -> None:
    s = served.top_snapshot
    cases = {
        "too large": b"\x90" * (MAX_SETCHAIN_BYTES + 1),
        "not a set chain": b"\xc1garbage",
        "of the height below": served.sets.build(s - 1).encode(),
        "of the snapshot below": served.sets.build(s - K).encode(),
        "empty": SetChain((), None).encode(),
    }
    for what, raw in cases.items():
        bad = _sources(served, 2)
        for src in bad:
            src.chain_bytes = raw
        honest = Source(served, "honest")
        sync = StateSync(_trust(served.cc), [*bad, honest])
        done = await sync.run(MemoryStore())
        assert done.height == s and done.set_source == "honest", what
        assert done.rejected_set_chains >= 1, what


async def test_the_genesis_set_is_never_used_on_a_governed_chain(served: Served) -> None:
    s = served.top_snapshot
    offer, _ = read_offer(await Source(served, "x").snapshot_offer(s), s, _trust(served.cc))
    with pytest.raises(InvalidSnapshot, match="never the genesis set"):
        check_certificate(offer, _trust(served.cc))
    with pytest.raises(InvalidSnapshot, match="more signatures than its set has members"):
        check_certificate(offer, _trust(served.cc), served.cc.set_at(s)[:2])


async def test_a_governed_chain_syncs_only_when_asked(served: Served) -> None:
    store = MemoryStore()
    got = await sync_store(store, served.cc.chain.genesis, _sources(served), force=False, after=1)
    assert got is None and ChainStore(store).height() == 0
    got = await sync_store(store, served.cc.chain.genesis, _sources(served), force=True, after=0)
    assert got is not None and got.height == served.top_snapshot
