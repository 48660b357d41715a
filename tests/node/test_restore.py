"""`node.rebuild.restore`: a backup replaces the store in one go, the old store is kept
aside, a running node's store is refused, the QKD leases never go backwards, and the lease
floor (CONSENSUS.md §10.9 (7)) is written, above every number the node drew."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from node.backup import Expected, save_backup, store_chunks
from node.rebuild import merge_leases, restore
from qchain.errors import BackupError, StorageError, StoreLocked
from qchain.qkd.lease import Lease, clock_floor, read_floor
from qchain.store import Batch, MemoryStore, schema
from qchain.store.leveldb import LevelDBStore
from qchain.store.testing import flip_bit_in_table

CHAIN = "qchain-restore-test"
GENESIS = b"\x11" * 32
EXPECTED = Expected(CHAIN, GENESIS)
NOW = datetime(2026, 12, 4, 16, 0, 0, tzinfo=UTC)
FLOOR = clock_floor(int(NOW.timestamp() * 1000))
"""The floor a restore at NOW writes: `now_ms`·2^16 + 2^40."""
LINK_A = schema.qkd_lease_key("seq/sae-0/sae-1")
LINK_B = schema.qkd_lease_key("seq/sae-0/sae-2")
LINK_C = schema.qkd_lease_key("seq/sae-0/sae-3")


def _chain(height: int, leases: dict[bytes, int]) -> MemoryStore:
    s = MemoryStore()
    b = Batch()
    b.put(schema.META_SCHEMA_VERSION, schema.u64(schema.SCHEMA_VERSION))
    b.put(schema.META_CHAIN_ID, CHAIN.encode())
    b.put(schema.META_GENESIS_HASH, GENESIS)
    b.put(schema.META_LAST_HEIGHT, schema.u64(height))
    for h in range(1, height + 1):
        b.put(schema.block_key(h), b"block %d" % h)
    for key, value in leases.items():
        b.put(key, schema.u64(value))
    s.write(b)
    return s


def _backup(tmp_path: Path, height: int = 5, leases: dict[bytes, int] | None = None) -> Path:
    path = tmp_path / "node.qbk"
    store = _chain(height, {LINK_A: 8192, LINK_B: 4096} if leases is None else leases)
    save_backup(path, store_chunks(store, 1_780_000_000), EXPECTED, fsync=False)
    return path


def _current(db: Path, height: int, leases: dict[bytes, int]) -> None:
    with LevelDBStore(db) as s:
        b = Batch()
        for k, v in _chain(height, leases).iterate():
            b.put(k, v)
        s.write(b)


def _leases(db: Path) -> dict[bytes, int]:
    """The link leases (the floor apart)."""
    with LevelDBStore(db) as s:
        return {
            k: schema.read_u64(v)
            for k, v in s.iterate(schema.QKD_LEASE)
            if k != schema.QKD_LEASE_FLOOR
        }


def _floor(db: Path) -> int:
    with LevelDBStore(db) as s:
        return read_floor(s)


def test_restore_onto_a_wiped_data_dir_writes_the_floor(tmp_path: Path) -> None:
    backup = _backup(tmp_path)
    db = tmp_path / "data" / "db"
    done = restore(db, backup, EXPECTED, NOW)
    assert (done.header.height, done.moved_to) == (5, None)
    assert (done.leases_kept, done.leases_from_backup, done.floor) == (0, 2, FLOOR)
    assert _leases(db) == {LINK_A: 8192, LINK_B: 4096}
    assert _floor(db) == FLOOR
    with LevelDBStore(db) as s:
        assert s.get(schema.block_key(5)) == b"block 5"
        assert schema.read_u64(s.get(schema.META_LAST_HEIGHT) or b"") == 5
        assert s.get(schema.META_AMNESIA) == b""  # unsettled guard: §3.8
    assert sorted(p.name for p in db.parent.iterdir()) == ["db"]


def test_restore_keeps_the_current_leases_that_are_ahead(tmp_path: Path) -> None:
    backup = _backup(tmp_path)
    db = tmp_path / "data" / "db"
    # The node ran on after the backup: link A moved on; link B's store lease is older than
    # the backup's (the store is not the one the backup came from); link C is new.
    _current(db, 9, {LINK_A: 12288, LINK_B: 100, LINK_C: 4096})
    done = restore(db, backup, EXPECTED, NOW)
    assert done.moved_to == tmp_path / "data" / "db.replaced-20261204T160000Z"
    assert (done.leases_kept, done.leases_from_backup) == (2, 1)
    assert _leases(db) == {LINK_A: 12288, LINK_B: 4096, LINK_C: 4096}
    assert _floor(db) == FLOOR
    with LevelDBStore(db) as s:
        assert s.get(schema.block_key(9)) is None
        assert s.get(schema.block_key(5)) == b"block 5"
    with LevelDBStore(done.moved_to) as old:
        assert old.get(schema.block_key(9)) == b"block 9"


def test_restore_over_a_damaged_store_takes_the_backups_leases_under_the_floor(
    tmp_path: Path,
) -> None:
    backup = _backup(tmp_path)
    db = tmp_path / "data" / "db"
    _current(db, 9, {LINK_A: 12288})
    with LevelDBStore(db) as s:  # reopening moves the log into a table file
        s.put(b"m" + b"x" * 64, b"y")
    flip_bit_in_table(db, schema.u64(12288), offset=7)
    done = restore(db, backup, EXPECTED, NOW)
    assert done.moved_to is not None and done.moved_to.is_dir()
    assert (done.leases_kept, done.leases_from_backup) == (0, 2)
    assert _leases(db)[LINK_A] == 8192  # the store's lease (12288) is unknown
    with LevelDBStore(db) as s:  # the floor covers it: the link starts above 12288
        assert Lease(s, "seq/sae-0/sae-1", floor=read_floor(s)).next() == FLOOR > 12288


def test_restore_keeps_no_lease_of_a_family_whose_last_block_is_damaged(
    tmp_path: Path,
) -> None:
    """LINK_A's lease and 401 more links' span several table blocks, the last of which,
    the last keys of the store, is damaged: the replaced store's family is unknown, so no
    lease of it is kept, not even LINK_A's, ahead of the backup's (the floor covers it)."""
    backup = _backup(tmp_path)
    db = tmp_path / "data" / "db"
    _current(db, 9, {LINK_A: 12288})
    with LevelDBStore(db) as s:
        b = Batch()
        for i in range(400):
            b.put(schema.qkd_lease_key(f"seq/sae-0/x{i:03d}"), schema.u64(4096 + i))
        b.put(schema.qkd_lease_key("seq/sae-0/x400"), schema.u64(0x0123456789ABCDEF))
        s.write(b)
        s._db.compact_range()
    flip_bit_in_table(db, schema.u64(0x0123456789ABCDEF), offset=7)
    done = restore(db, backup, EXPECTED, NOW)
    assert (done.leases_kept, done.leases_from_backup, done.floor) == (0, 2, FLOOR)
    assert _leases(db) == {LINK_A: 8192, LINK_B: 4096}


def test_restore_refuses_a_running_node(tmp_path: Path) -> None:
    backup = _backup(tmp_path)
    db = tmp_path / "data" / "db"
    _current(db, 9, {LINK_A: 12288})
    with LevelDBStore(db), pytest.raises(StoreLocked):
        restore(db, backup, EXPECTED, NOW)
    assert sorted(p.name for p in db.parent.iterdir()) == ["db"]
    assert _leases(db) == {LINK_A: 12288}


def test_restore_refuses_a_backup_of_another_chain(tmp_path: Path) -> None:
    backup = _backup(tmp_path)
    db = tmp_path / "data" / "db"
    with pytest.raises(BackupError):
        restore(db, backup, Expected("another-chain", GENESIS), NOW)
    assert not db.parent.exists() or list(db.parent.iterdir()) == []


def test_merge_leases() -> None:
    u = schema.u64
    backup = {LINK_A: u(100), LINK_B: u(200)}
    assert merge_leases(backup, None) == (backup, 0)
    assert merge_leases(backup, {LINK_A: u(100), LINK_B: u(199)}) == (
        {LINK_A: u(100), LINK_B: u(200)},
        1,
    )
    assert merge_leases({}, {LINK_C: u(7)}) == ({LINK_C: u(7)}, 1)


def _put_floor(db: Path, raw: bytes) -> None:
    with LevelDBStore(db) as s:
        s.put(schema.QKD_LEASE_FLOOR, raw)


def test_restore_refuses_a_backup_floor_above_the_clock(tmp_path: Path) -> None:
    """A backup taken by a machine whose clock was ahead of this one's now (or this
    clock set back since): its floor is above the one this restore would write. Nothing
    changes, and the message names the clock."""
    store = _chain(5, {LINK_A: 8192})
    store.put(schema.QKD_LEASE_FLOOR, schema.u64(FLOOR + (1 << 16)))
    backup = tmp_path / "ahead.qbk"
    save_backup(backup, store_chunks(store, 1_780_000_000), EXPECTED, fsync=False)
    db = tmp_path / "data" / "db"
    _current(db, 9, {LINK_A: 12288})
    with pytest.raises(StorageError, match=r"the backup .*clock is behind"):
        restore(db, backup, EXPECTED, NOW)
    assert sorted(p.name for p in db.parent.iterdir()) == ["db"]
    assert _leases(db) == {LINK_A: 12288}
    # An hour later by the clock, the same backup restores, under a floor above its own.
    later = datetime(2026, 12, 4, 17, 0, 0, tzinfo=UTC)
    done = restore(db, backup, EXPECTED, later)
    assert done.floor == clock_floor(int(later.timestamp() * 1000)) > FLOOR + (1 << 16)


def test_restore_refuses_a_replaced_store_floor_above_the_clock(tmp_path: Path) -> None:
    backup = _backup(tmp_path)
    db = tmp_path / "data" / "db"
    _current(db, 9, {LINK_A: 12288})
    _put_floor(db, schema.u64(FLOOR + 1))
    with pytest.raises(StorageError, match=r"the replaced store .*clock is behind"):
        restore(db, backup, EXPECTED, NOW)
    assert sorted(p.name for p in db.parent.iterdir()) == ["db"]
    assert _floor(db) == FLOOR + 1


def test_restore_counts_a_damaged_store_floor_as_an_unreadable_family(tmp_path: Path) -> None:
    """A replaced store's floor out of range (or of the wrong length) makes its whole
    lease family unreadable: no lease of it is kept, and the floor is the clock's."""
    backup = _backup(tmp_path)
    for i, raw in enumerate((schema.u64(2**64 - 1), b"\x01" * 9)):
        db = tmp_path / f"data{i}" / "db"
        _current(db, 9, {LINK_A: 12288})
        _put_floor(db, raw)
        done = restore(db, backup, EXPECTED, NOW)
        assert (done.leases_kept, done.leases_from_backup, done.floor) == (0, 2, FLOOR)
        assert _leases(db) == {LINK_A: 8192, LINK_B: 4096}


