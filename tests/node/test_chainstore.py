"""The committed chain's store: headers are read without decoding whole blocks."""

from __future__ import annotations

from devnet.network import account_key
from node.chainstore import ChainStore
from qchain.store import MemoryStore, schema
from qchain.types import Block, BlockHeader, Receipt, new_transaction

CHAIN = "chainstore-test"


def _block(height: int, parent: bytes, txs: int) -> tuple[Block, list[Receipt]]:
    key = account_key("partner1", "ed25519")
    body = tuple(
        new_transaction(
            key,
            chain_id=CHAIN,
            nonce=height * 100 + i,
            contract="notary",
            method="anchor",
            args=[bytes([height, i]) * 16, "sha256", "t", "c", b""],
        )
        for i in range(txs)
    )
    header = BlockHeader(CHAIN, height, 0, height, parent, 0, b"\1" * 32, b"\2" * 32, b"\3" * 32)
    receipts = [Receipt(t.hash, height, i, True, "", "", None) for i, t in enumerate(body)]
    return Block(header, body), receipts


def test_headers_and_hashes_match_the_stored_blocks() -> None:
    store = MemoryStore()
    chain = ChainStore(store)
    chain.init_meta(CHAIN, b"\0" * 32)
    parent = b"\0" * 32
    blocks = []
    for h in (1, 2, 3):
        block, receipts = _block(h, parent, txs=h * 3)
        store.write(chain.commit_batch(block, receipts, ()), sync=True)
        blocks.append(block)
        parent = block.hash
    for block in blocks:
        assert chain.header(block.height) == block.header
        assert chain.block_hash(block.height) == block.hash
        stored = chain.block(block.height)
        assert stored is not None and stored == block and stored.encode() == block.encode()
    assert chain.header(4) is None and chain.block_hash(4) is None
    # A store written before headers were kept apart: the header comes from the block.
    store.delete(schema.header_key(2))
    fresh = ChainStore(store)
    assert fresh.header(2) == blocks[1].header
    assert fresh.block_hash(2) == blocks[1].hash
