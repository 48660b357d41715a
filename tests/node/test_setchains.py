"""The node's set chains (`node.setchains`) against the verifier (`contracts.setchain`):
a governed chain through an add, a remove whose scheduling block is a checkpoint height
and a second add, committed into a node store row by row as the node commits it; every
height's set chain proves exactly the set in force there, and forged histories made
from the builder's own output are refused."""

from __future__ import annotations

from dataclasses import replace

import pytest

from contracts import setchain, validators
from contracts.genesis import init_state
from contracts.setchain import SetChain, SetChainRefused, SetState, SetUnproven
from node.chain import ChainApp
from node.chainstore import ChainStore
from node.setchains import SetChains
from node.sigcache import SignatureCache
from qchain.codec import encode_value
from qchain.errors import (
    BadSignature,
    NotFound,
    NotGoverned,
    SetChainUnavailable,
    StorageCorrupt,
)
from qchain.store import schema
from qchain.store.kv import Batch
from qchain.store.memory import MemoryStore
from tests.contracts.setchain_chain import CertifiedChain, certified_chain, schedule_change
from tests.contracts.validators_chain import add_args, governed_chain, remove_args

from .setchain_store import node_store

K = 4
"""Checkpoint heights: every multiple of K."""


@pytest.fixture(scope="module")
def cc() -> CertifiedChain:
    cc = certified_chain(4, delay=2, state_root_interval=K)
    cc.block()
    r1, e1 = schedule_change(cc, add_args(0, cc.chain.address("outsider")), key=0)
    while cc.chain.height < e1 + 1:
        cc.block()
    # the remove's scheduling block (the fourth approval, 5 blocks on) at a checkpoint
    for _ in range(-(cc.chain.height + 5) % K):
        cc.block()
    r2, e2 = schedule_change(cc, remove_args(1), None, approvers=("op0", "op1", "op2", "op3"))
    assert r2 % K == 0
    while cc.chain.height < e2 + 3:
        cc.block()
    r3, e3 = schedule_change(
        cc, add_args(1, cc.chain.address("outsider")), 1, ("op0", "op2", "op3")
    )
    while cc.chain.height < e3 + 5:
        cc.block()
    cc.block([cc.chain.tx("op2", validators.NAME, "update_endpoint", [2, "v2", "", ""])])
    assert cc.scheduling == [r1, r2, r3]
    assert [r.id for r in cc.set_at(cc.chain.height)] == [0, 2, 3, 4, 5]
    return cc


@pytest.fixture(scope="module")
def built(cc: CertifiedChain) -> SetChains:
    return node_store(cc)[2]


def _prove(cc: CertifiedChain, chain: SetChain, height: int) -> setchain.ProvenSet:
    return setchain.prove_set(
        chain, chain_id=cc.chain_id, start=cc.start(), delay=cc.delay, height=height
    )


def _verify_receipt(cc: CertifiedChain, height: int, chain: SetChain) -> int:
    records = setchain.verify_receipt(
        cc.receipt_proof(height), chain, chain_id=cc.chain_id, start=cc.start(), delay=cc.delay
    )
    return len(records)


def test_every_height_proves_the_set_in_force_there(cc: CertifiedChain, built: SetChains) -> None:
    top = cc.chain.height
    for h in range(1, top + 1):
        chain = built.build(h)
        proven = _prove(cc, chain, h)
        assert proven.records == cc.set_at(h), h
        assert proven.header == (None if h <= cc.delay else cc.headers[h])
        # the certificate of h passes under the proven set, and only then is all settled
        setchain.verify_certificate_by_id(cc.certificate(h), cc.chain_id, proven.records)
        assert [x.header.height for x in chain.links] == [
            r for r in cc.scheduling if r <= h - cc.delay
        ]
    # the remove's link is at a checkpoint height: its proof carries the state root
    r2 = cc.scheduling[1]
    chain = built.build(top)
    assert [x.proof.state_root != b"" for x in chain.links] == [False, True, False]
    assert chain.links[1].header.height == r2
    # certified at its own height when the store holds that certificate
    assert all(x.certificate.height == x.header.height for x in chain.links)
    # a tail whose block is a checkpoint height carries its state root too
    at_checkpoint = next(h for h in range(top, 0, -1) if (h - cc.delay) % K == 0)
    tail = built.build(at_checkpoint).tail
    assert tail is not None and tail.proof.state_root != b""


def test_a_receipt_after_all_changes_verifies(cc: CertifiedChain, built: SetChains) -> None:
    top = cc.chain.height
    assert _verify_receipt(cc, top, built.build(top)) == 5
    # never against a set not in force at its height: the genesis set signs 3 of 5
    with pytest.raises(BadSignature, match="3 valid signatures of its set, 4 needed"):
        setchain.verify_receipt(
            replace(cc.receipt_proof(top), certificate=cc.certificate(top, cc.set_at(1))),
            built.build(top),
            chain_id=cc.chain_id,
            start=cc.start(),
            delay=cc.delay,
        )


