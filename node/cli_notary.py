"""`qchain notary`: anchor a document's digest, look it up, and verify the evidence offline.

- `anchor FILE --key KEY` hashes the file (streamed; `--algorithm sha256` or `sm3`), anchors
  the digest with the notary contract over the path of `qchain tx send`, and prints the
  digest and the transaction hash; `--wait` waits for the commit and prints the height and
  block time; `--receipt-out R` (which waits) saves the evidence a third party verifies.
  Only the digest, `--title` and `--category` go on the chain, and every member can read
  them: the file itself and its name stay with you.
- `lookup DIGEST` (or `lookup --file FILE`) asks a node who anchored a digest and when.
- `evidence TX_HASH --out R` builds the evidence of an anchor made any other way (the
  explorer, the SDK, another client) from a node.
- `verify FILE --receipt R --genesis G` needs no node: it checks that R's receipt proof
  was signed by 2f+1 of the genesis's validators (on a chain whose validator set changes,
  of the set of its height, proven from the genesis by the set chain the evidence
  carries, as `qchain receipt verify` proves it), that its transaction is the receipt's,
  succeeded, and anchors exactly this file's digest under the anchor's algorithm, and
  prints when and by whom. A modified file, the evidence of another anchor, or a proof
  that does not verify exits 1 with a message naming what failed.

The evidence format is `node.notary_evidence`'s.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from contracts.notary import ALGORITHMS, MAX_METADATA, NAME
from contracts.registry import DEFAULT_REGISTRY
from contracts.runtime import Kind
from node.cli_tx import submit_call
from node.genesis_file import load_genesis
from node.notary_evidence import (
    Anchored,
    Evidence,
    check_evidence,
    evidence_of_receipt,
    file_digest,
    load_evidence,
    save_evidence,
)
from qchain.cli_client import add_node_arguments, connect
from qchain.client import Client
from qchain.codec import Value
from qchain.errors import ApiError, ConfigError, NodeUnavailable, NotFound
from qchain.keys import SigningKey
from qchain.types import Transaction

DEFAULT_TITLE = "document"
DEFAULT_CATEGORY = "document"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="notary_cmd", metavar="VERB", required=True)
    a = sub.add_parser("anchor", help="anchor a file's digest on the chain")
    a.add_argument("file", type=Path)
    a.add_argument("--algorithm", choices=ALGORITHMS, default="sha256")
    a.add_argument("--title", default=DEFAULT_TITLE, help="visible to every member")
    a.add_argument("--category", default=DEFAULT_CATEGORY, help="visible to every member")
    a.add_argument("--metadata-hex", default="", help=f"up to {MAX_METADATA} bytes, as hex")
    a.add_argument("--key", type=Path, required=True, help="the member's key file")
    a.add_argument("--wait", action="store_true", help="wait for the commit")
    a.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for commit")
    a.add_argument("--receipt-out", type=Path, help="save the evidence here (implies --wait)")
    add_node_arguments(a)
    g = sub.add_parser("lookup", help="who anchored a digest, and when")
    what = g.add_mutually_exclusive_group(required=True)
    what.add_argument("digest", nargs="?", help="64 hex digits")
    what.add_argument("--file", type=Path, help="hash this file instead")
    g.add_argument("--algorithm", choices=ALGORITHMS, default="sha256")
    add_node_arguments(g)
    e = sub.add_parser("evidence", help="fetch the evidence of an anchor transaction")
    e.add_argument("hash", help="the anchor transaction's hash")
    e.add_argument("--out", type=Path, required=True)
    add_node_arguments(e)
    v = sub.add_parser("verify", help="verify a file against saved evidence, offline")
    v.add_argument("file", type=Path)
    v.add_argument("--receipt", type=Path, required=True, help="the evidence file")
    v.add_argument("--genesis", type=Path, required=True, help="the chain's genesis file")
    v.add_argument("--json", action="store_true", help="print JSON")


def _metadata(text: str) -> bytes:
    try:
        data = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise ConfigError("--metadata-hex", "expected hex digits") from None
    if len(data) > MAX_METADATA:
        raise ConfigError("--metadata-hex", f"{len(data)} bytes, at most {MAX_METADATA}")
    return data


def _fetch_evidence(client: Client, tx: Transaction) -> Evidence:
    return evidence_of_receipt(client.receipt_bytes(tx.hash), tx)


def _save_after_commit(client: Client, tx: Transaction, out: Path) -> None:
    try:
        save_evidence(_fetch_evidence(client, tx), out)
    except ApiError as e:
        raise NodeUnavailable(
            f"anchored in transaction {tx.hash.hex()}, but the node did not serve its receipt "
            f"({e.message}): fetch it later with `qchain notary evidence {tx.hash.hex()} "
            f"--out {out}`"
        ) from e


def anchor(args: argparse.Namespace) -> int:
    key = SigningKey.load(args.key)
    metadata = _metadata(args.metadata_hex)
    digest = file_digest(args.file, args.algorithm)
    call: list[Value] = [digest, args.algorithm, args.title, args.category, metadata]
    DEFAULT_REGISTRY.method(NAME, "anchor", Kind.TX).parse_args(call)  # names a bad field
    wait = args.wait or args.receipt_out is not None
    doc: dict[str, Any] = {"digest": digest.hex(), "algorithm": args.algorithm}
    with connect(args) as client:
        tx, info = submit_call(client, key, NAME, "anchor", call, wait=wait, timeout=args.timeout)
        doc.update(tx_hash=tx.hash.hex(), status=info.status, height=info.height)
        r = info.receipt
        if r is not None and not r.ok:
            doc.update(error={"code": r.code, "message": r.message})
        elif r is not None:
            found = client.notary_lookup(digest)
            doc.update(time=None if found is None else found["time_utc"])
            if args.receipt_out is not None:
                _save_after_commit(client, tx, args.receipt_out)
                doc.update(evidence=str(args.receipt_out))
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"digest {args.algorithm}:{doc['digest']}")
        print(f"tx {doc['tx_hash']} {doc['status']}")
        if "error" in doc:
            print(f"not anchored: {doc['error']['code']}: {doc['error']['message']}")
        elif doc["height"] is not None:
            print(f"height {doc['height']}, block time {doc['time']}")
        if "evidence" in doc:
            print(f"evidence saved to {doc['evidence']}")
    return 3 if "error" in doc else 0


def lookup(args: argparse.Namespace) -> int:
    if args.file is not None:
        digest = file_digest(args.file, args.algorithm).hex()
    elif re.fullmatch(r"(0x)?[0-9a-fA-F]{64}", args.digest):
        digest = args.digest.removeprefix("0x").lower()
    else:
        raise ConfigError("DIGEST", "expected 64 hex digits")
    with connect(args) as client:
        found = client.notary_lookup(digest)
    if found is None:
        raise NotFound("anchor", digest)
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        print(
            f"{found['algorithm']}:{found['digest']} {found['title']!r} ({found['category']}) "
            f"anchored at height {found['height']}, block time {found['time_utc']}, "
            f"by member {found['member']} in transaction {found['tx_hash']}"
        )
    return 0


def evidence(args: argparse.Namespace) -> int:
    with connect(args) as client:
        tx = client.transaction(args.hash)
        if tx is None:
            raise NotFound("transaction", args.hash)
        ev = _fetch_evidence(client, tx)
    save_evidence(ev, args.out)
    print(f"evidence of transaction {tx.hash.hex()} saved to {args.out}")
    return 0


def _report(a: Anchored) -> str:
    who = a.member.hex() + (f" ({a.member_name})" if a.member_name else "")
    return (
        f"{a.algorithm}:{a.digest.hex()} {a.title!r} ({a.category})\n"
        f"anchored at height {a.height}, block time {a.time_utc}, by member {who}\n"
        f"transaction {a.tx_hash.hex()} in block {a.block_hash.hex()} of chain {a.chain_id}, "
        f"signed by {a.signatures} of {a.validators} validators"
    )


def verify(args: argparse.Namespace) -> int:
    genesis = load_genesis(args.genesis)
    found = check_evidence(load_evidence(args.receipt), args.file, genesis)
    if args.json:
        doc = {
            "verified": True,
            "digest": found.digest.hex(),
            "algorithm": found.algorithm,
            "title": found.title,
            "category": found.category,
            "member": found.member.hex(),
            "member_name": found.member_name,
            "height": found.height,
            "time": found.time_ms,
            "time_utc": found.time_iso,
            "tx_hash": found.tx_hash.hex(),
            "block_hash": found.block_hash.hex(),
            "chain_id": found.chain_id,
        }
        print(json.dumps(doc, indent=2))
    else:
        print(_report(found))
    return 0


def run(args: argparse.Namespace) -> int:
    verbs = {"anchor": anchor, "lookup": lookup, "evidence": evidence, "verify": verify}
    return verbs[args.notary_cmd](args)
