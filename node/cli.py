"""`qchain node run --config FILE`: run one validator until SIGTERM or SIGINT, after the
checks of `node.preflight` (dev-seed keys on a real chain, secret files open to others).
`qchain node rebuild --config FILE`: move a damaged store aside (see `node.rebuild`).
`qchain node config --genesis FILE --site DIR`: write a site's node.toml (`node.nodeconfig`).
"""

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
    from node.genesis_file import load_genesis
    from node.preflight import check_before_run
    from node.runtime import run_validator, setup_logging

    setup_logging(cfg)
    check_before_run(cfg, load_genesis(cfg.node.genesis))
    return asyncio.run(run_validator(cfg, args.ready_file))


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
        print(f"rebuild refused: {e.message}")
        return 1
    print(f"the damaged store is now {done.moved_to}; {done.leases} QKD lease(s) kept")
    print(f"start the node (qchain node run --config {config}): it catches up from its peers")
    return 0
