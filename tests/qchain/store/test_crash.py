"""SIGKILL crash test of the LevelDB backend.

A child process writes synced batches in a loop and prints the batch number after each
`write` returns. The parent kills it with SIGKILL after a seeded-random number of
acknowledgements (never after a sleep), reopens the store and checks that every batch is
either whole or absent and that every acknowledged batch is present. Then it starts the next
child on the same directory, which continues from the stored progress counter.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from qchain.store.leveldb import LevelDBStore

KILLS = 60
KEYS_PER_BATCH = 5
SEED = 6962

CHILD = r"""
import sys
from pathlib import Path
from qchain.store.kv import Batch
from qchain.store.leveldb import LevelDBStore

store = LevelDBStore(Path(sys.argv[1]))
raw = store.get(b"progress")
n = int(raw) if raw is not None else 0
keys, value_size = int(sys.argv[2]), int(sys.argv[3])
print("ready", n, flush=True)
while True:
    n += 1
    b = Batch()
    for j in range(keys):
        b.put(b"batch/%012d/%d" % (n, j), (b"%d:%d:" % (n, j)).ljust(value_size, b"."))
    b.delete(b"batch/%012d/%d" % (n - 1, keys))  # an earlier batch's extra key goes away
    b.put(b"batch/%012d/%d" % (n, keys), b"extra")
    b.put(b"progress", b"%d" % n)
    store.write(b, sync=True)
    print(n, flush=True)
"""


def _check(path: Path, acknowledged: int) -> int:
    """Every batch whole or absent, every acknowledged one present; returns the progress."""
    with LevelDBStore(path) as store:
        raw = store.get(b"progress")
        progress = int(raw) if raw is not None else 0
        assert progress >= acknowledged, f"acknowledged batch {acknowledged} lost"
        seen: dict[int, set[int]] = {}
        for key, value in store.iterate(b"batch/"):
            n, j = int(key[6:18]), int(key[19:])
            seen.setdefault(n, set()).add(j)
            if j < KEYS_PER_BATCH:
                assert value.startswith(b"%d:%d:" % (n, j))
        for n in range(1, progress + 1):
            # The extra key of batch n is deleted by batch n + 1.
            want = set(range(KEYS_PER_BATCH)) | ({KEYS_PER_BATCH} if n == progress else set())
            assert seen.get(n) == want, f"batch {n} is torn: {sorted(seen.get(n, ()))}"
        assert max(seen, default=0) <= progress, f"batch {max(seen)} present beyond progress"
        return progress


def test_sigkill_leaves_every_batch_whole_or_absent(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    path = tmp_path / "db"
    acknowledged = 0
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    for kill in range(KILLS):
        value_size = rng.choice([16, 1024, 16 * 1024])
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str(KEYS_PER_BATCH), str(value_size)],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        try:
            ready = proc.stdout.readline().split()
            assert ready and ready[0] == b"ready", f"child did not start (kill {kill})"
            assert int(ready[1]) >= acknowledged
            for _ in range(rng.randint(1, 25)):
                line = proc.stdout.readline()
                assert line, f"child exited early with {proc.poll()} (kill {kill})"
                acknowledged = int(line)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        progress = _check(path, acknowledged)
        acknowledged = max(acknowledged, progress)
    assert acknowledged >= KILLS
