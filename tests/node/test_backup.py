"""The backup file format (`node.backup`): a round trip on both store backends, and every
kind of damage refused with a typed error, before anything is touched."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from node import backup as bk
from node.backup import (
    BackupHeader,
    Expected,
    check_backup,
    encode_backup,
    read_backup,
    save_backup,
    store_chunks,
)
from node.rebuild import restore
from qchain.errors import (
    BackupDigestMismatch,
    BackupError,
    BackupMismatch,
    BackupTruncated,
    StorageCorrupt,
    StorageError,
)
from qchain.store import Batch, KVStore, MemoryStore, schema
from qchain.store.leveldb import LevelDBStore
from qchain.store.testing import flip_bit_in_table

CHAIN = "qchain-backup-test"
GENESIS = bytes(range(32))
EXPECTED = Expected(CHAIN, GENESIS)
NOW = 1_780_000_000
HEIGHT = 7


def _fill(store: KVStore, chain: str = CHAIN, schema_version: int = schema.SCHEMA_VERSION) -> None:
    b = Batch()
    b.put(schema.META_SCHEMA_VERSION, schema.u64(schema_version))
    b.put(schema.META_CHAIN_ID, chain.encode())
    b.put(schema.META_GENESIS_HASH, GENESIS)
    b.put(schema.META_LAST_HEIGHT, schema.u64(HEIGHT))
    for h in range(1, HEIGHT + 1):
        b.put(schema.block_key(h), bytes([h]) * (1000 * h))
        b.put(schema.cert_key(h), b"cert" + bytes([h]))
    b.put(schema.state_key("notary", b"doc\x00\xff"), b"")
    b.put(schema.qkd_lease_key("seq/sae-0/sae-1"), schema.u64(8192))
    store.write(b)


@pytest.fixture(params=["memory", "leveldb"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], KVStore]]:
    opened: list[KVStore] = []

    def make() -> KVStore:
        n = len(opened)
        s: KVStore = (
            MemoryStore() if request.param == "memory" else LevelDBStore(tmp_path / f"db{n}")
        )
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


def _backup_bytes(store: KVStore) -> bytes:
    with store.snapshot() as snap:
        return b"".join(encode_backup(snap, NOW))


def test_round_trip_on_both_backends(make_store: Callable[[], KVStore], tmp_path: Path) -> None:
    src = make_store()
    _fill(src)
    path = tmp_path / "node.qbk"
    summary = save_backup(path, store_chunks(src, NOW), EXPECTED)
    assert summary.header == BackupHeader(CHAIN, GENESIS, HEIGHT, schema.SCHEMA_VERSION, NOW)
    assert summary.records == len(list(src.iterate()))
    assert summary.size == path.stat().st_size
    assert path.read_bytes() == _backup_bytes(src)
    assert not list(tmp_path.glob(".*tmp*"))
    dst = make_store()
    b = Batch()
    read_backup(path, EXPECTED, b.put)
    dst.write(b)
    assert list(dst.iterate()) == list(src.iterate())


def test_the_snapshot_is_the_moment_of_the_request(make_store: Callable[[], KVStore]) -> None:
    store = make_store()
    _fill(store)
    chunks = store_chunks(store, NOW)
    first = next(chunks)  # the snapshot is taken
    store.put(schema.block_key(99), b"after the snapshot")
    store.put(schema.META_LAST_HEIGHT, schema.u64(99))
    data = first + b"".join(chunks)
    assert b"after the snapshot" not in data
    assert _header(data).height == HEIGHT


def _header(data: bytes) -> BackupHeader:
    import io

    return bk.BackupReader(io.BytesIO(data), EXPECTED).header


# --- damage ------------------------------------------------------------------------------


def _good() -> bytes:
    s = MemoryStore()
    _fill(s)
    return _backup_bytes(s)


def _sealed(body: bytes) -> bytes:
    """body with a correct digest: only the structural checks can refuse it."""
    return body + hashlib.sha256(body).digest()


def _craft(
    records: list[tuple[bytes, bytes]],
    header: BackupHeader | None = None,
    count: int | None = None,
    version: int = bk.FORMAT_VERSION,
    magic: bytes = bk.MAGIC,
) -> bytes:
    """A backup written from the format's specification, for the tests to bend."""
    h = (header or BackupHeader(CHAIN, GENESIS, HEIGHT, schema.SCHEMA_VERSION, NOW)).encode()
    out = bytearray(magic + struct.pack(">HI", version, len(h)) + h)
    for k, v in records:
        out += struct.pack(">BHI", 1, len(k), len(v)) + k + v
    out += b"\x00" + struct.pack(">Q", len(records) if count is None else count)
    return _sealed(bytes(out))


