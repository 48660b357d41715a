"""State views: what a contract reads and writes instead of the store.

- A `StateSource` is anything that reads: a `KVStore` or an `Overlay`.
- An `Overlay` records puts and deletes on top of a source without touching it. Overlays
  nest: block execution puts a per-block overlay on the store and a per-transaction
  overlay on that; a transaction that fails drops its overlay, one that succeeds merges it
  into the block's. `Overlay.changes()` is the write set: every key whose value differs
  from the base, sorted by key, with `None` for a deletion.
- A `StateReader` / `StateWriter` is a view scoped to one contract's key space
  (`qchain.store.schema.state_key`); keys a contract uses are relative to that space.

Values are stored with the canonical codec: structs with `Struct.encode`, integers with
`encode_value`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, TypeAlias, TypeVar

from qchain.codec import Struct, decode_value, encode_value
from qchain.errors import StorageError
from qchain.store import Batch
from qchain.store.kv import Writes
from qchain.store.schema import state_prefix

WriteSet: TypeAlias = tuple[tuple[bytes, bytes | None], ...]
"""Sorted (store key, new value or None for a deletion) pairs."""

S = TypeVar("S", bound=Struct)


class StateSource(Protocol):
    """Read access to ordered byte keys: implemented by `KVStore` and `Overlay`."""

    def get(self, key: bytes) -> bytes | None: ...

    def iterate(
        self, prefix: bytes = b"", *, start: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]: ...


class Overlay(Writes):
    """Uncommitted writes over a base source."""

    __slots__ = ("_base",)

    def __init__(self, base: StateSource) -> None:
        super().__init__()
        self._base = base

    @property
    def base(self) -> StateSource:
        return self._base

    def get(self, key: bytes) -> bytes | None:
        if key in self._writes:
            return self._writes[key]
        return self._base.get(key)

    def iterate(
        self, prefix: bytes = b"", *, start: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Like `KVStore.iterate`, over the base with this overlay's writes applied. The
        overlay's own keys are snapshotted when iteration starts."""
        local = sorted(
            (
                (k, v)
                for k, v in self._writes.items()
                if k.startswith(prefix)
                and (start is None or (k <= start if reverse else k >= start))
            ),
            reverse=reverse,
        )
        i = 0
        for bk, bv in self._base.iterate(prefix, start=start, reverse=reverse):
            while i < len(local) and (local[i][0] > bk if reverse else local[i][0] < bk):
                k, v = local[i]
                i += 1
                if v is not None:
                    yield k, v
            if i < len(local) and local[i][0] == bk:
                k, v = local[i]
                i += 1
                if v is not None:
                    yield k, v
                continue
            yield bk, bv
        for k, v in local[i:]:
            if v is not None:
                yield k, v

    def child(self) -> Overlay:
        """A new overlay on top of this one."""
        return Overlay(self)

    def merge_into(self, parent: Overlay) -> None:
        """Move this overlay's writes into parent (this overlay must sit on parent)."""
        if self._base is not parent:
            raise ValueError("an overlay merges only into its own base")
        parent._writes.update(self._writes)
        self._writes = {}

    def apply(self, write_set: WriteSet) -> None:
        """Record a write set (e.g. a block executed earlier and not yet committed)."""
        for key, value in write_set:
            if value is None:
                self.delete(key)
            else:
                self.put(key, value)

    def changes(self) -> WriteSet:
        """The write set: keys whose value differs from the base, sorted by key."""
        out: list[tuple[bytes, bytes | None]] = []
        for key in sorted(self._writes):
            value = self._writes[key]
            if value != self._base.get(key):
                out.append((key, value))
        return tuple(out)


def write_set_to_batch(write_set: WriteSet, batch: Batch) -> None:
    """Add every write of a write set to a store batch."""
    for key, value in write_set:
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)


class StateReader:
    """Read-only view of one contract's state; keys are relative to the contract."""

    __slots__ = ("_prefix", "_source", "contract")

    def __init__(self, source: StateSource, contract: str) -> None:
        self._source = source
        self._prefix = state_prefix(contract)
        self.contract = contract

    def get(self, key: bytes) -> bytes | None:
        return self._source.get(self._prefix + key)

    def has(self, key: bytes) -> bool:
        return self._source.get(self._prefix + key) is not None

    def load(self, key: bytes, cls: type[S]) -> S | None:
        """The struct stored at key, or None."""
        raw = self.get(key)
        return None if raw is None else cls.decode(raw)

    def get_int(self, key: bytes, default: int = 0) -> int:
        raw = self.get(key)
        if raw is None:
            return default
        value = decode_value(raw)
        if type(value) is not int:
            raise StorageError(f"state value at {key.hex()} is not an integer")
        return value

    def iterate(
        self, prefix: bytes = b"", *, start: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """(relative key, value) pairs under prefix, in key order (or reversed)."""
        n = len(self._prefix)
        full_start = None if start is None else self._prefix + start
        for k, v in self._source.iterate(self._prefix + prefix, start=full_start, reverse=reverse):
            yield k[n:], v


class StateWriter(StateReader):
    """Read-write view of one contract's state inside an overlay."""

    __slots__ = ("_overlay",)

    def __init__(self, overlay: Overlay, contract: str) -> None:
        super().__init__(overlay, contract)
        self._overlay = overlay

    def put(self, key: bytes, value: bytes) -> None:
        self._overlay.put(self._prefix + key, value)

    def delete(self, key: bytes) -> None:
        self._overlay.delete(self._prefix + key)

    def save(self, key: bytes, value: Struct) -> None:
        self.put(key, value.encode())

    def put_int(self, key: bytes, value: int) -> None:
        self.put(key, encode_value(value))
