"""`qchain query CONTRACT METHOD [ARGS]`: a read-only contract query on a node.

ARGS is a JSON object of named arguments, e.g. `'{"address": {"hex": "ab..."}}'` (the node
also takes byte strings as hex text where the method's schema says bytes). The result is
printed as JSON.
"""

from __future__ import annotations

import argparse
import json

from qchain.cli_client import add_node_arguments, connect, json_argument
from qchain.errors import CodecError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("contract")
    p.add_argument("method")
    p.add_argument("args", nargs="?", default="{}", help="JSON object of named arguments")
    add_node_arguments(p)


def run(args: argparse.Namespace) -> int:
    named = json_argument(args.args, "ARGS")
    if not isinstance(named, dict):
        raise CodecError("ARGS must be a JSON object of named arguments")
    with connect(args) as client:
        result = client.query(args.contract, args.method, named)
    print(json.dumps(result, indent=2 if args.json else None))
    return 0
