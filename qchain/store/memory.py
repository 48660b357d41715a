"""In-memory `KVStore`: a sorted dictionary, for tests and the simulator. Same semantics as
the LevelDB backend (the shared conformance suite checks both); durability is the process
lifetime."""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from qchain.store.kv import Batch, KVStore, Snapshot, check_open


class MemoryStore(KVStore):
    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []
        self._closed = False

    def get(self, key: bytes) -> bytes | None:
        check_open(self._closed)
        return self._data.get(key)

    def _put(self, key: bytes, value: bytes) -> None:
        if key not in self._data:
            bisect.insort(self._keys, key)
        self._data[key] = value

    def _delete(self, key: bytes) -> None:
        if key in self._data:
            del self._data[key]
            del self._keys[bisect.bisect_left(self._keys, key)]

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        check_open(self._closed)
        batch = Batch()
        batch.put(key, value)
        self.write(batch, sync=sync)

    def delete(self, key: bytes, *, sync: bool = False) -> None:
        check_open(self._closed)
        batch = Batch()
        batch.delete(key)
        self.write(batch, sync=sync)

    def iterate(
        self, prefix: bytes = b"", *, start: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        check_open(self._closed)
        return _select(self._keys, self._data, prefix, start, reverse)

    def write(self, batch: Batch, *, sync: bool = True) -> None:
        check_open(self._closed)
        for key, value in batch.ops():
            if value is None:
                self._delete(key)
            else:
                self._put(key, value)

    def snapshot(self) -> Snapshot:
        check_open(self._closed)
        return MemorySnapshot(self, dict(self._data), list(self._keys))

    def close(self) -> None:
        self._closed = True


class MemorySnapshot(Snapshot):
    """A copy of the store's keys and values (a memory store is small: tests and the
    simulator)."""

    def __init__(self, store: MemoryStore, data: dict[bytes, bytes], keys: list[bytes]) -> None:
        self._store = store
        self._data = data
        self._keys = keys
        self._closed = False

    def _check(self) -> None:
        check_open(self._closed or self._store._closed)

    def get(self, key: bytes) -> bytes | None:
        self._check()
        return self._data.get(key)

    def iterate(
        self, prefix: bytes = b"", *, start: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        self._check()
        return self._checked(_select(self._keys, self._data, prefix, start, False))

    def _checked(self, it: Iterator[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
        for item in it:
            self._check()
            yield item

    def close(self) -> None:
        self._closed = True


def _select(
    keys: list[bytes],
    data: dict[bytes, bytes],
    prefix: bytes,
    start: bytes | None,
    reverse: bool,
) -> Iterator[tuple[bytes, bytes]]:
    lo = bisect.bisect_left(keys, prefix)
    hi = lo
    while hi < len(keys) and keys[hi].startswith(prefix):
        hi += 1
    selected = keys[lo:hi]
    if start is not None:
        if reverse:
            selected = [k for k in selected if k <= start]
        else:
            selected = [k for k in selected if k >= start]
    if reverse:
        selected.reverse()
    return ((k, data[k]) for k in selected if k in data)
