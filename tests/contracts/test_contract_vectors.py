"""The contract test vector: a small genesis and three blocks with their expected receipts,
receipts roots and app hashes (`tests/vectors/contracts/chain.json`).

A change to the bytes of state, receipts or the app hash makes this test fail. If the change
is intended, regenerate the vector and review the diff:

    QCHAIN_REGEN_VECTORS=1 .venv/bin/pytest tests/contracts/test_contract_vectors.py

ML-DSA-65 signatures are randomised (hedged), so regenerating changes the bytes of the
ML-DSA member's transactions, and with them tx hashes, receipts and app hashes; replaying
the stored vector is deterministic.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from contracts.execution import BlockContext, execute_block
from contracts.genesis import init_state, parse_genesis
from contracts.testing import DevChain, dev_genesis, digest
from qchain.keys import Scheme, dev_key
from qchain.store import Batch, KVStore, MemoryStore, open_store
from qchain.types import decode_transaction

VECTOR = Path(__file__).parents[1] / "vectors" / "contracts" / "chain.json"
MEMBERS = {
    "admin": ("admin",),
    "ent": ("partner",),
    "ent2": ("partner",),
    "prov": ("provider",),
    "bureau": ("auditor",),
}


def build_vector() -> dict[str, Any]:
    genesis, keys = dev_genesis(
        MEMBERS,
        seed="qchain-vector",
        schemes={"ent": Scheme.ML_DSA_65},
        validators=4,
        chain_id="qchain-vector",
        voucher_issuers=["bureau"],
    )
    chain = DevChain(MemoryStore(), genesis, keys)
    prov2 = dev_key("qchain-vector", "prov2", Scheme.ED25519)
    ent, ent2, prov = chain.address("ent"), chain.address("ent2"), chain.address("prov")
    anchor = [digest("contract-1"), "sha256", "Joint R&D contract", "contract", b"v1"]
    blocks = [
        [
            chain.tx(
                "admin",
                "membership",
                "onboard",
                ["Lab 2", "ed25519", prov2.public_key, ["provider"]],
            ),
            chain.tx(
                "bureau", "voucher", "create", ["qd-2026", "Qingdao innovation vouchers", 1000, 2]
            ),
            chain.tx("ent", "notary", "anchor", anchor),
            chain.tx("ent2", "notary", "anchor", anchor),
        ],
        [
            chain.tx("bureau", "voucher", "grant", ["qd-2026", ent, 500]),
            chain.tx("bureau", "voucher", "grant", ["qd-2026", ent2, 600]),
            chain.tx("ent", "voucher", "pay", ["qd-2026", prov, 200, "invoice 42"]),
            chain.tx("prov", "voucher", "redeem", ["qd-2026", 150]),
            chain.tx("admin", "membership", "suspend", [ent2, "membership lapsed"]),
        ],
        [
            chain.tx(
                "prov",
                "notary",
                "anchor_many",
                [
                    [
                        [digest("report-1"), "sm3", "Test report", "report", b""],
                        [digest("report-2"), "sm3", "Test report 2", "report", b""],
                    ]
                ],
            ),
            chain.tx("ent", "voucher", "pay", ["qd-2026", prov, 1, ""]),
            chain.tx("prov", "voucher", "redeem", ["qd-2026", 50]),
        ],
    ]
    out_blocks = []
    for txs in blocks:
        ctx = chain.context()
        result = chain.block(txs)
        out_blocks.append(
            {
                "height": ctx.height,
                "time": ctx.time,
                "txs": [tx.encode().hex() for tx in txs],
                "receipts": [r.encode().hex() for r in result.receipts],
                "receipt_summary": [[r.ok, r.code] for r in result.receipts],
                "writes": len(result.write_set),
                "receipts_root": result.receipts_root.hex(),
                "app_hash": result.app_hash.hex(),
            }
        )
    return {
        "genesis": genesis.to_json(),
        "genesis_hash": genesis.hash.hex(),
        "genesis_app_hash": init_state(MemoryStore(), genesis).app_hash.hex(),
        "blocks": out_blocks,
    }


def replay(store: KVStore, vector: dict[str, Any]) -> None:
    genesis = parse_genesis(vector["genesis"])
    assert genesis.hash.hex() == vector["genesis_hash"]
    state = init_state(store, genesis)
    assert state.app_hash.hex() == vector["genesis_app_hash"]
    batch = Batch()
    for k, v in state.write_set:
        assert v is not None
        batch.put(k, v)
    store.write(batch)
    prev = state.app_hash
    for b in vector["blocks"]:
        txs = [decode_transaction(bytes.fromhex(t)) for t in b["txs"]]
        ctx = BlockContext(genesis.chain_id, b["height"], b["time"], prev)
        result = execute_block(store, ctx, txs)
        assert [r.encode().hex() for r in result.receipts] == b["receipts"]
        assert [[r.ok, r.code] for r in result.receipts] == b["receipt_summary"]
        assert len(result.write_set) == b["writes"]
        assert result.receipts_root.hex() == b["receipts_root"]
        assert result.app_hash.hex() == b["app_hash"]
        batch = Batch()
        result.to_batch(batch)
        store.write(batch)
        prev = result.app_hash


@pytest.mark.skipif(not os.environ.get("QCHAIN_REGEN_VECTORS"), reason="set QCHAIN_REGEN_VECTORS=1")
def test_regenerate() -> None:
    VECTOR.parent.mkdir(parents=True, exist_ok=True)
    VECTOR.write_text(json.dumps(build_vector(), indent=1) + "\n")


def test_vector_on_both_backends(tmp_path: Path) -> None:
    vector = json.loads(VECTOR.read_text())
    replay(MemoryStore(), vector)
    with open_store(tmp_path / "db") as db:
        replay(db, vector)


def test_vector_covers_failures_and_expiry() -> None:
    vector = json.loads(VECTOR.read_text())
    summary = [s for b in vector["blocks"] for s in b["receipt_summary"]]
    assert [True, ""] in summary and [False, "duplicate"] in summary
    assert [False, "rule-violation"] in summary