def test_a_backup_whose_floor_is_damaged_is_refused(tmp_path: Path) -> None:
    """A floor out of range is refused when the backup is read back after writing (and
    by `restore`'s check of the file, which reads it the same way)."""
    store = _chain(5, {LINK_A: 8192})
    store.put(schema.QKD_LEASE_FLOOR, schema.u64(2**64 - 1))
    backup = tmp_path / "wild.qbk"
    with pytest.raises(BackupError, match=r"lease floor is above 2\^63: damaged"):
        save_backup(backup, store_chunks(store, 1_780_000_000), EXPECTED, fsync=False)
    assert not backup.exists()


def test_a_restored_lease_never_hands_out_a_used_value(tmp_path: Path) -> None:
    """The hazard itself, with a small lease block: after the backup the node uses values
    past the backup's lease; the restored node's first value, from the floor, is above all
    of them (from the backup's lease alone it would not be)."""
    db = tmp_path / "data" / "db"
    with LevelDBStore(db) as s:
        for k, v in _chain(3, {}).iterate():
            s.put(k, v)
        lease = Lease(s, "seq/sae-0/sae-1", block=16)
        for _ in range(10):
            lease.next()
        backup = tmp_path / "early.qbk"
        save_backup(backup, store_chunks(s, 1_780_000_000), EXPECTED, fsync=False)
        last = max(lease.next() for _ in range(100))
    assert schema.read_u64(_chain_lease(backup)) <= last  # the backup's lease is behind
    shutil.rmtree(db)
    restore(db, backup, EXPECTED, NOW)
    with LevelDBStore(db) as s:
        assert Lease(s, "seq/sae-0/sae-1", block=16).next() <= last
        assert Lease(s, "seq/sae-0/sae-1", block=16, floor=read_floor(s)).next() > last


def _chain_lease(backup: Path) -> bytes:
    from node.backup import read_backup

    found: list[bytes] = []
    read_backup(backup, EXPECTED, lambda k, v: found.append(v) if k == LINK_A else None)
    return found[0]


def test_a_backup_taken_under_a_settled_amnesia_guard_restores_unsettled(tmp_path: Path) -> None:
    """A backup of a node still under the guard carries its settled bound; restoring it
    must not let the node settle at once: the votes it cast after that backup are
    forgotten too (CONSENSUS.md §3.8)."""
    path = tmp_path / "node.qbk"
    store = _chain(5, {LINK_A: 8192})
    b = Batch()
    b.put(schema.META_AMNESIA, schema.u64(7))
    store.write(b)
    assert store.get(schema.META_AMNESIA) == schema.u64(7)
    save_backup(path, store_chunks(store, 1_780_000_000), EXPECTED, fsync=False)
    db = tmp_path / "data" / "db"
    restore(db, path, EXPECTED, NOW)
    with LevelDBStore(db) as s:
        assert s.get(schema.META_AMNESIA) == b""
