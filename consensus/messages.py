"""Consensus messages, the block abstraction and the persistent record, with their codec.

Everything here is plain data: frozen dataclasses that inherit `qchain.codec.Struct`, so
each has exactly one canonical byte encoding. A message never names its sender; the
receiver learns the sender from the authenticated link the frame came in on (§1).

`Block` is the engine's view of a block: the header fields consensus needs (height,
parent, round, proposer) plus an opaque `body` that the application fills (the node puts
its real block there). The consensus *value* of a block is `block_hash(block)`.

`Summary` is the constant-size description of one node's votes of one phase (§2.2):
its latest vote `(last_round, last_value)` and `prev_round`, the highest earlier round in
which it voted for a *different* value. `Record` is the per-height state that must survive
a crash (§2.3); the driver stores it before sending anything that depends on it (§2.6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, TypeAlias

import msgpack

from qchain.codec import I64, U16, U64, Hash32, Len, Range, Struct, decode_value, encode_value
from qchain.errors import CodecError
from qchain.hashing import Domain, hash_domain
from qchain.limits import BLOCK_RESP_MAX_BLOCKS, MAX_BLOCK_BODY

ChainId = Annotated[str, Len(1, 64)]
Body = Annotated[bytes, Len(0, MAX_BLOCK_BODY)]
"""A block body: at most what a Propose carries in one frame (`qchain.limits`)."""


@dataclass(frozen=True)
class Block(Struct):
    """What consensus needs to know of a block; `body` is opaque application data."""

    height: U64
    parent: Hash32
    round: U64
    """The round of the view that built the block (a claim, §3.2)."""
    proposer: U16
    """The leader that claims to have built it (a claim, never evidence, §3.2)."""
    body: Body

    # A body can be megabytes, and a block is encoded to hash it, store it and send it.
    _cache_encoding = True


def stored_block_height(raw: bytes) -> int:
    """The height of an encoded block this node stored itself, read without decoding
    the body (the first field of the array). Raises `CodecError` on anything else."""
    unpacker = msgpack.Unpacker(max_buffer_size=len(raw))
    unpacker.feed(raw)
    try:
        if unpacker.read_array_header() != len(Block._spec()):
            raise CodecError("not an encoded consensus block")
        height = unpacker.unpack()
    except (ValueError, msgpack.UnpackException, msgpack.OutOfData) as e:
        raise CodecError(f"not an encoded consensus block: {type(e).__name__}") from e
    if type(height) is not int or height < 0:
        raise CodecError("not an encoded consensus block: bad height")
    return height


def block_hash(block: Block) -> bytes:
    """The consensus value of a block: the domain-separated hash of its encoding
    (cached on the block: the engine, the node and the application all ask)."""
    value: bytes | None = block.__dict__.get("_value")
    if value is None:
        value = block.__dict__["_value"] = hash_domain(Domain.CONSENSUS_BLOCK, block.encode())
    return value


@dataclass(frozen=True)
class Summary(Struct):
    """One phase's votes of one node in rounds before some round (§2.2)."""

    last_round: U64 | None = None
    last_value: Hash32 | None = None
    prev_round: U64 | None = None
    """Highest round before `last_round` with a vote for a value other than `last_value`."""


EMPTY_SUMMARY = Summary()
EMPTY_SUMMARIES = (EMPTY_SUMMARY,) * 4


@dataclass(frozen=True)
class Propose(Struct):
    chain_id: ChainId
    height: U64
    round: U64
    block: Block


@dataclass(frozen=True)
class Vote(Struct):
    chain_id: ChainId
    height: U64
    round: U64
    phase: Annotated[int, Range(1, 4)]
    value: Hash32


@dataclass(frozen=True)
class Report(Struct):
    chain_id: ChainId
    height: U64
    round: U64
    s: Annotated[tuple[Summary, ...], Len(4, 4)]
    """`s[k-1]` summarises the sender's phase-k votes in rounds before `round`."""


@dataclass(frozen=True)
class Abort(Struct):
    chain_id: ChainId
    height: U64
    level: U64


