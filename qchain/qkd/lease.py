"""Counters that never repeat a value, even across a crash, and the lease floor.

A `Lease` hands out consecutive integers. Before it hands out a value it has not yet
leased, it persists the end of a new block of `block` values with a synced write under
`qkd_lease_key(name)`; after a restart it starts at the persisted end, so values handed
out before the crash (and the unused rest of their block) are never handed out again.
The simulated key source uses this for its key counter, so a restarted simulation with
the same seed never re-derives a key it has already given out.

A lease may also start at a `floor` above its persisted end. The **lease floor**
(`schema.QKD_LEASE_FLOOR`, CONSENSUS.md §10.9 (7)) is one value per store that every
writer of the amnesia mark (`restore`, `rebuild`, state sync) writes: F = max(every floor
it can read, `now_ms`·2^16 + 2^40). Every link's frame numbers start at max(its lease, F)
(`qchain.qkd.endpoint`), so a node whose leases were lost or are behind still numbers its
frames above everything its earlier incarnations sent, and its peers accept them. With a
wall clock that never goes back, every number a store's lineage drew is below the clock
term of any later moment plus 2^40 + 2^13, so a floor written later is above all of them
(CONSENSUS.md, Revision 1.15 S2 and Revision 1.17 T2). A floor read from disk is bounded
(`parse_floor`), and a writer refuses to run on a floor above its own clock term
(`lease_floor`): that floor shows a clock set back.
"""

from __future__ import annotations

from collections.abc import Iterable

from qchain.errors import StorageError
from qchain.store.kv import KVStore
from qchain.store.schema import QKD_LEASE_FLOOR, qkd_lease_key, read_u64, u64

MAX_LEASE = 2**64 - 1
"""The largest value a lease persists: leases are u64."""
FLOOR_MARGIN = 1 << 40
"""What a floor adds to the clock term: 2^24 ms (4.6 hours) of clock, and far more than a
lease block."""
CLOCK_SHIFT = 16
"""The clock term is `now_ms`·2^16: a link draws far fewer than 2^16 numbers a
millisecond, so numbers never gain on it."""
MAX_FLOOR = 1 << 63
"""The largest floor read or written. `now_ms`·2^16 + 2^40 reaches 2^63 only after the
year 6400, so a larger value is damage, and it keeps half the 64-bit range for the links'
numbers above the floor."""


def clock_floor(now_ms: int) -> int:
    """The floor a writer of the mark writes at `now_ms` (ms since the Unix epoch) when
    every floor it read is lower."""
    if now_ms < 0:
        raise StorageError(f"the wall clock reads {now_ms} ms, before 1970")
    floor = (now_ms << CLOCK_SHIFT) + FLOOR_MARGIN
    if floor > MAX_FLOOR:
        raise StorageError(
            f"the wall clock reads {now_ms} ms: a lease floor from it is out of range"
        )
    return floor


def parse_floor(raw: bytes | None, where: str) -> int:
    """A stored lease floor (0 when absent), refused with `StorageError` when it is not an
    8-byte integer or is above `MAX_FLOOR`; `where` names the store in the message."""
    if raw is None:
        return 0
    if len(raw) != 8:
        raise StorageError(f"the lease floor of {where} is {len(raw)} bytes, not 8: damaged")
    value = read_u64(raw)
    if value > MAX_FLOOR:
        raise StorageError(
            f"the lease floor of {where} is {value}, above the largest floor 2^63: damaged"
        )
    return value


def read_floor(store: KVStore, where: str = "the store") -> int:
    """The store's lease floor, 0 if it has none (see `parse_floor`)."""
    return parse_floor(store.get(QKD_LEASE_FLOOR), where)


def lease_floor(floors: Iterable[tuple[str, int]], now_ms: int) -> int:
    """The floor a writer of the amnesia mark writes: the largest of the floors it read
    (each named by where it was read) and `clock_floor(now_ms)`. A floor read above
    `clock_floor(now_ms)` was written at a later clock reading than this one: the wall
    clock was set back, and the writer must not run (`StorageError` naming the clock)."""
    ceiling = clock_floor(now_ms)
    for where, floor in floors:
        if floor > ceiling:
            raise StorageError(
                f"the lease floor of {where} ({floor}) is above the one this machine's wall "
                f"clock gives now ({ceiling}): the clock is behind the moment that floor was "
                "written; set the clock right (NTP) and run again"
            )
        ceiling = max(ceiling, floor)
    return ceiling


class Lease:
    def __init__(self, store: KVStore, name: str, block: int = 4096, *, floor: int = 0) -> None:
        """A counter persisted under `qkd_lease_key(name)`, starting at max(the persisted
        end, `floor`); refused (`StorageError`) when that start leaves no room for one
        block below 2^64."""
        if block < 1:
            raise ValueError("a lease block holds at least one value")
        self._store = store
        self._key = qkd_lease_key(name)
        self._block = block
        raw = store.get(self._key)
        stored = 0 if raw is None else read_u64(raw)
        self._next = max(stored, floor)
        if self._next > MAX_LEASE - block:
            raise StorageError(
                f"lease {name!r} starts at {self._next}, too close to the end of the 64-bit range"
            )
        self._end = self._next

    def advance(self, floor: int) -> None:
        """Hand out nothing below `floor` from now on (a floor at or below the next value
        changes nothing); the next value persists a new block above it first. Refused
        (`StorageError`) when that leaves no room for one block below 2^64."""
        if floor <= self._next:
            return
        if floor > MAX_LEASE - self._block:
            raise StorageError(
                f"lease {self._key[1:]!r} cannot move to {floor}: too close to the end of the "
                "64-bit range"
            )
        self._next = floor

    def next(self) -> int:
        """The next value, persisting a new lease first when the current one is used up."""
        if self._next >= self._end:
            end = self._next + self._block
            if end > MAX_LEASE:
                raise StorageError(f"lease {self._key[1:]!r} reached the end of the 64-bit range")
            self._store.put(self._key, u64(end), sync=True)
            self._end = end
        value = self._next
        self._next += 1
        return value
