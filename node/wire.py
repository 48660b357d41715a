"""What travels inside an authenticated frame between two validators.

A frame body is the canonical encoding of a list of envelopes `[kind, payload]`. Messages
queued for one peer together share one frame, so one key is spent per frame, not per
message. Kinds:

| kind | payload |
|---|---|
| CONSENSUS | a consensus message (`consensus.messages`), canonical bytes |
| BATCH | a batch of the sender's own clients' transactions, sent to every peer (`OriginBatch`) |
| CERT_SIG | the sender's signature over the decided block of a height (`CertSig`) |
| BATCH_REQ | digests of batches the sender lacks (`BatchReq`) |
| BATCH_RESP | batches answering a `BatchReq` (`BatchResp`) |
| PROPOSE_REFS | a `Propose` whose block names its transactions by batch (`ProposeRefs`) |

Every payload fits a frame body alone (`qchain.limits`): a batch's transactions are cut
by bytes as well as by count (`tx_batches`). A proposal travels as PROPOSE_REFS: the
block's header, the batches it draws from and, per transaction, its place in one of them
(`node.batches` rebuilds the consensus `Propose` from it, CONSENSUS.md Revision 1.9). Block bodies
for catch-up travel whole, as the consensus layer's `BlockReq`/`BlockResp` messages
inside CONSENSUS envelopes. An
empty list is a valid body: the transport sends one as a keepalive when a link has been
quiet. Decoding is strict; a body that does not decode is dropped and counted by the
transport.

`envelope_size` and `body_size` give the exact length of an encoded body without
encoding it, so the transport packs envelopes into frames by size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated

from qchain.codec import U16, U64, Hash32, Len, Limits, Struct, decode_value, encode_value
from qchain.errors import CodecError
from qchain.hashing import Domain, hash_domain
from qchain.limits import (
    FRAME_BODY_MAX,
    ORIGIN_BATCH_FIELDS,
    TX_BATCH_FRAMING,
    TX_BATCH_MAX_BYTES,
    TX_BATCH_MAX_TXS,
    TX_BATCH_PER_TX,
)
from qchain.types import MAX_BLOCK_TXS

MAX_BODY = FRAME_BODY_MAX
BODY_LIMITS = Limits(max_size=MAX_BODY, max_depth=4, max_bytes_len=MAX_BODY, max_array_len=50_000)


class Kind(IntEnum):
    CONSENSUS = 1
    BATCH = 2
    CERT_SIG = 3
    BATCH_REQ = 4
    BATCH_RESP = 5
    PROPOSE_REFS = 6


@dataclass(frozen=True)
class CertSig(Struct):
    height: U64
    block_hash: Hash32
    signature: Annotated[bytes, Len(1, 8192)]


@dataclass(frozen=True)
class TxBatch(Struct):
    txs: Annotated[tuple[bytes, ...], Len(1, TX_BATCH_MAX_TXS)]


@dataclass(frozen=True)
class OriginBatch(Struct):
    """Transactions that validator `origin` admitted from its own clients, its `seq`-th
    batch. The digest binds all three."""

    origin: U16
    seq: U64
    txs: Annotated[tuple[bytes, ...], Len(1, TX_BATCH_MAX_TXS)]

    _cache_encoding = True

    @property
    def digest(self) -> bytes:
        d: bytes | None = self.__dict__.get("_digest")
        if d is None:
            d = self.__dict__["_digest"] = hash_domain(Domain.BATCH, self.encode())
        return d

    @property
    def size(self) -> int:
        """Bytes of the encoding (what a store of batches counts)."""
        return len(self.encode())


def origin_batches(origin: int, first_seq: int, raw_txs: Sequence[bytes]) -> list[OriginBatch]:
    """raw_txs, in order, as batches of `origin` numbered from first_seq, each fitting
    TX_BATCH_MAX_BYTES."""
    cut = tx_batches(raw_txs, max_bytes=TX_BATCH_MAX_BYTES - ORIGIN_BATCH_FIELDS)
    return [OriginBatch(origin, first_seq + i, b.txs) for i, b in enumerate(cut)]


BATCH_REQ_MAX = 64
"""Digests in one `BatchReq`."""


@dataclass(frozen=True)
class BatchReq(Struct):
    chain_id: Annotated[str, Len(1, 64)]
    digests: Annotated[tuple[Hash32, ...], Len(1, BATCH_REQ_MAX)]


@dataclass(frozen=True)
class BatchResp(Struct):
    chain_id: Annotated[str, Len(1, 64)]
    batches: Annotated[tuple[OriginBatch, ...], Len(0, BATCH_REQ_MAX)]
    """As many of the asked batches as fit one message (`qchain.limits.BATCH_RESP_FRAMING`)."""


@dataclass(frozen=True)
class BatchRef(Struct):
    origin: U16
    digest: Hash32


REF_BYTES = 4
"""A transaction's place in a `ProposeRefs`: the batch's position in `batches` and the
transaction's index in that batch, two big-endian 16-bit numbers."""


