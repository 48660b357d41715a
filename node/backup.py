"""Backups of a validator's store: one file format, written from a consistent snapshot of a
running node (its admin API streams it, `GET /admin/backup`) or of a stopped node's store
(the CLI opens it itself), and read back by `qchain node restore` as hostile input.

Layout of a backup file (integers big-endian):

    magic       8 bytes    b"QCHAINBK"
    format      u16        FORMAT_VERSION
    header_len  u32        at most MAX_HEADER
    header      the canonical encoding of `BackupHeader` (chain id, genesis hash,
                committed height, schema version, creation time)
    records     per key, in strictly increasing key order:
                0x01, key_len u16, value_len u32, key, value
    end         0x00
    count       u64        the number of records
    digest      32 bytes   SHA-256 over every byte before it

A reader (`BackupReader`) refuses, with a `BackupError` naming the part, anything else:
another magic or format, a header that does not decode or names another chain, genesis or
schema version than the node's, a key or value over its bound, more than MAX_RECORDS
records, keys out of order or outside the schema's key families, a metadata record that
contradicts the header, a count or digest that does not match, bytes after the digest. A
file that ends early is `BackupTruncated`; a digest that does not match the bytes,
`BackupDigestMismatch`. The digest detects damage, not forgery: a backup is only as
trustworthy as the place it was kept, and the restored node checks its chain against its
own hashes at startup as any node does.

A backup file is written under a temporary name beside its final one, read back in full,
synced and only then renamed (`save_backup`): a half-written or damaged backup never sits
under the final name.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import struct
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from qchain.codec import U64, Hash32, Limits, Struct
from qchain.config import NodeConfig
from qchain.errors import (
    BackupDigestMismatch,
    BackupError,
    BackupMismatch,
    BackupTruncated,
    CodecError,
    ConfigError,
    NodeUnavailable,
    StorageError,
    StoreLocked,
)
from qchain.qkd.lease import MAX_FLOOR
from qchain.store import schema
from qchain.store.kv import KVStore, Snapshot
from qchain.types import MAX_BLOCK_SIZE, ChainId

MAGIC = b"QCHAINBK"
FORMAT_VERSION = 1
MAX_HEADER = 1024
"""Bytes of an encoded header; a real one is about 120."""
MAX_KEY_BYTES = 16 * 1024
"""The longest key a backup holds (the schema's keys are a prefix and at most a few
hundred bytes of names)."""
MAX_VALUE_BYTES = 2 * MAX_BLOCK_SIZE
"""The largest value a backup holds (the largest stored value is a block)."""
MAX_RECORDS = 2**32
CHUNK_BYTES = 1024 * 1024
"""Size of the pieces a backup is produced and read in."""
DIGEST_LEN = 32

_PRELUDE = struct.Struct(">8sHI")
_RECORD = struct.Struct(">BHI")
_LENGTHS = struct.Struct(">HI")
_COUNT = struct.Struct(">Q")
_RECORD_TAG = 0x01
_END_TAG = 0x00


@dataclass(frozen=True)
class BackupHeader(Struct):
    chain_id: ChainId
    genesis_hash: Hash32
    height: U64
    """The last committed height in the backup."""
    schema_version: U64
    """The store layout version (`qchain.store.schema.SCHEMA_VERSION`) of the records."""
    created_at: U64
    """When the snapshot was taken, in Unix seconds."""


@dataclass(frozen=True)
class Expected:
    """What a backup must match to be restored on a node: its genesis and schema."""

    chain_id: str
    genesis_hash: bytes
    schema_version: int = schema.SCHEMA_VERSION


@dataclass(frozen=True)
class BackupSummary:
    header: BackupHeader
    records: int
    size: int
    """Bytes of the file."""


# --- writing ------------------------------------------------------------------------------


def header_of(snap: Snapshot, created_at: int) -> BackupHeader:
    """The header for a backup of snap, from the store's own metadata."""

    def meta(key: bytes, what: str) -> bytes:
        raw = snap.get(key)
        if raw is None:
            raise StorageError(f"the store has no {what}: it is not a node's store")
        return raw

    try:
        return BackupHeader(
            chain_id=meta(schema.META_CHAIN_ID, "chain id").decode(),
            genesis_hash=meta(schema.META_GENESIS_HASH, "genesis hash"),
            height=schema.read_u64(meta(schema.META_LAST_HEIGHT, "committed height")),
            schema_version=schema.read_u64(meta(schema.META_SCHEMA_VERSION, "schema version")),
            created_at=created_at,
        )
    except (UnicodeDecodeError, CodecError) as e:
        raise StorageError(f"the store's metadata cannot head a backup: {e}") from e


