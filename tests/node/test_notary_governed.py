"""Notary evidence on a chain whose validator set changes: a governed chain through an
add and a remove, committed into a node store row by row (`tests/node/setchain_store.py`),
then a document anchored. The evidence carries the set chain of its receipt's height and
`qchain notary verify --genesis` proves it from the genesis alone; the same evidence with
a link left out, without its set chain, or shown against another genesis fails; the
decoder's bounds hold against hostile files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from contracts import setchain
from contracts.setchain import ChainedReceipt, SetChain
from node.genesis_file import save_genesis
from node.notary_evidence import (
    GOVERNED_EVIDENCE_VERSION,
    MAX_EVIDENCE_SIZE,
    GovernedEvidence,
    NotaryEvidence,
    check_evidence,
    evidence_of_receipt,
    load_evidence,
    save_evidence,
)
from qchain.cli import main
from qchain.codec import encode_value
from qchain.errors import CodecError, EvidenceMismatch
from tests.contracts.setchain_chain import (
    CertifiedChain,
    add_then_remove,
    certified_chain,
)

from .setchain_store import node_store

DOCUMENT = b"a contract signed after the set changed\n" * 50


@pytest.fixture(scope="module")
def cc() -> CertifiedChain:
    cc = certified_chain(4, delay=2)
    add_then_remove(cc)
    digest = hashlib.sha256(DOCUMENT).digest()
    tx = cc.chain.tx("op2", "notary", "anchor", [digest, "sha256", "contract", "legal", b""])
    assert cc.block([tx]).receipts[0].ok
    assert [r.id for r in cc.set_at(cc.chain.height)] == [0, 2, 3, 4]
    return cc


@pytest.fixture(scope="module")
def evidence(cc: CertifiedChain) -> GovernedEvidence:
    top = cc.chain.height
    chain = node_store(cc)[2].build(top)
    assert len(chain.links) == 2
    served = ChainedReceipt(cc.receipt_proof(top), chain).encode()
    ev = evidence_of_receipt(served, cc.txs[top][0])
    assert isinstance(ev, GovernedEvidence) and ev.version == GOVERNED_EVIDENCE_VERSION
    return ev


@pytest.fixture
def paths(cc: CertifiedChain, tmp_path: Path) -> tuple[Path, Path]:
    doc, genesis = tmp_path / "contract.pdf", tmp_path / "genesis.json"
    doc.write_bytes(DOCUMENT)
    save_genesis(cc.chain.genesis, genesis)
    return doc, genesis


def test_evidence_after_an_add_and_a_remove_verifies_from_genesis(
    cc: CertifiedChain,
    evidence: GovernedEvidence,
    paths: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    doc, genesis = paths
    saved = tmp_path / "contract.evidence"
    save_evidence(evidence, saved)
    assert load_evidence(saved) == evidence
    found = check_evidence(evidence, doc, cc.chain.genesis)
    assert found.height == cc.chain.height > cc.delay
    assert (found.signatures, found.validators) == (4, 4)
    assert found.member == cc.chain.address("op2")
    args = ["notary", "verify", str(doc), "--receipt", str(saved), "--genesis", str(genesis)]
    assert main(args) == 0
    assert f"anchored at height {cc.chain.height}" in capsys.readouterr().out
    # another document against the same evidence still fails on its digest
    other = tmp_path / "other.pdf"
    other.write_bytes(DOCUMENT + b"x")
    with pytest.raises(EvidenceMismatch) as e:
        check_evidence(evidence, other, cc.chain.genesis)
    assert e.value.part == "file"


def test_a_forged_set_chain_fails(
    evidence: GovernedEvidence,
    cc: CertifiedChain,
    paths: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    doc, genesis = paths
    chain = evidence.set_chain
    omitted = GovernedEvidence(
        GOVERNED_EVIDENCE_VERSION,
        evidence.proof,
        evidence.transaction,
        SetChain(chain.links[:1], chain.tail),
    )
    with pytest.raises(EvidenceMismatch) as e:
        check_evidence(omitted, doc, cc.chain.genesis)
    assert e.value.part == "set chain"
    forged = tmp_path / "forged.evidence"
    save_evidence(omitted, forged)
    args = ["notary", "verify", str(doc), "--receipt", str(forged), "--genesis", str(genesis)]
    assert main(args) != 0
    assert "set chain" in capsys.readouterr().err
    # the first link left out: the add is unproven, the remove's link does not continue
    first = GovernedEvidence(
        GOVERNED_EVIDENCE_VERSION,
        evidence.proof,
        evidence.transaction,
        SetChain(chain.links[1:], chain.tail),
    )
    with pytest.raises(EvidenceMismatch) as e:
        check_evidence(first, doc, cc.chain.genesis)
    assert e.value.part == "set chain"


def test_evidence_without_its_set_chain_says_how_to_get_one(
    evidence: GovernedEvidence, cc: CertifiedChain, paths: tuple[Path, Path]
) -> None:
    doc, _ = paths
    bare = NotaryEvidence(1, evidence.proof, evidence.transaction)
    with pytest.raises(EvidenceMismatch, match="qchain notary evidence TX_HASH") as e:
        check_evidence(bare, doc, cc.chain.genesis)
    assert e.value.part == "set chain"


def test_a_set_chain_against_a_genesis_without_changes_fails(
    evidence: GovernedEvidence, paths: tuple[Path, Path]
) -> None:
    from .test_notary_evidence import GENESIS

    doc, _ = paths
    with pytest.raises(EvidenceMismatch, match="does not enable validator-set changes"):
        check_evidence(evidence, doc, GENESIS)


def test_hostile_governed_evidence_is_refused_within_bounds(
    evidence: GovernedEvidence, tmp_path: Path
) -> None:
    path = tmp_path / "hostile"
    # more links than §10.5 allows: refused by the decoder, before any check
    chain = evidence.set_chain
    assert chain.tail is not None
    too_many = [[chain.links[0].to_wire()] * (setchain.MAX_LINKS + 1), chain.tail.to_wire()]
    path.write_bytes(
        encode_value(
            [
                GOVERNED_EVIDENCE_VERSION,
                evidence.proof.to_wire(),
                evidence.transaction.to_wire(),
                too_many,
            ]
        )
    )
    with pytest.raises(CodecError, match="not a notary evidence file"):
        load_evidence(path)
    # an unknown version of the four-field form
    path.write_bytes(GovernedEvidence(3, evidence.proof, evidence.transaction, chain).encode())
    with pytest.raises(CodecError, match="evidence version 3, expected 1 \\(or 2"):
        load_evidence(path)
    # a file past the size bound is not read further
    path.write_bytes(bytes(MAX_EVIDENCE_SIZE + 1))
    with pytest.raises(CodecError, match="larger than"):
        load_evidence(path)
    # a receipt with its set chain, but no transaction: refused as a bare receipt proof
    path.write_bytes(ChainedReceipt(evidence.proof, chain).encode())
    with pytest.raises(CodecError, match="bare receipt proof"):
        load_evidence(path)
