"""In-memory `KVStore`: a sorted dictionary, for tests and the simulator. Same semantics as
the LevelDB backend (the shared conformance suite checks both); durability is the process
lifetime."""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from qchain.store.kv import Batch, KVStore, check_open


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
        keys = self._keys
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
        for k in selected:
            v = self._data.get(k)
            if v is not None:
                yield k, v

    def write(self, batch: Batch, *, sync: bool = True) -> None:
        check_open(self._closed)
        for key, value in batch.ops():
            if value is None:
                self._delete(key)
            else:
                self._put(key, value)

    def close(self) -> None:
        self._closed = True
