"""The snapshots a validator keeps: written with the commit of each checkpoint height,
pruned to the newest `snapshot_keep`, and read back checked so that a damaged store never
serves a chunk (`node.snapshots`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.snapshot import decode_chunk
from devnet.network import plan_network, write_network
from node import snapshots
from node.runtime import Validator
from qchain.config import load_config
from qchain.errors import StorageCorrupt
from qchain.store import KVStore, MemoryStore, schema
from qchain.store.testing import AlteringStore

INTERVAL = 2


def _validator(tmp_path: Path, store: KVStore) -> Validator:
    if not (tmp_path / "network.json").exists():
        plan = plan_network(base_port=None, scheme="ed25519", state_root_interval=INTERVAL)
        write_network(tmp_path, plan)
    return Validator(load_config(tmp_path / "nodes" / "node0" / "config.toml"), store=store)


def _commit(v: Validator, count: int) -> None:
    for _ in range(count):
        height = v.chain.height() + 1
        parent = v.app.committed_value(height - 1)
        assert parent is not None
        p = v.app.build(height, 0, parent, 0, [], now_ms=1_000 * height)
        v.store.write(v.app.commit_batch(p), sync=True)


def test_checkpoints_are_kept_and_pruned(tmp_path: Path) -> None:
    store = MemoryStore()
    v = _validator(tmp_path, store)
    assert v.app.state_root_interval == INTERVAL and v.app.snapshot_keep == 2
    seen = []
    for _ in range(7):
        _commit(v, 1)
        seen.append(snapshots.heights(store))
    assert seen == [[], [2], [2], [2, 4], [2, 4], [4, 6], [4, 6]]
    assert not list(store.iterate(schema.snapshot_chunks_prefix(2)))
    state = list(store.iterate(schema.STATE))
    for h in (4, 6):
        m = snapshots.manifest(v.chain, h)
        assert m is not None and m.entry_count == len(state)
        entries: list[tuple[bytes, bytes]] = []
        for i, expected in enumerate(m.chunks):
            raw = snapshots.chunk(v.chain, h, i)
            assert raw is not None
            entries.extend(decode_chunk(raw, expected, entries[-1][0] if entries else None))
        # Blocks 3..7 are empty: the state of either checkpoint is today's.
        assert entries == state
        assert snapshots.chunk(v.chain, h, len(m.chunks)) is None
    assert snapshots.manifest(v.chain, 2) is None and snapshots.chunk(v.chain, 2, 0) is None


def test_keep_zero_keeps_none(tmp_path: Path) -> None:
    store = MemoryStore()
    v = _validator(tmp_path, store)
    _commit(v, 2)
    assert snapshots.heights(store) == [2]
    v.app.snapshot_keep = 0
    _commit(v, 2)
    assert snapshots.heights(store) == []
    assert not list(store.iterate(schema.SNAPSHOT_CHUNK))


@pytest.mark.parametrize("family", [schema.SNAPSHOT, schema.SNAPSHOT_CHUNK])
def test_a_damaged_snapshot_is_never_served(tmp_path: Path, family: bytes) -> None:
    inner = MemoryStore()
    v = _validator(tmp_path, inner)
    _commit(v, 2)
    damaged = AlteringStore(inner, lambda k: k.startswith(family))
    d = _validator(tmp_path, damaged)
    with pytest.raises(StorageCorrupt):
        snapshots.chunk(d.chain, 2, 0)


def test_a_manifest_that_misses_the_app_hash_is_damage(tmp_path: Path) -> None:
    store = MemoryStore()
    v = _validator(tmp_path, store)
    _commit(v, 4)
    raw = store.get(schema.snapshot_key(4))
    assert raw is not None
    # The manifest of 2 stored under 4: well formed, but not what header 4 commits to.
    store.put(schema.snapshot_key(4), store.get(schema.snapshot_key(2)) or b"")
    with pytest.raises(StorageCorrupt):
        snapshots.manifest(v.chain, 4)
