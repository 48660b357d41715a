"""The committed chain as stored in a `KVStore`: blocks, receipts, the transaction index
and commit certificates, read and written through the schema module only.

A commit is one `Batch` (built by `commit_batch`) that the caller writes with `sync=True`
together with the block's state writes and the consensus record changes, so that after a
crash the chain, the state and the consensus record always agree.

Reads are checked against the hashes that commit to them, so damaged bytes that no
checksum below caught (see `qchain.store.leveldb`) are never served: a header must be
indexed under its own hash at its height; a block must carry that header, and its bytes
must hash to the consensus value decided at its height (a validator's store indexes it)
or, without one, its transactions must match the `tx_root`; a block stored by reference
(its `b` row is its consensus value, the body is the pending record the engine wrote when
it voted, so a committed body is written once) must find that record and hash to it; a
receipt must be a leaf of the header's `receipts_root`; a certificate must name the
header's hash and, with a `cert_check`, carry a quorum of valid signatures. A mismatch, or
stored bytes that do not decode, raise `StorageCorrupt` through `KVStore.corrupt`.
Verified headers, certificates and receipt leaf hashes of recent heights are cached
(committed data never changes), so a hot read costs one hash or none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import msgpack

from consensus.messages import Block as CBlock
from consensus.messages import block_hash as consensus_value
from consensus.messages import stored_block_height
from qchain.codec import U32, U64, Struct
from qchain.errors import CodecError, QChainError, StorageError, StoreMismatch
from qchain.merkle import leaf_hash, proof_of_leaf_hashes, root_of_leaf_hashes
from qchain.store import schema
from qchain.store.kv import Batch, KVStore
from qchain.types import (
    BLOCK_LIMITS,
    Block,
    BlockHeader,
    CommitCertificate,
    Receipt,
    ReceiptProof,
    Transaction,
)

HEADER_CACHE = 1024
RECEIPT_LEAVES_CACHE = 64
CERT_CACHE = 1024

_T = TypeVar("_T")


@dataclass(frozen=True)
class TxLocation(Struct):
    height: U64
    index: U32


_pack_plain = msgpack.Packer(use_bin_type=True).pack


def _location(height: int, index: int) -> bytes:
    """`TxLocation(height, index).encode()` without the field checks, for the index rows a
    commit writes (thousands per block): a height and an index in range by construction
    (tests/node/test_chainstore.py checks the equality)."""
    if not (0 <= height < 2**64 and 0 <= index < 2**32):
        raise StorageError(f"transaction location ({height}, {index}) out of range")
    out: bytes = _pack_plain([height, index])
    return out


class ChainStore:
    """Typed access to the committed chain in a store."""

    def __init__(
        self, store: KVStore, cert_check: Callable[[CommitCertificate], None] | None = None
    ) -> None:
        """cert_check, if given, raises a `QChainError` for a certificate whose
        signatures do not verify; it runs once per height read."""
        self.store = store
        self.cert_check = cert_check
        self._certs: dict[int, CommitCertificate] = {}
        """Recently read or written, verified certificates."""
        self._headers: dict[int, BlockHeader] = {}
        """Recently read, verified headers (a committed header never changes)."""
        self._leaves: dict[int, list[bytes]] = {}
        """Verified receipt leaf hashes of recently read heights."""

    # --- metadata --------------------------------------------------------------------

    def init_meta(self, chain_id: str, genesis_hash: bytes) -> None:
        """Stamp a new store, or check that an existing one belongs to this chain."""
        version = self.store.get(schema.META_SCHEMA_VERSION)
        if version is None:
            b = Batch()
            b.put(schema.META_SCHEMA_VERSION, schema.u64(schema.SCHEMA_VERSION))
            b.put(schema.META_CHAIN_ID, chain_id.encode())
            b.put(schema.meta_key("genesis-hash"), genesis_hash)
            b.put(schema.META_LAST_HEIGHT, schema.u64(0))
            self.store.write(b, sync=True)
            return
        stored_version = schema.read_u64(version)
        if stored_version not in (1, schema.SCHEMA_VERSION):
            raise StorageError(
                f"store has schema version {stored_version}, "
                f"this node reads version {schema.SCHEMA_VERSION} (and migrates version 1)"
            )
        stored_chain = (self.store.get(schema.META_CHAIN_ID) or b"").decode()
        if stored_chain != chain_id:
            raise StoreMismatch("chain id", repr(stored_chain), repr(chain_id))
        stored_genesis = self.store.get(schema.meta_key("genesis-hash")) or b""
        if stored_genesis != genesis_hash:
            raise StoreMismatch("genesis hash", stored_genesis.hex(), genesis_hash.hex())
        if stored_version == 1:
            self.migrate_v1()

    def migrate_v1(self) -> None:
        """Bring a version 1 store to version 2 in one synced batch: every pending body
        moves from under its consensus value to under (height, value). Committed blocks
        stay as they are (inline `b` rows are read in version 2)."""
        b = Batch()
        for key, raw in self.store.iterate(schema.PENDING_BODY):
            if len(key) != 1 + schema.VALUE_LEN:
                raise self.store.corrupt(key, "not a version 1 pending body key")
            try:
                height = stored_block_height(raw)
            except CodecError as e:
                raise self.store.corrupt(key, f"pending body: {e.message}") from e
            b.delete(key)
            b.put(schema.pending_body_key(height, key[1:]), raw)
        b.put(schema.META_SCHEMA_VERSION, schema.u64(schema.SCHEMA_VERSION))
        self.store.write(b, sync=True)

    def height(self) -> int:
        """The last committed height (0: only genesis)."""
        raw = self.store.get(schema.META_LAST_HEIGHT)
        return 0 if raw is None else schema.read_u64(raw)

    def base_height(self) -> int:
        """The snapshot height a state-synced store started from (0: from genesis): its
        first block. No block, receipt or transaction index below it is held."""
        raw = self.store.get(schema.META_BASE_HEIGHT)
        return 0 if raw is None else schema.read_u64(raw)

    # --- reads -----------------------------------------------------------------------

    def _decoded(self, key: bytes, what: str, raw: bytes, decode: Callable[[bytes], _T]) -> _T:
        """raw decoded; bytes that do not decode are damage (`StorageCorrupt`)."""
        try:
            return decode(raw)
        except CodecError as e:
            raise self.store.corrupt(key, f"{what} does not decode: {e.message}") from e

    def block(self, height: int) -> Block | None:
        key = schema.block_key(height)
        raw = self.store.get(key)
        return None if raw is None else self._checked_block(key, height, raw)

    def _checked_block(self, key: bytes, height: int, raw: bytes) -> Block:
        body, cblock = self._body(key, height, raw)
        block = self._decoded(key, f"block {height}", body, lambda b: Block.decode(b, BLOCK_LIMITS))
        header = self._header_of(height, block)
        if block.header != header:
            raise self.store.corrupt(key, f"block {height} does not carry its header")
        if not self._body_matches(block, body, cblock):
            raise self.store.corrupt(key, f"the body of block {height} is not the committed one")
        return block

    def _body(self, key: bytes, height: int, raw: bytes) -> tuple[bytes, CBlock | None]:
        """The block encoding a `b` row gives: the row itself, or the body of the pending
        record it references, with that record (checked to hash to the reference)."""
        if len(raw) != schema.VALUE_LEN:
            return raw, None
        pkey = schema.pending_body_key(height, raw)
        stored = self.store.get(pkey)
        if stored is None:
            raise self.store.corrupt(key, f"the body block {height} references is missing")
        cblock = self._decoded(pkey, f"body of block {height}", stored, CBlock.decode)
        if cblock.height != height or consensus_value(cblock) != raw:
            raise self.store.corrupt(pkey, f"the body of block {height} is not the referenced one")
        return cblock.body, cblock

    def _body_matches(self, block: Block, raw: bytes, cblock: CBlock | None) -> bool:
        """Whether a block's bytes are those decided: one hash over them against the
        consensus value of its height when one is indexed (a validator's store), else its
        transactions against the header's `tx_root` (a hash per transaction). A block
        stored by reference comes with its consensus block, hashed already."""
        h = block.height
        value = self.store.get(schema.consensus_value_key(h))
        if cblock is not None and value is not None:
            return consensus_value(cblock) == value
        parent = (
            self.store.get(schema.meta_key("genesis-hash"))
            if h == 1
            else self.store.get(schema.consensus_value_key(h - 1))
        )
        if value is not None and parent is not None:
            cblock = CBlock(h, parent, block.header.round, block.header.proposer, raw)
            return consensus_value(cblock) == value
        try:
            block.check_body()
        except CodecError:
            return False
        return True

    def block_bytes(self, height: int) -> bytes | CBlock | None:
        """A block as stored: the consensus block holding it when it is stored by
        reference (checked to hash to the reference), else its encoding, unchecked. The
        caller checks either against the consensus value (`ChainApp.committed_cblock`)."""
        key = schema.block_key(height)
        raw = self.store.get(key)
        if raw is None:
            return None
        body, cblock = self._body(key, height, raw)
        return body if cblock is None else cblock

    def height_of(self, block_hash: bytes) -> int | None:
        raw = self.store.get(schema.block_hash_key(block_hash))
        return None if raw is None else schema.read_u64(raw)

    def header(self, height: int) -> BlockHeader | None:
        """A committed block's header, without decoding its transactions."""
        header = self._headers.get(height) or self._stored_header(height)
        if header is None:
            block = self.block(height)
            return None if block is None else block.header
        return header

    def _stored_header(self, height: int) -> BlockHeader | None:
        """The verified header kept apart from its block (None in a store from before)."""
        key = schema.header_key(height)
        raw = self.store.get(key)
        if raw is None:
            return None
        header = self._decoded(key, f"header {height}", raw, BlockHeader.decode)
        self._check_header(key, height, header)
        self._remember(header)
        return header

    def _header_of(self, height: int, block: Block) -> BlockHeader:
        """The verified header of height; in a store from before headers were kept apart,
        the block's own header once verified."""
        header = self._headers.get(height) or self._stored_header(height)
        if header is None:
            self._check_header(schema.block_key(height), height, block.header)
            self._remember(block.header)
            header = block.header
        return header

    def _check_header(self, key: bytes, height: int, header: BlockHeader) -> None:
        """A header is committed at height iff it says so and its hash is indexed there."""
        indexed = self.store.get(schema.block_hash_key(header.hash))
        if header.height != height or indexed != schema.u64(height):
            raise self.store.corrupt(key, f"header {height} is not the one indexed by its hash")

    def _remember(self, header: BlockHeader) -> None:
        if len(self._headers) >= HEADER_CACHE:
            self._headers.clear()
        self._headers[header.height] = header

    def block_hash(self, height: int) -> bytes | None:
        header = self.header(height)
        return None if header is None else header.hash

    def blocks(self, start: int, limit: int) -> Iterator[Block]:
        for key, raw in self.store.iterate(schema.BLOCK, start=schema.block_key(start)):
            if limit <= 0:
                return
            limit -= 1
            yield self._checked_block(key, schema.read_u64(key[len(schema.BLOCK) :]), raw)

    def receipts(self, height: int) -> list[Receipt]:
        """The receipts of a block, checked against its receipts root."""
        rows = list(self.store.iterate(schema.receipts_prefix(height)))
        self._check_leaves(height, [leaf_hash(raw) for _, raw in rows])
        return [self._decode_receipt(key, raw) for key, raw in rows]

    def _receipt_leaves(self, height: int) -> list[bytes]:
        """The leaf hashes of a block's stored receipts, checked against its receipts
        root (cached per height)."""
        leaves = self._leaves.get(height)
        if leaves is None:
            rows = self.store.iterate(schema.receipts_prefix(height))
            leaves = [leaf_hash(raw) for _, raw in rows]
            self._check_leaves(height, leaves)
        return leaves

    def _check_leaves(self, height: int, leaves: list[bytes]) -> None:
        prefix = schema.receipts_prefix(height)
        header = self.header(height)
        if header is None:
            if leaves:
                raise self.store.corrupt(prefix, f"receipts of missing block {height}")
            return
        if root_of_leaf_hashes(leaves) != header.receipts_root:
            raise self.store.corrupt(prefix, f"receipts of block {height} miss the receipts root")
        if len(self._leaves) >= RECEIPT_LEAVES_CACHE:
            self._leaves.clear()
        self._leaves[height] = leaves

    def _decode_receipt(self, key: bytes, raw: bytes) -> Receipt:
        return self._decoded(key, "receipt", raw, Receipt.decode)

    def tx_location(self, tx_hash: bytes) -> TxLocation | None:
        key = schema.tx_key(tx_hash)
        raw = self.store.get(key)
        if raw is None:
            return None
        return self._decoded(key, "transaction index", raw, TxLocation.decode)

    def transaction(self, tx_hash: bytes) -> Transaction | None:
        """A committed transaction, taken from its checked block."""
        loc = self.tx_location(tx_hash)
        if loc is None:
            return None
        block = self.block(loc.height)
        if block is None or loc.index >= len(block.txs) or block.txs[loc.index].hash != tx_hash:
            raise self.store.corrupt(
                schema.tx_key(tx_hash), f"transaction index of {tx_hash.hex()} is wrong"
            )
        return block.txs[loc.index]

    def receipt(self, tx_hash: bytes) -> Receipt | None:
        loc = self.tx_location(tx_hash)
        return None if loc is None else self._receipt_at(tx_hash, loc)

    def _receipt_at(self, tx_hash: bytes, loc: TxLocation) -> Receipt:
        """The receipt of tx_hash at loc: one of the leaves of its block's receipts root,
        naming tx_hash (the index and the receipts are written in one batch)."""
        key = schema.receipt_key(loc.height, loc.index)
        raw = self.store.get(key)
        if raw is None:
            raise self.store.corrupt(key, f"the indexed receipt of {tx_hash.hex()} is missing")
        leaves = self._receipt_leaves(loc.height)
        receipt = self._decode_receipt(key, raw)
        if (
            loc.index >= len(leaves)
            or leaf_hash(raw) != leaves[loc.index]
            or receipt.tx_hash != tx_hash
        ):
            raise self.store.corrupt(key, f"receipt of {tx_hash.hex()} is not the committed one")
        return receipt

    def certificate(self, height: int) -> CommitCertificate | None:
        """The commit certificate of height, checked to name the committed block and, with
        a `cert_check`, to carry a quorum of valid signatures."""
        cert = self._certs.get(height)
        if cert is not None:
            return cert
        key = schema.cert_key(height)
        raw = self.store.get(key)
        if raw is None:
            return None
        cert = self._decoded(key, "certificate", raw, CommitCertificate.decode)
        if cert.height != height or cert.block_hash != self.block_hash(height):
            raise self.store.corrupt(key, f"certificate of {height} names another block")
        if self.cert_check is not None:
            try:
                self.cert_check(cert)
            except QChainError as e:
                raise self.store.corrupt(key, f"certificate of {height}: {e.message}") from e
        self._remember_cert(cert)
        return cert

    def has_certificate(self, height: int) -> bool:
        """Whether a certificate of height is stored (not read, nor checked)."""
        return height in self._certs or self.store.get(schema.cert_key(height)) is not None

    def _remember_cert(self, cert: CommitCertificate) -> None:
        if len(self._certs) >= CERT_CACHE:
            self._certs.clear()
        self._certs[cert.height] = cert

    def receipt_proof(self, tx_hash: bytes) -> ReceiptProof | None:
        """Receipt, Merkle proof, header and certificate; None until all are stored."""
        loc = self.tx_location(tx_hash)
        if loc is None:
            return None
        header = self.header(loc.height)
        cert = self.certificate(loc.height)
        if header is None or cert is None:
            return None
        receipt = self._receipt_at(tx_hash, loc)
        proof = proof_of_leaf_hashes(self._receipt_leaves(loc.height), loc.index)
        return ReceiptProof(receipt, proof, header, cert)

    def verify_recent(self, count: int) -> int:
        """Check the last count committed heights above the base (block, header, receipts,
        certificate) against their hashes; the lowest height checked (above the top when
        none is held). Damage raises `StorageCorrupt`."""
        top = self.height()
        low = max(1, self.base_height(), top - count + 1)
        for h in range(top, low - 1, -1):
            if self.block(h) is None:
                raise self.store.corrupt(schema.block_key(h), f"committed block {h} is missing")
            self._receipt_leaves(h)
            self.certificate(h)
        return low

    # --- writes ----------------------------------------------------------------------

    def commit_batch(
        self,
        block: Block,
        receipts: Sequence[Receipt],
        state_writes: Iterable[tuple[bytes, bytes | None]],
        batch: Batch | None = None,
        cblock: CBlock | None = None,
    ) -> Batch:
        """Add a block commit to batch (new if None): block, hash index, tx index,
        receipts, state writes (full store keys) and the last-height marker. With cblock
        (the decided consensus block, whose body is block's encoding) the block is stored
        by reference to cblock's pending record, which is written here only if the engine
        did not write it already."""
        b = batch if batch is not None else Batch()
        h = block.height
        if h != self.height() + 1:
            raise StorageError(f"cannot commit height {h} on top of {self.height()}")
        if cblock is None:
            b.put(schema.block_key(h), block.encode())
        else:
            if cblock.height != h:
                raise StorageError(f"consensus block {cblock.height} given for block {h}")
            ref = consensus_value(cblock)
            pkey = schema.pending_body_key(h, ref)
            if self.store.get(pkey) is None:
                b.put(pkey, cblock.encode())
            b.put(schema.block_key(h), ref)
        b.put(schema.header_key(h), block.header.encode())
        b.put(schema.block_hash_key(block.hash), schema.u64(h))
        for i, (tx, receipt) in enumerate(zip(block.txs, receipts, strict=True)):
            b.put(schema.tx_key(tx.hash), _location(h, i))
            b.put(schema.receipt_key(h, i), receipt.encode())
        for key, value in state_writes:
            if value is None:
                b.delete(key)
            else:
                b.put(key, value)
        b.put(schema.META_LAST_HEIGHT, schema.u64(h))
        return b

    def base_batch(self, raw_block: bytes, receipts: Sequence[bytes], batch: Batch) -> None:
        """Add the block a state-synced store starts at (its base) to batch, as a commit
        would but with no block below it: the block's encoding, header, hash index,
        transaction index and receipts' encodings. The caller checked them against the
        certified header."""
        block = Block.decode(raw_block, BLOCK_LIMITS)
        h = block.height
        batch.put(schema.block_key(h), raw_block)
        batch.put(schema.header_key(h), block.header.encode())
        batch.put(schema.block_hash_key(block.hash), schema.u64(h))
        for i, (tx, receipt) in enumerate(zip(block.txs, receipts, strict=True)):
            batch.put(schema.tx_key(tx.hash), _location(h, i))
            batch.put(schema.receipt_key(h, i), receipt)

    def put_certificate(self, cert: CommitCertificate) -> None:
        self.store.put(schema.cert_key(cert.height), cert.encode(), sync=True)
        self._remember_cert(cert)