def test_forged_histories_are_refused(cc: CertifiedChain, built: SetChains) -> None:
    top = cc.chain.height
    chain = built.build(top)
    assert chain.tail is not None
    refused = (SetChainRefused, SetUnproven)
    # a link omitted, wherever it was
    for i in range(len(chain.links)):
        omitted = replace(chain, links=chain.links[:i] + chain.links[i + 1 :])
        with pytest.raises(refused):
            _verify_receipt(cc, top, omitted)
    # links swapped in order
    swapped = replace(chain, links=(chain.links[1], chain.links[0], chain.links[2]))
    with pytest.raises(SetChainRefused, match="its set is not V"):
        _verify_receipt(cc, top, swapped)
    # a set swapped: the remove's link claims the set before it (its own leaf path kept)
    link = chain.links[1]
    genesis_set = validators.ValidatorSet(cc.set_at(1)).encode()
    leaves = tuple(
        replace(leaf, value=genesis_set) if leaf.key == validators.SET_KEY else leaf
        for leaf in link.proof.leaves
    )
    forged = replace(link, proof=replace(link.proof, leaves=leaves))
    with pytest.raises(SetChainRefused, match="lead to different roots"):
        _verify_receipt(cc, top, replace(chain, links=(chain.links[0], forged, chain.links[2])))
    # ... or a whole proof made over the swapped set, with the block's own values else
    state = built.state(link.header.height)
    made = SetState(state.chained, (genesis_set, *state.values[1:]), state.state_root)
    forged = replace(link, proof=made.prove())
    with pytest.raises(SetChainRefused, match="does not lead to the header's app hash"):
        _verify_receipt(cc, top, replace(chain, links=(chain.links[0], forged, chain.links[2])))
    # a proof of another block: block r + 1's real proof under header r
    r = link.header.height
    other = built.proof(r + 1)[1]
    forged = replace(link, proof=other)
    with pytest.raises(SetChainRefused, match="does not lead to the header's app hash"):
        _verify_receipt(cc, top, replace(chain, links=(chain.links[0], forged, chain.links[2])))
    # ... and a tail whose proof is of the block before its header
    t = chain.tail.header.height
    tail = replace(chain.tail, proof=built.proof(t - 1, [validators.NEXT_SEQ_KEY])[1])
    with pytest.raises(SetChainRefused, match="does not lead to the header's app hash"):
        _verify_receipt(cc, top, replace(chain, tail=tail))
    # a tail ending at another block: the chain of the height below, or above
    with pytest.raises(SetChainRefused, match="not at t = max"):
        _verify_receipt(cc, top, built.build(top - 1))
    below = top - 1
    with pytest.raises(SetChainRefused):
        setchain.verify_receipt(
            cc.receipt_proof(top),
            replace(chain, tail=built.build(below).tail),
            chain_id=cc.chain_id,
            start=cc.start(),
            delay=cc.delay,
        )
    # the chain of another height under the receipt of this one
    with pytest.raises(SetChainRefused):
        setchain.verify_receipt(
            cc.receipt_proof(below + 1),
            built.build(below),
            chain_id=cc.chain_id,
            start=cc.start(),
            delay=cc.delay,
        )
    # a chain that ends before the last change: unproven, never the older set
    with pytest.raises(SetUnproven):
        _verify_receipt(cc, top, replace(chain, links=chain.links[:2]))


def test_a_missing_certificate_moves_the_link_up_or_refuses(cc: CertifiedChain) -> None:
    r1 = cc.scheduling[0]
    top = cc.chain.height
    _, _, sc = node_store(cc, uncertified={r1})
    chain = sc.build(top)
    assert chain.links[0].certificate.height == r1 + 1
    assert len(chain.links[0].headers) == 1
    assert _verify_receipt(cc, top, chain) == 5
    # none between r1 and the first activation it schedules: refused by name
    e1 = r1 + cc.delay
    _, _, sc = node_store(cc, uncertified=set(range(r1, e1)))
    with pytest.raises(SetChainUnavailable, match=f"heights {r1}..{e1 - 1}") as e:
        sc.build(top)
    assert e.value.reason == "no-certificate"
    assert sc.build(r1 + cc.delay - 1).links == ()


def test_bounds_and_refusals(cc: CertifiedChain) -> None:
    store, chain, sc = node_store(cc)
    top = cc.chain.height
    with pytest.raises(NotGoverned):
        SetChains(store, chain, None).build(top)
    for h in (0, top + 1):
        with pytest.raises(NotFound):
            sc.build(h)
    # more scheduling blocks than a chain carries links: refused, naming the bound
    b = Batch()
    for r in range(1, setchain.MAX_LINKS + 2):
        b.put(schema.scheduling_key(r), b"")
    store.write(b)
    with pytest.raises(SetChainUnavailable, match=f"at most {setchain.MAX_LINKS} links") as e:
        sc.build(top)
    assert e.value.reason == "too-many-changes"


