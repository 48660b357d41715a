"""What the command verbs that talk to a node share: the `--node`, `--ca-file` and
`--json` options, the client they describe, and reading JSON given on the command line."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
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
    return Client(url, ssl_context=ctx, timeout_s=30.0, language=user_language(os.environ))


def user_language(env: Mapping[str, str]) -> str | None:
    """The language the user reads, for the node's problem titles: `QCHAIN_LANG`, else the
    POSIX locale (`LC_ALL`, `LC_MESSAGES`, `LANG`); a Chinese one (`zh_CN.UTF-8`,
    `zh-Hans`, ...) gives `zh-CN`, anything else None (English)."""
    for name in ("QCHAIN_LANG", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(name, "")
        if value:
            tag = value.split(".")[0].split("@")[0].replace("_", "-").lower()
            chinese = tag == "zh" or tag.startswith(("zh-cn", "zh-hans", "zh-sg"))
            return "zh-CN" if chinese else None
    return None


def json_argument(text: str, name: str) -> Any:
    """The JSON text given as the option or argument `name`; text that is not JSON at all
    is a `CodecError` naming it."""
    try:
        return parse_json(text, name)
    except JsonSyntaxError as e:
        raise CodecError(f"{name} is not JSON: {e.reason}") from None
