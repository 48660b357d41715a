"""The state snapshots a node keeps and serves: the chunks of its last few checkpoints.

At a checkpoint height (`contracts.snapshot`) execution has already read the whole state
and cut it into chunks to compute the root; the commit of that block writes the manifest
and the chunks under `n`/`N` (`qchain.store.schema`) in the same synced batch, and deletes
the snapshots beyond the newest `keep` (`[node] snapshot_keep`). A snapshot is thus
either entirely in the store or not at all.

What is served is read back checked: a manifest must match the app hash of its committed
header, a chunk the manifest's hash, so a damaged store raises `StorageCorrupt` rather than
serving bytes every fetcher would refuse. The fetcher checks everything again, against a
certified header: integrity never rests on the serving peer or the transport.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from contracts.snapshot import (
    MAX_CHUNK_BYTES,
    MAX_MANIFEST_BYTES,
    Checkpoint,
    Manifest,
    chunk_hash,
)
from node.chainstore import ChainStore
from qchain.codec import Hash32, Len, Limits, Struct
from qchain.errors import CodecError, InvalidSnapshot
from qchain.store import schema
from qchain.store.kv import Batch, KVStore
from qchain.types import MAX_BLOCK_SIZE, MAX_BLOCK_TXS, BlockHeader, CommitCertificate

DEFAULT_KEEP = 2
MAX_OFFER_BYTES = 8 * 1024 * 1024
"""The largest offer a fetcher reads: a manifest at its largest and a certificate of 1,024
ML-DSA-65 signatures fit."""


@dataclass(frozen=True)
class SnapshotOffer(Struct):
    """What a peer serves for a snapshot height s: the committed header of s, its commit
    certificate and the snapshot's manifest (encoded), which the fetcher checks against
    the validator set; and what a node continuing from s needs that the certificate does
    not cover: the consensus value decided at s (the parent of s+1's consensus block) and
    the header of s−1 (its proposer fixes the leader anchor of s+1), checked against
    header s's parent hash."""

    header: BlockHeader
    certificate: CommitCertificate
    manifest: Annotated[bytes, Len(0, MAX_MANIFEST_BYTES)]
    value: Hash32
    parent: Annotated[tuple[BlockHeader, ...], Len(0, 1)]
    """The header of s−1; empty when s is 1."""


MAX_BLOCK_ANSWER_BYTES = 32 * 1024 * 1024
"""The largest block answer a fetcher reads: a block at its largest (`MAX_BLOCK_SIZE`)
and its receipts."""
BLOCK_ANSWER_LIMITS = Limits(
    max_size=MAX_BLOCK_ANSWER_BYTES,
    max_depth=2,
    max_bytes_len=MAX_BLOCK_SIZE,
    max_str_len=0,
    max_array_len=MAX_BLOCK_TXS,
)


@dataclass(frozen=True)
class SnapshotBlock(Struct):
    """The block of a snapshot height and its receipts, as stored (the encodings whose
    hashes the header commits to), so that a synced node holds the block of its base."""

    block: Annotated[bytes, Len(0, MAX_BLOCK_SIZE)]
    receipts: Annotated[tuple[bytes, ...], Len(0, MAX_BLOCK_TXS)]


def block_answer(chain: ChainStore, height: int) -> SnapshotBlock | None:
    """The block of a kept snapshot's height with its receipts, or None."""
    if manifest(chain, height) is None:
        return None
    block = chain.block(height)
    if block is None:
        return None
    return SnapshotBlock(block.encode(), tuple(r.encode() for r in chain.receipts(height)))


def offer(chain: ChainStore, height: int) -> SnapshotOffer | None:
    """The offer of a kept snapshot, or None (no such snapshot, or no certificate yet)."""
    m = manifest(chain, height)
    header = chain.header(height)
    cert = chain.certificate(height)
    value = chain.store.get(schema.consensus_value_key(height))
    parent = chain.header(height - 1) if height > 1 else None
    if m is None or header is None or cert is None or value is None:
        return None
    if height > 1 and parent is None:
        return None
    return SnapshotOffer(header, cert, m.encode(), value, () if parent is None else (parent,))


def heights(store: KVStore) -> list[int]:
    """The checkpoint heights whose snapshot this store holds, lowest first."""
    return [schema.read_u64(k[len(schema.SNAPSHOT) :]) for k, _ in store.iterate(schema.SNAPSHOT)]


def add_to_batch(store: KVStore, checkpoint: Checkpoint, keep: int, batch: Batch) -> None:
    """Write checkpoint's snapshot into batch and delete the older snapshots beyond the
    newest keep (keep 0: no snapshot is kept, and any held is deleted)."""
    held = heights(store)
    if keep > 0:
        batch.put(schema.snapshot_key(checkpoint.height), checkpoint.manifest().encode())
        for i, raw in enumerate(checkpoint.chunks):
            batch.put(schema.snapshot_chunk_key(checkpoint.height, i), raw)
        held.append(checkpoint.height)
    for h in sorted(set(held))[: max(0, len(set(held)) - keep)]:
        batch.delete(schema.snapshot_key(h))
        for key, _ in store.iterate(schema.snapshot_chunks_prefix(h)):
            batch.delete(key)


def manifest(chain: ChainStore, height: int) -> Manifest | None:
    """The kept manifest of height, checked against its committed header's app hash."""
    key = schema.snapshot_key(height)
    raw = chain.store.get(key)
    if raw is None:
        return None
    header = chain.header(height)
    try:
        m = Manifest.decode(raw)
        if header is None:
            raise InvalidSnapshot(f"no committed header at {height}")
        m.check(height, header.app_hash)
    except (CodecError, InvalidSnapshot) as e:
        raise chain.store.corrupt(key, f"snapshot manifest of {height}: {e.message}") from e
    return m


def chunk(chain: ChainStore, height: int, index: int) -> bytes | None:
    """Chunk index of the snapshot of height, checked against its manifest; None if this
    node does not keep that snapshot or the manifest has no such chunk."""
    m = manifest(chain, height)
    if m is None or not 0 <= index < len(m.chunks):
        return None
    key = schema.snapshot_chunk_key(height, index)
    raw = chain.store.get(key)
    if raw is None or len(raw) > MAX_CHUNK_BYTES or chunk_hash(raw) != m.chunks[index]:
        raise chain.store.corrupt(key, f"snapshot chunk {index} of {height} is not the listed one")
    return raw
