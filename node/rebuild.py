"""Replacing a validator's store: from its peers (`rebuild`) or from a backup (`restore`).

A node that finds its store corrupt stops voting and serving (see `Validator.store_corrupt`)
and stays so: nothing on its disk can be trusted. `rebuild` moves the damaged database
aside (kept for inspection, never read again by the node) and puts in its place a new one
that holds only what peers cannot give back: the QKD sequence leases (`schema.QKD_LEASE`)
when they can be read, and the lease floor (below).

The node is then started as usual (`qchain node run`): its chain is empty, and the
consensus catch-up (SyncReq for the decided values, BlockReq for their bodies, each body
checked against its value and executed again) brings it to the top of the chain, after
which it votes again. The rebuild refuses to run while the node holds the database lock.

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

The link sequence numbers must not go backwards either: a peer refuses a frame numbered
at or below the last one it accepted from the node. A backup's leases are those of the
moment it was taken, and a damaged store's may not be readable at all. So both write, in
the batch that writes the mark, the **lease floor** F = max(every floor they can read,
`now_ms`·2^16 + 2^40) (`qchain.qkd.lease`, CONSENSUS.md §10.9 (7)); every link's numbers
start at or above it, above every number the node's earlier incarnations drew. A floor
read above the present clock term refuses the run, with nothing changed: the wall clock
was set back. The leases themselves: `rebuild` carries the damaged store's over when its
whole lease family reads without error, else none; `restore` keeps a link's lease from
the replaced store when that store's whole lease family is readable and the lease is at
least the backup's, else takes the backup's. Readable is all or nothing: a lease family
that fails partly tells nothing of what it missed.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from node.backup import BackupHeader, Expected, check_backup, read_backup
from qchain.errors import StorageError, StoreLocked
from qchain.qkd.lease import lease_floor, parse_floor
from qchain.store import Batch, schema
from qchain.store.leveldb import LevelDBStore

WRITE_BATCH_BYTES = 8 * 1024 * 1024
"""A restore writes the new database in batches of about this size."""


@dataclass(frozen=True)
class Rebuilt:
    moved_to: Path
    """Where the damaged database now is."""
    leases: int
    """Link leases carried into the new database."""
    leases_readable: bool
    """Whether the damaged database's lease family read whole (else none is carried)."""
    floor: int
    """The lease floor written."""


@dataclass(frozen=True)
class Restored:
    header: BackupHeader
    records: int
    moved_to: Path | None
    """Where the replaced database now is (None: there was none)."""
    leases_kept: int
    """Leases taken from the replaced database (at least the backup's)."""
    leases_from_backup: int
    """Leases taken from the backup."""
    floor: int
    """The lease floor written."""


