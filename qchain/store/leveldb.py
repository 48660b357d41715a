"""LevelDB `KVStore` backend (plyvel).

Atomic batches map to LevelDB write batches; `sync=True` makes LevelDB fsync its log
before `write` returns, so an acknowledged batch survives a crash or power cut. LevelDB
allows one process per database: a second opener gets a `StorageError` naming the lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import plyvel

from qchain.errors import StorageError
from qchain.store.kv import Batch, KVStore, check_open, prefix_end


class LevelDBStore(KVStore):
    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        try:
            self._db = plyvel.DB(str(path), create_if_missing=True, paranoid_checks=True)
        except plyvel.IOError as e:
            raise StorageError(f"cannot open LevelDB at {path}: {e}") from e
        except plyvel.Error as e:
            raise StorageError(f"LevelDB at {path} is damaged: {e}") from e
        self.path = path
        self._closed = False

    def get(self, key: bytes) -> bytes | None:
        check_open(self._closed)
        value: bytes | None = self._db.get(key)
        return value

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        check_open(self._closed)
        self._db.put(key, value, sync=sync)

    def delete(self, key: bytes, *, sync: bool = False) -> None:
        check_open(self._closed)
        self._db.delete(key, sync=sync)

    def iterate(
        self, prefix: bytes = b"", *, start: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        check_open(self._closed)
        lo: bytes | None = prefix or None
        hi = prefix_end(prefix) if prefix else None
        include_stop = False
        if start is not None:
            if reverse:
                hi, include_stop = start, True
            else:
                lo = start
        it = self._db.iterator(
            start=lo, stop=hi, include_stop=include_stop, reverse=reverse, fill_cache=False
        )
        with it:
            for k, v in it:
                if k.startswith(prefix):
                    yield k, v

    def write(self, batch: Batch, *, sync: bool = True) -> None:
        check_open(self._closed)
        with self._db.write_batch(sync=sync, transaction=True) as wb:
            for key, value in batch.ops():
                if value is None:
                    wb.delete(key)
                else:
                    wb.put(key, value)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._db.close()