def encode_backup(snap: Snapshot, created_at: int) -> Iterator[bytes]:
    """The backup file of snap, in pieces of about CHUNK_BYTES. The snapshot is read as
    the pieces are taken; it stays the caller's to close."""
    header = header_of(snap, created_at).encode()
    digest = hashlib.sha256()
    buf = bytearray(_PRELUDE.pack(MAGIC, FORMAT_VERSION, len(header)) + header)
    count = 0
    for key, value in snap.iterate():
        if not 0 < len(key) <= MAX_KEY_BYTES or len(value) > MAX_VALUE_BYTES:
            raise StorageError(
                f"key {key[:64].hex()} ({len(key)} bytes, value {len(value)} bytes) is "
                f"beyond what a backup holds (keys 1..{MAX_KEY_BYTES}, values "
                f"..{MAX_VALUE_BYTES} bytes)"
            )
        buf += _RECORD.pack(_RECORD_TAG, len(key), len(value))
        buf += key
        buf += value
        count += 1
        if len(buf) >= CHUNK_BYTES:
            digest.update(buf)
            yield bytes(buf)
            buf.clear()
    buf += bytes([_END_TAG]) + _COUNT.pack(count)
    digest.update(buf)
    yield bytes(buf) + digest.digest()


def save_backup(
    path: Path, chunks: Iterator[bytes], expected: Expected, fsync: bool = True
) -> BackupSummary:
    """Write chunks to a temporary file beside path, read it back in full (`check_backup`),
    sync it and rename it to path. On any failure the temporary file is removed and path
    is left as it was."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        summary = check_backup(tmp, expected)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        _fsync_dir(path.parent)
    return summary


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- reading ------------------------------------------------------------------------------


class BackupReader:
    """A backup file read as hostile input. The header is read and checked against
    `expected` when the reader is made; `records` yields the key-value pairs and, once
    they are exhausted, checks the trailer. Nothing read is trustworthy until `records`
    has finished without an error."""

    def __init__(self, stream: BinaryIO, expected: Expected) -> None:
        self._stream = stream
        self._digest = hashlib.sha256()
        self.size = 0
        magic, version, header_len = _PRELUDE.unpack(self._read(_PRELUDE.size, "magic"))
        if magic != MAGIC:
            raise BackupError("magic", "not a qchain backup file")
        if version != FORMAT_VERSION:
            raise BackupError("format", f"version {version}, this node reads {FORMAT_VERSION}")
        if header_len > MAX_HEADER:
            raise BackupError("header_len", f"{header_len} bytes exceeds {MAX_HEADER}")
        raw = self._read(header_len, "header")
        try:
            self.header = BackupHeader.decode(raw, Limits(max_size=MAX_HEADER))
        except CodecError as e:
            raise BackupError("header", e.message) from e
        _check_header(self.header, expected)
        self.records_read = 0

    def _read(self, n: int, what: str) -> bytes:
        data = self._stream.read(n)
        if len(data) != n:
            raise BackupTruncated(what, f"the file ends {n - len(data)} bytes early")
        self._digest.update(data)
        self.size += n
        return data

    def records(self) -> Iterator[tuple[bytes, bytes]]:
        """The key-value pairs, then the trailer's checks."""
        last = b""
        meta = _MetaCheck(self.header)
        while True:
            tag = self._read(1, f"record {self.records_read}")[0]
            if tag == _END_TAG:
                break
            if tag != _RECORD_TAG:
                raise BackupError(f"record {self.records_read}", f"unknown tag {tag:#04x}")
            if self.records_read >= MAX_RECORDS:
                raise BackupError("records", f"more than {MAX_RECORDS}")
            key, value = self._record(last)
            meta.see(key, value)
            last = key
            self.records_read += 1
            yield key, value
        self._trailer()
        meta.finish()

    def _record(self, last: bytes) -> tuple[bytes, bytes]:
        where = f"record {self.records_read}"
        key_len, value_len = _LENGTHS.unpack(self._read(_LENGTHS.size, where))
        if not 0 < key_len <= MAX_KEY_BYTES:
            raise BackupError(f"{where}.key_len", f"{key_len} is not in 1..{MAX_KEY_BYTES}")
        if value_len > MAX_VALUE_BYTES:
            raise BackupError(f"{where}.value_len", f"{value_len} exceeds {MAX_VALUE_BYTES}")
        key = self._read(key_len, f"{where}.key")
        value = self._read(value_len, f"{where}.value")
        if key <= last:
            raise BackupError(f"{where}.key", "not after the previous key")
        if key[:1] not in schema.PREFIXES:
            raise BackupError(f"{where}.key", f"unknown key family {key[:1]!r}")
        if key.startswith(schema.QKD_LEASE) and len(value) != 8:
            raise BackupError(f"{where}.value", "a QKD lease is an 8-byte integer")
        if key == schema.QKD_LEASE_FLOOR and schema.read_u64(value) > MAX_FLOOR:
            raise BackupError(f"{where}.value", "the QKD lease floor is above 2^63: damaged")
        return key, value

    def _trailer(self) -> None:
        (count,) = _COUNT.unpack(self._read(_COUNT.size, "count"))
        if count != self.records_read:
            raise BackupError("count", f"says {count} records, the file holds {self.records_read}")
        want = self._digest.digest()
        got = self._stream.read(DIGEST_LEN)
        if len(got) != DIGEST_LEN:
            raise BackupTruncated("digest", f"the file ends {DIGEST_LEN - len(got)} bytes early")
        self.size += DIGEST_LEN
        if got != want:
            raise BackupDigestMismatch("digest", "does not match the file's bytes")
        if self._stream.read(1):
            raise BackupError("digest", "bytes follow the digest")


