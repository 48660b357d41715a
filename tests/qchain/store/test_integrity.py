"""Damaged storage is never read back as data: a flipped bit in a LevelDB table file
raises `StorageCorrupt` (not a raw plyvel error, not wrong bytes), and every backend tells
its `on_corrupt` listener."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qchain.errors import StorageCorrupt, StorageError
from qchain.store import Batch, KVStore, MemoryStore, schema
from qchain.store.kv import Snapshot, scan
from qchain.store.leveldb import LevelDBStore
from qchain.store.testing import flip_bit_in_table

VICTIM = b"k01000"


def _value(i: int) -> bytes:
    return (b"value-%05d-" % i) * 20


def _damaged_db(path: Path) -> Path:
    """A closed LevelDB whose table file has one bit flipped inside VICTIM's value."""
    with LevelDBStore(path) as s:
        b = Batch()
        for i in range(2000):
            b.put(b"k%05d" % i, _value(i))
        s.write(b)
        s._db.compact_range()
    flip_bit_in_table(path, _value(1000), offset=3)
    return path


@pytest.fixture(params=["memory", "leveldb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KVStore]:
    s: KVStore = MemoryStore() if request.param == "memory" else LevelDBStore(tmp_path / "db")
    yield s
    s.close()


def test_corrupt_tells_the_listener_and_is_a_storage_error(store: KVStore) -> None:
    seen: list[StorageCorrupt] = []
    store.on_corrupt = seen.append
    err = store.corrupt(b"\x01key", "hash mismatch")
    assert isinstance(err, StorageError)
    assert seen == [err]
    assert err.code == "store-corrupt"
    assert err.fields() == {"key": "016b6579", "reason": "hash mismatch"}


def test_scan_reads_everything(store: KVStore) -> None:
    b = Batch()
    for i in range(3000):
        b.put(b"k%05d" % i, b"v")
    store.write(b)
    assert scan(store, 10.0).complete
    assert scan(store, 10.0).keys == 3000


def test_flipped_bit_in_a_table_file_raises_store_corrupt_on_get(tmp_path: Path) -> None:
    with LevelDBStore(_damaged_db(tmp_path / "db")) as s:
        seen: list[StorageCorrupt] = []
        s.on_corrupt = seen.append
        with pytest.raises(StorageCorrupt) as e:
            s.get(VICTIM)
        assert "checksum" in e.value.reason
        assert e.value.key == VICTIM
        assert seen == [e.value]


def test_flipped_bit_in_a_table_file_raises_store_corrupt_on_iteration(tmp_path: Path) -> None:
    with LevelDBStore(_damaged_db(tmp_path / "db")) as s:
        with pytest.raises(StorageCorrupt):
            list(s.iterate(b"k"))
        with pytest.raises(StorageCorrupt):
            list(s.iterate(b"k", reverse=True))
        with pytest.raises(StorageCorrupt):
            scan(s, 10.0)


# A damaged block with no entry after it. LevelDB skips a block whose checksum fails and
# keeps the error in the iterator's status; plyvel's own iterator stops at the end without
# looking at that status, so these reads once came back short instead of raising.

FAMILY = b"z"
FAMILY_SIZE = 200
TAIL = b"z%05d" % (FAMILY_SIZE - 1)


def _tail_value(i: int) -> bytes:
    return _value(10_000 + i)


def _damaged_tail_db(path: Path) -> Path:
    """A closed LevelDB holding other keys, then a family of FAMILY_SIZE keys at the end of
    the key space (several table blocks), with one bit flipped in the value of its last key
    (TAIL): the last block of the last table is damaged."""
    with LevelDBStore(path) as s:
        b = Batch()
        for i in range(1000):
            b.put(b"a%05d" % i, _value(i))
        for i in range(FAMILY_SIZE):
            b.put(FAMILY + b"%05d" % i, _tail_value(i))
        s.write(b)
        s._db.compact_range()
    flip_bit_in_table(path, _tail_value(FAMILY_SIZE - 1), offset=3)
    return path


def _read_snapshot(s: LevelDBStore, read: Callable[[Snapshot], object]) -> object:
    with s.snapshot() as snap:
        return read(snap)


TAIL_READS: dict[str, Callable[[LevelDBStore], object]] = {
    "forward-prefix": lambda s: list(s.iterate(FAMILY)),
    "forward-whole-store": lambda s: list(s.iterate()),
    "forward-range": lambda s: list(s.iterate(FAMILY, start=FAMILY + b"00150")),
    "forward-from-an-earlier-family": lambda s: list(s.iterate(start=b"a00990")),
    "reverse-prefix": lambda s: list(s.iterate(FAMILY, reverse=True)),
    "reverse-whole-store": lambda s: list(s.iterate(reverse=True)),
    "reverse-range": lambda s: list(s.iterate(FAMILY, start=TAIL, reverse=True)),
    "get": lambda s: s.get(TAIL),
    "scan": lambda s: scan(s, 10.0),
    "snapshot-forward-prefix": lambda s: _read_snapshot(s, lambda snap: list(snap.iterate(FAMILY))),
    "snapshot-forward-range": lambda s: _read_snapshot(
        s, lambda snap: list(snap.iterate(FAMILY, start=FAMILY + b"00150"))
    ),
    "snapshot-get": lambda s: _read_snapshot(s, lambda snap: snap.get(TAIL)),
}


@pytest.mark.parametrize("read", TAIL_READS.values(), ids=TAIL_READS.keys())
def test_damaged_last_block_raises_store_corrupt_on_every_read_path(
    tmp_path: Path, read: Callable[[LevelDBStore], object]
) -> None:
    with LevelDBStore(_damaged_tail_db(tmp_path / "db")) as s:
        seen: list[StorageCorrupt] = []
        s.on_corrupt = seen.append
        with pytest.raises(StorageCorrupt) as e:
            read(s)
        assert "checksum" in e.value.reason
        assert seen == [e.value]


def test_undamaged_reads_before_the_damaged_block_still_succeed(tmp_path: Path) -> None:
    with LevelDBStore(_damaged_tail_db(tmp_path / "db")) as s:
        rows = list(s.iterate(b"a"))
        assert [k for k, _ in rows] == [b"a%05d" % i for i in range(1000)]
        assert rows[-1][1] == _value(999)
        assert s.get(FAMILY + b"00000") == _tail_value(0)
        assert list(s.iterate(FAMILY + b"00000")) == [(FAMILY + b"00000", _tail_value(0))]


def test_a_family_held_in_one_damaged_block_is_not_read_as_empty(tmp_path: Path) -> None:
    """The QKD lease family (`q`) of a small store sits in the last block with the other
    keys: a flipped bit there must not read as 'no leases'."""
    path = tmp_path / "db"
    lease = schema.qkd_lease_key("seq/sae-3/sae-0")
    with LevelDBStore(path) as s:
        b = Batch()
        b.put(lease, schema.u64(0x0123456789ABCDEF))
        b.put(schema.block_key(1), b"a block")
        s.write(b)
    with LevelDBStore(path) as s:
        s.put(b"m" + b"x" * 64, b"y")  # a key before the family, left in the log
    flip_bit_in_table(path, schema.u64(0x0123456789ABCDEF), offset=7)
    with LevelDBStore(path) as s:
        with pytest.raises(StorageCorrupt):
            list(s.iterate(schema.QKD_LEASE))
        with pytest.raises(StorageCorrupt):
            list(s.iterate(schema.QKD_LEASE, reverse=True))
        with pytest.raises(StorageCorrupt):
            s.get(lease)