@dataclass(frozen=True)
class Done(Struct):
    chain_id: ChainId
    height: U64
    value: Hash32


@dataclass(frozen=True)
class SyncReq(Struct):
    chain_id: ChainId
    height: U64
    """The first height the requester has not committed (`from_height`)."""
    max_count: Annotated[int, Range(1, 1024)]


@dataclass(frozen=True)
class SyncResp(Struct):
    chain_id: ChainId
    height: U64
    """`from_height`: `hashes[i]` is the committed hash of height `height + i`."""
    hashes: Annotated[tuple[Hash32, ...], Len(0, 1024)]


@dataclass(frozen=True)
class BlockReq(Struct):
    """Driver-level body fetch (§3.4); the engine never sees it."""

    chain_id: ChainId
    hashes: Annotated[tuple[Hash32, ...], Len(1, 64)]


@dataclass(frozen=True)
class BlockResp(Struct):
    """Driver-level body fetch answer (§3.4); the engine never sees it."""

    chain_id: ChainId
    blocks: Annotated[tuple[Block, ...], Len(0, BLOCK_RESP_MAX_BLOCKS)]
    """As many as fit one message (`qchain.limits.BLOCK_RESP_FRAMING`)."""


ConsensusMessage: TypeAlias = Propose | Vote | Report | Abort | Done
SyncMessage: TypeAlias = SyncReq | SyncResp
FetchMessage: TypeAlias = BlockReq | BlockResp
Message: TypeAlias = ConsensusMessage | SyncMessage | FetchMessage

_TAGS: dict[type[Struct], int] = {
    Propose: 1,
    Vote: 2,
    Report: 3,
    Abort: 4,
    Done: 5,
    SyncReq: 6,
    SyncResp: 7,
    BlockReq: 8,
    BlockResp: 9,
}
_BY_TAG: dict[int, type[Struct]] = {t: c for c, t in _TAGS.items()}


def encode_message(m: Message) -> bytes:
    """Canonical bytes of a message: the array `[tag, fields]`."""
    return encode_value([_TAGS[type(m)], m.to_wire()])


def decode_message(data: bytes) -> Message:
    """Parse one message; raises only `CodecError`."""
    v = decode_value(data)
    if type(v) is not list or len(v) != 2 or type(v[0]) is not int:
        raise CodecError("message: expected [tag, fields]")
    cls = _BY_TAG.get(v[0])
    if cls is None:
        raise CodecError(f"message: unknown tag {v[0]}")
    m = cls.from_wire(v[1])
    if isinstance(m, Report) and not report_well_formed(m):
        raise CodecError("message: malformed REPORT summaries")
    return m  # type: ignore[return-value]


def summary_well_formed(s: Summary, rnd: int) -> bool:
    """The per-phase conditions of §2.2 for a summary carried by a REPORT of round `rnd`."""
    if (s.last_round is None) != (s.last_value is None):
        return False
    if s.last_round is not None and s.last_round >= rnd:
        return False
    if s.prev_round is not None:
        return s.last_round is not None and s.prev_round < s.last_round
    return True


def report_well_formed(m: Report) -> bool:
    """A REPORT is dropped unless its round is >= 1 and every summary is well formed."""
    return m.round >= 1 and len(m.s) == 4 and all(summary_well_formed(s, m.round) for s in m.s)


@dataclass(frozen=True)
class Record(Struct):
    """The persistent record `cons/<h>` of one height (§2.3), rewritten on every change."""

    height: U64
    anchor: U16
    parent_hash: Hash32
    """Hash of the decided block h-1; kept here so a restart needs no chain lookup."""
    round: U64 = 0
    abort_level: I64 = -1
    s: Annotated[tuple[Summary, ...], Len(4, 4)] = EMPTY_SUMMARIES
    entry_report: Report | None = None
    proposal_round: U64 | None = None
    proposal_value: Hash32 | None = None
    decided: Hash32 | None = None


def load_record(data: bytes) -> Record:
    return Record.decode(data)
