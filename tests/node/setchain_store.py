"""A governed chain (`tests.contracts.setchain_chain`) committed into a node's store as
the node commits it: every block through `ChainStore.commit_batch` with what
`node.setchains.add_to_batch` adds, in one batch, and the certificate of every height
(unless told otherwise), so that `node.setchains.SetChains` builds from real rows."""

from __future__ import annotations

from collections.abc import Container

from node import setchains
from node.chainstore import ChainStore
from node.setchains import SetChains
from qchain.store.memory import MemoryStore
from qchain.types import Block
from tests.contracts.setchain_chain import CertifiedChain


def node_store(
    cc: CertifiedChain, uncertified: Container[int] = ()
) -> tuple[MemoryStore, ChainStore, SetChains]:
    store = MemoryStore()
    chain = ChainStore(store)
    chain.init_meta(cc.chain_id, cc.chain.genesis.hash)
    for h in range(1, cc.chain.height + 1):
        result = cc.results[h]
        block = Block(cc.headers[h], cc.txs[h])
        batch = chain.commit_batch(block, result.receipts, result.write_set)
        assert result.set_state is not None
        setchains.add_to_batch(batch, h, result.set_state, result.write_set)
        store.write(batch, sync=True)
        if h not in uncertified:
            chain.put_certificate(cc.certificate(h))
    return store, chain, SetChains(store, chain, cc.delay)
