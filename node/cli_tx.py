"""`qchain tx`: build, sign and decode transactions offline; send them to a node and ask
for their status.

Transactions move between the offline verbs as hex of their canonical bytes (or a file
holding those bytes or that hex), so `build | sign | decode` compose in a pipeline.

`send CONTRACT METHOD --args JSON --key KEYFILE` asks the node (`--node` or `QCHAIN_NODE`)
for the chain id and the key's next nonce, signs, submits, and by default waits until the
transaction is committed. `--args` is either a JSON array of the method's arguments in
order, or a JSON object of named arguments, which the contract registry turns into the
positional list using the method's schema. Byte strings are `{"hex": "..."}` in both, as
everywhere in the API's JSON; bare hex text where the schema has a byte string is refused
with an error naming that form.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from contracts import DEFAULT_REGISTRY, named_args
from contracts.runtime import Kind, field_names
from qchain.cli_client import add_node_arguments, connect, json_argument
from qchain.client import Client, TxInfo
from qchain.codec import Struct, Value
from qchain.errors import ArgumentError, CodecError
from qchain.jsonform import (
    named_value_from_json,
    receipt_to_json,
    tx_to_json,
    value_from_json,
    value_to_json,
)
from qchain.keys import SigningKey
from qchain.types import Transaction, decode_transaction, new_transaction


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="tx_cmd", metavar="VERB", required=True)
    b = sub.add_parser("build", help="build an unsigned transaction")
    b.add_argument("--chain-id", required=True)
    b.add_argument("--key", type=Path, required=True, help="signer's key file (for address)")
    b.add_argument("--nonce", type=int, required=True)
    b.add_argument("--contract", required=True)
    b.add_argument("--method", required=True)
    b.add_argument("--args", default="[]", help='JSON array of arguments; bytes as {"hex": "..."}')
    b.add_argument("--expiry-height", type=int, default=0)
    b.add_argument("--out", type=Path, help="write raw bytes here instead of printing hex")
    s = sub.add_parser("sign", help="sign a transaction")
    s.add_argument("input", help="hex, a file of bytes or hex, or - for stdin")
    s.add_argument("--key", type=Path, required=True)
    s.add_argument("--out", type=Path, help="write raw bytes here instead of printing hex")
    d = sub.add_parser("decode", help="print a transaction as JSON")
    d.add_argument("input", help="hex, a file of bytes or hex, or - for stdin")
    n = sub.add_parser("send", help="sign, submit and (by default) wait for commit")
    n.add_argument("contract")
    n.add_argument("method")
    n.add_argument(
        "--args",
        default="[]",
        help='JSON array of arguments (bytes as {"hex": "..."}) or JSON object of named ones',
    )
    n.add_argument("--key", type=Path, required=True, help="signer's key file")
    n.add_argument("--expiry-height", type=int, default=0)
    n.add_argument("--async", dest="no_wait", action="store_true", help="do not wait")
    n.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for commit")
    add_node_arguments(n)
    t = sub.add_parser("status", help="a transaction's status on a node")
    t.add_argument("hash")
    add_node_arguments(t)


def print_status(info: TxInfo, as_json: bool) -> None:
    doc: dict[str, object] = {
        "tx_hash": info.tx_hash.hex(),
        "status": info.status,
        "height": info.height,
        "index": info.index,
        "receipt": None if info.receipt is None else receipt_to_json(info.receipt),
    }
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    print(f"{info.tx_hash.hex()} {info.status}")
    r = info.receipt
    if r is not None:
        outcome = "ok" if r.ok else f"failed: {r.code}: {r.message}"
        print(f"height {r.height} index {r.index}: {outcome}")
        if r.ok and r.result is not None:
            print(f"result: {json.dumps(value_to_json(r.result))}")


def parse_call_args(text: str, contract: str, method: str) -> Value:
    """--args as a JSON array of canonical values, or an object of named arguments; byte
    strings as `{"hex": ...}` in both."""
    parsed = json_argument(text, "--args")
    if isinstance(parsed, dict):
        m = DEFAULT_REGISTRY.method(contract, method, Kind.TX)
        named = {k: named_value_from_json(v, f"args.{k}") for k, v in parsed.items()}
        hints = typing.get_type_hints(m.args, include_extras=True)
        for name, value in named.items():
            if name in hints:
                refuse_text_for_bytes(hints[name], value, name)
        return value_from_json(value_to_json(named_args(m, named)), "args")
    if not isinstance(parsed, list):
        raise CodecError("--args must be a JSON array or object")
    return value_from_json(parsed, "args")


def refuse_text_for_bytes(tp: Any, value: object, path: str) -> None:
    """Raise `ArgumentError` where value holds text where the schema type tp has a byte
    string: named arguments give byte strings as `{"hex": ...}`, like positional ones."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        refuse_text_for_bytes(typing.get_args(tp)[0], value, path)
    elif tp is bytes:
        if isinstance(value, str):
            raise ArgumentError(path, 'a byte string is given as {"hex": "..."}, not as text')
    elif origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            refuse_text_for_bytes(option, value, path)
    elif origin is tuple and isinstance(value, list):
        for i, item in enumerate(value):
            refuse_text_for_bytes(typing.get_args(tp)[0], item, f"{path}[{i}]")
    elif isinstance(tp, type) and issubclass(tp, Struct):
        hints = typing.get_type_hints(tp, include_extras=True)
        fields = field_names(tp)
        if isinstance(value, list):
            items = list(zip(fields, value, strict=False))
        elif isinstance(value, dict):
            items = [(f, value[f]) for f in fields if f in value]
        else:
            items = []
        for f, v in items:
            refuse_text_for_bytes(hints[f], v, f"{path}.{f}")


