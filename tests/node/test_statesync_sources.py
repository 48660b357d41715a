"""The validators state sync asks (`node.peerapis.source_addresses`) follow the set:
on a governed chain through an add and a remove, committed into a node store as the node
commits it, the removed validator is not asked and the added one is, at its directory
record's API address unless the config names another; an empty store asks the genesis
validators; the list is bounded."""

from __future__ import annotations

import pytest

from node import peerapis
from node.peerapis import source_addresses
from node.statesync_run import peer_sources
from qchain.store.memory import MemoryStore
from tests.contracts.setchain_chain import CertifiedChain, certified_chain, schedule_change
from tests.contracts.validators_chain import add_args, remove_args

from .setchain_store import node_store

JOINER_API = "http://127.0.0.1:9104"
CONFIGURED = {i: f"http://127.0.0.1:91{i:02d}" for i in range(4)}


@pytest.fixture(scope="module")
def cc() -> CertifiedChain:
    cc = certified_chain(4, delay=2)
    add = add_args(0, cc.chain.address("outsider"), name="joiner")
    add[-1] = JOINER_API
    _, e1 = schedule_change(cc, add, key=0)
    while cc.chain.height < e1 + 1:
        cc.block()
    _, e2 = schedule_change(cc, remove_args(1), None, approvers=("op0", "op1", "op2", "op3"))
    while cc.chain.height < e2 + 1:
        cc.block()
    assert [r.id for r in cc.set_at(cc.chain.height + 1)] == [0, 2, 3, 4]
    return cc


def test_sources_follow_an_add_and_a_remove(cc: CertifiedChain) -> None:
    store = node_store(cc)[0]
    got = source_addresses(cc.chain.genesis, 0, store, CONFIGURED)
    assert got == {
        2: (cc.chain.genesis.validators[2].name, CONFIGURED[2]),
        3: (cc.chain.genesis.validators[3].name, CONFIGURED[3]),
        4: ("joiner", JOINER_API),
    }
    # the config names the joiner's API: it takes precedence over the directory record
    assert source_addresses(cc.chain.genesis, 2, store, {4: "http://h:1"})[4][1] == "http://h:1"
    # without a config address or a genesis hint, a genesis member has none: not asked
    assert set(source_addresses(cc.chain.genesis, 0, store, {})) == {4}


def test_an_empty_store_asks_the_genesis_validators(cc: CertifiedChain) -> None:
    got = source_addresses(cc.chain.genesis, 3, MemoryStore(), CONFIGURED)
    assert sorted(got) == [0, 1, 2]
    assert [a for _, a in got.values()] == [CONFIGURED[i] for i in (0, 1, 2)]


async def test_sources_are_bounded(cc: CertifiedChain, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peerapis, "MAX_SOURCES", 2)
    store = node_store(cc)[0]
    assert len(source_addresses(cc.chain.genesis, 0, store, CONFIGURED)) == 2
    sources = peer_sources(cc.chain.genesis, 0, store, CONFIGURED)
    try:
        assert [s.name for s in sources] == [v.name for v in cc.chain.genesis.validators[2:4]]
    finally:
        for s in sources:
            await s.client.close()
