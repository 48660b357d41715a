"""`qchain receipt`: fetch a transaction's receipt proof from a node, and verify one offline.

`get HASH --out FILE` saves the canonical `ReceiptProof` bytes the node serves (without
`--out` it prints the proof as JSON). `verify FILE` needs no node: it checks that the
receipt is in the block the header describes (Merkle proof to the receipts root) and that
at least 2f+1 validators signed that block (the commit certificate), against the validator
keys of the chain's genesis file (`--genesis`) or of a JSON list of
`{"scheme", "public_key"}` objects (`--validators`). FILE holds the canonical bytes, their
hex, or the JSON form.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from contracts.genesis import Genesis
from node.genesis_file import load_genesis
from qchain.cli_client import add_node_arguments, connect
from qchain.errors import CodecError, ConfigError
from qchain.jsonform import hex_field, receipt_proof_from_json, receipt_proof_to_json
from qchain.types import ReceiptProof, ValidatorKey


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="receipt_cmd", metavar="VERB", required=True)
    g = sub.add_parser("get", help="fetch a receipt with its proof and certificate")
    g.add_argument("hash")
    g.add_argument("--out", type=Path, help="write the canonical bytes here")
    add_node_arguments(g)
    v = sub.add_parser("verify", help="verify a saved receipt offline")
    v.add_argument("file", type=Path)
    keys = v.add_mutually_exclusive_group(required=True)
    keys.add_argument("--genesis", type=Path, help="the chain's genesis file")
    keys.add_argument("--validators", type=Path, help='JSON list of {"scheme", "public_key"}')
    v.add_argument("--chain-id", help="expected chain id (default: the genesis's)")
    v.add_argument("--json", action="store_true", help="print the verified receipt as JSON")


def load_receipt_proof(path: Path) -> ReceiptProof:
    """A receipt proof from canonical bytes, their hex, or the JSON form."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CodecError(f"cannot read {path}: {e}") from e
    text = data.strip()
    if text.startswith(b"{"):
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise CodecError(f"{path}: not valid JSON: {e}") from e
        return receipt_proof_from_json(doc)
    try:
        raw = bytes.fromhex(text.decode("ascii").removeprefix("0x"))
    except (UnicodeDecodeError, ValueError):
        raw = data
    return ReceiptProof.decode(raw)


def load_validators(path: Path) -> list[ValidatorKey]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError("--validators", f"cannot read {path}: {e}") from e
    if isinstance(doc, dict):
        doc = doc.get("validators")
    if not isinstance(doc, list) or not doc:
        raise ConfigError("--validators", "expected a non-empty JSON list of validators")
    keys = []
    for i, v in enumerate(doc):
        if not isinstance(v, dict) or "public_key" not in v:
            raise ConfigError(f"--validators[{i}]", "expected {scheme, public_key}")
        keys.append(
            ValidatorKey(
                str(v.get("scheme", "ml-dsa-65")), hex_field(v["public_key"], f"validators[{i}]")
            )
        )
    return keys


def verify_receipt_proof(
    proof: ReceiptProof, genesis: Genesis | None, validators_file: Path | None, chain_id: str | None
) -> tuple[str, list[ValidatorKey]]:
    """Check proof offline against the validator keys of genesis (else of the JSON list in
    validators_file) for chain_id (default: the genesis's, else the header's); raise
    `BadSignature` unless 2f+1 of them signed the block that holds the receipt. Returns
    the chain id and the validator keys it was checked against."""
    if genesis is not None:
        validators, default_chain = genesis.validator_keys(), genesis.chain_id
    elif validators_file is not None:
        validators, default_chain = load_validators(validators_file), proof.header.chain_id
    else:
        raise ConfigError("--genesis", "give the chain's genesis file or its validator keys")
    chain = chain_id or default_chain
    proof.verify(chain, validators)
    return chain, validators


def run(args: argparse.Namespace) -> int:
    if args.receipt_cmd == "get":
        with connect(args) as client:
            raw = client.receipt_bytes(args.hash)
        proof = ReceiptProof.decode(raw)
        if args.out is not None:
            args.out.write_bytes(raw)
            print(f"wrote {len(raw)} bytes to {args.out}; height {proof.receipt.height}")
        else:
            print(json.dumps(receipt_proof_to_json(proof), indent=2))
        return 0
    proof = load_receipt_proof(args.file)
    genesis = None if args.genesis is None else load_genesis(args.genesis)
    chain_id, validators = verify_receipt_proof(proof, genesis, args.validators, args.chain_id)
    r = proof.receipt
    if args.json:
        print(json.dumps({"verified": True, **receipt_proof_to_json(proof)}, indent=2))
    else:
        outcome = "ok" if r.ok else f"failed ({r.code})"
        print(
            f"verified: transaction {r.tx_hash.hex()} {outcome} at height {r.height} "
            f"index {r.index} of chain {chain_id}, block {proof.header.hash.hex()}, "
            f"{len(proof.certificate.signatures)} of {len(validators)} validators signed"
        )
    return 0