def _meta(
    height: int = HEIGHT, chain: str = CHAIN, version: int = schema.SCHEMA_VERSION
) -> list[tuple[bytes, bytes]]:
    return sorted(
        [
            (schema.META_CHAIN_ID, chain.encode()),
            (schema.META_GENESIS_HASH, GENESIS),
            (schema.META_LAST_HEIGHT, schema.u64(height)),
            (schema.META_SCHEMA_VERSION, schema.u64(version)),
        ]
    )


def test_the_crafted_file_is_the_written_one() -> None:
    s = MemoryStore()
    _fill(s)
    assert _craft(list(s.iterate())) == _good()


def _refused(data: bytes, tmp_path: Path, expected: Expected = EXPECTED) -> BackupError:
    path = tmp_path / "bad.qbk"
    path.write_bytes(data)
    with pytest.raises(BackupError) as e:
        check_backup(path, expected)
    return e.value


@pytest.mark.parametrize("cut", [0, 5, 8, 14, 40, 200, 5000, -33, -32, -1])
def test_a_truncated_file_is_refused(cut: int, tmp_path: Path) -> None:
    data = _good()
    err = _refused(data[:cut], tmp_path)
    assert isinstance(err, BackupTruncated)


def test_every_flipped_byte_is_refused(tmp_path: Path) -> None:
    data = _good()
    step = max(1, len(data) // 400)
    for i in [*range(0, len(data), step), len(data) - 1]:
        bad = bytearray(data)
        bad[i] ^= 0x01
        path = tmp_path / "bad.qbk"
        path.write_bytes(bytes(bad))
        with pytest.raises(BackupError):
            check_backup(path, EXPECTED)


def test_a_flipped_byte_in_a_value_is_a_digest_mismatch(tmp_path: Path) -> None:
    data = bytearray(_good())
    data[data.find(bytes([5]) * 5000) + 100] ^= 0x80
    err = _refused(bytes(data), tmp_path)
    assert isinstance(err, BackupDigestMismatch) and err.field == "digest"


def test_a_wrong_digest_is_refused(tmp_path: Path) -> None:
    data = _good()
    err = _refused(data[:-32] + hashlib.sha256(b"other").digest(), tmp_path)
    assert isinstance(err, BackupDigestMismatch)


@pytest.mark.parametrize(
    ("expected", "what"),
    [
        (Expected("another-chain", GENESIS), "chain_id"),
        (Expected(CHAIN, bytes(32)), "genesis_hash"),
        (Expected(CHAIN, GENESIS, schema_version=1), "schema_version"),
    ],
)
def test_a_backup_of_another_chain_genesis_or_schema_is_refused(
    expected: Expected, what: str, tmp_path: Path
) -> None:
    err = _refused(_good(), tmp_path, expected)
    assert isinstance(err, BackupMismatch)
    assert (err.what, err.field) == (what, f"header.{what}")


def test_a_backup_written_under_a_newer_schema_version_is_refused(tmp_path: Path) -> None:
    s = MemoryStore()
    _fill(s, schema_version=schema.SCHEMA_VERSION + 1)
    err = _refused(_backup_bytes(s), tmp_path)
    assert isinstance(err, BackupMismatch) and err.what == "schema_version"
    assert (err.stored, err.expected) == (
        str(schema.SCHEMA_VERSION + 1),
        str(schema.SCHEMA_VERSION),
    )


def _lengths(data: bytes, index: int, key_len: int, value_len: int) -> bytes:
    """data (a valid backup) with record `index`'s lengths replaced, digest resealed."""
    at = 8 + 6 + struct.unpack(">I", data[10:14])[0]
    for _ in range(index):
        k, v = struct.unpack(">HI", data[at + 1 : at + 7])
        at += 7 + k + v
    body = data[:-32]
    return _sealed(body[: at + 1] + struct.pack(">HI", key_len, value_len) + body[at + 7 :])


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: _lengths(d, 0, 1, 2**32 - 1), "record 0.value_len"),
        (lambda d: _lengths(d, 2, 0, 1), "record 2.key_len"),
        (lambda d: _lengths(d, 2, 2**16 - 1, 1), "record 2.key_len"),
        (lambda d: _craft(_meta(), count=2**63), "count"),
        (lambda d: _craft(_meta(), count=3), "count"),
        (lambda d: d[:10] + struct.pack(">I", 2**32 - 1) + d[14:], "header_len"),
        (lambda d: _craft(_meta(), version=2), "format"),
        (lambda d: _craft(_meta(), magic=b"NOTABKUP"), "magic"),
        (lambda d: d + b"\x00", "digest"),
    ],
)
def test_absurd_sizes_counts_and_framing_are_refused(
    mutate: Callable[[bytes], bytes], field: str, tmp_path: Path
) -> None:
    err = _refused(mutate(_good()), tmp_path)
    assert err.field == field, err.message
    assert not isinstance(err, BackupDigestMismatch)


