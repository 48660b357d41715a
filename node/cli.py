"""`qchain node run --config FILE [--state-sync]`: run one validator until SIGTERM or
SIGINT, after the checks of `node.preflight` (dev-seed keys on a real chain, secret files
open to others), its store first synced from a peer's state snapshot when asked or when
it is empty and far behind (`node.statesync_run`).
`qchain node config --genesis FILE --site DIR`: write a site's node.toml (`node.nodeconfig`).
`qchain node rebuild --config FILE`: move a damaged store aside (see `node.rebuild`).
`qchain node backup --config FILE --out BACKUP`, `qchain node restore --config FILE --in
BACKUP`: back a node's store up to a file and put it back (see `node.backup`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qchain.config import NodeConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="node_cmd", metavar="VERB", required=True)
    run = sub.add_parser("run", help="run a validator")
    run.add_argument("--config", required=True, type=Path, help="node TOML config")
    run.add_argument("--ready-file", type=Path, help="write the PID here once serving")
    run.add_argument(
        "--state-sync",
        action="store_true",
        help="start an empty store from the latest certified state snapshot of the peers "
        "instead of replaying every block (the default once they are [node] "
        "state_sync_after heights ahead)",
    )
    chk = sub.add_parser("check-config", help="validate a node config and exit")
    chk.add_argument("--config", required=True, type=Path)
    reb = sub.add_parser(
        "rebuild",
        help="move a corrupt store aside (keeping the QKD leases it can read, writing the "
        "lease floor); the next run catches up from the peers",
    )
    reb.add_argument("--config", required=True, type=Path, help="node TOML config")
    conf = sub.add_parser(
        "config", help="write a site's node.toml from its site directory and the genesis"
    )
    conf.add_argument("--genesis", required=True, type=Path, help="the verified genesis.json")
    conf.add_argument("--site", required=True, type=Path, help="the site directory")
    conf.add_argument(
        "--secrets-dir",
        type=Path,
        help="where the secret files are at run time, e.g. /run/secrets/qchain (default: "
        "the site directory)",
    )
    conf.add_argument("--data-dir", type=Path, help="where the store lives (default SITE/data)")
    bak = sub.add_parser(
        "backup", help="write a backup of a node's store (running: through its admin API)"
    )
    bak.add_argument("--config", required=True, type=Path, help="node TOML config")
    bak.add_argument("--out", required=True, type=Path, help="the backup file to write")
    res = sub.add_parser(
        "restore", help="replace a stopped node's store with a backup (the old one is kept)"
    )
    res.add_argument("--config", required=True, type=Path, help="node TOML config")
    res.add_argument("--in", dest="backup", required=True, type=Path, help="the backup file")


def run(args: argparse.Namespace) -> int:
    if args.node_cmd == "config":
        return _config(args)
    from qchain.config import load_config

    cfg = load_config(args.config)
    if args.node_cmd == "check-config":
        print(f"{args.config}: ok ({cfg.node.name}, profile {cfg.node.profile})")
        return 0
    if args.node_cmd == "rebuild":
        return _rebuild(cfg.node.data_dir / "db", args.config)
    if args.node_cmd == "backup":
        return _backup(cfg, args.out)
    if args.node_cmd == "restore":
        return _restore(cfg, args)
    from node.genesis_file import load_genesis
    from node.logs import configure
    from node.preflight import check_before_run
    from qchain.errors import StorageCorrupt

    # Readable lines on a terminal, JSON lines in containers; every line names the node.
    configure(cfg.node.name, cfg.node.log_format)
    check_before_run(cfg, load_genesis(cfg.node.genesis))
    try:
        return asyncio.run(run_validator(cfg, args.ready_file, state_sync=args.state_sync))
    except StorageCorrupt as e:
        print(_damaged_store(cfg.node.data_dir / "db", args.config, e.message), file=sys.stderr)
        return 1


def _damaged_store(db_dir: Path, config: Path, damage: str) -> str:
    """What `qchain node run` prints when damage in its store stops it before it serves
    (damage found later leaves the node running, not ready, until it is rebuilt)."""
    return (
        f"node run stopped: the store {db_dir} is damaged: {damage}\n"
        f"Rebuild it from the peers: qchain node rebuild --config {config}\n"
        f"or put a backup in its place: qchain node restore --config {config} --in BACKUP"
    )


async def run_validator(
    cfg: NodeConfig, ready_file: Path | None = None, *, state_sync: bool = False
) -> int:
    """Run one validator until SIGTERM or SIGINT; close everything cleanly (LevelDB
    included). First sync its state from a snapshot if asked (state_sync) or if its store
    is empty and far behind (`node.statesync_run`)."""
    from node.genesis_file import load_genesis
    from node.runtime import Validator
    from node.statesync_run import sync_before_start

    genesis = load_genesis(cfg.node.genesis)
    # On a chain whose set changes, the snapshot is checked under the set a peer's set
    # chain proves, and the synced store is then refused by the amnesia check below.
    await sync_before_start(cfg, genesis, force=state_sync)
    validator = Validator(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await validator.start()
    if ready_file is not None:
        ready_file.write_text(str(os.getpid()))
    try:
        await stop.wait()
    finally:
        logging.getLogger("qchain.node").info("shutting down")
        with contextlib.suppress(Exception):
            await validator.stop()
    return 0


def _config(args: argparse.Namespace) -> int:
    from node.nodeconfig import write_node_config

    done = write_node_config(
        args.genesis, args.site, secrets_dir=args.secrets_dir, data_dir=args.data_dir
    )
    print(f"wrote {done.node_toml}: validator {done.index}, {done.peers} peer(s)")
    print(f"start it with: qchain node run --config {done.node_toml}")
    return 0


def _rebuild(db_dir: Path, config: Path) -> int:
    from node.rebuild import rebuild
    from qchain.errors import StorageError

    try:
        done = rebuild(db_dir)
    except StorageError as e:
        print(f"rebuild refused: {e.message}", file=sys.stderr)
        return 1
    kept = (
        f"{done.leases} QKD lease(s) kept"
        if done.leases_readable
        else "its QKD leases could not be read, none kept"
    )
    print(f"the damaged store is now {done.moved_to}; {kept}")
    print(f"lease floor {done.floor}: every QKD link numbers its frames from at least there")
    print(f"start the node (qchain node run --config {config}): it catches up from its peers")
    return 0


def _backup(cfg: NodeConfig, out: Path) -> int:
    from node.backup import backup_node
    from qchain.errors import QChainError

    try:
        how, done = backup_node(cfg, out)
    except QChainError as e:
        print(f"backup failed: {e.message}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"backup failed: cannot write {out}: {e.strerror}", file=sys.stderr)
        return 1
    h = done.header
    print(
        f"{out}: backup of {h.chain_id} at height {h.height} ({how}), "
        f"{done.records} records, {done.size} bytes"
    )
    return 0


def _restore(cfg: NodeConfig, args: argparse.Namespace) -> int:
    from node.backup import expected_of
    from node.rebuild import restore
    from qchain.errors import QChainError, StoreLocked

    db_dir = cfg.node.data_dir / "db"
    try:
        done = restore(db_dir, args.backup, expected_of(cfg))
    except StoreLocked as e:
        print(f"restore refused: the node is running; stop it first ({e.message})", file=sys.stderr)
        return 1
    except QChainError as e:
        print(f"restore refused: {e.message}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"restore failed: {e}", file=sys.stderr)
        return 1
    moved = f"the replaced store is now {done.moved_to}" if done.moved_to else "no store before"
    print(f"{db_dir}: restored height {done.header.height}, {done.records} records; {moved}")
    print(
        f"QKD leases: {done.leases_kept} kept from the replaced store, "
        f"{done.leases_from_backup} from the backup; lease floor {done.floor}: every QKD "
        "link numbers its frames from at least there"
    )
    print(f"start the node (qchain node run --config {args.config}): it catches up from there")
    return 0
