"""The simulated disks: what a crash leaves (LevelDB's guarantees, no more), the
`no-sync` mutant that shows the model bites, and runs on real LevelDB stores."""

from __future__ import annotations

import random
from pathlib import Path

from devnet.simnet.disk import LevelDisk, MemoryDisk, open_disks
from devnet.simnet.run import Spec, simulate
from qchain.store.kv import Batch


def _batch(**kv: bytes | None) -> Batch:
    b = Batch()
    for k, v in kv.items():
        if v is None:
            b.delete(k.encode())
        else:
            b.put(k.encode(), v)
    return b


def _state(disk: MemoryDisk) -> dict[bytes, bytes]:
    return dict(disk.iterate())


def test_a_crash_keeps_synced_writes_and_a_prefix_of_the_unsynced_batches() -> None:
    """Over many draws: what was synced is always there, each unsynced batch is there
    whole or not at all, a later batch never without the earlier ones, and every prefix
    (none, some, all) occurs."""
    kept_counts = set()
    for seed in range(200):
        disk = MemoryDisk(random.Random(seed))
        disk.write(_batch(a=b"1", b=b"1"), sync=True)
        disk.write(_batch(a=b"2", c=b"2"), sync=False)
        disk.write(_batch(b=None, d=b"3"), sync=False)
        disk.write(_batch(a=b"4", e=b"4"), sync=False)
        assert _state(disk) == {b"a": b"4", b"c": b"2", b"d": b"3", b"e": b"4"}
        after, pending, kept = disk.crashed()
        assert pending == 3
        prefixes = [
            {b"a": b"1", b"b": b"1"},
            {b"a": b"2", b"b": b"1", b"c": b"2"},
            {b"a": b"2", b"c": b"2", b"d": b"3"},
            {b"a": b"4", b"c": b"2", b"d": b"3", b"e": b"4"},
        ]
        assert _state(after) == prefixes[kept]
        kept_counts.add(kept)
    assert kept_counts == {0, 1, 2, 3}


def test_a_synced_write_makes_the_earlier_unsynced_ones_durable() -> None:
    for seed in range(50):
        disk = MemoryDisk(random.Random(seed))
        disk.write(_batch(a=b"1"), sync=False)
        disk.write(_batch(b=b"2"), sync=True)
        disk.write(_batch(c=b"3"), sync=False)
        after, pending, _ = disk.crashed()
        assert pending == 1
        state = _state(after)
        assert {b"a": b"1", b"b": b"2"}.items() <= state.items()
        # Crashing again with nothing written since loses nothing more.
        again, pending, _ = after.crashed()
        assert pending == 0 and _state(again) == state


def test_a_crash_inside_a_synced_write_keeps_its_batch_whole_or_not_at_all() -> None:
    outcomes = set()
    for seed in range(100):
        disk = MemoryDisk(random.Random(seed))
        disk.write(_batch(a=b"1"), sync=True)
        crashed: list[MemoryDisk] = []
        disk.crash_after = 1
        disk.on_crash = lambda d=disk, out=crashed: out.append(d.crashed()[0])
        disk.write(_batch(a=b"2", b=b"2"), sync=True)
        assert disk.crash_after is None and len(crashed) == 1
        state = _state(crashed[0])
        assert state in ({b"a": b"1"}, {b"a": b"2", b"b": b"2"})
        outcomes.add(len(state))
    assert outcomes == {1, 2}


def test_a_disk_whose_sync_does_nothing_can_lose_synced_writes() -> None:
    lost = 0
    try:
        MemoryDisk.syncs = False
        for seed in range(50):
            disk = MemoryDisk(random.Random(seed))
            disk.write(_batch(a=b"1"), sync=True)
            lost += _state(disk.crashed()[0]) == {}
    finally:
        MemoryDisk.syncs = True
    assert 0 < lost < 50


def test_the_no_sync_mutant_is_caught_where_the_clean_code_passes() -> None:
    """A node whose synced writes are not durable restarts below a height it reported
    (the durable-commits check); the real code on the same seed passes."""
    assert simulate(Spec(seed=1, seconds=8)).ok
    mutated = simulate(Spec(seed=1, seconds=8, mutant="no-sync"))
    assert MemoryDisk.syncs is True
    assert [c.name for c in mutated.checks if not c.ok] == ["durable-commits"]


def test_leveldb_disks_reopen_after_a_crash_and_are_removed(tmp_path: Path) -> None:
    disks = open_disks("leveldb", 2, 0, tmp_path)
    assert all(isinstance(d, LevelDisk) for d in disks)
    disks[0].write(_batch(a=b"1"), sync=False)
    after, pending, kept = disks[0].crashed()
    assert (pending, kept) == (0, 0)
    assert after.get(b"a") == b"1"
    after.release()
    disks[1].release()
    assert list(tmp_path.iterdir()) == []


def test_whole_runs_on_leveldb_disks_pass_and_repeat() -> None:
    """Seeded runs with crashes on real LevelDB stores: every check passes, and the
    same seed gives the same trace."""
    seeds = [s for s in range(40) if _has_crash(s)][:3]
    assert len(seeds) == 3
    outcomes = [simulate(Spec(seed=seed, seconds=8, store="leveldb")) for seed in seeds]
    for o in outcomes:
        assert o.ok, [f"{c.name}: {c.summary}" for c in o.checks if not c.ok]
    again = simulate(Spec(seed=seeds[0], seconds=8, store="leveldb"))
    assert again.digest == outcomes[0].digest
    assert Spec(seed=1, store="leveldb").command().endswith("--store leveldb --replay")


def _has_crash(seed: int) -> bool:
    from devnet.simnet.schedule import draw

    return any(a.kind.startswith("crash") for a in draw(random.Random(seed), 4, 8))


def test_a_clean_stop_keeps_every_batch_and_its_copy_is_another_disk(tmp_path: Path) -> None:
    """A twin's disks (`World.twin`): the stopped node finds every batch it took, synced
    or not (the process ended, the machine did not); the copy holds the same and is
    written apart from it."""
    for disk in (MemoryDisk(random.Random(1)), LevelDisk(tmp_path / "node2")):
        disk.write(_batch(a=b"1"), sync=True)
        disk.write(_batch(b=b"2"), sync=False)
        after, copy = disk.stopped()
        assert dict(after.iterate()) == dict(copy.iterate()) == {b"a": b"1", b"b": b"2"}
        after.write(_batch(c=b"3"), sync=True)
        copy.write(_batch(a=None), sync=True)
        assert dict(after.iterate()) == {b"a": b"1", b"b": b"2", b"c": b"3"}
        assert dict(copy.iterate()) == {b"b": b"2"}
        if isinstance(after, MemoryDisk):
            # The restarted node's disk: what it took before the stop is durable.
            assert isinstance(copy, MemoryDisk)
            assert dict(after.crashed()[0].iterate()) == {b"a": b"1", b"b": b"2", b"c": b"3"}
        after.release()
        copy.release()
    assert list(tmp_path.iterdir()) == []
