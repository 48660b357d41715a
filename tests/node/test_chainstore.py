"""The committed chain's store: headers are read without decoding whole blocks, and a
damaged block, header, receipt, certificate or index value is never served: it raises
`StorageCorrupt` and tells the store's listener."""

from __future__ import annotations

import pytest

from consensus.messages import Block as CBlock
from consensus.messages import block_hash as consensus_value
from devnet.network import account_key
from node.chain import ChainApp
from node.chainstore import ChainStore, TxLocation, _location
from node.sigcache import SignatureCache
from qchain.errors import ConfigError, StorageCorrupt, StorageError, StoreMismatch
from qchain.keys import dev_key
from qchain.store import KVStore, MemoryStore, schema
from qchain.store.testing import AlteringStore, flip_byte
from qchain.types import (
    Block,
    BlockHeader,
    CommitCertificate,
    CommitSignature,
    Receipt,
    ValidatorKey,
    commit_sign_digest,
    new_transaction,
    receipts_root,
    tx_root,
    verify_certificate,
)

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
    receipts = [Receipt(t.hash, height, i, True, "", "", None) for i, t in enumerate(body)]
    header = BlockHeader(
        CHAIN, height, 0, height, parent, 0, tx_root(body), receipts_root(receipts), b"\3" * 32
    )
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


def test_a_store_of_another_chain_is_a_config_error_not_damage() -> None:
    store = MemoryStore()
    ChainStore(store).init_meta(CHAIN, b"\0" * 32)
    ChainStore(store).init_meta(CHAIN, b"\0" * 32)
    with pytest.raises(StoreMismatch) as other_chain:
        ChainStore(store).init_meta("another-chain", b"\0" * 32)
    assert isinstance(other_chain.value, ConfigError)
    assert not isinstance(other_chain.value, StorageError)
    assert (other_chain.value.what, other_chain.value.field) == ("chain id", "node.data_dir")
    assert other_chain.value.stored == repr(CHAIN)
    with pytest.raises(StoreMismatch) as other_genesis:
        ChainStore(store).init_meta(CHAIN, b"\1" * 32)
    assert other_genesis.value.what == "genesis hash"
    assert other_genesis.value.fields()["expected"] == (b"\1" * 32).hex()


# --- damaged values are never served ----------------------------------------------------

VALIDATOR_KEYS = [dev_key(CHAIN, f"validator-{i}") for i in range(4)]
VALIDATORS = [ValidatorKey(k.scheme.value, k.public_key) for k in VALIDATOR_KEYS]


def _certificate(block: Block) -> CommitCertificate:
    digest = commit_sign_digest(CHAIN, block.height, block.hash)
    sigs = tuple(CommitSignature(i, VALIDATOR_KEYS[i].sign(digest)) for i in range(3))
    return CommitCertificate(block.height, block.hash, sigs)


def _committed_chain(
    store: KVStore, consensus_values: bool = False
) -> list[tuple[Block, list[Receipt]]]:
    """Three committed blocks with receipts and certificates, written through store; with
    consensus_values, indexed by their consensus values as a validator's are."""
    chain = ChainStore(store)
    chain.init_meta(CHAIN, b"\0" * 32)
    parent = b"\0" * 32
    value = b"\0" * 32
    out = []
    for h in (1, 2, 3):
        block, receipts = _block(h, parent, txs=3)
        batch = chain.commit_batch(block, receipts, ())
        if consensus_values:
            value = consensus_value(CBlock(h, value, 0, 0, block.encode()))
            batch.put(schema.consensus_value_key(h), value)
            batch.put(schema.block_hash_key(value), schema.u64(h))
        store.write(batch, sync=True)
        chain.put_certificate(_certificate(block))
        out.append((block, receipts))
        parent = block.hash
    return out


def _check(cert: CommitCertificate) -> None:
    verify_certificate(cert, CHAIN, VALIDATORS)


def _flipped_chain(
    prefix: bytes, index: int, consensus_values: bool = False
) -> tuple[ChainStore, list[StorageCorrupt], list[tuple[Block, list[Receipt]]]]:
    """`_committed_chain` in a fresh store, a chain store reading it through a flip of byte
    `index` of every value under prefix, the list its corruption listener fills, and the
    blocks as written."""
    inner = MemoryStore()
    blocks = _committed_chain(inner, consensus_values)
    store = AlteringStore(inner, lambda k: k.startswith(prefix), lambda v: flip_byte(v, index))
    seen: list[StorageCorrupt] = []
    store.on_corrupt = seen.append
    return ChainStore(store, cert_check=_check), seen, blocks


