"""The key-value store interface every backend implements.

A store maps byte keys to byte values, iterates keys in byte order under a prefix, and
applies a `Batch` of puts and deletes atomically: after a crash either every write of a
batch is visible or none is. A batch written with `sync=True` is durable when `write`
returns. Stores are used from one thread at a time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

from qchain.errors import StorageError


class Batch:
    """An ordered set of writes applied atomically by `KVStore.write`. The last write to a
    key wins."""

    __slots__ = ("_ops",)

    def __init__(self) -> None:
        self._ops: dict[bytes, bytes | None] = {}

    def put(self, key: bytes, value: bytes) -> None:
        if type(key) is not bytes or type(value) is not bytes:
            raise TypeError("keys and values are bytes")
        self._ops[key] = value

    def delete(self, key: bytes) -> None:
        if type(key) is not bytes:
            raise TypeError("keys are bytes")
        self._ops[key] = None

    def ops(self) -> Iterator[tuple[bytes, bytes | None]]:
        """(key, value) pairs in insertion order; value None means delete."""
        return iter(self._ops.items())

    def __len__(self) -> int:
        return len(self._ops)


class KVStore(ABC):
    """Ordered byte-key store with atomic batches."""

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
    def close(self) -> None:
        """Release the store. Later calls raise `StorageError`."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_store(path: str | Path | None) -> KVStore:
    """A LevelDB store at path (created if missing), or an in-memory store for None."""
    if path is None:
        from qchain.store.memory import MemoryStore

        return MemoryStore()
    from qchain.store.leveldb import LevelDBStore

    return LevelDBStore(Path(path))


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
