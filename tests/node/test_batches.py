"""Dissemination apart from ordering (`node.batches`): the batch codec and its bounds, the
store's bounds per origin, proposals by reference rebuilt to the very block the leader
proposed, a follower fetching a batch it lacks, forged batches refused, and a proposal
naming a batch nobody has dropped after every peer was asked (the engine never sees it).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field, replace

import pytest

from consensus.events import Event, MessageIn
from consensus.messages import Block as CBlock
from consensus.messages import Propose
from consensus.messages import block_hash as consensus_value
from consensus.params import Params
from devnet.network import account_key
from node.alarms import Alarms
from node.batches import INDEX_COST, BatchStore, Dissemination, compact_refs, rebuild
from node.budget import BATCH_FETCHES, BATCH_LOOKUPS, Budgets
from node.wire import (
    BATCH_REQ_MAX,
    BatchRef,
    BatchReq,
    BatchResp,
    Envelope,
    Kind,
    OriginBatch,
    ProposeRefs,
    origin_batches,
)
from qchain.errors import CodecError
from qchain.limits import MAX_MESSAGE, TX_BATCH_MAX_BYTES
from qchain.types import (
    MAX_TX_SIZE,
    Block,
    BlockHeader,
    Transaction,
    new_transaction,
)

CHAIN = "qchain-test"
N = 4


def _txs(count: int, role: str = "partner1", first: int = 0) -> list[Transaction]:
    key = account_key(role, "ed25519")
    return [
        new_transaction(
            key,
            chain_id=CHAIN,
            nonce=first + i,
            contract="notary",
            method="anchor",
            args=[bytes(32), "sha256", f"t{first + i}", "test", b""],
        )
        for i in range(count)
    ]


def _propose(txs: list[Transaction], height: int = 1, rnd: int = 0, proposer: int = 0) -> Propose:
    header = BlockHeader(
        CHAIN, height, rnd, 1000, bytes(32), proposer, bytes(32), bytes(32), bytes(32)
    )
    body = Block(header, tuple(txs)).encode()
    return Propose(CHAIN, height, rnd, CBlock(height, bytes(32), rnd, proposer, body))


@dataclass
class _Mode:
    mode: str | None = None


@dataclass
class _Links:
    """Stands in for `node.links.Links`: records what is sent to whom."""

    me: int
    n: int = N
    byzantine: _Mode = field(default_factory=_Mode)
    sent: list[tuple[int, Envelope]] = field(default_factory=list)

    def others(self) -> list[int]:
        return [j for j in range(self.n) if j != self.me]

    def knows(self, j: int) -> bool:
        return 0 <= j < self.n

    def send(self, to: int, env: Envelope) -> None:
        self.sent.append((to, env))

    def send_all(self, env: Envelope, to: list[int], lazy_s: float = 0.0) -> None:
        for j in to:
            if j != self.me:
                self.sent.append((j, env))

    def take(self, kind: Kind) -> list[tuple[int, Envelope]]:
        out = [(j, e) for j, e in self.sent if e.kind is kind]
        self.sent = [(j, e) for j, e in self.sent if e.kind is not kind]
        return out


class _NoBlocks:
    """A chain application that built or validated nothing: blocks are decoded. Keeps
    the chain blocks offered for rebuilt proposals."""

    def __init__(self) -> None:
        self.offered: dict[bytes, Block] = {}

    def block_of(self, cblock: CBlock) -> Block | None:
        return None

    def offer(self, cblock: CBlock, block: Block) -> None:
        self.offered[consensus_value(cblock)] = block


def _node(me: int, fed: list[Event] | None = None) -> tuple[Dissemination, _Links]:
    links = _Links(me)
    sink: list[Event] = [] if fed is None else fed
    params = Params(n=N, chain_id=CHAIN)
    d = Dissemination(params, links, Budgets(), Alarms(), sink.append, _NoBlocks())  # type: ignore[arg-type]
    return d, links


# --- codec and bounds --------------------------------------------------------------------


def test_a_batch_round_trips_and_its_digest_binds_origin_sequence_and_transactions() -> None:
    raws = tuple(tx.encoded for tx in _txs(3))
    b = OriginBatch(2, 7, raws)
    again = OriginBatch.decode(b.encode())
    assert again == b and again.digest == b.digest
    assert OriginBatch(1, 7, raws).digest != b.digest
    assert OriginBatch(2, 8, raws).digest != b.digest
    assert OriginBatch(2, 7, raws[:2]).digest != b.digest
    assert OriginBatch(2, 7, raws[::-1]).digest != b.digest


def test_the_batch_codec_refuses_what_is_out_of_bounds() -> None:
    with pytest.raises(CodecError):
        OriginBatch.decode(OriginBatch(0, 0, (b"x",)).encode()[:-1])
    with pytest.raises(CodecError):
        OriginBatch(0, 0, ()).encode()
    with pytest.raises(CodecError):
        BatchReq(CHAIN, tuple(bytes([i]) * 32 for i in range(BATCH_REQ_MAX + 1))).encode()
    with pytest.raises(CodecError):
        OriginBatch(2**16, 0, (b"x",)).encode()


@pytest.mark.parametrize("cls", [OriginBatch, BatchReq, BatchResp, ProposeRefs])
async def test_fuzzed_batch_messages_raise_only_codec_errors(cls: type) -> None:
    """Decoding raises nothing but `CodecError`; a proposal by reference that decodes
    is rebuilt, refused or kept waiting, and never raises."""
    d, _links = _node(0)
    follower, _ = _node(1)
    samples = [
        OriginBatch(1, 3, tuple(tx.encoded for tx in _txs(2))).encode(),
        BatchReq(CHAIN, (bytes(32), bytes([1]) * 32)).encode(),
        BatchResp(CHAIN, (OriginBatch(1, 0, (b"tx",)),)).encode(),
    ]
    batch = OriginBatch(0, 0, tuple(tx.encoded for tx in _txs(2)))
    d.store.add(batch)
    follower.store.add(batch)
    env = d.compact(_propose(_txs(2)))
    assert env is not None
    samples.append(env.payload)
    rng = random.Random(7)
    for _ in range(3000):
        data = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(3)
            if op == 0 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif op == 1 and data:
                del data[rng.randrange(len(data)) :]
            else:
                data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        try:
            m = cls.decode(bytes(data))
        except CodecError:
            continue
        if isinstance(m, ProposeRefs):
            follower.proposal(0, m)
    follower.cancel_timers()


def test_a_mempool_of_batches_is_cut_to_fit_a_message() -> None:
    raws = [bytes([i % 251]) * 60_000 for i in range(60)]
    batches = origin_batches(3, 10, raws)
    assert len(batches) > 1
    assert [b.seq for b in batches] == list(range(10, 10 + len(batches)))
    assert all(b.size <= TX_BATCH_MAX_BYTES for b in batches)
    assert [tx for b in batches for tx in b.txs] == raws


def test_a_hostile_origin_fills_only_its_own_allowance() -> None:
    store = BatchStore(N, max_batches=16, max_bytes=64 * 1024)
    honest = OriginBatch(1, 0, (b"honest",))
    assert store.add(honest)
    for seq in range(1000):
        store.add(OriginBatch(2, seq, (seq.to_bytes(4, "big") * 1000,)))
        assert store.count_of(2) <= 16
        assert store.bytes_of(2) <= 64 * 1024
    assert store.get(honest.digest) == honest
    assert store.evicted > 0
    small = BatchStore(N, max_batches=1000, max_bytes=64 * 1024)
    for seq in range(200):
        small.add(OriginBatch(2, seq, (bytes(1000),) * 2))
    assert small.bytes_of(2) <= 64 * 1024 and small.count_of(2) < 200


def test_tiny_transactions_cannot_swell_the_index_past_the_allowance() -> None:
    store = BatchStore(N, max_batches=1024, max_bytes=1 << 20)
    for seq in range(100):
        txs = tuple((seq * 1000 + i).to_bytes(4, "big") for i in range(1000))
        store.add(OriginBatch(3, seq, txs))
        assert store.bytes_of(3) <= 1 << 20
    assert 0 < len(store._where) <= (1 << 20) // INDEX_COST


def test_the_store_refuses_strangers_oversized_batches_and_forgets_evicted_places() -> None:
    store = BatchStore(N, max_batches=2, max_bytes=1 << 20)
    assert not store.add(OriginBatch(N, 0, (b"x",))), "origin is no validator"
    assert not store.add(OriginBatch(1, 0, (bytes(1 << 20),))), "larger than the allowance"
    txs = _txs(3)
    first = OriginBatch(1, 0, (txs[0].encoded,))
    assert store.add(first) and not store.add(first)
    assert store.locate(txs[0].hash) == (first.digest, 0)
    store.add(OriginBatch(1, 1, (txs[1].encoded,)))
    store.add(OriginBatch(1, 2, (txs[2].encoded,)))
    assert store.get(first.digest) is None
    assert store.locate(txs[0].hash) is None
    assert store.locate(txs[2].hash) is not None


# --- proposals by reference --------------------------------------------------------------


def _share(batch: OriginBatch, *nodes: Dissemination) -> None:
    for d in nodes:
        d.store.add(batch)


async def test_a_follower_with_the_batches_rebuilds_the_very_proposal() -> None:
    leader, leader_links = _node(0)
    fed: list[Event] = []
    follower, _ = _node(1, fed)
    a, b = _txs(5), _txs(4, "partner2")
    _share(OriginBatch(2, 0, tuple(tx.encoded for tx in a)), leader, follower)
    _share(OriginBatch(3, 0, tuple(tx.encoded for tx in b)), leader, follower)
    msg = _propose([b[1], a[0], a[3], b[0]])
    env = leader.compact(msg)
    assert env is not None and env.kind is Kind.PROPOSE_REFS
    assert len(env.payload) < len(msg.block.body) // 3
    assert not any(tx.signature in env.payload for tx in a + b), "no transaction's bytes"
    assert leader_links.sent == [], "every transaction was in a batch already"
    follower.proposal(0, ProposeRefs.decode(env.payload))
    (ev,) = fed
    assert isinstance(ev, MessageIn) and ev.sender == 0
    assert ev.msg == msg
    assert isinstance(ev.msg, Propose)
    assert consensus_value(ev.msg.block) == consensus_value(msg.block)


def _offered(
    known: dict[bytes, Transaction], batch_txs: list[bytes]
) -> tuple[Propose, Block | None]:
    """A follower holding one batch of batch_txs and `known` decoded transactions (its
    pool) gets a proposal by reference to the whole batch (as any leader may send, a
    Byzantine one too): the proposal rebuilt and the block offered for it."""
    app = _NoBlocks()
    fed: list[Event] = []
    params = Params(n=N, chain_id=CHAIN)
    follower = Dissemination(params, _Links(1), Budgets(), Alarms(), fed.append, app, known.get)  # type: ignore[arg-type]
    batch = OriginBatch(2, 0, tuple(batch_txs))
    _share(batch, follower)
    header = BlockHeader(CHAIN, 1, 0, 1000, bytes(32), 0, bytes(32), bytes(32), bytes(32))
    refs = b"".join((0).to_bytes(2, "big") + i.to_bytes(2, "big") for i in range(len(batch_txs)))
    m = ProposeRefs(
        CHAIN, 1, 0, bytes(32), 0, 0, header.encode(), (BatchRef(2, batch.digest),), refs
    )
    follower.proposal(0, m)
    (ev,) = fed
    assert isinstance(ev, MessageIn) and isinstance(ev.msg, Propose)
    return ev.msg, app.offered.get(consensus_value(ev.msg.block))


async def test_a_rebuilt_proposal_offers_the_block_its_body_decodes_to() -> None:
    """A follower's proposal by reference comes with its chain block, built from the
    transactions its pool decoded already, equal to decoding the body, so validation
    does not decode every transaction a second time."""
    txs = _txs(6)
    pooled = {tx.hash: tx for tx in txs[:4]}
    msg, block = _offered(pooled, [tx.encoded for tx in txs])
    assert block is not None
    assert block == Block.decode(msg.block.body)
    assert block.encode() == msg.block.body
    assert all(block.txs[i] is txs[i] for i in range(4)), "the pool's own objects"


async def test_no_block_is_offered_for_a_body_that_does_not_decode() -> None:
    """What does not decode is left to validation, which refuses it for what it is: a
    transaction that is not canonical, or a pool entry whose bytes differ."""
    txs = _txs(3)
    not_canonical = b"\xd9\x01a"  # "a" as str8: msgpack that is not the canonical form
    msg, block = _offered({}, [txs[0].encoded, not_canonical])
    assert block is None
    with pytest.raises(CodecError):
        Block.decode(msg.block.body)
    huge = new_transaction(
        account_key("partner1", "ed25519"),
        chain_id=CHAIN,
        nonce=9,
        contract="notary",
        method="anchor",
        args=[bytes(MAX_TX_SIZE)],
    )
    msg, block = _offered({}, [txs[0].encoded, huge.encoded])
    assert block is None, "larger than a lone transaction may be: left to validation"
    assert Block.decode(msg.block.body).txs[1] == huge
    other = _txs(1, "partner2")[0]
    forged = {txs[0].hash: other}
    msg, block = _offered(forged, [tx.encoded for tx in txs])
    assert block is not None and block.txs[0] == txs[0] and block.txs[0] is not other


async def test_transactions_in_no_batch_go_first_in_a_batch_of_the_leader() -> None:
    leader, links = _node(0)
    fed: list[Event] = []
    follower, _ = _node(2, fed)
    msg = _propose(_txs(3))
    env = leader.compact(msg)
    assert env is not None
    sent = links.take(Kind.BATCH)
    assert sorted(j for j, _ in sent) == [1, 2, 3]
    batch = OriginBatch.decode(sent[0][1].payload)
    assert batch.origin == 0
    assert follower.received(0, batch)
    follower.proposal(0, ProposeRefs.decode(env.payload))
    assert [e.msg for e in fed if isinstance(e, MessageIn)] == [msg]


async def test_a_follower_fetches_a_missing_batch_from_the_leader() -> None:
    leader, leader_links = _node(0)
    fed: list[Event] = []
    follower, links = _node(1, fed)
    txs = _txs(4)
    batch = OriginBatch(3, 0, tuple(tx.encoded for tx in txs))
    leader.store.add(batch)
    msg = _propose(txs)
    env = leader.compact(msg)
    assert env is not None
    follower.proposal(0, ProposeRefs.decode(env.payload))
    assert fed == []
    await asyncio.sleep(0)
    ((to, req_env),) = links.take(Kind.BATCH_REQ)
    assert to == 0, "the leader is asked first"
    leader.serve(1, BatchReq.decode(req_env.payload))
    ((to, resp_env),) = leader_links.take(Kind.BATCH_RESP)
    assert to == 1
    follower.answered(0, BatchResp.decode(resp_env.payload))
    assert [e.msg for e in fed if isinstance(e, MessageIn)] == [msg]
    assert follower.fetched == 1
    follower.cancel_timers()


async def test_a_batch_arriving_in_the_proposal_frame_needs_no_fetch() -> None:
    fed: list[Event] = []
    follower, links = _node(1, fed)
    leader, _ = _node(0)
    txs = _txs(2)
    batch = OriginBatch(0, 0, tuple(tx.encoded for tx in txs))
    leader.store.add(batch)
    env = leader.compact(_propose(txs))
    assert env is not None
    follower.proposal(0, ProposeRefs.decode(env.payload))
    follower.received(0, batch)
    await asyncio.sleep(0)
    assert links.take(Kind.BATCH_REQ) == []
    assert len(fed) == 1


async def test_a_forged_batch_is_refused() -> None:
    fed: list[Event] = []
    follower, _ = _node(1, fed)
    leader, _ = _node(0)
    txs = _txs(3)
    genuine = OriginBatch(2, 0, tuple(tx.encoded for tx in txs))
    leader.store.add(genuine)
    env = leader.compact(_propose(txs))
    assert env is not None
    follower.proposal(0, ProposeRefs.decode(env.payload))
    await asyncio.sleep(0)
    forged = OriginBatch(2, 0, tuple(tx.encoded for tx in _txs(3, "auditor")))
    follower.answered(0, BatchResp(CHAIN, (forged,)))
    assert follower.store.get(forged.digest) is None
    assert follower.refused == 1 and fed == []
    assert not follower.received(3, OriginBatch(2, 0, genuine.txs)), "not from its origin"
    assert follower.store.get(genuine.digest) is None and fed == []
    follower.answered(0, BatchResp(CHAIN, (genuine,)))
    assert len(fed) == 1
    follower.cancel_timers()


def _naming_an_unknown_batch() -> ProposeRefs:
    """Leader 0's proposal of two transactions (its batch 0) that also names a batch no
    one has (the Byzantine mode `unknown-batch`)."""
    leader, leader_links = _node(0)
    txs = _txs(2)
    leader.store.add(OriginBatch(0, 0, tuple(tx.encoded for tx in txs)))
    leader_links.byzantine.mode = "unknown-batch"
    env = leader.compact(_propose(txs))
    assert env is not None
    return ProposeRefs.decode(env.payload)


async def test_a_batch_nobody_has_is_asked_of_every_peer_once_then_the_proposal_goes() -> None:
    fed: list[Event] = []
    follower, links = _node(1, fed)
    follower.received(0, OriginBatch(0, 0, tuple(tx.encoded for tx in _txs(2))))
    follower.proposal(0, _naming_an_unknown_batch())
    await asyncio.sleep(0)
    asked = [j for j, _ in links.take(Kind.BATCH_REQ)]
    for _ in range(N):
        follower._ask()
        asked += [j for j, _ in links.take(Kind.BATCH_REQ)]
    assert asked == [0, 2, 3], "the leader (also the origin) first, then each other peer"
    assert follower.given_up == 1
    assert fed == [], "the engine never saw the proposal: its round timer moves on"
    assert follower._timer is None


async def test_giving_up_a_proposal_of_two_unknown_batches_drops_both_fetches_at_once() -> None:
    """Both batches run out of peers in one round of asking: giving up the first drops the
    proposal and with it the second's fetch, which the same round must then skip (it
    raised KeyError in the retry timer, seen in a node's log during a state-sync run)."""
    fed: list[Event] = []
    follower, _ = _node(1, fed)
    m = _naming_an_unknown_batch()
    m = replace(m, batches=(*m.batches, BatchRef(0, bytes(range(32)))))
    follower.received(0, OriginBatch(0, 0, tuple(tx.encoded for tx in _txs(2))))
    follower.proposal(0, m)
    await asyncio.sleep(0)
    for _ in range(N + 1):
        follower._ask()
    assert follower.given_up == 1
    assert follower._fetching == {}
    assert fed == []
    assert follower._timer is None


