"""Helpers for tests of storage damage (kept in the package so the node's tests can use
them too): a store wrapper that hands out altered values, and a bit flip inside a LevelDB
table file of a closed database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from qchain.store.kv import Batch, KVStore, Snapshot


def flip_bit_in_table(db_dir: Path, needle: bytes, offset: int = 0, bit: int = 0) -> Path:
    """Flip one bit of the first occurrence of needle (at needle + offset) in a table file
    (`*.ldb`) of the closed LevelDB database at db_dir; the file that was changed. Raises
    `LookupError` when no table file holds needle (it may still be in the log: write
    more, or compact, before closing)."""
    for table in sorted(db_dir.glob("*.ldb")):
        data = bytearray(table.read_bytes())
        pos = data.find(needle)
        if pos >= 0:
            data[pos + offset] ^= 1 << bit
            table.write_bytes(bytes(data))
            return table
    raise LookupError(f"no table file in {db_dir} holds {needle.hex()[:32]}")


def flip_byte(value: bytes, index: int = -1) -> bytes:
    """value with one bit of one byte flipped."""
    b = bytearray(value)
    b[index] ^= 0x01
    return bytes(b)


class AlteringStore(KVStore):
    """A store that serves `alter(key, value)` for every key `match(key)` selects: damage
    that no checksum below the node sees (a memory error, or a block whose CRC was
    recomputed). Writes go through unchanged."""

    def __init__(
        self,
        inner: KVStore,
        match: Callable[[bytes], bool],
        alter: Callable[[bytes], bytes] = flip_byte,
    ) -> None:
        self.inner = inner
        self.match = match
        self.alter = alter

    def _out(self, key: bytes, value: bytes) -> bytes:
        return self.alter(value) if self.match(key) else value

    def get(self, key: bytes) -> bytes | None:
        value = self.inner.get(key)
        return None if value is None else self._out(key, value)

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        self.inner.put(key, value, sync=sync)

    def delete(self, key: bytes, *, sync: bool = False) -> None:
        self.inner.delete(key, sync=sync)

    def iterate(
        self, prefix: bytes = b"", *, start: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        for k, v in self.inner.iterate(prefix, start=start, reverse=reverse):
            yield k, self._out(k, v)

    def write(self, batch: Batch, *, sync: bool = True) -> None:
        self.inner.write(batch, sync=sync)

    def snapshot(self) -> Snapshot:
        return AlteringSnapshot(self, self.inner.snapshot())

    def close(self) -> None:
        self.inner.close()


class AlteringSnapshot(Snapshot):
    """A snapshot of an `AlteringStore`, altered the same way."""

    def __init__(self, store: AlteringStore, inner: Snapshot) -> None:
        self.store = store
        self.inner = inner

    def get(self, key: bytes) -> bytes | None:
        value = self.inner.get(key)
        return None if value is None else self.store._out(key, value)

    def iterate(
        self, prefix: bytes = b"", *, start: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        for k, v in self.inner.iterate(prefix, start=start):
            yield k, self.store._out(k, v)

    def close(self) -> None:
        self.inner.close()
