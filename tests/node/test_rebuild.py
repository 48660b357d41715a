"""`qchain node rebuild`: the damaged database moves aside, the QKD leases stay when they
can be read, and the lease floor (CONSENSUS.md §10.9 (7)) is written either way."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from node.rebuild import rebuild
from qchain.errors import StorageError
from qchain.qkd.lease import Lease, clock_floor, read_floor
from qchain.store import Batch, schema
from qchain.store.leveldb import LevelDBStore
from qchain.store.testing import flip_bit_in_table

NOW = datetime(2026, 12, 4, 16, 0, 0, tzinfo=UTC)
FLOOR = clock_floor(int(NOW.timestamp() * 1000))
LINK = schema.qkd_lease_key("seq/sae-3/sae-0")


def _old_db(path: Path, lease: bytes = schema.u64(8192), floor: bytes | None = None) -> None:
    with LevelDBStore(path) as s:
        b = Batch()
        b.put(LINK, lease)
        if floor is not None:
            b.put(schema.QKD_LEASE_FLOOR, floor)
        b.put(schema.block_key(1), b"a block")
        b.put(schema.META_LAST_HEIGHT, schema.u64(1))
        s.write(b)


def test_rebuild_moves_the_store_aside_and_keeps_only_the_leases(tmp_path: Path) -> None:
    db = tmp_path / "db"
    _old_db(db, floor=schema.u64(FLOOR - 5))
    done = rebuild(db, NOW)
    assert done.moved_to == tmp_path / "db.corrupt-20261204T160000Z"
    assert (done.leases, done.leases_readable, done.floor) == (1, True, FLOOR)
    with LevelDBStore(done.moved_to) as old:
        assert old.get(schema.block_key(1)) == b"a block"
    with LevelDBStore(db) as new:
        assert list(new.iterate()) == [
            (schema.META_AMNESIA, b""),  # the node forgot its votes (CONSENSUS.md §3.8)
            (schema.QKD_LEASE_FLOOR, schema.u64(FLOOR)),
            (LINK, schema.u64(8192)),
        ]


def test_rebuild_of_a_store_whose_lease_is_damaged_writes_the_floor(tmp_path: Path) -> None:
    """The table block holding the lease is damaged on disk (its checksum fails). No lease
    of it is carried, and the floor puts the link above every number it allowed."""
    db = tmp_path / "db"
    _old_db(db, lease=schema.u64(0x0123456789ABCDEF))
    with LevelDBStore(db) as s:  # reopening moves the log into a table file
        s.put(b"m" + b"x" * 64, b"y")
    flip_bit_in_table(db, schema.u64(0x0123456789ABCDEF), offset=7)
    done = rebuild(db, NOW)
    assert (done.leases, done.leases_readable, done.floor) == (0, False, FLOOR)
    with LevelDBStore(db) as new:
        assert list(new.iterate()) == [
            (schema.META_AMNESIA, b""),
            (schema.QKD_LEASE_FLOOR, schema.u64(FLOOR)),
        ]
        first = Lease(new, "seq/sae-3/sae-0", floor=read_floor(new)).next()
    assert first == FLOOR > 0x0123456789ABCDEF  # above what the lost lease allowed


def test_a_lease_family_whose_last_block_is_damaged_is_not_carried_in_part(
    tmp_path: Path,
) -> None:
    """LINK and 401 more links' leases span several table blocks, the last of which, the
    last keys of the store, is damaged: the family does not read whole, so no lease is
    carried (those that read tell nothing of those that did not)."""
    db = tmp_path / "db"
    _old_db(db)
    with LevelDBStore(db) as s:
        b = Batch()
        for i in range(400):
            b.put(schema.qkd_lease_key(f"seq/sae-3/x{i:03d}"), schema.u64(4096 + i))
        b.put(schema.qkd_lease_key("seq/sae-3/x400"), schema.u64(0x0123456789ABCDEF))
        s.write(b)
        s._db.compact_range()
    flip_bit_in_table(db, schema.u64(0x0123456789ABCDEF), offset=7)
    done = rebuild(db, NOW)
    assert (done.leases, done.leases_readable, done.floor) == (0, False, FLOOR)


def test_a_lease_family_reads_whole_or_not_at_all(tmp_path: Path) -> None:
    """A lease of the wrong length, or a floor out of range, makes the whole family
    unreadable: no lease is carried (one good lease tells nothing of the bad one's)."""
    for i, (lease, floor) in enumerate(
        [(b"\x01" * 7, None), (schema.u64(8192), schema.u64(2**64 - 1))]
    ):
        db = tmp_path / str(i) / "db"
        _old_db(db, lease=lease, floor=floor)
        with LevelDBStore(db) as s:
            s.put(schema.qkd_lease_key("seq/sae-3/sae-1"), schema.u64(4096))
        done = rebuild(db, NOW)
        assert (done.leases, done.leases_readable, done.floor) == (0, False, FLOOR)


def test_rebuild_of_a_store_that_cannot_be_opened_writes_the_floor(tmp_path: Path) -> None:
    db = tmp_path / "db"
    _old_db(db)
    (db / "CURRENT").write_text("MANIFEST-999999\n")  # names a manifest that is not there
    done = rebuild(db, NOW)
    assert (done.leases, done.leases_readable, done.floor) == (0, False, FLOOR)
    with LevelDBStore(db) as new:
        assert read_floor(new) == FLOOR


def test_rebuild_refuses_a_floor_above_the_clock(tmp_path: Path) -> None:
    db = tmp_path / "db"
    _old_db(db, floor=schema.u64(FLOOR + (1 << 16)))  # written a millisecond "later"
    with pytest.raises(StorageError, match=r"the damaged store .*clock is behind"):
        rebuild(db, NOW)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]
    with LevelDBStore(db) as s:
        assert s.get(schema.block_key(1)) == b"a block"


def test_rebuild_refuses_while_the_node_holds_the_store(tmp_path: Path) -> None:
    db = tmp_path / "db"
    _old_db(db)
    with LevelDBStore(db), pytest.raises(StorageError):
        rebuild(db, NOW)
    assert not (tmp_path / "db.corrupt-20261204T160000Z").exists()


def test_rebuild_without_a_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        rebuild(tmp_path / "db", NOW)
