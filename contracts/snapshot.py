"""State commitments at checkpoint heights, and the snapshots they let a node check.

A chain whose genesis sets `state_root_interval` K > 0 commits to its whole state at every
height s with s mod K = 0 (a *checkpoint*). The state is every store entry under the state
prefix (`qchain.store.schema.STATE`), in key order. It is cut into chunks: entries are
added to a chunk until it holds `CHUNK_MAX_ENTRIES` entries or their encodings add up to
`CHUNK_TARGET_BYTES` or more; then a new chunk starts. A chunk is the canonical encoding
of its list of `[key, value]` pairs, and

    chunk_hash  = H(STATE_CHUNK, chunk bytes)
    state_root  = H(STATE_ROOT, u64(entry count) || merkle root of the chunk hashes)
    app_hash(s) = H(APP_CHECKPOINT, chained(s) || state_root)

where `chained(s)` is the app hash the write-set chain gives at s
(`contracts.execution.app_hash`) and the Merkle root is RFC 6962's over the chunk hashes
as leaf hashes (`qchain.merkle.root_of_leaf_hashes`). The cut depends only on the state,
so every validator computes the same bytes.

A `Manifest` carries the height, `chained(s)`, the entry count and the chunk hashes: it is
checked against a certified header's app hash by recomputing both formulas
(`Manifest.check`), and each chunk is then checked alone against its hash
(`decode_chunk`): a peer serving a snapshot can send only the right bytes or bytes that
are refused. Every decoder here takes hostile input and is bounded (`MAX_CHUNKS`,
`MAX_CHUNK_BYTES`, `MAX_ENTRY_KEY`, `MAX_MANIFEST_BYTES`).

A state entry too large for one chunk (`MAX_CHUNK_BYTES`) still gets a chunk of its own
and a root, so consensus never depends on it; such a snapshot cannot be transferred, and a
node joining that chain replays blocks instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated

from contracts.state import StateSource
from qchain.codec import U64, Hash32, Len, Limits, Struct, encode_value, unpack_canonical
from qchain.errors import CodecError, InvalidSnapshot
from qchain.hashing import Domain, hash_domain
from qchain.merkle import root_of_leaf_hashes
from qchain.store import schema

CHUNK_TARGET_BYTES = 256 * 1024
"""A chunk closes once its entries' encodings add up to this many bytes or more."""
CHUNK_MAX_ENTRIES = 4096
"""A chunk closes once it holds this many entries."""
MAX_CHUNK_BYTES = 4 * 1024 * 1024
"""The largest chunk a node accepts (and serves)."""
MAX_CHUNKS = 65_536
"""The most chunks a manifest may list: a state of up to about 16 GiB."""
MAX_ENTRY_KEY = 4096
"""The longest state key a chunk may carry."""
MAX_MANIFEST_BYTES = 64 + MAX_CHUNKS * 35
"""The largest manifest encoding (fixed fields, then 32-byte hashes with their headers)."""

_CHUNK_LIMITS = Limits(
    max_size=MAX_CHUNK_BYTES,
    max_depth=3,
    max_bytes_len=MAX_CHUNK_BYTES,
    max_str_len=0,
    max_array_len=CHUNK_MAX_ENTRIES,
)
_MANIFEST_LIMITS = Limits(
    max_size=MAX_MANIFEST_BYTES,
    max_depth=3,
    max_bytes_len=64,
    max_str_len=0,
    max_array_len=MAX_CHUNKS,
)
_CHUNK_LIMITS_ENCODE = Limits(max_size=2**62, max_bytes_len=2**62, max_array_len=2**62)
"""Encoding the state never fails on size: an oversized chunk is refused when received."""

Entry = tuple[bytes, bytes]


def chunk_hash(raw: bytes) -> bytes:
    return hash_domain(Domain.STATE_CHUNK, raw)


def state_root(entry_count: int, chunk_hashes: Sequence[bytes]) -> bytes:
    return hash_domain(
        Domain.STATE_ROOT, schema.u64(entry_count) + root_of_leaf_hashes(chunk_hashes)
    )


def checkpoint_app_hash(chained: bytes, root: bytes) -> bytes:
    """The app hash of a checkpoint height: the write-set chain's and the state root."""
    return hash_domain(Domain.APP_CHECKPOINT, chained + root)


def is_checkpoint(height: int, interval: int) -> bool:
    """Whether height commits to the state (interval 0: no height does)."""
    return interval > 0 and height > 0 and height % interval == 0


def encode_chunk(entries: Sequence[Entry]) -> bytes:
    return encode_value([[k, v] for k, v in entries], _CHUNK_LIMITS_ENCODE)


