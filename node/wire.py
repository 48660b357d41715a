"""What travels inside an authenticated frame between two validators.

A frame body is the canonical encoding of a list of envelopes `[kind, payload]`. Messages
queued for one peer together share one frame, so one key is spent per frame, not per
message. Kinds:

| kind | payload |
|---|---|
| CONSENSUS | a consensus message (`consensus.messages`), canonical bytes |
| TXS | a list of raw transaction bytes forwarded toward the leader (or everyone) |
| CERT_SIG | the sender's signature over the decided block of a height (`CertSig`) |

Block bodies for catch-up travel as the consensus layer's `BlockReq`/`BlockResp` messages
inside CONSENSUS envelopes. An empty list is a valid body: the transport sends one as a
keepalive when a link has been quiet. Decoding is strict; a body that does not decode is
dropped and counted by the transport.

`envelope_size` and `body_size` give the exact length of an encoded body without
encoding it, so the transport can pack envelopes into frames by size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated

from qchain.codec import U64, Hash32, Len, Limits, Struct, decode_value, encode_value
from qchain.errors import CodecError

MAX_BODY = 16 * 1024 * 1024
BODY_LIMITS = Limits(max_size=MAX_BODY, max_depth=4, max_bytes_len=MAX_BODY, max_array_len=50_000)


class Kind(IntEnum):
    CONSENSUS = 1
    TXS = 2
    CERT_SIG = 3


@dataclass(frozen=True)
class CertSig(Struct):
    height: U64
    block_hash: Hash32
    signature: Annotated[bytes, Len(1, 8192)]


@dataclass(frozen=True)
class TxBatch(Struct):
    txs: Annotated[tuple[bytes, ...], Len(1, 10_000)]


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
    "CertSig",
    "Envelope",
    "Kind",
    "TxBatch",
    "body_size",
    "decode_body",
    "encode_body",
    "envelope_size",
]
