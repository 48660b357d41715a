"""Chain data types: transaction hashes, block bodies, commit certificates, receipt proofs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from qchain.errors import BadSignature, CodecError, TooLarge
from qchain.hashing import Domain, hash_domain
from qchain.keys import Scheme, SigningKey, dev_key
from qchain.merkle import merkle_proof
from qchain.types import (
    MAX_TX_SIZE,
    Block,
    BlockHeader,
    CommitCertificate,
    CommitSignature,
    Event,
    Receipt,
    ReceiptProof,
    Transaction,
    ValidatorKey,
    commit_sign_digest,
    decode_block,
    decode_transaction,
    new_transaction,
    quorum_size,
    receipts_root,
    tx_root,
    verify_certificate,
)

CHAIN = "types-test"
ZERO = b"\x00" * 32


def _tx(nonce: int, scheme: Scheme = Scheme.ED25519) -> Transaction:
    return new_transaction(
        dev_key("types", "alice", scheme),
        chain_id=CHAIN,
        nonce=nonce,
        contract="registry",
        method="put",
        args=[b"key", nonce],
    )


def test_tx_hash_is_stable_and_covers_every_field() -> None:
    a, b = _tx(1), _tx(1)
    assert a.hash == b.hash == hash_domain(Domain.TX, a.encode())
    assert decode_transaction(a.encode()).hash == a.hash
    wire = a.to_wire()
    hashes = {a.hash}
    for i, new in enumerate(
        ["c2", b"\x01" * 20, 2, "x", "y", [1], 9, "ml-dsa-65", b"\x02" * 32, b"\x03" * 64]
    ):
        w = list(wire)
        w[i] = new
        hashes.add(Transaction.from_wire(w).hash)
    assert len(hashes) == 11
    # The signing digest leaves out only the signature.
    assert dataclasses.replace(a, signature=b"").signing_digest() == a.signing_digest()
    assert dataclasses.replace(a, nonce=5).signing_digest() != a.signing_digest()


def test_ed25519_transactions_are_deterministic_ml_dsa_verify() -> None:
    assert _tx(1).signature == _tx(1).signature
    t = _tx(1, Scheme.ML_DSA_65)
    t.verify_signature(t.public_key)


def test_decode_transaction_size_limit() -> None:
    big = dataclasses.replace(_tx(1), args=[b"x" * MAX_TX_SIZE])
    with pytest.raises(TooLarge) as info:
        decode_transaction(big.encode())
    assert info.value.limit == MAX_TX_SIZE


def _header(txs: tuple[Transaction, ...], height: int = 5) -> BlockHeader:
    return BlockHeader(CHAIN, height, 0, 1_700_000_000_000, ZERO, 1, tx_root(txs), ZERO, ZERO)


def test_block_check_body() -> None:
    txs = (_tx(1), _tx(2), _tx(3))
    block = Block(_header(txs), txs)
    block.check_body()
    assert decode_block(block.encode()) == block
    assert block.hash == block.header.hash == hash_domain(Domain.HEADER, block.header.encode())
    assert block.height == 5
    for bad_txs in (txs[:2], (txs[1], txs[0], txs[2]), (*txs, _tx(4)), ()):
        bad = Block(block.header, bad_txs)
        with pytest.raises(CodecError):
            bad.check_body()
        with pytest.raises(CodecError):
            decode_block(bad.encode())
    empty = Block(_header(()), ())
    empty.check_body()


def test_quorum_size() -> None:
    assert [quorum_size(n) for n in range(1, 11)] == [1, 2, 3, 3, 4, 5, 5, 6, 7, 7]


@pytest.fixture(scope="module")
def validators() -> list[SigningKey]:
    """Four validators, one of them with ML-DSA-65 (mixed schemes are allowed)."""
    return [
        dev_key("types", f"validator-{i}", Scheme.ML_DSA_65 if i == 3 else Scheme.ED25519)
        for i in range(4)
    ]


def _vkeys(keys: list[SigningKey]) -> list[ValidatorKey]:
    return [ValidatorKey(k.scheme.value, k.public_key) for k in keys]


def _cert(
    keys: list[SigningKey], height: int, block_hash: bytes, who: list[int]
) -> CommitCertificate:
    digest = commit_sign_digest(CHAIN, height, block_hash)
    return CommitCertificate(
        height, block_hash, tuple(CommitSignature(i, keys[i].sign(digest)) for i in who)
    )


def test_verify_certificate_quorum(validators: list[SigningKey]) -> None:
    vk = _vkeys(validators)
    bh = b"\x42" * 32
    verify_certificate(_cert(validators, 7, bh, [0, 1, 2]), CHAIN, vk)
    verify_certificate(_cert(validators, 7, bh, [3, 1, 0]), CHAIN, vk)
    verify_certificate(_cert(validators, 7, bh, [0, 1, 2, 3]), CHAIN, vk)
    with pytest.raises(BadSignature, match="2 valid"):
        verify_certificate(_cert(validators, 7, bh, [0, 1]), CHAIN, vk)
    # Duplicates of one validator count once.
    dup = _cert(validators, 7, bh, [0, 1, 1, 1])
    with pytest.raises(BadSignature):
        verify_certificate(dup, CHAIN, vk)
    # Bad signatures are ignored: not counted, not fatal.
    good = _cert(validators, 7, bh, [0, 1, 2])
    forged = CommitSignature(2, b"\x00" * 64)
    with pytest.raises(BadSignature):
        verify_certificate(
            dataclasses.replace(good, signatures=(*good.signatures[:2], forged)), CHAIN, vk
        )
    verify_certificate(dataclasses.replace(good, signatures=(forged, *good.signatures)), CHAIN, vk)
    # A signature by the right key over another block, height or chain does not count.
    other = _cert(validators, 7, b"\x43" * 32, [2])
    mixed = dataclasses.replace(good, signatures=(*good.signatures[:2], *other.signatures))
    with pytest.raises(BadSignature):
        verify_certificate(mixed, CHAIN, vk)
    with pytest.raises(BadSignature):
        verify_certificate(dataclasses.replace(good, height=8), CHAIN, vk)
    with pytest.raises(BadSignature):
        verify_certificate(good, "other-chain", vk)
    # Validator indices outside the set are ignored.
    stranger = dev_key("types", "stranger", Scheme.ED25519)
    out = CommitSignature(9, stranger.sign(commit_sign_digest(CHAIN, 7, bh)))
    with pytest.raises(BadSignature):
        verify_certificate(
            dataclasses.replace(good, signatures=(*good.signatures[:2], out)), CHAIN, vk
        )
    # A signature under another index's key does not count for that index.
    swapped = CommitSignature(2, good.signatures[0].signature)
    with pytest.raises(BadSignature):
        verify_certificate(
            dataclasses.replace(good, signatures=(*good.signatures[:2], swapped)), CHAIN, vk
        )


def _receipts(height: int) -> list[Receipt]:
    return [
        Receipt(
            bytes([i]) * 32,
            height,
            i,
            i != 1,
            "" if i != 1 else "nope",
            "",
            [i],
            (Event("registry", "put", [b"k", i]),),
        )
        for i in range(5)
    ]


def _bundle(validators: list[SigningKey]) -> ReceiptProof:
    receipts = _receipts(9)
    header = BlockHeader(
        CHAIN, 9, 1, 1_700_000_000_000, ZERO, 0, ZERO, receipts_root(receipts), ZERO
    )
    cert = _cert(validators, 9, header.hash, [0, 2, 3])
    proof = merkle_proof([r.encode() for r in receipts], 3)
    return ReceiptProof(receipts[3], proof, header, cert)


def test_receipt_proof_accepts_a_correct_bundle(validators: list[SigningKey]) -> None:
    bundle = _bundle(validators)
    bundle.verify(CHAIN, _vkeys(validators))
    assert ReceiptProof.decode(bundle.encode()) == bundle
    ReceiptProof.decode(bundle.encode()).verify(CHAIN, _vkeys(validators))


Tamper = Callable[[ReceiptProof], ReceiptProof]
R = dataclasses.replace
TAMPERINGS: dict[str, Tamper] = {
    "receipt.ok": lambda b: R(b, receipt=R(b.receipt, ok=not b.receipt.ok)),
    "receipt.result": lambda b: R(b, receipt=R(b.receipt, result=[99])),
    "receipt.tx_hash": lambda b: R(b, receipt=R(b.receipt, tx_hash=b"\x77" * 32)),
    "receipt.events": lambda b: R(b, receipt=R(b.receipt, events=())),
    "receipt.index": lambda b: R(b, receipt=R(b.receipt, index=2)),
    "receipt.height": lambda b: R(b, receipt=R(b.receipt, height=10)),
    "proof.index": lambda b: R(b, proof=R(b.proof, index=2)),
    "receipt+proof.index": lambda b: R(b, receipt=R(b.receipt, index=2), proof=R(b.proof, index=2)),
    # A size giving the same path shape is not detectable (see test_merkle); 9 is not one.
    "proof.size": lambda b: R(b, proof=R(b.proof, size=9)),
    "proof.path": lambda b: R(b, proof=R(b.proof, path=(b.proof.path[0][::-1], *b.proof.path[1:]))),
    "header.chain_id": lambda b: R(b, header=R(b.header, chain_id="other")),
    "header.app_hash": lambda b: R(b, header=R(b.header, app_hash=b"\x01" * 32)),
    "header.receipts_root": lambda b: R(b, header=R(b.header, receipts_root=b"\x01" * 32)),
    "header.height": lambda b: R(b, header=R(b.header, height=10)),
    "certificate.block_hash": lambda b: R(b, certificate=R(b.certificate, block_hash=b"\x01" * 32)),
    "certificate.height": lambda b: R(b, certificate=R(b.certificate, height=10)),
    "certificate.signatures": lambda b: R(
        b, certificate=R(b.certificate, signatures=b.certificate.signatures[:2])
    ),
    "certificate.signature": lambda b: R(
        b,
        certificate=R(
            b.certificate,
            signatures=(
                *b.certificate.signatures[:2],
                R(b.certificate.signatures[2], signature=b"\x00" * 64),
            ),
        ),
    ),
}


@pytest.mark.parametrize("name", list(TAMPERINGS))
def test_receipt_proof_rejects_each_tampering(validators: list[SigningKey], name: str) -> None:
    bad = TAMPERINGS[name](_bundle(validators))
    with pytest.raises(BadSignature):
        bad.verify(CHAIN, _vkeys(validators))


def test_receipt_proof_rejects_wrong_chain_and_validator_set(validators: list[SigningKey]) -> None:
    bundle = _bundle(validators)
    with pytest.raises(BadSignature):
        bundle.verify("other", _vkeys(validators))
    strangers = [dev_key("types", f"stranger-{i}", Scheme.ED25519) for i in range(4)]
    with pytest.raises(BadSignature):
        bundle.verify(CHAIN, _vkeys(strangers))