def test_more_records_than_the_bound_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bk, "MAX_RECORDS", 3)
    err = _refused(_good(), tmp_path)
    assert (err.field, err.reason) == ("records", "more than 3")


@pytest.mark.parametrize(
    ("records", "field"),
    [
        (list(reversed(_meta())), "record 1.key"),
        (_meta() + _meta()[-1:], "record 4.key"),
        ([(b"Z-not-a-family", b"x"), *_meta()], "record 0.key"),
        ([*_meta(), (schema.qkd_lease_key("seq/a/b"), b"\x01")], "record 4.value"),
        (_meta(height=8), "header.height"),
        (_meta(chain="other"), "header.chain_id"),
        (_meta()[1:], "header.chain_id"),
    ],
)
def test_records_that_break_the_layout_are_refused(
    records: list[tuple[bytes, bytes]], field: str, tmp_path: Path
) -> None:
    err = _refused(_craft(records), tmp_path)
    assert err.field == field, err.message


def test_a_header_that_does_not_decode_is_refused(tmp_path: Path) -> None:
    data = _craft(_meta())
    h_len = struct.unpack(">I", data[10:14])[0]
    bad = _sealed(data[:14] + b"\xc1" * h_len + data[14 + h_len : -32])
    assert _refused(bad, tmp_path).field == "header"


# --- nothing is touched ------------------------------------------------------------------


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d[:-100],
        lambda d: d[:500] + bytes([d[500] ^ 1]) + d[501:],
        lambda d: d[:-32] + bytes(32),
        lambda d: _lengths(d, 3, 1, 2**31),
    ],
)
def test_a_refused_restore_touches_nothing(
    damage: Callable[[bytes], bytes], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    db = data_dir / "db"
    with LevelDBStore(db) as s:
        _fill(s)
        s.put(schema.block_key(50), b"the current store")
        before = list(s.iterate())
    bad = tmp_path / "bad.qbk"
    bad.write_bytes(damage(_good()))
    with pytest.raises(BackupError):
        restore(db, bad, EXPECTED)
    assert _listing(data_dir) == ["db"]
    with LevelDBStore(db) as s:
        assert list(s.iterate()) == before


def test_a_failed_save_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "node.qbk"

    def broken() -> Iterator[bytes]:
        yield _good()[:1000]
        raise StorageError("the store failed midway")

    with pytest.raises(StorageError):
        save_backup(out, broken(), EXPECTED)
    with pytest.raises(BackupTruncated):
        save_backup(out, iter([_good()[:1000]]), EXPECTED)
    with pytest.raises(BackupMismatch):
        save_backup(out, iter([_good()]), Expected("another-chain", GENESIS))
    assert _listing(tmp_path) == []


def test_a_store_without_chain_metadata_is_not_backed_up(tmp_path: Path) -> None:
    s = MemoryStore()
    s.put(schema.block_key(1), b"x")
    with pytest.raises(StorageError, match="no chain id"):
        save_backup(tmp_path / "x.qbk", store_chunks(s, NOW), EXPECTED)
    assert _listing(tmp_path) == []


def test_a_backup_written_under_schema_version_1_is_accepted(tmp_path: Path) -> None:
    """The node migrates a version 1 store when it opens it (tests/node/test_body_once)."""
    s = MemoryStore()
    _fill(s, schema_version=1)
    path = tmp_path / "old.qbk"
    path.write_bytes(_backup_bytes(s))
    assert check_backup(path, EXPECTED).header.schema_version == 1


def test_a_store_whose_last_block_is_damaged_is_not_backed_up(tmp_path: Path) -> None:
    """The damaged block holds the newest consensus values, the last keys of the store:
    the backup fails (`StorageCorrupt`) and leaves no file, instead of ending early with
    a complete-looking backup that lacks them."""
    db = tmp_path / "db"
    with LevelDBStore(db) as s:
        _fill(s)
        b = Batch()
        for h in range(1, 301):
            b.put(schema.consensus_value_key(h), hashlib.sha256(b"%d" % h).digest())
        s.write(b)
        s._db.compact_range()
    flip_bit_in_table(db, hashlib.sha256(b"300").digest(), offset=5)
    out = tmp_path / "node.qbk"
    with LevelDBStore(db) as s, pytest.raises(StorageCorrupt, match="checksum"):
        save_backup(out, store_chunks(s, NOW), EXPECTED)
    assert _listing(tmp_path) == ["db"]
