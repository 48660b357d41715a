"""`qchain node rebuild`: the damaged database moves aside, the QKD leases stay."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from node.rebuild import rebuild
from qchain.errors import StorageError
from qchain.store import Batch, schema
from qchain.store.leveldb import LevelDBStore

NOW = datetime(2026, 12, 4, 16, 0, 0, tzinfo=UTC)


def _old_db(path: Path) -> None:
    with LevelDBStore(path) as s:
        b = Batch()
        b.put(schema.qkd_lease_key("seq/sae-3/sae-0"), schema.u64(8192))
        b.put(schema.block_key(1), b"a block")
        b.put(schema.META_LAST_HEIGHT, schema.u64(1))
        s.write(b)


def test_rebuild_moves_the_store_aside_and_keeps_only_the_leases(tmp_path: Path) -> None:
    db = tmp_path / "db"
    _old_db(db)
    done = rebuild(db, NOW)
    assert done.moved_to == tmp_path / "db.corrupt-20261204T160000Z"
    assert done.leases == 1
    with LevelDBStore(done.moved_to) as old:
        assert old.get(schema.block_key(1)) == b"a block"
    with LevelDBStore(db) as new:
        assert list(new.iterate()) == [
            (schema.META_AMNESIA, b""),  # the node forgot its votes (CONSENSUS.md §3.8)
            (schema.qkd_lease_key("seq/sae-3/sae-0"), schema.u64(8192)),
        ]


def test_rebuild_refuses_while_the_node_holds_the_store(tmp_path: Path) -> None:
    db = tmp_path / "db"
    _old_db(db)
    with LevelDBStore(db), pytest.raises(StorageError):
        rebuild(db, NOW)
    assert not (tmp_path / "db.corrupt-20261204T160000Z").exists()


def test_rebuild_without_a_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        rebuild(tmp_path / "db", NOW)