def test_damaged_rows_are_never_served(cc: CertifiedChain) -> None:
    top = cc.chain.height
    r2 = cc.scheduling[1]
    # the write-set chain value of the remove's block flipped
    store, _, sc = node_store(cc)
    key = schema.set_chained_key(r2)
    raw = store.get(key)
    assert raw is not None and len(raw) == 64
    store.put(key, bytes([raw[0] ^ 1]) + raw[1:])
    with pytest.raises(StorageCorrupt, match="does not lead"):
        sc.build(top)
    # a scheduling block dropped from the index
    store, _, sc = node_store(cc)
    store.delete(schema.scheduling_key(r2))
    with pytest.raises(StorageCorrupt, match="the index misses one"):
        sc.build(top)
    # a block indexed as scheduling that is not one
    store, _, sc = node_store(cc)
    store.put(schema.scheduling_key(r2 + 1), b"")
    with pytest.raises(StorageCorrupt, match="q did not grow"):
        sc.build(top)
    # values that are not the committed ones, or not values at all
    store, _, sc = node_store(cc)
    store.put(schema.set_values_key(r2), encode_value([b"", b"", b"\x00"]))
    with pytest.raises(StorageCorrupt):
        sc.build(top)
    store.put(schema.set_values_key(r2), b"\xc1")
    with pytest.raises(StorageCorrupt, match="set values"):
        sc.build(top)
    # a block committed before the node kept set states: refused by name, not damage
    store, _, sc = node_store(cc)
    store.delete(schema.set_chained_key(top - cc.delay))
    with pytest.raises(SetChainUnavailable, match="holds no set state") as e:
        sc.build(top)
    assert e.value.reason == "not-recorded"


def test_what_a_commit_keeps(cc: CertifiedChain) -> None:
    """Per block its write-set chain value (with the state root at a checkpoint); the
    values at block 1 and where they change; the index of scheduling blocks."""
    store, _, _ = node_store(cc)
    top = cc.chain.height
    chained = dict(store.iterate(schema.SET_STATE_CHAINED))
    assert len(chained) == top
    assert {len(v) for k, v in chained.items()} == {32, 64}
    assert [len(store.get(schema.set_chained_key(h)) or b"") for h in (K, K + 1)] == [64, 32]
    index = [
        schema.read_u64(k[len(schema.SET_STATE_SCHEDULING) :])
        for k, _ in store.iterate(schema.SET_STATE_SCHEDULING)
    ]
    assert index == cc.scheduling
    values = [
        schema.read_u64(k[len(schema.SET_STATE_VALUES) :])
        for k, _ in store.iterate(schema.SET_STATE_VALUES)
    ]
    assert values[0] == 1 and set(cc.scheduling) <= set(values) and len(values) < top // 2


def test_the_node_commit_path_keeps_the_rows_and_a_reopened_store_serves_them() -> None:
    """`ChainApp.commit_batch` (what `Committer` writes, synced, as one batch) carries the
    rows; a store opened again afresh builds set chains from them alone."""
    genesis = governed_chain(4, delay=2, state_root_interval=K).genesis
    store = MemoryStore()
    init = init_state(store, genesis)
    first = Batch()
    for key, value in init.write_set:
        if value is not None:
            first.put(key, value)
    store.write(first)
    chain = ChainStore(store)
    chain.init_meta(genesis.chain_id, genesis.hash)
    app = ChainApp(store, chain, genesis.chain_id, genesis.hash, init.app_hash, SignatureCache(), K)
    parent = genesis.hash
    for h in range(1, 7):
        p = app.build(h, 0, parent, 0, [], now_ms=1_700_000_000_000 + h)
        batch = app.commit_batch(p)
        assert batch_keys(batch) >= {schema.set_chained_key(h)}
        store.write(batch, sync=True)
        app.durable(p.value)
        parent = p.value
    assert store.get(schema.set_values_key(1)) is not None
    assert store.get(schema.set_values_key(2)) is None  # nothing changed the set state
    assert len(store.get(schema.set_chained_key(K)) or b"") == 64
    reopened = SetChains(store, ChainStore(store), 2)
    for h in range(1, 7):
        proven = setchain.prove_set(
            reopened.build(h),
            chain_id=genesis.chain_id,
            start=setchain.genesis_start(
                [
                    validators.Record(v.index, v.public_key, v.sae_id, v.operator)
                    for v in genesis.validators
                ]
            ),
            delay=2,
            height=h,
        )
        assert [r.id for r in proven.records] == [0, 1, 2, 3]
        assert proven.header == (None if h <= 2 else chain.header(h))


def batch_keys(batch: Batch) -> set[bytes]:
    return {key for key, _ in batch.ops()}
