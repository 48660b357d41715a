"""The `KVStore` conformance suite: every backend must pass every test here."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qchain.errors import StorageError, StoreLocked
from qchain.store import Batch, KVStore, MemoryStore, open_store
from qchain.store.leveldb import LevelDBStore

Opener = Callable[[], KVStore]


@pytest.fixture(params=["memory", "leveldb"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    opened: list[KVStore] = []

    def open_() -> KVStore:
        s: KVStore = MemoryStore() if request.param == "memory" else LevelDBStore(tmp_path / "db")
        opened.append(s)
        return s

    yield open_
    for s in opened:
        s.close()


@pytest.fixture
def store(opener: Opener) -> KVStore:
    return opener()


def test_get_put_delete(store: KVStore) -> None:
    assert store.get(b"a") is None
    store.put(b"a", b"1")
    assert store.get(b"a") == b"1"
    store.put(b"a", b"2", sync=True)
    assert store.get(b"a") == b"2"
    store.put(b"", b"empty key")
    store.put(b"e", b"")
    assert store.get(b"") == b"empty key"
    assert store.get(b"e") == b""
    store.delete(b"a")
    assert store.get(b"a") is None
    store.delete(b"a")
    store.delete(b"never-there", sync=True)
    store.put(b"\x00\xff", b"\x00" * 1000)
    assert store.get(b"\x00\xff") == b"\x00" * 1000


def _fill(store: KVStore, keys: list[bytes]) -> None:
    b = Batch()
    for k in keys:
        b.put(k, b"v:" + k)
    store.write(b)


KEYS = [
    b"a",
    b"ab",
    b"ab\x00",
    b"ab\x00\x01",
    b"ab\xff",
    b"ab\xff\xff",
    b"abc",
    b"ac",
    b"b",
    b"\xff",
    b"\xff\xff\x01",
]


@pytest.mark.parametrize(
    "prefix", [b"", b"a", b"ab", b"ab\xff", b"\xff", b"\xff\xff", b"z", b"abc"]
)
def test_prefix_iteration_in_byte_order(store: KVStore, prefix: bytes) -> None:
    shuffled = list(KEYS)
    random.Random(1).shuffle(shuffled)
    _fill(store, shuffled)
    want = sorted(k for k in KEYS if k.startswith(prefix))
    assert [k for k, _ in store.iterate(prefix)] == want
    assert [k for k, _ in store.iterate(prefix, reverse=True)] == want[::-1]
    assert all(v == b"v:" + k for k, v in store.iterate(prefix))


@pytest.mark.parametrize("prefix", [b"", b"a", b"ab"])
@pytest.mark.parametrize(
    "start", [b"", b"a", b"ab\x00", b"ab\x01", b"abc", b"ac", b"zz", b"\xff\xff"]
)
def test_iteration_with_start(store: KVStore, prefix: bytes, start: bytes) -> None:
    _fill(store, KEYS)
    under = sorted(k for k in KEYS if k.startswith(prefix))
    forward = [k for k, _ in store.iterate(prefix, start=start)]
    assert forward == [k for k in under if k >= start]
    backward = [k for k, _ in store.iterate(prefix, start=start, reverse=True)]
    assert backward == [k for k in reversed(under) if k <= start]


def test_big_endian_heights_iterate_numerically(store: KVStore) -> None:
    from qchain.store import schema

    heights = [0, 1, 2, 255, 256, 1000, 65_536, 2**32, 2**64 - 1]
    b = Batch()
    for h in reversed(heights):
        b.put(schema.block_key(h), str(h).encode())
    store.write(b)
    got = [schema.read_u64(k[1:]) for k, _ in store.iterate(schema.BLOCK)]
    assert got == heights
    last = next(store.iterate(schema.BLOCK, reverse=True))
    assert last[1] == str(2**64 - 1).encode()
    below = next(store.iterate(schema.BLOCK, start=schema.block_key(999), reverse=True))
    assert below[1] == b"256"


def test_batch_is_applied_whole_and_last_write_wins(store: KVStore) -> None:
    store.put(b"gone", b"x")
    store.put(b"kept", b"x")
    b = Batch()
    b.put(b"k1", b"first")
    b.put(b"k2", b"v2")
    b.delete(b"gone")
    b.put(b"k1", b"second")
    b.delete(b"k2")
    b.put(b"k3", b"deleted-then-put")
    b.delete(b"k3")
    b.put(b"k3", b"final")
    assert len(b) == 4
    assert store.get(b"k1") is None  # nothing happens before write
    store.write(b, sync=True)
    assert store.get(b"k1") == b"second"
    assert store.get(b"k2") is None
    assert store.get(b"k3") == b"final"
    assert store.get(b"gone") is None
    assert store.get(b"kept") == b"x"
    store.write(Batch())
    assert [k for k, _ in store.iterate()] == [b"k1", b"k3", b"kept"]


def test_batch_rejects_non_bytes() -> None:
    b = Batch()
    with pytest.raises(TypeError):
        b.put("k", b"v")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        b.put(b"k", bytearray(b"v"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        b.delete(None)  # type: ignore[arg-type]


def test_writes_during_iteration_do_not_break_it(store: KVStore) -> None:
    _fill(store, [b"p1", b"p2", b"p3"])
    seen = []
    for k, _ in store.iterate(b"p"):
        seen.append(k)
        store.put(b"q" + k, b"x")
    assert seen == [b"p1", b"p2", b"p3"]


def test_closed_store_raises(store: KVStore) -> None:
    store.put(b"a", b"1")
    store.close()
    store.close()  # closing twice is harmless
    with pytest.raises(StorageError):
        store.get(b"a")
    with pytest.raises(StorageError):
        store.put(b"a", b"2")
    with pytest.raises(StorageError):
        store.delete(b"a")
    with pytest.raises(StorageError):
        list(store.iterate())
    b = Batch()
    b.put(b"x", b"y")
    with pytest.raises(StorageError):
        store.write(b)


def test_context_manager_closes(opener: Opener) -> None:
    with opener() as s:
        s.put(b"a", b"1")
    with pytest.raises(StorageError):
        s.get(b"a")


def test_leveldb_reopen_keeps_synced_data(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with LevelDBStore(path) as s:
        b = Batch()
        b.put(b"a", b"1")
        b.put(b"b", b"2")
        s.write(b, sync=True)
        s.put(b"c", b"3", sync=True)
        s.delete(b"b", sync=True)
    with open_store(path) as s:
        assert isinstance(s, LevelDBStore)
        assert list(s.iterate()) == [(b"a", b"1"), (b"c", b"3")]


def test_leveldb_second_opener_gets_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with LevelDBStore(path), pytest.raises(StoreLocked, match="cannot open"):
        LevelDBStore(path)
    LevelDBStore(path).close()  # released on close


def test_leveldb_unopenable_path(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_bytes(b"not a directory")
    with pytest.raises(StorageError):
        LevelDBStore(f)
    with pytest.raises(StorageError):
        LevelDBStore(f / "db")


def test_open_store_none_is_memory() -> None:
    assert isinstance(open_store(None), MemoryStore)


def test_snapshot_sees_the_store_as_it_was(store: KVStore) -> None:
    _fill(store, KEYS)
    snap = store.snapshot()
    b = Batch()
    b.put(b"a", b"changed")
    b.delete(b"b")
    b.put(b"new", b"x")
    store.write(b)
    assert snap.get(b"a") == b"v:a"
    assert snap.get(b"b") == b"v:b"
    assert snap.get(b"new") is None
    assert [k for k, _ in snap.iterate()] == sorted(KEYS)
    assert all(v == b"v:" + k for k, v in snap.iterate())
    under = [k for k, _ in snap.iterate(b"ab", start=b"ab\x01")]
    assert under == sorted(k for k in KEYS if k.startswith(b"ab") and k >= b"ab\x01")
    assert store.get(b"a") == b"changed"
    snap.close()
    with pytest.raises(StorageError):
        snap.get(b"a")


def test_snapshot_ends_with_its_store(store: KVStore) -> None:
    _fill(store, KEYS)
    with store.snapshot() as snap:
        it = snap.iterate()
        assert next(it)[0] == b"a"
        store.close()
        with pytest.raises(StorageError):
            list(it)
        with pytest.raises(StorageError):
            snap.iterate()
    with pytest.raises(StorageError):
        store.snapshot()
