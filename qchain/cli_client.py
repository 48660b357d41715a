"""What the command verbs that talk to a node share: the `--node`, `--ca-file` and
`--json` options, and the client they describe."""

from __future__ import annotations

import argparse
import os

from qchain.client import Client, ssl_context_for
from qchain.errors import ConfigError


def add_node_arguments(p: argparse.ArgumentParser) -> None:
    """--node, --ca-file and --json, shared by every verb that talks to a node."""
    p.add_argument("--node", help="node API URL (default: $QCHAIN_NODE)")
    p.add_argument("--ca-file", help="trust this CA or self-signed certificate for https")
    p.add_argument("--json", action="store_true", help="print JSON")


def connect(args: argparse.Namespace) -> Client:
    """A client of the node the options name (`--node`, else `QCHAIN_NODE`)."""
    url = args.node or os.environ.get("QCHAIN_NODE")
    if not url:
        raise ConfigError("--node", "give the node URL with --node or QCHAIN_NODE")
    ctx = ssl_context_for(args.ca_file) if args.ca_file else None
    return Client(url, ssl_context=ctx, timeout_s=30.0)
