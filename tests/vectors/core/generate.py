"""Regenerate the core test vectors in this directory.

    .venv/bin/python tests/vectors/core/generate.py

Writes `transactions.json` (signed transactions: Ed25519 ones are deterministic and are
rebuilt bit for bit by the test; ML-DSA-65 and SM2 signatures are randomized, so their bytes
are stored and the test checks decode, re-encode, hash and signature, and a stored one
whose body still matches its recipe is kept, so a regeneration changes only what changed;
an SM2 entry also holds its Z value and e = SM3(Z || M) for the default user ID),
`header.json` (a block header and its hash) and `merkle.json` (a tree's root and an
inclusion proof).

Only run this when a change of bytes is intended; the diff of these files is the review.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qchain import sm2
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
    {
        "name": "sm2-notary-anchor",
        "scheme": "sm2",
        "label": "dave",
        "chain_id": "qchain-vectors",
        "nonce": 1,
        "contract": "notary",
        "method": "anchor",
        "args": [bytes(range(32)), "sm3", "contract", "c-2026-001", b""],
        "expiry_height": 0,
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


def sm2_values(tx: Transaction) -> dict[str, str]:
    """The SM2 signing values of a transaction: user ID, Z and e = SM3(Z || M), where the
    message M is the 32-byte signing digest."""
    return {
        "user_id": sm2.DEFAULT_USER_ID.decode(),
        "z": sm2.z_value(tx.public_key).hex(),
        "e": sm2.message_digest(tx.public_key, tx.signing_digest()).hex(),
    }


def tx_vector(recipe: dict[str, Any], stored: dict[str, Any] | None) -> dict[str, Any]:
    tx = build_tx(recipe)
    if stored is not None and recipe["scheme"] != "ed25519":
        old = Transaction.decode(bytes.fromhex(stored["encoded"]))
        if old.body_bytes() == tx.body_bytes():
            tx = old
    vec = {
        "name": recipe["name"],
        "dev_key": {"seed": SEED, "label": recipe["label"], "scheme": recipe["scheme"]},
        "json": tx_to_json(tx),
        "encoded": tx.encode().hex(),
        "signing_digest": tx.signing_digest().hex(),
        "hash": tx.hash.hex(),
    }
    if recipe["scheme"] == "sm2":
        vec["sm2"] = sm2_values(tx)
    return vec


def main() -> None:
    path = HERE / "transactions.json"
    stored = {v["name"]: v for v in json.loads(path.read_text())} if path.exists() else {}
    txs = [tx_vector(r, stored.get(r["name"])) for r in TX_RECIPES]
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
