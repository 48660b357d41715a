"""`qchain node run --config FILE`: run one validator until SIGTERM or SIGINT.
`qchain node rebuild --config FILE`: move a damaged store aside (see `node.rebuild`)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="node_cmd", metavar="VERB", required=True)
    run = sub.add_parser("run", help="run a validator")
    run.add_argument("--config", required=True, type=Path, help="node TOML config")
    run.add_argument("--ready-file", type=Path, help="write the PID here once serving")
    chk = sub.add_parser("check-config", help="validate a node config and exit")
    chk.add_argument("--config", required=True, type=Path)
    reb = sub.add_parser(
        "rebuild",
        help="move a corrupt store aside (keeping the QKD leases); the next run catches up "
        "from the peers",
    )
    reb.add_argument("--config", required=True, type=Path, help="node TOML config")


def run(args: argparse.Namespace) -> int:
    from qchain.config import load_config

    cfg = load_config(args.config)
    if args.node_cmd == "check-config":
        print(f"{args.config}: ok ({cfg.node.name}, profile {cfg.node.profile})")
        return 0
    if args.node_cmd == "rebuild":
        return _rebuild(cfg.node.data_dir / "db", args.config)
    from node.runtime import run_validator, setup_logging

    setup_logging(cfg)
    return asyncio.run(run_validator(cfg, args.ready_file))


def _rebuild(db_dir: Path, config: Path) -> int:
    from node.rebuild import rebuild
    from qchain.errors import StorageError

    try:
        done = rebuild(db_dir)
    except StorageError as e:
        print(f"rebuild refused: {e.message}")
        return 1
    print(f"the damaged store is now {done.moved_to}; {done.leases} QKD lease(s) kept")
    print(f"start the node (qchain node run --config {config}): it catches up from its peers")
    return 0
