"""The key-value store interface every backend implements.

A store maps byte keys to byte values, iterates keys in byte order under a prefix, and
applies a `Batch` of puts and deletes atomically: after a crash either every write of a
batch is visible or none is. A batch written with `sync=True` is durable when `write`
returns. Stores are used from one thread at a time, except that a store whose
`concurrent_writes` is true (LevelDB) may apply a batch from one writer thread while
another thread reads it: a reader sees the whole batch or none of it, and batches reach
the disk in the order their writes began (the node's commit writer, `node.commitwriter`).

Reads never return bytes the store knows to be damaged: a backend that detects damage
(LevelDB's block checksums) raises `StorageCorrupt`, and so do the typed readers above
a store when a value does not match the hash that commits to it. Both go through
`KVStore.corrupt`, which tells the store's one `on_corrupt` listener (the node uses it to
stop serving and voting). `scan` reads everything once, for an integrity check at startup.

`snapshot` takes a consistent read-only view of the store as it is at that moment: writes
made afterwards are not seen through it, so a running node can be backed up while it
commits (`node.backup`). Close a snapshot when done; closing the store ends it too.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from qchain.errors import StorageCorrupt, StorageError


class Writes:
    """Puts and deletes recorded by key, in insertion order; the last write to a key wins
    and a deletion is recorded as None. The base of `Batch` and of the overlays of
    uncommitted state above the store."""

    __slots__ = ("_writes",)

    def __init__(self) -> None:
        self._writes: dict[bytes, bytes | None] = {}

    def put(self, key: bytes, value: bytes) -> None:
        if type(key) is not bytes or type(value) is not bytes:
            raise TypeError("keys and values are bytes")
        self._writes[key] = value

    def delete(self, key: bytes) -> None:
        if type(key) is not bytes:
            raise TypeError("keys are bytes")
        self._writes[key] = None


class Batch(Writes):
    """An ordered set of writes applied atomically by `KVStore.write`. The last write to a
    key wins."""

    __slots__ = ()

    def ops(self) -> Iterator[tuple[bytes, bytes | None]]:
        """(key, value) pairs in insertion order; value None means delete."""
        return iter(self._writes.items())

    def __len__(self) -> int:
        return len(self._writes)


class Closable(ABC):
    """Something released by `close`; `with` closes it at the end of the block."""

    @abstractmethod
    def close(self) -> None:
        """Release it. Later calls raise `StorageError`."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Snapshot(Closable):
    """A read-only view of a store as it was when `KVStore.snapshot` was called."""

    @abstractmethod
    def get(self, key: bytes) -> bytes | None:
        """The value at key when the snapshot was taken, or None."""

    @abstractmethod
    def iterate(
        self, prefix: bytes = b"", *, start: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with prefix, in byte order, as they were when
        the snapshot was taken; `start`, if given, is the first key to include."""

    @abstractmethod
    def close(self) -> None:
        """Release the snapshot. Later calls raise `StorageError`."""


class KVStore(Closable):
    """Ordered byte-key store with atomic batches."""

    concurrent_writes: bool = False
    """Whether `write` may run on a writer thread while other threads read."""

    write_latency_s: float | None = None
    """A simulated store's synced write latency: the node applies its commit batches that
    much later on its event loop instead of in a writer thread (`node.commitwriter`)."""

    on_corrupt: Callable[[StorageCorrupt], None] | None = None
    """Called with every `StorageCorrupt` raised through `corrupt`, before it is raised."""

    def corrupt(self, key: bytes, reason: str) -> StorageCorrupt:
        """The error to raise for damaged data at key, after telling `on_corrupt`."""
        err = StorageCorrupt(key, reason)
        if self.on_corrupt is not None:
            self.on_corrupt(err)
        return err

    @abstractmethod
    def get(self, key: bytes) -> bytes | None:
        """The value at key, or None."""

    @abstractmethod
    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        """Write one key."""

    @abstractmethod
    def delete(self, key: bytes, *, sync: bool = False) -> None:
        """Remove one key; removing a missing key is not an error."""

    @abstractmethod
    def iterate(
        self, prefix: bytes = b"", *, start: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with prefix, in byte order (or reversed).
        `start`, if given, is the first key to include (the last one when reversed)."""

    @abstractmethod
    def write(self, batch: Batch, *, sync: bool = True) -> None:
        """Apply every write of the batch atomically."""

    @abstractmethod
    def snapshot(self) -> Snapshot:
        """A consistent read-only view of the store as it is now."""

    @abstractmethod
    def close(self) -> None:
        """Release the store (and every open snapshot). Later calls raise `StorageError`."""


def open_store(path: str | Path | None) -> KVStore:
    """A LevelDB store at path (created if missing), or an in-memory store for None."""
    if path is None:
        from qchain.store.memory import MemoryStore

        return MemoryStore()
    from qchain.store.leveldb import LevelDBStore

    return LevelDBStore(Path(path))


@dataclass(frozen=True)
class ScanResult:
    keys: int
    complete: bool
    """False when the time budget ran out before the last key."""


def scan(store: KVStore, budget_s: float, prefix: bytes = b"") -> ScanResult:
    """Read every key and value under prefix once (a backend checks what it reads), for at
    most budget_s seconds. Damage raises `StorageCorrupt`."""
    deadline = time.monotonic() + budget_s
    keys = 0
    for _ in store.iterate(prefix):
        keys += 1
        if keys % 1024 == 0 and time.monotonic() > deadline:
            return ScanResult(keys, False)
    return ScanResult(keys, True)


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with prefix (None: no bound)."""
    p = bytearray(prefix)
    while p:
        if p[-1] != 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return None


def check_open(closed: bool) -> None:
    if closed:
        raise StorageError("store is closed")
