"""The simulated disks: what a node's store keeps across its crash.

A node writes `Batch`es, synced or not. What a crash leaves follows what LevelDB
guarantees (`qchain.store.kv`), and nothing more:

- a batch is atomic: after a crash every write of it is there or none is (LevelDB's log
  record carries the whole batch under one checksum; a torn record is dropped whole on
  recovery);
- a synced batch is durable once `write` returns, and so is every batch written before
  it (the log is one sequential file: an fsync covers what came before);
- an unsynced batch may be lost, but only from the end: the log is replayed in order up
  to its first missing record, so what survives is a *prefix* of the batches written
  since the last completed sync;
- a batch whose synced write the crash interrupts (the node dies inside `write`) is in
  the same state as an unsynced one: it may have reached the log or not.

`MemoryDisk` draws, from the run's seed, how many of those batches survive a crash: none,
some, or all of them in their order. A batch is never torn, later batches never survive
without the earlier ones, and a completed synced write is never lost. Real code that
syncs what it relies on passes; code that relies on an unsynced write loses it in some
seeds (the `no-sync` mutant, a disk whose sync does nothing, is caught by the
`durable-commits` check).

`LevelDisk` is a real LevelDB (plyvel) in a temporary directory. plyvel cannot drop
what the operating system has not written out, so its crash is a process crash: the
handle is closed and reopened, and LevelDB keeps every batch it took, synced or not (as
it does when a process is killed and the machine stays up). Its interrupted write
completes.
"""

from __future__ import annotations

import hashlib
import random
import shutil
from collections.abc import Callable
from pathlib import Path

from devnet.simnet.loop import OWNER
from qchain.store.kv import Batch
from qchain.store.leveldb import LevelDBStore
from qchain.store.memory import MemoryStore

Ops = tuple[tuple[bytes, bytes | None], ...]


class Crashed(BaseException):
    """Raised from the write a crash interrupts, inside the node's own step: the rest of
    the step never runs (nothing runs in a dead process; going on, it would meet the
    closed store). A BaseException, so that no handler in the node takes it for a failure
    to recover from; the simulator expects it (`devnet.simnet.run`)."""


COMMIT_WRITE_S = 0.004
"""How long a commit's synced batch takes to land (a small block's LevelDB write): the
node's commit writer applies it that much later on the loop (`KVStore.write_latency_s`,
pipelined heights), and a crash in between loses it."""


class Crashable:
    """The crash hooks of a simulated disk: the node dies inside its own step, while
    its `crash_after`-th next synced write is in progress."""

    crash_after: int | None
    on_crash: Callable[[], None] | None

    def _arm(self) -> None:
        self.crash_after = None
        self.on_crash = None

    def _crashing(self, sync: bool) -> bool:
        """Whether this (synced) write is the one the crash interrupts."""
        if not sync or self.crash_after is None:
            return False
        self.crash_after -= 1
        return self.crash_after <= 0 and self.on_crash is not None

    def _die(self) -> None:
        # Inside the node's own step, before anything that step queued can leave; the
        # step ends here when it runs as the node's (a task or timer of the node), not
        # when the simulator or a test writes.
        on_crash = self.on_crash
        self.crash_after = None
        assert on_crash is not None
        on_crash()
        if OWNER.get() is not None:
            raise Crashed


class MemoryDisk(MemoryStore, Crashable):
    """A memory store with LevelDB's crash semantics (above): the visible data, what is
    durable, and the batches written since the last completed sync."""

    write_latency_s = COMMIT_WRITE_S
    syncs = True
    """Whether a synced write is durable when it returns (False: the `no-sync` mutant,
    a disk or file system whose fsync returns before the data is safe)."""

    def __init__(self, rng: random.Random, durable: dict[bytes, bytes] | None = None) -> None:
        super().__init__()
        self._arm()
        self.rng = rng
        self._durable: dict[bytes, bytes] = dict(durable or {})
        for key, value in sorted(self._durable.items()):
            self._put(key, value)
        self._unsynced: list[Ops] = []
        self.in_progress = False
        """The crash interrupted a synced write (its batch is the last unsynced one)."""

    def write(self, batch: Batch, *, sync: bool = True) -> None:
        ops = tuple(batch.ops())
        super().write(batch, sync=sync)
        if self._crashing(sync):
            self._unsynced.append(ops)
            self.in_progress = True
            self._die()
            return
        if not (sync and self.syncs):
            self._unsynced.append(ops)
            return
        for earlier in self._unsynced:
            _apply(self._durable, earlier)
        self._unsynced.clear()
        _apply(self._durable, ops)

    def crashed(self) -> tuple[MemoryDisk, int, int]:
        """The disk as the restarted node finds it: the durable data and a prefix of the
        batches not yet synced, drawn from the seed. Returns it with how many of those
        batches there were and how many survived."""
        self.close()
        pending = len(self._unsynced)
        kept = self.rng.randint(0, pending) if pending else 0
        data = dict(self._durable)
        for ops in self._unsynced[:kept]:
            _apply(data, ops)
        return MemoryDisk(self.rng, data), pending, kept

    def stopped(self) -> tuple[MemoryDisk, MemoryDisk]:
        """A clean stop: the disk as the restarted node finds it (every batch it took:
        the process ended, the machine did not), and a copy of it made while the node was
        stopped, with a generator of its own (another machine's disk: a twin's)."""
        self.close()
        twin = random.Random(self.rng.getrandbits(64))
        return MemoryDisk(self.rng, self._data), MemoryDisk(twin, self._data)

    def release(self) -> None:
        self.close()


class LevelDisk(LevelDBStore, Crashable):
    """A LevelDB store in `path`; a crash closes it and opens it again (above). The
    commit writer applies its batches on the loop after `COMMIT_WRITE_S`, as for the
    memory disk: the virtual loop cannot wait on a writer thread."""

    concurrent_writes = False
    write_latency_s = COMMIT_WRITE_S

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._arm()

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        batch = Batch()
        batch.put(key, value)
        self.write(batch, sync=sync)

    def delete(self, key: bytes, *, sync: bool = False) -> None:
        batch = Batch()
        batch.delete(key)
        self.write(batch, sync=sync)

    def write(self, batch: Batch, *, sync: bool = True) -> None:
        super().write(batch, sync=sync)
        if self._crashing(sync):
            self._die()

    def crashed(self) -> tuple[LevelDisk, int, int]:
        self.close()
        return LevelDisk(self.path), 0, 0

    def stopped(self) -> tuple[LevelDisk, LevelDisk]:
        """A clean stop, and a copy of the directory made while the node was stopped."""
        self.close()
        copy = self.path.with_name(self.path.name + "-twin")
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(self.path, copy)
        return LevelDisk(self.path), LevelDisk(copy)

    def release(self) -> None:
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)


SimDisk = MemoryDisk | LevelDisk


def _material(seed: int, i: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/disk/{i}".encode()).digest()[:8], "big")


def _apply(data: dict[bytes, bytes], ops: Ops) -> None:
    for key, value in ops:
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value


def open_disks(kind: str, count: int, seed: int, directory: Path | None) -> list[SimDisk]:
    """`count` empty disks: memory stores (each with its generator, drawn from the seed
    apart from the node's own, so the disks change no other draw of the run), or LevelDB
    stores under `directory`."""
    if kind == "memory":
        return [MemoryDisk(random.Random(_material(seed, i))) for i in range(count)]
    if kind == "leveldb":
        assert directory is not None
        return [LevelDisk(directory / f"node{i}") for i in range(count)]
    raise ValueError(f"unknown store {kind!r}")