def _stamp(now: datetime | None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


def _aside(db_dir: Path, tag: str, stamp: str) -> Path:
    """Where db_dir goes when it is moved aside; refused if that name is taken."""
    moved_to = db_dir.with_name(f"{db_dir.name}.{tag}-{stamp}")
    if moved_to.exists():
        raise StorageError(f"{moved_to} already exists")
    return moved_to


def _now_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


@dataclass(frozen=True)
class _LeaseFamily:
    """A store's lease family, read whole: the link leases (raw values) and the floor."""

    leases: dict[bytes, bytes]
    floor: int


def _read_family(store: LevelDBStore | Mapping[bytes, bytes], where: str) -> _LeaseFamily:
    """The lease family, every value checked (a lease is 8 bytes, the floor bounded);
    `StorageError` for any failure."""
    items = store.items() if isinstance(store, Mapping) else store.iterate(schema.QKD_LEASE)
    leases: dict[bytes, bytes] = {}
    floor = 0
    for key, value in items:
        if key == schema.QKD_LEASE_FLOOR:
            floor = parse_floor(value, where)
            continue
        try:
            schema.read_u64(value)
        except StorageError as e:
            raise StorageError(f"the lease {key[1:]!r} of {where}: {e.message}") from None
        leases[key] = value
    return _LeaseFamily(leases, floor)


def _family_or_none(store: LevelDBStore, where: str) -> _LeaseFamily | None:
    try:
        return _read_family(store, where)
    except StorageError:
        return None


def _write_mark(store: LevelDBStore, leases: Mapping[bytes, bytes], floor: int) -> None:
    """The leases, the floor and the amnesia mark, in one synced batch."""
    batch = Batch()
    for key, value in leases.items():
        batch.put(key, value)
    batch.put(schema.QKD_LEASE_FLOOR, schema.u64(floor))
    batch.put(schema.META_AMNESIA, b"")
    store.write(batch, sync=True)


def rebuild(db_dir: Path, now: datetime | None = None) -> Rebuilt:
    """Move the database at db_dir aside and start a new one with its QKD leases (when
    they read whole), the lease floor and the amnesia mark. Refused, with nothing changed,
    while a process holds the database and when a floor it read is above the clock's."""
    if not db_dir.is_dir():
        raise StorageError(f"no database at {db_dir}")
    at = now or datetime.now(UTC)
    family: _LeaseFamily | None = None
    try:
        with LevelDBStore(db_dir) as old:
            family = _family_or_none(old, "the damaged store")
    except StoreLocked:
        raise
    except StorageError:
        family = None
    read: list[tuple[str, int]] = [] if family is None else [("the damaged store", family.floor)]
    floor = lease_floor(read, _now_ms(at))
    leases = {} if family is None else family.leases
    moved_to = _aside(db_dir, "corrupt", _stamp(at))
    db_dir.rename(moved_to)
    with LevelDBStore(db_dir) as new:
        _write_mark(new, leases, floor)
    return Rebuilt(moved_to, len(leases), family is not None, floor)


def merge_leases(
    backup: Mapping[bytes, bytes], current: Mapping[bytes, bytes] | None
) -> tuple[dict[bytes, bytes], int]:
    """The link leases of a restored store: (leases, how many kept from current). A link's
    lease is current's when it is at least the backup's, else the backup's; a link only
    current holds keeps it. `current` is None when the replaced store's lease family is
    unknown; neither mapping holds the floor (`_read_family`)."""
    out: dict[bytes, bytes] = dict(current or {})
    kept = len(out)
    for key, raw in backup.items():
        c = current.get(key) if current is not None else None
        if c is not None:
            if schema.read_u64(c) >= schema.read_u64(raw):
                continue
            kept -= 1
        out[key] = raw
    return out, kept


def restore(
    db_dir: Path, backup: Path, expected: Expected, now: datetime | None = None
) -> Restored:
    """Replace the database at db_dir with the backup's content (see the module
    docstring). Refused, with nothing changed, while a process holds the database, or
    when the backup is not one of this node's chain."""
    check_backup(backup, expected)
    at = now or datetime.now(UTC)
    stamp = _stamp(at)
    old: LevelDBStore | None = None
    current: _LeaseFamily | None = None
    if db_dir.is_dir():
        moved_to: Path | None = _aside(db_dir, "replaced", stamp)
        old, current = _open_current(db_dir)
    else:
        moved_to = None
    new_dir = _aside(db_dir, "restoring", stamp)
    try:
        try:
            header, records, raw_leases = _write_backup(new_dir, backup, expected)
            backup_family = _read_family(raw_leases, "the backup")
            read = [("the backup", backup_family.floor)]
            if current is not None:
                read.append(("the replaced store", current.floor))
            floor = lease_floor(read, _now_ms(at))
            leases, kept = merge_leases(
                backup_family.leases, None if current is None else current.leases
            )
            with LevelDBStore(new_dir) as new:
                _write_mark(new, leases, floor)
        finally:
            if old is not None:
                old.close()
        if moved_to is not None:
            db_dir.rename(moved_to)
        new_dir.rename(db_dir)
    except BaseException:
        shutil.rmtree(new_dir, ignore_errors=True)
        raise
    return Restored(header, records, moved_to, kept, len(leases) - kept, floor)


def _open_current(db_dir: Path) -> tuple[LevelDBStore | None, _LeaseFamily | None]:
    """The replaced database, held open (its lock keeps a node from starting on it) with
    its lease family; (None, None) when it cannot be opened, a None family when the
    family does not read whole. A database in use by a running node is refused
    (`StoreLocked`)."""
    try:
        old = LevelDBStore(db_dir)
    except StoreLocked:
        raise
    except StorageError:
        return None, None
    return old, _family_or_none(old, "the replaced store")


def _write_backup(
    new_dir: Path, backup: Path, expected: Expected
) -> tuple[BackupHeader, int, dict[bytes, bytes]]:
    """Write the backup's records into a new database at new_dir, except its lease family
    (leases and floor), which is returned."""
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
