"""Damaged storage is never read back as data: a flipped bit in a LevelDB table file
raises `StorageCorrupt` (not a raw plyvel error, not wrong bytes), and every backend tells
its `on_corrupt` listener."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from qchain.errors import StorageCorrupt, StorageError
from qchain.store import Batch, KVStore, MemoryStore
from qchain.store.kv import scan
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
