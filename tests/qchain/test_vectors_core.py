"""The core test vectors under tests/vectors/core/ (regenerate with generate.py there)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from qchain.errors import BadSignature
from qchain.jsonform import tx_from_json, tx_to_json
from qchain.keys import Scheme
from qchain.merkle import MerkleProof, merkle_root, verify_proof
from qchain.types import BlockHeader, decode_transaction

VECTORS = Path(__file__).parents[1] / "vectors" / "core"


def _load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("core_vectors_generate", VECTORS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TXS = _load("transactions.json")


@pytest.mark.parametrize("vec", TXS, ids=[v["name"] for v in TXS])
def test_transaction_vectors(vec: dict[str, Any]) -> None:
    data = bytes.fromhex(vec["encoded"])
    tx = decode_transaction(data)
    assert tx.encode() == data
    assert tx.hash.hex() == vec["hash"]
    assert tx.signing_digest().hex() == vec["signing_digest"]
    assert tx_to_json(tx) == vec["json"]
    assert tx_from_json(vec["json"]) == tx
    tx.verify_signature(tx.public_key)
    tampered = bytearray(data)
    tampered[-1] ^= 1
    with pytest.raises(BadSignature):
        decode_transaction(bytes(tampered)).verify_signature(tx.public_key)
    gen = _generator()
    recipe = next(r for r in gen.TX_RECIPES if r["name"] == vec["name"])
    rebuilt = gen.build_tx(recipe)
    assert rebuilt.body_bytes() == tx.body_bytes()
    if recipe["scheme"] == "ed25519":  # deterministic signatures: bit for bit
        assert rebuilt.encode() == data
    if recipe["scheme"] == "sm2":  # Z and e = SM3(Z || signing digest), for other clients
        assert vec["sm2"] == gen.sm2_values(tx)
        assert vec["sm2"]["user_id"] == "1234567812345678"


def test_every_scheme_has_a_transaction_vector() -> None:
    assert {v["dev_key"]["scheme"] for v in TXS} == {s.value for s in Scheme}


def test_header_vector() -> None:
    vec = _load("header.json")
    data = bytes.fromhex(vec["header"])
    header = BlockHeader.decode(data)
    assert header.encode() == data
    assert header.hash.hex() == vec["hash"]
    assert _generator().header() == header


def test_merkle_vector() -> None:
    vec = _load("merkle.json")
    leaves = [bytes.fromhex(x) for x in vec["leaves"]]
    root = bytes.fromhex(vec["root"])
    assert merkle_root(leaves) == root
    proof = MerkleProof.decode(bytes.fromhex(vec["proof"]))
    assert proof.index == vec["index"] and proof.size == len(leaves)
    assert [p.hex() for p in proof.path] == vec["path"]
    assert verify_proof(leaves[proof.index], proof, root)
    assert not verify_proof(leaves[proof.index - 1], proof, root)
