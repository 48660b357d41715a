"""The `qchain` command line.

Each command group lives in its own module and is imported only when that group runs, so
`qchain --help` and the core library stay light. A group module provides
`add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# group name -> (module, one-line help). Modules above `qchain` are imported lazily.
COMMANDS: dict[str, tuple[str, str]] = {
    "keys": ("qchain.cli_keys", "create and inspect signing keys"),
    "tx": ("node.cli_tx", "build, sign, decode and send transactions"),
    "receipt": ("node.cli_receipt", "fetch receipts and verify them offline"),
    "notary": ("node.cli_notary", "anchor a file's digest, look it up, verify evidence offline"),
    "query": ("qchain.cli_query", "read-only contract queries on a node"),
    "sim": (
        "devnet.simnet.cli",
        "deterministic simulators: the consensus engine (run, replay), the whole network (net)",
    ),
    "node": ("node.cli", "run a validator node, write its config from a site directory"),
    "validator": ("node.cli_validator", "create a validator's site directory and own keys"),
    "genesis": ("node.cli_genesis", "the genesis ceremony: build from join files, verify"),
    "devnet": ("devnet.cli", "a local devnet: init, up, down, status, reset, logs"),
    "kms": (
        "qchain.qkd.kms_cli",
        "simulated ETSI GS QKD 014 key manager, its certificates, and a KME probe",
    ),
    "fault": ("devnet.faults.cli", "fault injection: scenarios, perturbations, invariant checks"),
    "bench": ("devnet.bench.cli", "benchmark a devnet: throughput, latency, QKD key budget"),
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qchain", description="qchain: a permissioned blockchain secured by QKD keys"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    from qchain.errors import QChainError

    try:
        rc: int = module.run(args)
    except QChainError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