async def test_a_place_outside_the_batches_is_a_bad_message() -> None:
    fed: list[Event] = []
    follower, _ = _node(1, fed)
    batch = OriginBatch(2, 0, tuple(tx.encoded for tx in _txs(2)))
    follower.store.add(batch)
    header = _propose([]).block.body[1:-1]
    for refs in (b"\x00\x00\x00\x02", b"\x00\x01\x00\x00", b"\x00\x00\x00"):
        m = ProposeRefs(CHAIN, 1, 0, bytes(32), 0, 0, header, (BatchRef(2, batch.digest),), refs)
        follower.proposal(2, m)
    assert fed == []
    assert follower.alarms.counts["bad-message"] == 3
    with pytest.raises(KeyError):
        rebuild(
            ProposeRefs(CHAIN, 1, 0, bytes(32), 0, 0, header, (BatchRef(2, bytes(32)),), b""),
            follower.store,
        )


async def test_serving_batches_is_bounded_by_budget_and_message_size() -> None:
    server, links = _node(0)
    digests = []
    for seq in range(8):
        b = OriginBatch(0, seq, (bytes([seq]) * (TX_BATCH_MAX_BYTES - 64),))
        server.store.add(b)
        digests.append(b.digest)
    server.serve(1, BatchReq(CHAIN, tuple(digests)))
    ((_, env),) = links.take(Kind.BATCH_RESP)
    assert len(env.payload) <= MAX_MESSAGE
    assert 1 <= len(BatchResp.decode(env.payload).batches) < 8
    for _ in range(20):
        server.serve(2, BatchReq(CHAIN, tuple(bytes([i]) * 32 for i in range(BATCH_REQ_MAX))))
    assert server.budgets.refused[(2, BATCH_LOOKUPS)] > 0


