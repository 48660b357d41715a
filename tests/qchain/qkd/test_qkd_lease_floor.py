"""The lease floor (CONSENSUS.md §10.9 (7)): its computation and bounds, a lease that
starts at it and persists before it hands a number out, and links whose numbering jumps
to it after the node lost its store, which the peer that remembers the old numbers
accepts."""

from __future__ import annotations

import pytest

from qchain.errors import StorageError
from qchain.qkd.clock import VirtualClock
from qchain.qkd.endpoint import QKDEndpoint
from qchain.qkd.errors import StaleSequence
from qchain.qkd.frame import decode_frame
from qchain.qkd.lease import (
    FLOOR_MARGIN,
    MAX_FLOOR,
    MAX_LEASE,
    Lease,
    clock_floor,
    lease_floor,
    parse_floor,
    read_floor,
)
from qchain.qkd.simsource import LocalKeySource, full_mesh
from qchain.store import Batch, schema
from qchain.store.memory import MemoryStore

NOW_MS = 1_796_400_000_000  # 2026-12-04T16:00:00Z
LINK = schema.qkd_lease_key("seq/a/b")


def _with_floor(raw: bytes) -> MemoryStore:
    store = MemoryStore()
    store.put(schema.QKD_LEASE_FLOOR, raw)
    return store


def test_the_floor_is_the_clock_term_plus_the_margin() -> None:
    assert clock_floor(NOW_MS) == NOW_MS * 2**16 + 2**40
    assert FLOOR_MARGIN == 2**40
    # Above every number a lineage numbered from its leases alone could have drawn
    # (fewer than 2^7 restores by the old margin 2^48 and 2^47 frames: below 2^56).
    assert clock_floor(NOW_MS) > 2**56
    with pytest.raises(StorageError, match="before 1970"):
        clock_floor(-1)
    with pytest.raises(StorageError, match="out of range"):
        clock_floor(2**47)


def test_a_writer_takes_the_clock_term_over_every_lower_floor() -> None:
    now = clock_floor(NOW_MS)
    assert lease_floor([], NOW_MS) == now
    assert lease_floor([("the backup", 0), ("the store", now - 1)], NOW_MS) == now
    assert lease_floor([("the store", now)], NOW_MS) == now


def test_a_floor_above_the_clock_term_refuses_the_writer_naming_the_clock() -> None:
    later = clock_floor(NOW_MS + 1)  # written by a clock one millisecond ahead of this one
    with pytest.raises(StorageError, match=r"of the backup .*the clock is behind") as e:
        lease_floor([("the store", 0), ("the backup", later)], NOW_MS)
    assert str(later) in e.value.message


def test_a_stored_floor_is_bounded() -> None:
    assert parse_floor(None, "the store") == 0
    assert read_floor(MemoryStore()) == 0
    assert read_floor(_with_floor(schema.u64(MAX_FLOOR))) == MAX_FLOOR
    with pytest.raises(StorageError, match="9 bytes, not 8"):
        read_floor(_with_floor(b"\x00" * 9))
    with pytest.raises(StorageError, match="0 bytes, not 8"):
        read_floor(_with_floor(b""))
    for wild in (MAX_FLOOR + 1, 2**64 - 4097, MAX_LEASE):
        with pytest.raises(StorageError, match="above the largest floor 2\\^63: damaged"):
            read_floor(_with_floor(schema.u64(wild)))


def test_a_lease_starts_at_the_floor_and_persists_before_handing_out() -> None:
    floor = clock_floor(NOW_MS)
    store = MemoryStore()
    store.put(LINK, schema.u64(4096))  # the store's own lease, far below the floor
    lease = Lease(store, "seq/a/b", block=16, floor=floor)
    assert store.get(LINK) == schema.u64(4096)  # nothing written before the first number
    assert lease.next() == floor
    assert schema.read_u64(store.get(LINK) or b"") == floor + 16
    # Restarted on the same store: the persisted end is above the floor now.
    assert Lease(store, "seq/a/b", block=16, floor=floor).next() == floor + 16
    # A lease already above the floor keeps its own start.
    assert Lease(store, "seq/a/b", block=16, floor=floor - 1).next() == floor + 32


class FailingStore(MemoryStore):
    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        raise StorageError("disk full")

    def write(self, batch: Batch, *, sync: bool = False) -> None:
        raise StorageError("disk full")


def test_no_number_at_or_above_the_floor_is_used_unpersisted() -> None:
    lease = Lease(FailingStore(), "seq/a/b", block=16, floor=clock_floor(NOW_MS))
    with pytest.raises(StorageError, match="disk full"):
        lease.next()


def test_a_lease_near_the_end_of_the_64_bit_range_is_refused() -> None:
    store = MemoryStore()
    store.put(LINK, schema.u64(MAX_LEASE - 100))
    with pytest.raises(StorageError, match="too close to the end of the 64-bit range"):
        Lease(store, "seq/a/b", block=4096)
    last = Lease(MemoryStore(), "seq/a/b", block=1, floor=MAX_LEASE - 2)
    assert last.next() == MAX_LEASE - 2
    assert last.next() == MAX_LEASE - 1  # the frame number is this + 1: 2^64 - 1
    with pytest.raises(StorageError, match="reached the end of the 64-bit range"):
        last.next()


async def test_an_endpoint_with_a_damaged_floor_is_refused() -> None:
    manager = full_mesh(["a", "b"], VirtualClock(auto_advance=True), initial_key_count=10)
    store = _with_floor(schema.u64(MAX_LEASE))
    with pytest.raises(StorageError, match="lease floor of the store"):
        QKDEndpoint("c", "a", ["b"], LocalKeySource(manager, "a"), store=store)


