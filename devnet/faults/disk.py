"""Disk faults on a local node: one bit flipped in a value of its LevelDB tables, to see
that the node notices (the readiness check) rather than serve a corrupted chain.
"""

from __future__ import annotations

import random
import tomllib
from pathlib import Path
from typing import Any

from devnet.running import BackendError, Network


def node_db(target: Network, name: str) -> Path:
    """The LevelDB directory of a local node (its config's data_dir, then `db`)."""
    node_dir = target.dir / "nodes" / name
    cfg = tomllib.loads((node_dir / "config.toml").read_text())
    return node_dir / str(cfg["node"]["data_dir"]) / "db"


def flip_bit_in_tables(db: Path, marker: bytes, rng: random.Random) -> dict[str, Any]:
    """Flip one bit in a value of one LevelDB table (`*.ldb`): a byte 8 to 40 bytes after
    an occurrence of marker (the chain id, which every block header and transaction
    encodes first, so the byte lies in a hash, height or time of a stored value; tables
    are written uncompressed). Returns where."""
    hits: list[tuple[Path, int]] = []
    for table in sorted(db.glob("*.ldb")):
        data = table.read_bytes()
        at = data.find(marker)
        while at >= 0:
            if at + len(marker) + 40 < len(data):
                hits.append((table, at + len(marker)))
            at = data.find(marker, at + 1)
    if not hits:
        raise BackendError(f"{db}: no table holds a value to corrupt")
    table, start = rng.choice(hits)
    offset = start + rng.randrange(8, 40)
    bit = rng.randrange(8)
    with open(table, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << bit)]))
    return {"file": table.name, "offset": offset, "bit": bit}


def corrupt_disk(target: Network, name: str, rng: random.Random) -> dict[str, Any]:
    """Stop the node (SIGTERM), flip one bit in a value of one of its LevelDB tables and
    start it again. Local processes only. A node whose data still sits only in LevelDB's
    log gets a table first: the kit opens and closes the stopped store once (LevelDB
    turns its log into a table when it opens)."""
    from devnet.local import LocalNetwork
    from qchain.store.leveldb import LevelDBStore

    if not isinstance(target, LocalNetwork):
        raise BackendError("corrupt-disk needs a local-process devnet")
    db = node_db(target, name)
    target.stop_node(name)
    try:
        marker = target.plan.chain_id.encode()
        if not any(marker in t.read_bytes() for t in db.glob("*.ldb")):
            LevelDBStore(db).close()
        where = flip_bit_in_tables(db, marker, rng)
    finally:
        target.start_node(name)
    return where
