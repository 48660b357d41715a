"""notary: evidence preservation by anchoring document digests.

A member anchors the 32-byte digest of a document (SHA-256 or SM3) with a title, a
category and optional metadata bytes. The chain keeps, per digest, who anchored it and the
height, block time and transaction hash; together with the transaction's receipt, its
Merkle proof and the block's commit certificate, this shows that the document existed at
that block time. A digest is anchored once: anchoring it again is a `Duplicate` error that
names the first anchor. `anchor_many` anchors a batch in one transaction, all or nothing.

State layout (relative to the contract's key space):

| key | value |
|---|---|
| `d` digest | `Anchor` |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from contracts.runtime import CallContext, Contract, QueryContext
from contracts.state import StateReader
from qchain.codec import U32, U64, Hash32, Len, Struct
from qchain.errors import ArgumentError, Duplicate, NotFound
from qchain.types import Address

NAME = "notary"
ALGORITHMS = ("sha256", "sm3")
MAX_BATCH = 256
MAX_METADATA = 4096

Title = Annotated[str, Len(1, 256)]
Category = Annotated[str, Len(1, 64)]
Algorithm = Annotated[str, Len(1, 16)]
Metadata = Annotated[bytes, Len(0, MAX_METADATA)]


@dataclass(frozen=True)
class Anchor(Struct):
    digest: Hash32
    algorithm: Algorithm
    title: Title
    category: Category
    metadata: Metadata
    member: Address
    """The member that anchored the digest."""
    height: U64
    time: U64
    """Block time in milliseconds since the Unix epoch."""
    tx_hash: Hash32
    item: U32
    """Position of the digest in its transaction (0 for `anchor`)."""


def anchor_key(digest: bytes) -> bytes:
    return b"d" + digest


def get_anchor(state: StateReader, digest: bytes) -> Anchor | None:
    return state.load(anchor_key(digest), Anchor)


@dataclass(frozen=True)
class AnchorArgs(Struct):
    digest: Hash32
    algorithm: Algorithm
    title: Title
    category: Category
    metadata: Metadata


@dataclass(frozen=True)
class AnchorManyArgs(Struct):
    items: Annotated[tuple[AnchorArgs, ...], Len(1, MAX_BATCH)]


contract = Contract(NAME, "evidence preservation: document digests anchored with metadata")


def _anchor(ctx: CallContext, a: AnchorArgs, item: int, field: str) -> None:
    if a.algorithm not in ALGORITHMS:
        raise ArgumentError(
            f"{field}algorithm", f"unknown digest algorithm {a.algorithm!r} (sha256 or sm3)"
        )
    first = get_anchor(ctx.state, a.digest)
    if first is not None:
        raise Duplicate(
            "anchor",
            a.digest.hex(),
            {
                "height": first.height,
                "time": first.time,
                "member": first.member.hex(),
                "tx_hash": first.tx_hash.hex(),
            },
            f"first anchored at height {first.height} by {first.member.hex()} "
            f"in transaction {first.tx_hash.hex()}",
        )
    ctx.state.save(
        anchor_key(a.digest),
        Anchor(
            a.digest,
            a.algorithm,
            a.title,
            a.category,
            a.metadata,
            ctx.sender,
            ctx.height,
            ctx.time,
            ctx.tx_hash,
            item,
        ),
    )
    ctx.emit("anchored", [a.digest, a.category])


@contract.tx("anchor", AnchorArgs)
def anchor(ctx: CallContext, a: AnchorArgs) -> int:
    """Anchor one digest. Returns the number of digests anchored (1)."""
    _anchor(ctx, a, 0, "")
    return 1


@contract.tx("anchor_many", AnchorManyArgs)
def anchor_many(ctx: CallContext, a: AnchorManyArgs) -> int:
    """Anchor a batch of digests, all or nothing. Returns how many were anchored."""
    for i, item in enumerate(a.items):
        _anchor(ctx, item, i, f"items[{i}].")
    return len(a.items)


@dataclass(frozen=True)
class DigestArgs(Struct):
    digest: Hash32


@contract.query("get", DigestArgs)
def get(q: QueryContext, a: DigestArgs) -> Anchor:
    """The anchor of a digest: who, when (height and block time) and in which transaction."""
    found = get_anchor(q.state, a.digest)
    if found is None:
        raise NotFound("anchor", a.digest.hex())
    return found