def test_refs_name_each_batch_once_in_first_use_order() -> None:
    store = BatchStore(N)
    a, b = _txs(3), _txs(3, "partner2")
    ba = OriginBatch(1, 0, tuple(tx.encoded for tx in a))
    bb = OriginBatch(2, 0, tuple(tx.encoded for tx in b))
    store.add(ba)
    store.add(bb)
    refs, places, missing = compact_refs(store, [b[2], a[0], b[0], *_txs(1, "auditor")])
    assert refs == [BatchRef(2, bb.digest), BatchRef(1, ba.digest)]
    assert places == bytes([0, 0, 0, 2, 0, 1, 0, 0, 0, 0, 0, 0])
    assert len(missing) == 1


async def test_a_peer_naming_unknown_batches_gets_one_waiting_proposal_and_its_budget() -> None:
    """A Byzantine peer sends proposals naming 64 batches nobody has, again and again:
    only its latest waits, the fetches follow only that one, and its fetch budget runs
    out; another peer's proposal still waits and is fetched."""
    fed: list[Event] = []
    follower, links = _node(1, fed)
    header = _propose([]).block.body[1:-1]
    for k in range(40):
        refs = tuple(BatchRef(2, bytes([k, i]) * 16) for i in range(64))
        follower.proposal(2, ProposeRefs(CHAIN, 1, k, bytes(32), k, 2, header, refs, b""))
        assert len(follower._fetching) <= 64
        assert len(follower._waiting) == 1
    assert follower.refused > 0
    assert follower.budgets.refused[(2, BATCH_FETCHES)] > 0
    honest = ProposeRefs(CHAIN, 1, 0, bytes(32), 0, 0, header, (BatchRef(0, bytes(32)),), b"")
    follower.proposal(0, honest)
    assert set(follower._waiting) == {0, 2}
    await asyncio.sleep(0)
    assert {j for j, _ in links.take(Kind.BATCH_REQ)} == {0, 2}
    follower.committed(1)
    assert follower._waiting == {} and follower._fetching == {}
    assert fed == []
    follower.cancel_timers()


def test_a_later_copy_of_a_transaction_does_not_move_its_place() -> None:
    """The batch every peer got stays the place a proposal names; a copy sent to one new
    leader is named only for a transaction in no other kept batch."""
    store = BatchStore(N, max_batches=2, max_bytes=1 << 20)
    tx, other = _txs(2)
    first = OriginBatch(1, 0, (tx.encoded,))
    copy = OriginBatch(1, 1, (other.encoded, tx.encoded))
    store.add(first)
    store.add(copy)
    assert store.locate(tx.hash) == (first.digest, 0)
    assert store.locate(other.hash) == (copy.digest, 0)
    store.add(OriginBatch(1, 2, (b"x",)))
    assert store.get(first.digest) is None
    assert store.locate(tx.hash) is None, "evicted with the batch it named"
