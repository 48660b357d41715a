"""The notary evidence test vector (`tests/vectors/node/notary_evidence.json`): a genesis,
a document, and the evidence file of its SM3 anchor, as a third party keeps them.

Evidence files are kept for years and checked by parties that never talk to a node: a
change to the bytes of the evidence format (or of the receipt proof or transaction inside
it) makes this test fail. If the change is intended, regenerate the vector and review the
diff (ML-DSA-65 certificate signatures are randomised, so the bytes change every time):

    QCHAIN_REGEN_VECTORS=1 .venv/bin/pytest tests/node/test_notary_vectors.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from contracts.genesis import parse_genesis
from node.notary_evidence import (
    EVIDENCE_VERSION,
    Anchored,
    NotaryEvidence,
    check_evidence,
    file_digest,
)

from .test_notary_evidence import GENESIS, PARTNERS, anchor_tx, committed

VECTOR = Path(__file__).parents[1] / "vectors" / "node" / "notary_evidence.json"
DOCUMENT = b"abc"


def _expected(found: Anchored) -> dict[str, Any]:
    """What the vector records of the verified evidence, and checks again."""
    return {
        "digest": found.digest.hex(),
        "algorithm": found.algorithm,
        "member": found.member.hex(),
        "height": found.height,
        "time_utc": found.time_utc,
        "tx_hash": found.tx_hash.hex(),
    }


def build_vector(tmp_path: Path) -> dict[str, Any]:
    doc = tmp_path / "document"
    doc.write_bytes(DOCUMENT)
    digest = file_digest(doc, "sm3")
    tx = anchor_tx(PARTNERS[1], 0, "anchor", [digest, "sm3", "GB/T 32905 example 1", "test", b""])
    (ev,) = committed([tx])
    found = check_evidence(ev, doc, GENESIS)
    return {
        "description": "notary evidence [version, receipt proof, transaction] of an SM3 anchor",
        "document_hex": DOCUMENT.hex(),
        "genesis": GENESIS.to_json(),
        "evidence_hex": ev.encode().hex(),
        "expected": _expected(found),
    }


@pytest.mark.skipif(not os.environ.get("QCHAIN_REGEN_VECTORS"), reason="set QCHAIN_REGEN_VECTORS=1")
def test_regenerate(tmp_path: Path) -> None:
    VECTOR.parent.mkdir(parents=True, exist_ok=True)
    VECTOR.write_text(json.dumps(build_vector(tmp_path), indent=1) + "\n")


def test_stored_evidence_still_decodes_and_verifies(tmp_path: Path) -> None:
    vector = json.loads(VECTOR.read_text())
    raw = bytes.fromhex(vector["evidence_hex"])
    ev = NotaryEvidence.decode(raw)
    assert ev.encode() == raw and ev.version == EVIDENCE_VERSION
    doc = tmp_path / "document"
    doc.write_bytes(bytes.fromhex(vector["document_hex"]))
    found = check_evidence(ev, doc, parse_genesis(vector["genesis"]))
    expected = vector["expected"]
    assert _expected(found) == expected
    # SM3("abc"), GB/T 32905-2016 example 1.
    assert expected["digest"] == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
