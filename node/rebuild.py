"""Rebuilding a validator whose store is damaged, from its peers.

A node that finds its store corrupt stops voting and serving (see `Validator.store_corrupt`)
and stays so: nothing on its disk can be trusted. `rebuild` moves the damaged database
aside (kept for inspection, never read again by the node) and puts in its place a new one
that holds only what peers cannot give back: the QKD sequence leases (`schema.QKD_LEASE`).
Without them the node would restart its link sequence numbers at 0 and every peer would
reject its frames as stale until it had sent as many as before the rebuild.

The node is then started as usual (`qchain node run`): its chain is empty, and the
consensus catch-up (SyncReq for the decided values, BlockReq for their bodies, each body
checked against its value and executed again) brings it to the top of the chain, after
which it votes again. The rebuild refuses to run while the node holds the database lock,
and when the leases themselves cannot be read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from qchain.errors import StorageError
from qchain.store import Batch, schema
from qchain.store.leveldb import LevelDBStore


@dataclass(frozen=True)
class Rebuilt:
    moved_to: Path
    """Where the damaged database now is."""
    leases: int
    """QKD lease entries carried into the new database."""


def rebuild(db_dir: Path, now: datetime | None = None) -> Rebuilt:
    """Move the database at db_dir aside and start a new one with its QKD leases."""
    if not db_dir.is_dir():
        raise StorageError(f"no database at {db_dir}")
    with LevelDBStore(db_dir) as old:
        leases = list(old.iterate(schema.QKD_LEASE))
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    moved_to = db_dir.with_name(f"{db_dir.name}.corrupt-{stamp}")
    if moved_to.exists():
        raise StorageError(f"{moved_to} already exists")
    db_dir.rename(moved_to)
    with LevelDBStore(db_dir) as new:
        batch = Batch()
        for key, value in leases:
            batch.put(key, value)
        new.write(batch, sync=True)
    return Rebuilt(moved_to, len(leases))