def cut_chunks(entries: Iterable[Entry]) -> Iterator[list[Entry]]:
    """The state's entries (in key order) cut into chunks by the rule above."""
    chunk: list[Entry] = []
    size = 0
    for k, v in entries:
        chunk.append((k, v))
        size += len(encode_value([k, v], _CHUNK_LIMITS_ENCODE))
        if size >= CHUNK_TARGET_BYTES or len(chunk) >= CHUNK_MAX_ENTRIES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


@dataclass(frozen=True)
class Checkpoint:
    """The state commitment of a checkpoint height, with the chunks it covers."""

    height: int
    chained: bytes
    entry_count: int
    chunks: tuple[bytes, ...]
    """The encoded chunks, in order."""
    hashes: tuple[bytes, ...]

    @property
    def root(self) -> bytes:
        return state_root(self.entry_count, self.hashes)

    @property
    def app_hash(self) -> bytes:
        return checkpoint_app_hash(self.chained, self.root)

    def manifest(self) -> Manifest:
        return Manifest(self.height, self.chained, self.entry_count, self.hashes)


def compute_checkpoint(source: StateSource, height: int, chained: bytes) -> Checkpoint:
    """Read the whole state of source (O(state)) and commit to it."""
    chunks: list[bytes] = []
    count = 0
    for entries in cut_chunks(source.iterate(schema.STATE)):
        count += len(entries)
        chunks.append(encode_chunk(entries))
    hashes = tuple(chunk_hash(c) for c in chunks)
    return Checkpoint(height, chained, count, tuple(chunks), hashes)


@dataclass(frozen=True)
class Manifest(Struct):
    """What a snapshot holds: checked against a header's app hash with `check`."""

    height: U64
    chained: Hash32
    """The write-set chain's app hash at `height`."""
    entry_count: U64
    chunks: Annotated[tuple[Hash32, ...], Len(0, MAX_CHUNKS)]

    @property
    def root(self) -> bytes:
        return state_root(self.entry_count, self.chunks)

    def check(self, height: int, app_hash: bytes) -> None:
        """Raise `InvalidSnapshot` unless this manifest is the one the app hash of a
        checkpoint header at height commits to."""
        if self.height != height:
            raise InvalidSnapshot(f"manifest is for height {self.height}, not {height}")
        if len(self.chunks) > self.entry_count or (self.entry_count > 0) != bool(self.chunks):
            raise InvalidSnapshot("manifest's entry count does not fit its chunks")
        if checkpoint_app_hash(self.chained, self.root) != app_hash:
            raise InvalidSnapshot(f"manifest does not match the app hash of height {height}")


def decode_manifest(raw: bytes) -> Manifest:
    """A manifest from a peer's bytes; `CodecError`/`InvalidSnapshot` on anything else."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise InvalidSnapshot(f"manifest of {len(raw)} bytes exceeds {MAX_MANIFEST_BYTES}")
    return Manifest.decode(raw, _MANIFEST_LIMITS)


def decode_chunk(raw: bytes, expected: bytes, after: bytes | None) -> list[Entry]:
    """The entries of a chunk from a peer, checked: at most `MAX_CHUNK_BYTES`, hashing to
    the manifest's expected hash, a non-empty list of [key, value] byte pairs, keys under
    the state prefix, at most `MAX_ENTRY_KEY` bytes, strictly increasing and above
    `after` (the last key of the chunk before). Raises `InvalidSnapshot`."""
    if len(raw) > MAX_CHUNK_BYTES:
        raise InvalidSnapshot(f"chunk of {len(raw)} bytes exceeds {MAX_CHUNK_BYTES}")
    if chunk_hash(raw) != expected:
        raise InvalidSnapshot("chunk does not hash to the manifest's")
    try:
        value = unpack_canonical(raw, _CHUNK_LIMITS)
    except CodecError as e:
        raise InvalidSnapshot(f"chunk does not decode: {e.message}") from e
    if type(value) is not list or not value:
        raise InvalidSnapshot("a chunk is a non-empty list of entries")
    out: list[Entry] = []
    last = after
    for item in value:
        if type(item) is not list or len(item) != 2:
            raise InvalidSnapshot("a chunk entry is a [key, value] pair")
        k, v = item
        if type(k) is not bytes or type(v) is not bytes:
            raise InvalidSnapshot("chunk keys and values are bytes")
        if not k.startswith(schema.STATE) or len(k) > MAX_ENTRY_KEY:
            raise InvalidSnapshot("chunk key is not a state key")
        if last is not None and k <= last:
            raise InvalidSnapshot("chunk keys are not in increasing order")
        out.append((k, v))
        last = k
    return out
