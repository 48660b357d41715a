"""Replacing a validator's store: from its peers (`rebuild`) or from a backup (`restore`).

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

`restore` puts a backup (`node.backup`) in the store's place instead: it reads the whole
file and checks it against the node's genesis before it touches anything, builds the new
database beside the old one, moves the old one aside (as `rebuild` does) and renames the
new one into place, so the node finds either its old store or the whole restored one.
The node then catches up from the backup's height.

Both leave the node without the consensus records of the heights it voted in since (a
backup's records are those of the moment it was taken; a rebuild keeps none), so both
arm the amnesia guard (`consensus.amnesia`, CONSENSUS.md §3.8) by writing
`schema.META_AMNESIA`: the node stays silent at every height it may have voted in before
and votes again once 2f+1 peers have shown it how far the chain got.

The leases must not go backwards either. A backup's leases are those of the moment it was
taken; the node has since sent more frames on every link. When the store being replaced
is readable, its lease of a link is the truth (a lease is persisted before any number
under it is used) and is kept whenever it is at least the backup's. Otherwise (no store,
an unreadable one, or one older than the backup) the backup's lease is advanced by
LEASE_MARGIN.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from node.backup import BackupHeader, Expected, check_backup, read_backup
from qchain.errors import BackupError, StorageError, StoreLocked
from qchain.store import Batch, schema
from qchain.store.leveldb import LevelDBStore

LEASE_MARGIN = 1 << 48
"""How far a restore advances a lease it cannot take from the replaced store. A lease
counts frames (link sequence numbers); every frame takes a fresh 256-bit one-time key from
the QKD link, so a link that sent 10^6 frames a second (256 Mbit/s of QKD key, about a
hundred times what a fast QKD link delivers) would need 2^48 / 10^6 s, about 8.9 years, to
use up the margin: a backup restored within that age never reuses a sequence number. The
64-bit sequence space leaves room for 65,536 such restores."""
MAX_LEASE = 2**64 - 1
WRITE_BATCH_BYTES = 8 * 1024 * 1024
"""A restore writes the new database in batches of about this size."""


@dataclass(frozen=True)
class Rebuilt:
    moved_to: Path
    """Where the damaged database now is."""
    leases: int
    """QKD lease entries carried into the new database."""


@dataclass(frozen=True)
class Restored:
    header: BackupHeader
    records: int
    moved_to: Path | None
    """Where the replaced database now is (None: there was none)."""
    leases_kept: int
    """Leases taken from the replaced database (ahead of the backup's)."""
    leases_advanced: int
    """Leases of the backup advanced by LEASE_MARGIN."""


def _stamp(now: datetime | None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


def _aside(db_dir: Path, tag: str, stamp: str) -> Path:
    """Where db_dir goes when it is moved aside; refused if that name is taken."""
    moved_to = db_dir.with_name(f"{db_dir.name}.{tag}-{stamp}")
    if moved_to.exists():
        raise StorageError(f"{moved_to} already exists")
    return moved_to


def _leases(store: LevelDBStore) -> dict[bytes, bytes]:
    return dict(store.iterate(schema.QKD_LEASE))


def rebuild(db_dir: Path, now: datetime | None = None) -> Rebuilt:
    """Move the database at db_dir aside and start a new one with its QKD leases."""
    if not db_dir.is_dir():
        raise StorageError(f"no database at {db_dir}")
    with LevelDBStore(db_dir) as old:
        leases = _leases(old)
    moved_to = _aside(db_dir, "corrupt", _stamp(now))
    db_dir.rename(moved_to)
    with LevelDBStore(db_dir) as new:
        batch = Batch()
        for key, value in leases.items():
            batch.put(key, value)
        batch.put(schema.META_AMNESIA, b"")
        new.write(batch, sync=True)
    return Rebuilt(moved_to, len(leases))


def merge_leases(
    backup: Mapping[bytes, bytes], current: Mapping[bytes, bytes] | None
) -> tuple[dict[bytes, bytes], int, int]:
    """The leases of a restored store: (leases, kept from current, advanced from backup).
    `current` is None when the replaced store's leases are unknown."""
    out: dict[bytes, bytes] = dict(current or {})
    kept = len(out)
    advanced = 0
    for key, raw in backup.items():
        b = schema.read_u64(raw)
        c = current.get(key) if current is not None else None
        if c is not None and schema.read_u64(c) >= b:
            continue
        if c is not None:
            kept -= 1
        if b + LEASE_MARGIN > MAX_LEASE:
            raise BackupError(f"lease {key[1:]!r}", "too close to the end of the 64-bit range")
        out[key] = schema.u64(b + LEASE_MARGIN)
        advanced += 1
    return out, kept, advanced


def restore(
    db_dir: Path, backup: Path, expected: Expected, now: datetime | None = None
) -> Restored:
    """Replace the database at db_dir with the backup's content (see the module
    docstring). Refused, with nothing changed, while a process holds the database, or
    when the backup is not one of this node's chain."""
    check_backup(backup, expected)
    stamp = _stamp(now)
    old: LevelDBStore | None = None
    current: dict[bytes, bytes] | None = None
    if db_dir.is_dir():
        moved_to: Path | None = _aside(db_dir, "replaced", stamp)
        old, current = _open_current(db_dir)
    else:
        moved_to = None
    new_dir = _aside(db_dir, "restoring", stamp)
    try:
        try:
            header, records, backup_leases = _write_backup(new_dir, backup, expected)
            leases, kept, advanced = merge_leases(backup_leases, current)
            with LevelDBStore(new_dir) as new:
                batch = Batch()
                for key, value in leases.items():
                    batch.put(key, value)
                batch.put(schema.META_AMNESIA, b"")
                new.write(batch, sync=True)
        finally:
            if old is not None:
                old.close()
        if moved_to is not None:
            db_dir.rename(moved_to)
        new_dir.rename(db_dir)
    except BaseException:
        shutil.rmtree(new_dir, ignore_errors=True)
        raise
    return Restored(header, records, moved_to, kept, advanced)


def _open_current(db_dir: Path) -> tuple[LevelDBStore | None, dict[bytes, bytes] | None]:
    """The replaced database, held open (its lock keeps a node from starting on it) with
    its leases; (None, None) when it cannot be opened or its leases read because it is
    damaged. A database in use by a running node is refused (`StoreLocked`)."""
    try:
        old = LevelDBStore(db_dir)
    except StoreLocked:
        raise
    except StorageError:
        return None, None
    try:
        return old, _leases(old)
    except StorageError:
        return old, None


def _write_backup(
    new_dir: Path, backup: Path, expected: Expected
) -> tuple[BackupHeader, int, dict[bytes, bytes]]:
    """Write the backup's records into a new database at new_dir, except its leases,
    which are returned."""
    leases: dict[bytes, bytes] = {}
    with LevelDBStore(new_dir) as new:
        batch = Batch()
        size = 0

        def put(key: bytes, value: bytes) -> None:
            nonlocal batch, size
            if key.startswith(schema.QKD_LEASE):
                leases[key] = value
                return
            batch.put(key, value)
            size += len(key) + len(value)
            if size >= WRITE_BATCH_BYTES:
                new.write(batch, sync=False)
                batch, size = Batch(), 0

        summary = read_backup(backup, expected, put)
        new.write(batch, sync=True)
    return summary.header, summary.records, leases
