"""Merkle trees over byte-string leaves, with inclusion proofs that verify on their own.

The tree follows RFC 6962 (Certificate Transparency): leaves are hashed under
`MERKLE_LEAF`, inner nodes under `MERKLE_NODE`, and a tree of n leaves splits at the
largest power of two below n. The root of no leaves is `H(MERKLE_EMPTY, "")`. A proof is
the list of sibling hashes from the leaf up; the leaf index and the tree size fix which side
each sibling is on. As in RFC 6962 the root does not commit to the tree size, so another
(index, size) pair whose path has the same shape also verifies: a verifier must know the size
from an authenticated source, or, like a receipt, the leaf must carry its own index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from qchain.codec import U32, Hash32, Len, Struct
from qchain.hashing import Domain, hash_domain

MAX_PROOF_LEN = 64


def leaf_hash(data: bytes) -> bytes:
    return hash_domain(Domain.MERKLE_LEAF, data)


def node_hash(left: bytes, right: bytes) -> bytes:
    return hash_domain(Domain.MERKLE_NODE, left + right)


EMPTY_ROOT = hash_domain(Domain.MERKLE_EMPTY, b"")


def _split(n: int) -> int:
    """Largest power of two strictly below n (n >= 2)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _root_of_hashes(hashes: Sequence[bytes]) -> bytes:
    n = len(hashes)
    if n == 1:
        return hashes[0]
    k = _split(n)
    return node_hash(_root_of_hashes(hashes[:k]), _root_of_hashes(hashes[k:]))


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Root over the leaf data (each leaf hashed with `leaf_hash`)."""
    return root_of_leaf_hashes([leaf_hash(x) for x in leaves])


def root_of_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """Root over leaves already hashed with `leaf_hash`."""
    if not hashes:
        return EMPTY_ROOT
    return _root_of_hashes(hashes)


@dataclass(frozen=True)
class MerkleProof(Struct):
    """Inclusion proof of leaf `index` in a tree of `size` leaves."""

    index: U32
    size: U32
    path: Annotated[tuple[Hash32, ...], Len(0, MAX_PROOF_LEN)]


def _path(hashes: Sequence[bytes], index: int) -> list[bytes]:
    n = len(hashes)
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return [*_path(hashes[:k], index), _root_of_hashes(hashes[k:])]
    return [*_path(hashes[k:], index - k), _root_of_hashes(hashes[:k])]


def merkle_proof(leaves: Sequence[bytes], index: int) -> MerkleProof:
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} outside a tree of {len(leaves)}")
    return proof_of_leaf_hashes([leaf_hash(x) for x in leaves], index)


def proof_of_leaf_hashes(hashes: Sequence[bytes], index: int) -> MerkleProof:
    """`merkle_proof` over leaves already hashed with `leaf_hash`."""
    if not 0 <= index < len(hashes):
        raise IndexError(f"leaf {index} outside a tree of {len(hashes)}")
    return MerkleProof(index, len(hashes), tuple(_path(hashes, index)))


def root_from_proof(leaf: bytes, proof: MerkleProof) -> bytes | None:
    """The root implied by leaf data and its proof, or None if the proof's shape is wrong."""
    index, size = proof.index, proof.size
    if not 0 <= index < size:
        return None
    # Walk down to record which side the leaf is on at each level, then fold upward.
    sides: list[bool] = []  # True: the sibling is on the right
    lo, n = index, size
    while n > 1:
        k = _split(n)
        if lo < k:
            sides.append(True)
            n = k
        else:
            sides.append(False)
            lo -= k
            n -= k
    if len(sides) != len(proof.path):
        return None
    h = leaf_hash(leaf)
    for sibling, right in zip(proof.path, reversed(sides), strict=True):
        h = node_hash(h, sibling) if right else node_hash(sibling, h)
    return h


def verify_proof(leaf: bytes, proof: MerkleProof, root: bytes) -> bool:
    return root_from_proof(leaf, proof) == root
