"""`qchain tx`: build, sign and decode transactions offline.

Transactions move between the verbs as hex of their canonical bytes (or a file holding
those bytes or that hex), so `build | sign | decode` compose in a pipeline.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from qchain.codec import Value
from qchain.errors import CodecError
from qchain.jsonform import tx_to_json, value_from_json
from qchain.keys import SigningKey
from qchain.types import Transaction, decode_transaction


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
        try:
            parsed = json.loads(args.args)
        except ValueError as e:
            raise CodecError(f"--args is not JSON: {e}") from e
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
    tx = read_tx_input(args.input)
    doc = tx_to_json(tx)
    doc["hash"] = tx.hash.hex()
    print(json.dumps(doc, indent=2))
    return 0