def _check_header(h: BackupHeader, expected: Expected) -> None:
    # An older layout is restored as it is: the node migrates it when it opens the store.
    if not 1 <= h.schema_version <= expected.schema_version:
        raise BackupMismatch("schema_version", str(h.schema_version), str(expected.schema_version))
    if h.chain_id != expected.chain_id:
        raise BackupMismatch("chain_id", repr(h.chain_id), repr(expected.chain_id))
    if h.genesis_hash != expected.genesis_hash:
        raise BackupMismatch("genesis_hash", h.genesis_hash.hex(), expected.genesis_hash.hex())


class _MetaCheck:
    """The store metadata among the records must say what the header says."""

    def __init__(self, header: BackupHeader) -> None:
        self.want: dict[bytes, tuple[str, bytes]] = {
            schema.META_CHAIN_ID: ("chain_id", header.chain_id.encode()),
            schema.META_GENESIS_HASH: ("genesis_hash", header.genesis_hash),
            schema.META_LAST_HEIGHT: ("height", schema.u64(header.height)),
            schema.META_SCHEMA_VERSION: ("schema_version", schema.u64(header.schema_version)),
        }
        self.seen: set[bytes] = set()

    def see(self, key: bytes, value: bytes) -> None:
        if key in self.want:
            field, want = self.want[key]
            if value != want:
                raise BackupError(f"header.{field}", "differs from the store's own record")
            self.seen.add(key)

    def finish(self) -> None:
        for key, (field, _) in self.want.items():
            if key not in self.seen:
                raise BackupError(f"header.{field}", "the records hold no such metadata")


def check_backup(path: Path, expected: Expected) -> BackupSummary:
    """Read the backup at path in full; its summary, or the `BackupError` that refuses it."""
    return read_backup(path, expected, lambda _k, _v: None)


def read_backup(
    path: Path, expected: Expected, each: Callable[[bytes, bytes], None]
) -> BackupSummary:
    """Read the backup at path, handing every record to `each` as it goes; the summary
    once the trailer checked out. On a `BackupError` whatever `each` received is void."""
    try:
        f = path.open("rb")
    except OSError as e:
        raise BackupError("file", f"cannot read {path}: {e.strerror}") from e
    with f:
        reader = BackupReader(f, expected)
        for key, value in reader.records():
            each(key, value)
        return BackupSummary(reader.header, reader.records_read, reader.size)


# --- sources and the commands ---------------------------------------------------------------


def store_chunks(store: KVStore, created_at: int) -> Iterator[bytes]:
    """The backup of a store, from one snapshot released when the pieces end."""
    with store.snapshot() as snap:
        yield from encode_backup(snap, created_at)


def admin_base_url(listen: str) -> str:
    """The URL of a node's admin API from its `admin.listen` (a wildcard address is
    reached on loopback)."""
    host, _, port = listen.rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]", "[::]": "[::1]"}.get(host, host)
    return f"http://{host}:{port}"


def fetch_chunks(url: str, token: str, timeout_s: float = 60.0) -> Iterator[bytes]:
    """The backup a running node's admin API streams from `url`."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout_s)
    except urllib.error.HTTPError as e:
        detail = e.read(4096).decode(errors="replace")
        raise NodeUnavailable(f"{url} answered {e.code}: {detail}") from e
    except OSError as e:
        raise NodeUnavailable(f"{url}: {e}") from e
    with resp:
        try:
            while chunk := resp.read(CHUNK_BYTES):
                yield chunk
        except (OSError, http.client.HTTPException) as e:
            raise NodeUnavailable(f"{url}: the backup stream broke off: {e}") from e


def expected_of(cfg: NodeConfig) -> Expected:
    """What a backup for this node must match: the chain id and hash of its genesis."""
    from node.genesis_file import load_genesis

    genesis = load_genesis(cfg.node.genesis)
    return Expected(genesis.chain_id, genesis.hash)


def backup_node(cfg: NodeConfig, out: Path, now: int | None = None) -> tuple[str, BackupSummary]:
    """Back up the node of cfg to `out`: from its store when it is stopped, through its
    admin API when it runs (it holds the store). (how, summary)."""
    from qchain.store.leveldb import LevelDBStore

    expected = expected_of(cfg)
    created_at = int(time.time()) if now is None else now
    db_dir = cfg.node.data_dir / "db"
    if not db_dir.is_dir():
        raise StorageError(f"no database at {db_dir}")
    try:
        store = LevelDBStore(db_dir)
    except StoreLocked:
        if cfg.admin.token_file is None:
            raise ConfigError(
                "admin.token_file", "not set: a running node's backup needs its admin token"
            ) from None
        try:
            token = cfg.admin.token_file.read_text().strip()
        except OSError as e:
            raise ConfigError("admin.token_file", f"cannot read: {e.strerror}") from e
        url = admin_base_url(cfg.admin.listen) + "/admin/backup"
        return f"running node, {url}", save_backup(out, fetch_chunks(url, token), expected)
    with store:
        return "stopped node", save_backup(out, store_chunks(store, created_at), expected)
