"""The commit certificate collector on its own: signatures in, verdicts out, no network."""

from __future__ import annotations

from node.certificates import (
    CERT_BUFFER_HEIGHTS,
    CERT_LATE_HEIGHTS,
    KEEP_HEIGHTS,
    CertificateCollector,
)

BLOCK = b"\x01" * 32
OTHER = b"\x02" * 32


def _sig(j: int, h: int) -> bytes:
    return bytes([j, h % 256]) * 4


def _check(j: int, h: int, block_hash: bytes, sig: bytes) -> bool:
    """A signature is valid when it is `_sig(j, h)` over BLOCK."""
    return block_hash == BLOCK and sig == _sig(j, h)


def _collector() -> CertificateCollector:
    return CertificateCollector(me=0, quorum=3, check=_check)


def test_quorum_of_valid_signatures_completes_the_certificate() -> None:
    c = _collector()
    assert c.signed(5, BLOCK, _sig(0, 5), certified=False) is None
    v = c.received(1, 5, BLOCK, _sig(1, 5), committed=5, ours=BLOCK, certified=False)
    assert v.certificate is None and not v.mismatch and not v.answer
    v = c.received(2, 5, BLOCK, _sig(2, 5), committed=5, ours=BLOCK, certified=False)
    assert v.certificate is not None
    assert v.certificate.height == 5 and v.certificate.block_hash == BLOCK
    assert [s.validator for s in v.certificate.signatures] == [0, 1, 2]
    assert 5 not in c.sigs, "a complete height is forgotten"


def test_invalid_signature_does_not_count() -> None:
    c = _collector()
    c.signed(5, BLOCK, _sig(0, 5), certified=False)
    c.received(1, 5, BLOCK, b"forged", committed=5, ours=BLOCK, certified=False)
    v = c.received(2, 5, BLOCK, _sig(2, 5), committed=5, ours=BLOCK, certified=False)
    assert v.certificate is None
    assert set(c.sigs[5]) == {0, 2}


def test_signature_for_another_block_is_a_mismatch() -> None:
    c = _collector()
    c.signed(5, BLOCK, _sig(0, 5), certified=False)
    v = c.received(1, 5, OTHER, _sig(1, 5), committed=5, ours=BLOCK, certified=False)
    assert v.mismatch and v.certificate is None
    v = c.received(1, 7, BLOCK, _sig(1, 7), committed=7, ours=None, certified=False)
    assert v.mismatch, "a height whose block this node does not know is a mismatch too"


def test_early_signatures_are_kept_near_and_checked_at_commit() -> None:
    c = _collector()
    assert not c.early(1, 5, _sig(1, 5), committed=5)
    assert c.early(1, 6, _sig(1, 6), committed=5)
    assert c.early(2, 6, b"forged", committed=5)
    assert c.early(3, 5 + CERT_BUFFER_HEIGHTS + 1, _sig(3, 10), committed=5)
    assert 5 + CERT_BUFFER_HEIGHTS + 1 not in c.sigs, "too far ahead: dropped"
    assert c.signed(6, BLOCK, _sig(0, 6), certified=False) is None
    assert set(c.sigs[6]) == {0, 1}, "the forged early signature is dropped at commit"
    c.early(3, 6, _sig(3, 6), committed=5)
    v = c.received(2, 6, BLOCK, _sig(2, 6), committed=6, ours=BLOCK, certified=False)
    assert v.certificate is not None
    assert [s.validator for s in v.certificate.signatures] == [0, 1, 2, 3]


def test_certified_height_is_not_completed_twice() -> None:
    c = _collector()
    c.early(1, 5, _sig(1, 5), committed=4)
    c.early(2, 5, _sig(2, 5), committed=4)
    assert c.signed(5, BLOCK, _sig(0, 5), certified=True) is None


def test_late_peer_gets_one_answer() -> None:
    c = _collector()
    c.signed(5, BLOCK, _sig(0, 5), certified=False)
    recent = c.received(
        1, 5, BLOCK, _sig(1, 5), committed=5 + CERT_LATE_HEIGHTS - 1, ours=BLOCK, certified=True
    )
    assert not recent.answer, "a peer just behind gets the signatures sent at the time"
    late = 5 + CERT_LATE_HEIGHTS
    v = c.received(1, 5, BLOCK, _sig(1, 5), committed=late, ours=BLOCK, certified=True)
    assert v.answer and v.own == _sig(0, 5)
    again = c.received(1, 5, BLOCK, _sig(1, 5), committed=late, ours=BLOCK, certified=True)
    assert not again.answer, "one answer per peer and height"
    other = c.received(2, 5, BLOCK, _sig(2, 5), committed=late, ours=BLOCK, certified=True)
    assert other.answer


def test_own_signatures_are_bounded() -> None:
    c = _collector()
    for h in range(1, 3 * KEEP_HEIGHTS):
        c.signed(h, BLOCK, _sig(0, h), certified=True)
    assert len(c.own) == KEEP_HEIGHTS + 1
    h = 3 * KEEP_HEIGHTS - 1
    v = c.received(1, 1, BLOCK, _sig(1, 1), committed=h, ours=BLOCK, certified=True)
    assert v.answer and v.own is None, "an old height's signature is in its certificate"