async def _seqs(endpoint: QKDEndpoint, count: int) -> list[int]:
    return [decode_frame(await endpoint.sender("b").seal(b"x"))[0].seq for _ in range(count)]


async def test_a_node_that_lost_its_store_is_accepted_again_from_the_floor() -> None:
    """a sends frames, loses its store (state sync into a fresh directory, or a rebuild
    that could not read its leases) and comes back. b, which has not restarted, remembers
    a's last number. Numbered from 0, a's frames are refused as stale; numbered from the
    floor, the first is accepted: a jump forward is no replay."""
    clock = VirtualClock(auto_advance=True)
    manager = full_mesh(["a", "b"], clock, initial_key_count=1000)
    b = QKDEndpoint("c", "b", ["a"], LocalKeySource(manager, "b"), clock=clock)
    before = QKDEndpoint("c", "a", ["b"], LocalKeySource(manager, "a"), clock=clock)
    endpoints = [b, before]
    for ep in endpoints:
        ep.start()
    try:
        for _ in range(5):
            await b.receiver.open(await before.sender("b").seal(b"old"))
        assert b.receiver.peers["a"].last_seq == 5

        forgot = QKDEndpoint(
            "c", "a", ["b"], LocalKeySource(manager, "a"), clock=clock, store=MemoryStore()
        )
        endpoints.append(forgot)
        forgot.start()
        with pytest.raises(StaleSequence):
            await b.receiver.open(await forgot.sender("b").seal(b"from 1"))

        floor = clock_floor(NOW_MS)
        store = _with_floor(schema.u64(floor))
        synced = QKDEndpoint(
            "c", "a", ["b"], LocalKeySource(manager, "a"), clock=clock, store=store
        )
        endpoints.append(synced)
        synced.start()
        for i in range(3):
            opened = await b.receiver.open(await synced.sender("b").seal(bytes([i])))
            assert opened.seq == floor + 1 + i and opened.body == bytes([i])
        assert b.receiver.peers["a"].rejected == {"stale-sequence": 1}
        assert schema.read_u64(store.get(LINK) or b"") > floor
        # Strict from there on: a number at or below the last accepted one is stale.
        with pytest.raises(StaleSequence):
            await b.receiver.open(await before.sender("b").seal(b"replay"))
    finally:
        for ep in endpoints:
            await ep.close()


async def test_every_link_starts_at_the_floor_even_without_a_lease() -> None:
    clock = VirtualClock(auto_advance=True)
    manager = full_mesh(["a", "b", "d"], clock, initial_key_count=100)
    floor = clock_floor(NOW_MS)
    store = _with_floor(schema.u64(floor))
    store.put(schema.qkd_lease_key("seq/a/d"), schema.u64(floor + 8192))  # already above it
    ep = QKDEndpoint("c", "a", ["b", "d"], LocalKeySource(manager, "a"), clock=clock, store=store)
    ep.start()
    try:
        assert await _seqs(ep, 2) == [floor + 1, floor + 2]
        first_d = decode_frame(await ep.sender("d").seal(b"x"))[0].seq
        assert first_d == floor + 8192 + 1
    finally:
        await ep.close()


def test_a_lease_advances_only_forward_and_persists_before_handing_out() -> None:
    store = MemoryStore()
    lease = Lease(store, "seq/a/b", block=16)
    assert [lease.next(), lease.next()] == [0, 1]
    lease.advance(1)  # below the next value: nothing changes
    assert lease.next() == 2
    lease.advance(1000)
    assert schema.read_u64(store.get(LINK) or b"") == 16  # written with the next number
    assert lease.next() == 1000
    assert schema.read_u64(store.get(LINK) or b"") == 1016
    with pytest.raises(StorageError, match="too close to the end"):
        lease.advance(MAX_LEASE - 4)
    assert lease.next() == 1001


async def test_a_node_on_an_older_copy_of_its_store_is_accepted_at_its_next_connection() -> None:
    """A twin ran with a copy of a's store and drew numbers b accepted; a comes back on
    its own store, whose lease is behind them. At its connection (`resync`) the lease
    rises to the clock term, so its first frame is accepted; without the jump it was
    stale. A clock out of range leaves the numbers to the lease."""
    clock = VirtualClock(auto_advance=True)
    manager = full_mesh(["a", "b"], clock, initial_key_count=1000)
    b = QKDEndpoint("c", "b", ["a"], LocalKeySource(manager, "b"), clock=clock)
    store = MemoryStore()
    copy = MemoryStore()
    twin = QKDEndpoint("c", "a", ["b"], LocalKeySource(manager, "a"), clock=clock, store=copy)
    endpoints = [b, twin]
    for ep in endpoints:
        ep.start()
    try:
        twin.sender("b").now_ms = lambda: NOW_MS
        twin.sender("b").resync()
        for _ in range(5):
            await b.receiver.open(await twin.sender("b").seal(b"twin"))
        assert b.receiver.peers["a"].last_seq == clock_floor(NOW_MS) + 5

        a = QKDEndpoint("c", "a", ["b"], LocalKeySource(manager, "a"), clock=clock, store=store)
        endpoints.append(a)
        a.start()
        a.sender("b").now_ms = lambda: -1  # no usable clock: the lease alone
        a.sender("b").resync()
        with pytest.raises(StaleSequence):
            await b.receiver.open(await a.sender("b").seal(b"behind"))
        a.sender("b").now_ms = lambda: NOW_MS + 1
        a.sender("b").resync()
        opened = await b.receiver.open(await a.sender("b").seal(b"back"))
        assert opened.seq == clock_floor(NOW_MS + 1) + 1 and opened.body == b"back"
        assert schema.read_u64(store.get(LINK) or b"") > clock_floor(NOW_MS + 1)
    finally:
        for ep in endpoints:
            await ep.close()
