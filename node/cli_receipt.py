"""`qchain receipt`: fetch a transaction's receipt proof from a node, and verify one offline.

`get HASH --out FILE` saves the canonical bytes the node serves (without `--out` it
prints the proof as JSON): a `ReceiptProof`, or on a chain whose validator set changes a
`ChainedReceipt` with the set chain of its height (`GET /v1/receipts/{hash}`), which
`verify FILE --genesis` takes as it is. `verify FILE` needs no node: it checks that the
receipt is in the block the header describes (Merkle proof to the receipts root) and that
at least 2f+1 validators signed that block (the commit certificate), against the validator
keys of the chain's genesis file (`--genesis`) or of a JSON list of
`{"scheme", "public_key"}` objects (`--validators`). FILE holds the canonical bytes, their
hex, or the JSON form.

On a chain whose genesis sets `consensus.reconfiguration`, the set of the receipt's height
is proven from the genesis by a set chain (docs/CONSENSUS.md §10.5, `contracts.setchain`),
never taken from the genesis alone: FILE is then a `ChainedReceipt` (the proof with its
set chain; in JSON, the proof's object with `set_chain`, the chain's canonical bytes in
hex), or `--set-chain CHAIN` gives the chain (canonical bytes or hex). Without a chain
such a receipt verifies only at heights no change can reach (≤ `reconfig_delay`). On any
other genesis the genesis set is the set of every height, as before, and a non-empty set
chain is refused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from contracts import setchain
from contracts import validators as validators_contract
from contracts.genesis import VALIDATOR_SCHEME, Genesis
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
    v.add_argument(
        "--set-chain",
        type=Path,
        help="the set chain from genesis to the receipt's height (a chain with set changes)",
    )
    v.add_argument("--json", action="store_true", help="print the verified receipt as JSON")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise CodecError(f"cannot read {path}: {e}") from e


def _raw(data: bytes) -> bytes:
    """Canonical bytes from a file that holds them or their hex."""
    try:
        return bytes.fromhex(data.strip().decode("ascii").removeprefix("0x"))
    except (UnicodeDecodeError, ValueError):
        return data


def load_receipt(path: Path) -> tuple[ReceiptProof, setchain.SetChain | None]:
    """A receipt proof, with the set chain it carries if any, from canonical bytes, their
    hex, or the JSON form."""
    data = _read(path)
    text = data.strip()
    if text.startswith(b"{"):
        if len(text) > 4 * setchain.MAX_SETCHAIN_BYTES:
            raise CodecError(f"{path}: larger than any receipt with its set chain")
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise CodecError(f"{path}: not valid JSON: {e}") from e
        chain = None
        if isinstance(doc, dict) and "set_chain" in doc:
            chain = setchain.decode_set_chain(hex_field(doc.pop("set_chain"), "set_chain"))
        return receipt_proof_from_json(doc), chain
    return parse_receipt(_raw(data))


def parse_receipt(raw: bytes) -> tuple[ReceiptProof, setchain.SetChain | None]:
    """A receipt proof from canonical bytes: a `ReceiptProof`, or a `ChainedReceipt` with
    its set chain (what a node of a chain whose set changes serves)."""
    try:
        return ReceiptProof.decode(raw), None
    except CodecError as plain:
        try:
            chained = setchain.decode_chained_receipt(raw)
        except CodecError:
            raise plain from None
        return chained.proof, chained.set_chain


def load_receipt_proof(path: Path) -> ReceiptProof:
    """A receipt proof from canonical bytes, their hex, or the JSON form."""
    return load_receipt(path)[0]


def load_set_chain(path: Path) -> setchain.SetChain:
    return setchain.decode_set_chain(_raw(_read(path)))


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
    proof: ReceiptProof,
    genesis: Genesis | None,
    validators_file: Path | None,
    chain_id: str | None,
    set_chain: setchain.SetChain | None = None,
) -> tuple[str, list[ValidatorKey]]:
    """Check proof offline against the validator keys of genesis (else of the JSON list in
    validators_file) for chain_id (default: the genesis's, else the header's); raise
    `BadSignature` unless 2f+1 of them signed the block that holds the receipt. On a
    genesis with validator-set changes, the keys are those of the set of the receipt's
    height, proven from the genesis by set_chain. Returns the chain id and the validator
    keys it was checked against."""
    if genesis is not None and genesis.consensus.reconfiguration:
        chain = chain_id or genesis.chain_id
        start = setchain.genesis_start(
            [
                validators_contract.Record(v.index, v.public_key, v.sae_id, v.operator)
                for v in genesis.validators
            ]
        )
        records = setchain.verify_receipt(
            proof,
            set_chain or setchain.SetChain((), None),
            chain_id=chain,
            start=start,
            delay=genesis.consensus.reconfig_delay,
        )
        return chain, [ValidatorKey(VALIDATOR_SCHEME.value, r.public_key) for r in records]
    if set_chain is not None and (set_chain.links or set_chain.tail is not None):
        raise ConfigError(
            "--set-chain",
            "a set chain is checked from a genesis that enables validator-set changes; "
            "on this one the genesis set is the set of every height"
            if genesis is not None
            else "a set chain is checked from the chain's genesis: give --genesis",
        )
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
        proof, chain = parse_receipt(raw)
        with_chain = "" if chain is None else ", with the set chain of its height"
        if args.out is not None:
            args.out.write_bytes(raw)
            print(
                f"wrote {len(raw)} bytes to {args.out}; height {proof.receipt.height}{with_chain}"
            )
        else:
            doc = receipt_proof_to_json(proof)
            if chain is not None:
                doc["set_chain"] = chain.encode().hex()
            print(json.dumps(doc, indent=2))
        return 0
    proof, carried = load_receipt(args.file)
    if args.set_chain is not None:
        if carried is not None:
            raise ConfigError("--set-chain", f"{args.file} carries a set chain already")
        carried = load_set_chain(args.set_chain)
    genesis = None if args.genesis is None else load_genesis(args.genesis)
    chain_id, keys = verify_receipt_proof(proof, genesis, args.validators, args.chain_id, carried)
    r = proof.receipt
    if args.json:
        doc = {"verified": True, **receipt_proof_to_json(proof)}
        if carried is not None:
            doc["set_chain"] = carried.encode().hex()
        print(json.dumps(doc, indent=2))
    else:
        outcome = "ok" if r.ok else f"failed ({r.code})"
        print(
            f"verified: transaction {r.tx_hash.hex()} {outcome} at height {r.height} "
            f"index {r.index} of chain {chain_id}, block {proof.header.hash.hex()}, "
            f"{len(proof.certificate.signatures)} of {len(keys)} validators signed"
        )
    return 0
