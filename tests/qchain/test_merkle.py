"""Merkle trees: RFC 6962 shape, proofs for every leaf, rejection of wrong proofs."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from qchain.merkle import (
    EMPTY_ROOT,
    MerkleProof,
    leaf_hash,
    merkle_proof,
    merkle_root,
    node_hash,
    root_from_proof,
    verify_proof,
)


def _h(tag: bytes, data: bytes) -> bytes:
    return hashlib.sha256(bytes([len(tag)]) + tag + data).digest()


def reference_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1 MTH, written independently with qchain's domain tags."""
    if not leaves:
        return _h(b"qchain/merkle/empty", b"")
    if len(leaves) == 1:
        return _h(b"qchain/merkle/leaf", leaves[0])
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return _h(b"qchain/merkle/node", reference_root(leaves[:k]) + reference_root(leaves[k:]))


def _shape(index: int, size: int) -> list[bool]:
    """Sides of the audit path from the root down (True: the leaf is in the left subtree)."""
    sides = []
    while size > 1:
        k = 1
        while k * 2 < size:
            k *= 2
        sides.append(index < k)
        index, size = (index, k) if index < k else (index - k, size - k)
    return sides


def _leaves(n: int) -> list[bytes]:
    return [f"leaf-{i}".encode() for i in range(n)]


def test_root_matches_rfc6962_reference() -> None:
    assert merkle_root([]) == EMPTY_ROOT == reference_root([])
    for n in range(1, 71):
        assert merkle_root(_leaves(n)) == reference_root(_leaves(n)), n


def test_rfc6962_audit_paths_of_the_seven_leaf_example() -> None:
    """The worked example of RFC 6962 §2.1.3."""
    d = _leaves(7)
    a, b, c, dd, e, f, j = (leaf_hash(x) for x in d)
    g, h, i = node_hash(a, b), node_hash(c, dd), node_hash(e, f)
    k, ll = node_hash(g, h), node_hash(i, j)
    assert merkle_root(d) == node_hash(k, ll)
    assert merkle_proof(d, 0).path == (b, h, ll)
    assert merkle_proof(d, 3).path == (c, g, ll)
    assert merkle_proof(d, 4).path == (f, j, k)
    assert merkle_proof(d, 6).path == (i, k)


def test_every_proof_verifies_and_wrong_ones_fail() -> None:
    for n in range(1, 71):
        leaves = _leaves(n)
        root = merkle_root(leaves)
        other_root = merkle_root(_leaves(n + 1))
        for idx in range(n):
            proof = merkle_proof(leaves, idx)
            assert proof.index == idx and proof.size == n
            assert verify_proof(leaves[idx], proof, root)
            assert MerkleProof.decode(proof.encode()) == proof
            assert not verify_proof(b"not-a-leaf", proof, root)
            assert not verify_proof(leaves[idx], proof, other_root)
            if n > 1:
                wrong_leaf = leaves[(idx + 1) % n]
                assert not verify_proof(wrong_leaf, proof, root)
                moved = dataclasses.replace(proof, index=(idx + 1) % n)
                assert not verify_proof(leaves[idx], moved, root)
            for size in range(idx + 1, 2 * n + 2):
                if size != n:
                    resized = dataclasses.replace(proof, size=size)
                    same_shape = _shape(idx, size) == _shape(idx, n)
                    assert verify_proof(leaves[idx], resized, root) == same_shape, (n, idx, size)
            if proof.path:
                tampered = (bytes([proof.path[0][0] ^ 1]) + proof.path[0][1:], *proof.path[1:])
                assert not verify_proof(
                    leaves[idx], dataclasses.replace(proof, path=tampered), root
                )


def test_wrong_length_proofs_rejected() -> None:
    leaves = _leaves(13)
    root = merkle_root(leaves)
    proof = merkle_proof(leaves, 5)
    assert root_from_proof(leaves[5], proof) == root
    for path in (proof.path[:-1], (*proof.path, proof.path[0]), ()):
        assert root_from_proof(leaves[5], dataclasses.replace(proof, path=path)) is None
    for index, size in ((13, 13), (0, 0), (20, 13)):
        bad = MerkleProof(index, size, proof.path)
        assert root_from_proof(leaves[5], bad) is None


def test_single_leaf_tree() -> None:
    proof = merkle_proof([b"only"], 0)
    assert proof.path == ()
    assert verify_proof(b"only", proof, leaf_hash(b"only"))


def test_proof_index_out_of_range() -> None:
    with pytest.raises(IndexError):
        merkle_proof(_leaves(3), 3)
    with pytest.raises(IndexError):
        merkle_proof([], 0)


def test_leaf_and_node_domains_differ() -> None:
    """A node hash can never be presented as a leaf hash (second-preimage defence)."""
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert merkle_root([a + b]) != node_hash(a, b)


def test_tree_size_is_not_authenticated_by_the_root() -> None:
    """As in RFC 6962, the root does not commit to the tree size: a verifier must get the
    size (or the leaf's own index, as receipts carry) from an authenticated source. A proof
    of leaf 4 of 5 verifies as leaf 1 of 2, because both audit paths have the same shape."""
    leaves = _leaves(5)
    proof = merkle_proof(leaves, 4)
    assert _shape(4, 5) == _shape(1, 2)
    assert verify_proof(leaves[4], MerkleProof(1, 2, proof.path), merkle_root(leaves))
