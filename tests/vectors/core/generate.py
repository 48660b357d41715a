"""Regenerate the core test vectors in this directory.

    .venv/bin/python tests/vectors/core/generate.py

Writes `transactions.json` (signed transactions: Ed25519 ones are deterministic and are
rebuilt bit for bit by the test; ML-DSA-65 signatures are randomized, so their bytes are
stored and the test checks decode, re-encode, hash and signature), `header.json` (a block
header and its hash) and `merkle.json` (a tree's root and an inclusion proof).

Only run this when a change of bytes is intended; the diff of these files is the review.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qchain.jsonform import tx_to_json
from qchain.keys import Scheme, dev_key
from qchain.merkle import merkle_proof, merkle_root
from qchain.types import BlockHeader, Transaction, new_transaction

HERE = Path(__file__).parent
SEED = "qchain-test-vectors"

TX_RECIPES: list[dict[str, Any]] = [
    {
        "name": "ed25519-register",
        "scheme": "ed25519",
        "label": "alice",
        "chain_id": "qchain-vectors",
        "nonce": 0,
        "contract": "registry",
        "method": "register",
        "args": ["alice", b"\x01\x02\x03", 42, [True, None, -7]],
        "expiry_height": 0,
    },
    {
        "name": "ed25519-transfer-expiring",
        "scheme": "ed25519",
        "label": "bob",
        "chain_id": "qchain-vectors",
        "nonce": 2**40,
        "contract": "bank",
        "method": "transfer",
        "args": [b"\xaa" * 20, 2**64 - 1, "memo: café"],
        "expiry_height": 1000,
    },
    {
        "name": "ml-dsa-65-register",
        "scheme": "ml-dsa-65",
        "label": "carol",
        "chain_id": "qchain-vectors",
        "nonce": 5,
        "contract": "registry",
        "method": "register",
        "args": ["carol", []],
        "expiry_height": 7,
    },
]


def build_tx(recipe: dict[str, Any]) -> Transaction:
    key = dev_key(SEED, recipe["label"], Scheme(recipe["scheme"]))
    return new_transaction(
        key,
        chain_id=recipe["chain_id"],
        nonce=recipe["nonce"],
        contract=recipe["contract"],
        method=recipe["method"],
        args=recipe["args"],
        expiry_height=recipe["expiry_height"],
    )


def header() -> BlockHeader:
    return BlockHeader(
        chain_id="qchain-vectors",
        height=12,
        round=1,
        time=1_700_000_000_000,
        parent=bytes(range(32)),
        proposer=3,
        tx_root=merkle_root([b"tx-a", b"tx-b"]),
        receipts_root=merkle_root([]),
        app_hash=b"\xee" * 32,
    )


MERKLE_LEAVES = [f"leaf-{i}".encode() for i in range(7)]
MERKLE_INDEX = 5


def main() -> None:
    txs = []
    for recipe in TX_RECIPES:
        tx = build_tx(recipe)
        txs.append(
            {
                "name": recipe["name"],
                "dev_key": {"seed": SEED, "label": recipe["label"], "scheme": recipe["scheme"]},
                "json": tx_to_json(tx),
                "encoded": tx.encode().hex(),
                "signing_digest": tx.signing_digest().hex(),
                "hash": tx.hash.hex(),
            }
        )
    h = header()
    proof = merkle_proof(MERKLE_LEAVES, MERKLE_INDEX)
    docs = {
        "transactions.json": txs,
        "header.json": {"header": h.encode().hex(), "hash": h.hash.hex()},
        "merkle.json": {
            "leaves": [x.hex() for x in MERKLE_LEAVES],
            "root": merkle_root(MERKLE_LEAVES).hex(),
            "index": MERKLE_INDEX,
            "proof": proof.encode().hex(),
            "path": [p.hex() for p in proof.path],
        },
    }
    for name, doc in docs.items():
        (HERE / name).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
