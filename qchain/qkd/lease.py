"""Counters that never repeat a value, even across a crash.

A `Lease` hands out consecutive integers. Before it hands out a value it has not yet
leased, it persists the end of a new block of `block` values with a synced write under
`qkd_lease_key(name)`; after a restart it starts at the persisted end, so values handed
out before the crash (and the unused rest of their block) are never handed out again.
The simulated key source uses this for its key counter, so a restarted simulation with
the same seed never re-derives a key it has already given out.
"""

from __future__ import annotations

from qchain.store.kv import KVStore
from qchain.store.schema import qkd_lease_key, read_u64, u64


class Lease:
    def __init__(self, store: KVStore, name: str, block: int = 4096) -> None:
        if block < 1:
            raise ValueError("a lease block holds at least one value")
        self._store = store
        self._key = qkd_lease_key(name)
        self._block = block
        raw = store.get(self._key)
        self._next = 0 if raw is None else read_u64(raw)
        self._end = self._next

    def next(self) -> int:
        """The next value, persisting a new lease first when the current one is used up."""
        if self._next >= self._end:
            end = self._next + self._block
            self._store.put(self._key, u64(end), sync=True)
            self._end = end
        value = self._next
        self._next += 1
        return value