@pytest.mark.parametrize("consensus_values", [False, True])
def test_undamaged_chain_reads_back_verified(consensus_values: bool) -> None:
    chain, seen, blocks = _flipped_chain(b"\xff", 0, consensus_values)
    for block, receipts in blocks:
        assert chain.block(block.height) == block
        cert = chain.certificate(block.height)
        assert cert is not None and cert.block_hash == block.hash
        for r, tx in zip(receipts, block.txs, strict=True):
            assert chain.receipt(r.tx_hash) == r
            assert chain.transaction(tx.hash) == tx
            proof = chain.receipt_proof(r.tx_hash)
            assert proof is not None
            proof.verify(CHAIN, VALIDATORS)
    assert [b.height for b in chain.blocks(1, 10)] == [1, 2, 3]
    assert seen == []


@pytest.mark.parametrize("consensus_values", [False, True])
@pytest.mark.parametrize(
    ("prefix", "index"),
    [
        (schema.BLOCK, -1),  # the last transaction's signature: the body is not the decided one
        (schema.BLOCK, 40),  # inside the header the block carries
        (schema.HEADER, -1),  # app_hash: the header's hash is no longer indexed
        (schema.HEADER, 0),  # does not decode
        (schema.BLOCK_HASH, -1),  # the hash index names another height
    ],
)
def test_damaged_block_or_header_raises_store_corrupt(
    prefix: bytes, index: int, consensus_values: bool
) -> None:
    chain, seen, blocks = _flipped_chain(prefix, index, consensus_values)
    with pytest.raises(StorageCorrupt):
        chain.block(2)
    with pytest.raises(StorageCorrupt):
        list(chain.blocks(1, 10))
    assert seen
    assert blocks


def test_damaged_consensus_value_raises_store_corrupt() -> None:
    chain, seen, _ = _flipped_chain(schema.CONSENSUS_VALUE, -1, consensus_values=True)
    with pytest.raises(StorageCorrupt):
        chain.block(2)
    assert seen


@pytest.mark.parametrize("index", [10, -1])
def test_damaged_receipt_raises_store_corrupt(index: int) -> None:
    chain, seen, blocks = _flipped_chain(schema.RECEIPT, index)
    tx_hash = blocks[1][1][1].tx_hash
    with pytest.raises(StorageCorrupt):
        chain.receipt(tx_hash)
    with pytest.raises(StorageCorrupt):
        chain.receipt_proof(tx_hash)
    with pytest.raises(StorageCorrupt):
        chain.receipts(2)
    assert seen


@pytest.mark.parametrize(
    "index",
    [
        6,  # inside the block hash: names another block
        -1,  # inside the last signature: the quorum no longer verifies
    ],
)
def test_damaged_certificate_raises_store_corrupt(index: int) -> None:
    chain, seen, blocks = _flipped_chain(schema.CERT, index)
    with pytest.raises(StorageCorrupt):
        chain.certificate(2)
    with pytest.raises(StorageCorrupt):
        chain.receipt_proof(blocks[1][1][0].tx_hash)
    assert seen


def test_damaged_transaction_index_raises_store_corrupt() -> None:
    chain, _, blocks = _flipped_chain(schema.TX, -1)
    tx_hash = blocks[1][1][0].tx_hash
    with pytest.raises(StorageCorrupt):
        chain.receipt_proof(tx_hash)
    with pytest.raises(StorageCorrupt):
        chain.receipt(tx_hash)
    with pytest.raises(StorageCorrupt):
        chain.transaction(tx_hash)


def test_body_served_to_peers_is_checked_against_the_decided_value() -> None:
    inner = MemoryStore()
    _committed_chain(inner, consensus_values=True)
    value = inner.get(schema.consensus_value_key(2))
    assert value is not None

    def app_over(store: KVStore) -> ChainApp:
        chain = ChainStore(store)
        return ChainApp(store, chain, CHAIN, b"\0" * 32, b"\0" * 32, SignatureCache())

    cblock = app_over(inner).committed_cblock(value)
    assert cblock is not None and consensus_value(cblock) == value
    assert app_over(inner).verify_recent(10) == 1
    damaged = AlteringStore(inner, lambda k: k.startswith(schema.BLOCK))
    with pytest.raises(StorageCorrupt):
        app_over(damaged).committed_cblock(value)
    with pytest.raises(StorageCorrupt):
        app_over(damaged).verify_recent(10)


@pytest.mark.parametrize(
    ("height", "index"), [(0, 0), (1, 127), (128, 255), (2**16, 2**16), (2**64 - 1, 2**32 - 1)]
)
def test_the_index_rows_a_commit_writes_are_transaction_locations(height: int, index: int) -> None:
    assert _location(height, index) == TxLocation(height, index).encode()
    assert TxLocation.decode(_location(height, index)) == TxLocation(height, index)


@pytest.mark.parametrize(("height", "index"), [(-1, 0), (2**64, 0), (1, 2**32), (1, -1)])
def test_a_location_out_of_range_is_not_written(height: int, index: int) -> None:
    with pytest.raises(StorageError):
        _location(height, index)
