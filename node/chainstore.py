"""The committed chain as stored in a `KVStore`: blocks, receipts, the transaction index
and commit certificates, read and written through the schema module only.

A commit is one `Batch` (built by `commit_batch`) that the caller writes with `sync=True`
together with the block's state writes and the consensus record changes, so that after a
crash the chain, the state and the consensus record always agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from qchain.codec import U32, U64, Struct, decode_value, encode_value
from qchain.errors import StorageError
from qchain.merkle import merkle_proof
from qchain.store import schema
from qchain.store.kv import Batch, KVStore
from qchain.types import (
    BLOCK_LIMITS,
    Block,
    BlockHeader,
    CommitCertificate,
    Receipt,
    ReceiptProof,
)

HEADER_CACHE = 1024


@dataclass(frozen=True)
class TxLocation(Struct):
    height: U64
    index: U32


class ChainStore:
    """Typed access to the committed chain in a store."""

    def __init__(self, store: KVStore) -> None:
        self.store = store
        self._headers: dict[int, BlockHeader] = {}
        """Recently read headers (a committed header never changes)."""

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
        if schema.read_u64(version) != schema.SCHEMA_VERSION:
            raise StorageError(
                f"store has schema version {schema.read_u64(version)}, "
                f"this node reads version {schema.SCHEMA_VERSION}"
            )
        stored_chain = (self.store.get(schema.META_CHAIN_ID) or b"").decode()
        if stored_chain != chain_id:
            raise StorageError(f"store belongs to chain {stored_chain!r}, not {chain_id!r}")
        if self.store.get(schema.meta_key("genesis-hash")) != genesis_hash:
            raise StorageError("store was created from a different genesis")

    def height(self) -> int:
        """The last committed height (0: only genesis)."""
        raw = self.store.get(schema.META_LAST_HEIGHT)
        return 0 if raw is None else schema.read_u64(raw)

    # --- reads -----------------------------------------------------------------------

    def block(self, height: int) -> Block | None:
        raw = self.store.get(schema.block_key(height))
        return None if raw is None else Block.decode(raw, BLOCK_LIMITS)

    def block_bytes(self, height: int) -> bytes | None:
        return self.store.get(schema.block_key(height))

    def height_of(self, block_hash: bytes) -> int | None:
        raw = self.store.get(schema.block_hash_key(block_hash))
        return None if raw is None else schema.read_u64(raw)

    def header(self, height: int) -> BlockHeader | None:
        """A committed block's header, without decoding its transactions."""
        header = self._headers.get(height)
        if header is not None:
            return header
        raw = self.store.get(schema.header_key(height))
        if raw is not None:
            header = BlockHeader.decode(raw)
        else:
            block = self.block(height)
            if block is None:
                return None
            header = block.header
        self._remember(header)
        return header

    def _remember(self, header: BlockHeader) -> None:
        if len(self._headers) >= HEADER_CACHE:
            self._headers.clear()
        self._headers[header.height] = header

    def block_hash(self, height: int) -> bytes | None:
        header = self.header(height)
        return None if header is None else header.hash

    def blocks(self, start: int, limit: int) -> Iterator[Block]:
        for _, raw in self.store.iterate(schema.BLOCK, start=schema.block_key(start)):
            if limit <= 0:
                return
            limit -= 1
            yield Block.decode(raw, BLOCK_LIMITS)

    def receipts(self, height: int) -> list[Receipt]:
        return [
            Receipt.decode(raw) for _, raw in self.store.iterate(schema.receipts_prefix(height))
        ]

    def tx_location(self, tx_hash: bytes) -> TxLocation | None:
        raw = self.store.get(schema.tx_key(tx_hash))
        return None if raw is None else TxLocation.decode(raw)

    def receipt(self, tx_hash: bytes) -> Receipt | None:
        loc = self.tx_location(tx_hash)
        if loc is None:
            return None
        raw = self.store.get(schema.receipt_key(loc.height, loc.index))
        return None if raw is None else Receipt.decode(raw)

    def certificate(self, height: int) -> CommitCertificate | None:
        raw = self.store.get(schema.cert_key(height))
        return None if raw is None else CommitCertificate.decode(raw)

    def receipt_proof(self, tx_hash: bytes) -> ReceiptProof | None:
        """Receipt, Merkle proof, header and certificate; None until all are stored."""
        loc = self.tx_location(tx_hash)
        if loc is None:
            return None
        header = self.header(loc.height)
        cert = self.certificate(loc.height)
        if header is None or cert is None:
            return None
        receipts = self.receipts(loc.height)
        if loc.index >= len(receipts):
            raise StorageError(f"receipt {loc.index} of height {loc.height} is missing")
        proof = merkle_proof([r.encode() for r in receipts], loc.index)
        return ReceiptProof(receipts[loc.index], proof, header, cert)

    # --- writes ----------------------------------------------------------------------

    def commit_batch(
        self,
        block: Block,
        receipts: Sequence[Receipt],
        state_writes: Iterable[tuple[bytes, bytes | None]],
        batch: Batch | None = None,
    ) -> Batch:
        """Add a block commit to batch (new if None): block, hash index, tx index,
        receipts, state writes (full store keys) and the last-height marker."""
        b = batch if batch is not None else Batch()
        h = block.height
        if h != self.height() + 1:
            raise StorageError(f"cannot commit height {h} on top of {self.height()}")
        b.put(schema.block_key(h), block.encode())
        b.put(schema.header_key(h), block.header.encode())
        b.put(schema.block_hash_key(block.hash), schema.u64(h))
        for i, (tx, receipt) in enumerate(zip(block.txs, receipts, strict=True)):
            b.put(schema.tx_key(tx.hash), TxLocation(h, i).encode())
            b.put(schema.receipt_key(h, i), receipt.encode())
        for key, value in state_writes:
            if value is None:
                b.delete(key)
            else:
                b.put(key, value)
        b.put(schema.META_LAST_HEIGHT, schema.u64(h))
        return b

    def put_certificate(self, cert: CommitCertificate) -> None:
        self.store.put(schema.cert_key(cert.height), cert.encode(), sync=True)

    # --- small typed metadata values --------------------------------------------------

    def get_meta_value(self, name: str) -> object:
        raw = self.store.get(schema.meta_key(name))
        return None if raw is None else decode_value(raw)

    def meta_value_put(self, batch: Batch, name: str, value: object) -> None:
        batch.put(schema.meta_key(name), encode_value(value))