@dataclass(frozen=True)
class ProposeRefs(Struct):
    """A `Propose` of height/round whose consensus block (parent, round, proposer) has as
    body the chain block `[header, txs]`, the transactions named by batch."""

    chain_id: Annotated[str, Len(1, 64)]
    height: U64
    round: U64
    parent: Hash32
    block_round: U64
    proposer: U16
    header: Annotated[bytes, Len(1, 1024)]
    """The chain block header's canonical encoding."""
    batches: Annotated[tuple[BatchRef, ...], Len(0, MAX_BLOCK_TXS)]
    refs: Annotated[bytes, Len(0, REF_BYTES * MAX_BLOCK_TXS)]


def tx_batches(
    raw_txs: Sequence[bytes], max_txs: int = TX_BATCH_MAX_TXS, max_bytes: int = TX_BATCH_MAX_BYTES
) -> list[TxBatch]:
    """raw_txs, in order, cut into batches of at most max_txs transactions that each
    encode to at most max_bytes (a transaction too large for that goes alone)."""
    out: list[TxBatch] = []
    start = 0
    size = TX_BATCH_FRAMING
    for i, raw in enumerate(raw_txs):
        cost = TX_BATCH_PER_TX + len(raw)
        if i > start and (i - start >= max_txs or size + cost > max_bytes):
            out.append(TxBatch(tuple(raw_txs[start:i])))
            start, size = i, TX_BATCH_FRAMING
        size += cost
    if start < len(raw_txs):
        out.append(TxBatch(tuple(raw_txs[start:])))
    return out


@dataclass(frozen=True)
class Envelope:
    kind: Kind
    payload: bytes


def encode_body(envelopes: Sequence[Envelope]) -> bytes:
    return encode_value([[int(e.kind), e.payload] for e in envelopes], BODY_LIMITS)


def envelope_size(envelope: Envelope) -> int:
    """Bytes one envelope adds to an encoded body: a 2-array, a fixint kind, a bin."""
    n = len(envelope.payload)
    bin_head = 2 if n < 1 << 8 else 3 if n < 1 << 16 else 5
    return 2 + bin_head + n


def body_size(count: int, envelopes_bytes: int) -> int:
    """Length of `encode_body` of `count` envelopes whose `envelope_size`s sum to
    `envelopes_bytes`."""
    array_head = 1 if count < 16 else 3 if count < 1 << 16 else 5
    return array_head + envelopes_bytes


def decode_body(data: bytes) -> list[Envelope]:
    value = decode_value(data, BODY_LIMITS)
    if not isinstance(value, list):
        raise CodecError("frame body must be a list of envelopes")
    out: list[Envelope] = []
    for item in value:
        if not isinstance(item, list) or len(item) != 2:
            raise CodecError("an envelope is [kind, payload]")
        kind, payload = item
        if type(kind) is not int or kind not in Kind._value2member_map_:
            raise CodecError(f"unknown envelope kind {kind!r}")
        if type(payload) is not bytes:
            raise CodecError("envelope payload must be bytes")
        out.append(Envelope(Kind(kind), payload))
    return out


__all__ = [
    "BATCH_REQ_MAX",
    "REF_BYTES",
    "BatchRef",
    "BatchReq",
    "BatchResp",
    "CertSig",
    "Envelope",
    "Kind",
    "OriginBatch",
    "ProposeRefs",
    "TxBatch",
    "body_size",
    "decode_body",
    "encode_body",
    "envelope_size",
    "origin_batches",
    "tx_batches",
]
