"""LevelDB `KVStore` backend (plyvel).

Atomic batches map to LevelDB write batches; `sync=True` makes LevelDB fsync its log
before `write` returns, so an acknowledged batch survives a crash or power cut. LevelDB
allows one process per database: a second opener gets `StoreLocked` (a `StorageError`).

Every read verifies LevelDB's block checksums (`verify_checksums`; the database is opened
with `paranoid_checks`), so a flipped bit in a table file raises `StorageCorrupt` instead
of returning wrong bytes or fewer entries. The cost is one CRC32C over each table block
read from a file (4 KiB, or one larger value; about +35 µs for a 200 KB block body).
Iteration, forward or reverse, over the store or a snapshot, uses plyvel's raw iterator,
whose every move raises LevelDB's iterator status: LevelDB skips a block that fails its
checksum and keeps the error in that status, which plyvel's own iterator does not look at
once it runs out of entries. No plyvel exception escapes: damage is `StorageCorrupt`, any
other failure `StorageError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import plyvel

from qchain.errors import StorageError, StoreLocked
from qchain.store.kv import Batch, KVStore, Snapshot, check_open, prefix_end

WRITE_BUFFER_BYTES = 32 * 1024 * 1024


class LevelDBStore(KVStore):
    concurrent_writes = True
    """LevelDB applies a write batch under its own lock and publishes it to readers at
    once; writers queue and reach the log in order."""

    def __init__(self, path: Path) -> None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(f"cannot create the LevelDB directory {path}: {e}") from e
        try:
            self._db = plyvel.DB(
                str(path),
                create_if_missing=True,
                paranoid_checks=True,
                # Blocks are written in multi-megabyte batches of mostly signatures and
                # hashes: a larger memtable means fewer flushes and compactions, and
                # compressing incompressible bytes only costs CPU (-25% write CPU).
                write_buffer_size=WRITE_BUFFER_BYTES,
                compression=None,
            )
        except plyvel.IOError as e:
            if "lock" in _message(e).lower():
                raise StoreLocked(path, _message(e)) from e
            raise StorageError(f"cannot open LevelDB at {path}: {e}") from e
        except plyvel.Error as e:
            raise StorageError(f"LevelDB at {path} is damaged: {e}") from e
        self.path = path
        self._closed = False

    def _failed(self, key: bytes, e: plyvel.Error, near: bool = False) -> StorageError:
        """The error for a failed operation at key (near: an iterator failed after key,
        the last one it read, or where it started), naming the database."""
        if isinstance(e, plyvel.CorruptionError):
            where = ""
            if near:
                where = " (next to this key)" if key else " (at the start of an iteration)"
            return self.corrupt(key, f"{_message(e)} in LevelDB at {self.path}{where}")
        return StorageError(f"LevelDB at {self.path} failed at key {key.hex()}: {_message(e)}")

    def get(self, key: bytes) -> bytes | None:
        check_open(self._closed)
        try:
            value: bytes | None = self._db.get(key, verify_checksums=True)
        except plyvel.Error as e:
            raise self._failed(key, e) from e
        return value

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        check_open(self._closed)
        try:
            self._db.put(key, value, sync=sync)
        except plyvel.Error as e:
            raise self._failed(key, e) from e

    def delete(self, key: bytes, *, sync: bool = False) -> None:
        check_open(self._closed)
        try:
            self._db.delete(key, sync=sync)
        except plyvel.Error as e:
            raise self._failed(key, e) from e

    def iterate(
        self, prefix: bytes = b"", *, start: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        check_open(self._closed)
        if reverse:
            return self._iterate_reverse(prefix, start)
        return self._iterate_forward(self._db, prefix, start)

    def _iterate_forward(
        self, source: Any, prefix: bytes, start: bytes | None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Forward iteration over source, the database or one of its snapshots, with a raw
        iterator (module docstring): plyvel's iterator ends without an error when a
        damaged block has no entry after it (plyvel 1.5.1)."""
        lo = prefix if start is None else max(prefix, start)
        hi = prefix_end(prefix) if prefix else None
        it = source.raw_iterator(fill_cache=False, verify_checksums=True)
        last = lo
        try:
            if lo:
                it.seek(lo)
            else:
                it.seek_to_first()
            while it.valid():
                k = last = it.key()
                if hi is not None and k >= hi:
                    break
                yield k, it.value()
                it.next()
        except plyvel.Error as e:
            raise self._failed(last, e, near=True) from e
        finally:
            it.close()

    def _iterate_reverse(self, prefix: bytes, start: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        # plyvel's reverse iterator drops a range that holds exactly one key (plyvel 1.5.1),
        # so walk a raw iterator backwards from the upper bound instead.
        hi = prefix_end(prefix) if prefix else None
        it = self._db.raw_iterator(fill_cache=False, verify_checksums=True)
        last = start if start is not None else prefix
        try:
            if start is not None and (hi is None or start < hi):
                it.seek(start)  # first key >= start; step back unless it is start itself
                if not it.valid():
                    it.seek_to_last()
                elif it.key() != start:
                    it.prev()
            elif hi is not None:
                it.seek(hi)  # first key past the prefix; the one before it is the last in range
                if it.valid():
                    it.prev()
                else:
                    it.seek_to_last()
            else:
                it.seek_to_last()
            while it.valid():
                k = last = it.key()
                if not k.startswith(prefix):
                    break
                yield k, it.value()
                it.prev()
        except plyvel.Error as e:
            raise self._failed(last, e, near=True) from e
        finally:
            it.close()

    def write(self, batch: Batch, *, sync: bool = True) -> None:
        check_open(self._closed)
        try:
            with self._db.write_batch(sync=sync, transaction=True) as wb:
                for key, value in batch.ops():
                    if value is None:
                        wb.delete(key)
                    else:
                        wb.put(key, value)
        except plyvel.Error as e:
            raise self._failed(b"", e) from e

    def snapshot(self) -> Snapshot:
        check_open(self._closed)
        return LevelDBSnapshot(self, self._db.snapshot())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._db.close()


class LevelDBSnapshot(Snapshot):
    """A LevelDB snapshot (`plyvel.DB.snapshot`): reads see the database as it was when
    taken, with the same checksum verification and errors as the store's own reads."""

    def __init__(self, store: LevelDBStore, snap: Any) -> None:
        self._store = store
        self._snap = snap
        self._closed = False

    def _check(self) -> None:
        check_open(self._closed or self._store._closed)

    def get(self, key: bytes) -> bytes | None:
        self._check()
        try:
            value: bytes | None = self._snap.get(key, verify_checksums=True)
        except plyvel.Error as e:
            raise self._store._failed(key, e) from e
        return value

    def iterate(
        self, prefix: bytes = b"", *, start: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        self._check()
        return self._guarded(self._store._iterate_forward(self._snap, prefix, start))

    def _guarded(self, it: Iterator[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
        """it, failing with `StorageError` when the store closes under it (a node that
        stops while a backup streams)."""
        try:
            yield from it
        except RuntimeError as e:
            raise StorageError(f"LevelDB at {self._store.path} closed during a read: {e}") from e

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if not self._store._closed:
                self._snap.close()


def _message(e: plyvel.Error) -> str:
    arg = e.args[0] if e.args else e
    return arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)