def submit_call(
    client: Client,
    key: SigningKey,
    contract: str,
    method: str,
    call_args: list[Value],
    *,
    expiry_height: int = 0,
    wait: bool = True,
    timeout: float = 30.0,
) -> tuple[Transaction, TxInfo]:
    """Ask the node for the chain id and the key's next nonce, sign the call, submit it
    and, if wait, wait up to timeout seconds for its commit: the path of `tx send`, which
    other contract-aware verbs (`qchain notary anchor`) take too."""
    tx = new_transaction(
        key,
        chain_id=str(client.status()["chain_id"]),
        nonce=client.next_nonce(key.address),
        contract=contract,
        method=method,
        args=call_args,
        expiry_height=expiry_height,
    )
    return tx, client.submit_and_wait(tx, timeout) if wait else client.submit(tx)


def send(args: argparse.Namespace) -> int:
    key = SigningKey.load(args.key)
    call_args = parse_call_args(args.args, args.contract, args.method)
    if not isinstance(call_args, list):
        raise CodecError("--args must be a JSON array or object")
    with connect(args) as client:
        _, info = submit_call(
            client,
            key,
            args.contract,
            args.method,
            call_args,
            expiry_height=args.expiry_height,
            wait=not args.no_wait,
            timeout=args.timeout,
        )
    print_status(info, args.json)
    return 0 if info.receipt is None or info.receipt.ok else 3


def read_tx_input(text: str) -> Transaction:
    """A transaction from hex, a file of raw bytes or hex, or '-' (stdin, hex)."""
    if text == "-":
        raw = sys.stdin.read().strip().encode()
    else:
        path = Path(text)
        try:
            is_file = path.is_file()
        except OSError:  # a transaction's hex is usually longer than a file name may be
            is_file = False
        raw = path.read_bytes() if is_file else text.strip().encode()
    data: bytes
    try:
        stripped = raw.strip().decode("ascii")
        data = bytes.fromhex(stripped[2:] if stripped.startswith("0x") else stripped)
    except (UnicodeDecodeError, ValueError):
        data = raw
    return decode_transaction(data)


def _emit(tx: Transaction, out: Path | None) -> None:
    if out is not None:
        out.write_bytes(tx.encode())
        print(f"wrote {len(tx.encode())} bytes to {out}; hash {tx.hash.hex()}")
    else:
        print(tx.encode().hex())


def run(args: argparse.Namespace) -> int:
    if args.tx_cmd == "build":
        key = SigningKey.load(args.key)
        parsed = json_argument(args.args, "--args")
        if not isinstance(parsed, list):
            raise CodecError("--args must be a JSON array")
        tx_args: Value = value_from_json(parsed, "args")
        tx = Transaction(
            args.chain_id,
            key.address,
            args.nonce,
            args.contract,
            args.method,
            tx_args,
            args.expiry_height,
            key.scheme.value,
            key.public_key,
            b"",
        )
        tx = Transaction.from_wire(tx.to_wire())
        _emit(tx, args.out)
        return 0
    if args.tx_cmd == "sign":
        tx = read_tx_input(args.input)
        _emit(tx.signed_by(SigningKey.load(args.key)), args.out)
        return 0
    if args.tx_cmd == "send":
        return send(args)
    if args.tx_cmd == "status":
        with connect(args) as client:
            info = client.tx_status(args.hash)
        print_status(info, args.json)
        return 0
    tx = read_tx_input(args.input)
    doc = tx_to_json(tx)
    doc["hash"] = tx.hash.hex()
    print(json.dumps(doc, indent=2))
    return 0
