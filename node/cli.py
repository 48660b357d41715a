"""`qchain node run --config FILE`: run one validator until SIGTERM or SIGINT."""

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


def run(args: argparse.Namespace) -> int:
    from qchain.config import load_config

    cfg = load_config(args.config)
    if args.node_cmd == "check-config":
        print(f"{args.config}: ok ({cfg.node.name}, profile {cfg.node.profile})")
        return 0
    from node.runtime import run_validator, setup_logging

    setup_logging(cfg)
    return asyncio.run(run_validator(cfg, args.ready_file))
