"""What the command verbs that talk to a node share: the `--node`, `--ca-file` and
`--json` options, the client they describe, and reading JSON given on the command line."""

from __future__ import annotations

import argparse
import os
from typing import Any

from qchain.client import Client, ssl_context_for
from qchain.errors import CodecError, ConfigError, JsonSyntaxError
from qchain.jsonform import parse_json


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


def json_argument(text: str, name: str) -> Any:
    """The JSON text given as the option or argument `name`; text that is not JSON at all
    is a `CodecError` naming it."""
    try:
        return parse_json(text, name)
    except JsonSyntaxError as e:
        raise CodecError(f"{name} is not JSON: {e.reason}") from None
