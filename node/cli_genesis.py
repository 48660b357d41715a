"""`qchain genesis build` (the coordinator: the genesis from the sites' join files and
members.toml) and `qchain genesis verify` (each site: the file against the hash announced
out of band). See `node.ceremony`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="genesis_cmd", metavar="VERB", required=True)
    b = sub.add_parser("build", help="build a chain's genesis from join files and members")
    b.add_argument("--chain-id", required=True, help="the new chain's id (not qchain-devnet*)")
    b.add_argument(
        "--validators", required=True, nargs="+", type=Path, help="the sites' join.json files"
    )
    b.add_argument("--members", required=True, type=Path, help="members.toml")
    b.add_argument(
        "--timing", choices=["default", "lan", "test"], default="default", help="timing profile"
    )
    b.add_argument(
        "--genesis-time-ms", type=int, help="genesis time, ms since the epoch (default: now)"
    )
    b.add_argument(
        "--state-root-interval",
        type=int,
        default=0,
        help="commit to the whole state every this many heights, so that nodes can start "
        "from a state snapshot (qchain node run --state-sync); default 0: never",
    )
    b.add_argument("--out", required=True, type=Path, help="genesis file to write")
    b.add_argument("--force", action="store_true", help="overwrite an existing --out")
    v = sub.add_parser("verify", help="check a genesis file against the announced hash")
    v.add_argument("file", type=Path)
    v.add_argument("--expect-hash", required=True, help="the genesis hash (hex) announced")


def run(args: argparse.Namespace) -> int:
    from node.ceremony import build_genesis, check_hash, describe, load_join, load_members
    from node.genesis_file import load_genesis, save_genesis
    from qchain.errors import ConfigError

    if args.genesis_cmd == "verify":
        genesis = load_genesis(args.file)
        print("\n".join(describe(genesis)))
        problem = check_hash(genesis, args.expect_hash)
        if problem is not None:
            print(f"MISMATCH: {problem}")
            return 1
        print(f"ok: {args.file} is the announced genesis")
        return 0
    if args.out.exists() and not args.force:
        raise ConfigError(str(args.out), "exists; pass --force to overwrite it")
    when = args.genesis_time_ms if args.genesis_time_ms is not None else int(time.time() * 1000)
    if when < 0:
        raise ConfigError("--genesis-time-ms", "must not be negative")
    genesis = build_genesis(
        args.chain_id,
        [load_join(p) for p in args.validators],
        load_members(args.members),
        timing=args.timing,
        genesis_time_ms=when,
        state_root_interval=args.state_root_interval,
    )
    save_genesis(genesis, args.out)
    print("\n".join(describe(genesis)))
    print(f"wrote {args.out}; announce the genesis hash out of band:")
    print(genesis.hash.hex())
    return 0
