"""`qchain node run` on a store whose damage it meets before it serves (a block of the
metadata it reads first): it stops with one message naming the store, the damage and the
two ways back (`qchain node rebuild`, `qchain node restore`), and leaves the store as it
was. Runs the real command as a subprocess on a devnet validator's files."""

from __future__ import annotations

import subprocess
from pathlib import Path

from devnet.network import plan_network, write_network
from devnet.spawn import qchain_argv
from node.runtime import Validator
from qchain.config import load_config
from qchain.store import schema
from qchain.store.leveldb import LevelDBStore
from qchain.store.testing import flip_bit_in_table


def test_damage_met_before_serving_stops_the_run_naming_the_store_and_the_way_back(
    tmp_path: Path,
) -> None:
    write_network(tmp_path, plan_network(base_port=None, scheme="ed25519"))
    config = tmp_path / "nodes" / "node0" / "config.toml"
    cfg = load_config(config)
    db = cfg.node.data_dir / "db"
    Validator(cfg).store.close()  # the genesis applied: a store of this chain
    with LevelDBStore(db) as s:  # reopening moves the log into a table file
        assert s.get(schema.META_CHAIN_ID) is not None
    flip_bit_in_table(db, schema.META_CHAIN_ID[1:], offset=2)
    before = sorted((p.name, p.read_bytes()) for p in db.iterdir() if p.suffix == ".ldb")

    done = subprocess.run(
        qchain_argv("node", "run", "--config", str(config)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert f"node run stopped: the store {db} is damaged: store is corrupt at key" in done.stderr
    assert "checksum mismatch" in done.stderr
    assert f"qchain node rebuild --config {config}" in done.stderr
    assert f"qchain node restore --config {config} --in BACKUP" in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted((p.name, p.read_bytes()) for p in db.iterdir() if p.suffix == ".ldb") == before
