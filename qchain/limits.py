"""Size limits, derived once, from the frame cap down.

Everything one validator sends another travels in an authenticated frame whose body is at
most `FrameLimits.max_body` bytes (`qchain.qkd.frame`). A frame body is a list of
envelopes `[kind, payload]` (`node.wire`); a proposal is one envelope whose payload is a
consensus `Propose`, which carries a consensus `Block`, whose opaque body is the chain
`Block`: a header and the transactions' encodings, concatenated. Each layer wraps the one
inside in a few bytes of MessagePack, so each cap below is the one above it less the
wrapping, measured here from the encodings themselves (headers at their largest: a
64-byte chain id, 64-bit integers at their maximum, 32-bit length prefixes):

    FRAME_BODY_MAX      4,194,304  a frame body (FrameLimits.max_body)
    MAX_MESSAGE         4,194,292  FRAME_BODY_MAX - BODY_FRAMING (5) - ENVELOPE_FRAMING (7):
                                   an envelope payload (a consensus message), alone in a
                                   frame body with the body's list header and its own
                                   [kind, length prefix]
    MAX_BLOCK_BODY      4,194,144  MAX_MESSAGE - PROPOSE_FRAMING (148): a block body, the
                                   consensus codec's cap on Block.body and
                                   Params.max_block_bytes; a Propose of such a block at the
                                   largest height and round is exactly MAX_MESSAGE
    MAX_BLOCK_TX_BYTES  4,193,911  MAX_BLOCK_BODY - BLOCK_FRAMING (233: the chain block's
                                   header and array headers): the transactions of one
                                   block, the most `mempool.max_block_bytes` may be. A block
                                   body holds the transactions' own encodings, with no
                                   per-transaction wrapping, so the mempool reaps by size
    MAX_TX_SIZE            65,536  <= MAX_BLOCK_TX_BYTES: a transaction (`qchain.types`); a
                                   node refuses at admission one larger than its own
                                   `mempool.max_block_bytes` (`TxTooLarge`): it could
                                   never enter a block

(the numbers are those of the 4 MiB frame body; the asserts below keep the chain).

Every other message fits the same envelope: a `BlockResp` is filled by encoded size up to
MAX_MESSAGE (`BLOCK_RESP_FRAMING`), and forwarded transactions go in batches of at most
`TX_BATCH_MAX_BYTES`, a quarter of MAX_MESSAGE. No envelope is larger than a frame body
alone; the transport packs them into frames by size (a payload of p bytes takes at most
ENVELOPE_FRAMING + p bytes of a body, plus BODY_FRAMING once per frame).

`check_node_sizes` refuses a configuration that breaks the chain, naming the field.
`qchain.types.BLOCK_LIMITS` only bounds decoding of chain blocks and stays above
MAX_BLOCK_BODY.
"""

from __future__ import annotations

import msgpack

from qchain.errors import ConfigError
from qchain.qkd.frame import DEFAULT_FRAME_LIMITS
from qchain.types import BLOCK_LIMITS, MAX_BLOCK_TXS, MAX_TX_SIZE, BlockHeader

_U16_MAX = 2**16 - 1
_U32_MAX = 2**32 - 1
_U64_MAX = 2**64 - 1
_HASH = bytes(32)
_CHAIN_ID = "c" * 64
"""A chain id at its longest (`Len(1, 64)` in every struct that carries one)."""
_TAG = 127
"""A message tag or envelope kind: a positive fixint, one byte like every tag in use."""
_LONG = 1 << 16
"""A length from which MessagePack uses its longest (32-bit) length prefix."""


def _size(value: object) -> int:
    return len(msgpack.packb(value, use_bin_type=True))


def _array_header(n: int) -> int:
    return len(msgpack.Packer().pack_array_header(n))


def _bin_header(n: int) -> int:
    """Bytes in front of a byte string of length n."""
    return _size(bytes(n)) - n


FRAME_BODY_MAX = DEFAULT_FRAME_LIMITS.max_body
MAX_FRAME = DEFAULT_FRAME_LIMITS.max_frame
"""The largest frame on the wire: header length, header, body and tag."""

ENVELOPE_FRAMING = _array_header(2) + _size(_TAG) + _bin_header(_LONG)
"""An envelope `[kind, payload]` around its payload."""
BODY_FRAMING = _array_header(_LONG)
"""The list header of a frame body, for any number of envelopes."""
MAX_MESSAGE = FRAME_BODY_MAX - BODY_FRAMING - ENVELOPE_FRAMING
"""The largest envelope payload (a consensus message, a transaction batch) the node sends."""

CBLOCK_FRAMING = (
    _array_header(5) + 2 * _size(_U64_MAX) + _size(_HASH) + _size(_U16_MAX) + _bin_header(_LONG)
)
"""A consensus `Block` [height, parent, round, proposer, body] around its body."""
PROPOSE_FRAMING = (
    _array_header(2) + _size(_TAG) + _array_header(4) + _size(_CHAIN_ID) + 2 * _size(_U64_MAX)
) + CBLOCK_FRAMING
"""An encoded `Propose` message `[tag, [chain_id, height, round, block]]` around the
block's body."""
MAX_BLOCK_BODY = MAX_MESSAGE - PROPOSE_FRAMING

BLOCK_RESP_MAX_BLOCKS = 64
BLOCK_RESP_FRAMING = (
    _array_header(2)
    + _size(_TAG)
    + _array_header(2)
    + _size(_CHAIN_ID)
    + _array_header(BLOCK_RESP_MAX_BLOCKS)
)
"""An encoded `BlockResp` `[tag, [chain_id, blocks]]` around its blocks' encodings."""

_MAX_HEADER = BlockHeader(
    _CHAIN_ID, _U64_MAX, _U32_MAX, _U64_MAX, _HASH, _U16_MAX, _HASH, _HASH, _HASH
)
BLOCK_FRAMING = _array_header(2) + len(_MAX_HEADER.encode()) + _array_header(MAX_BLOCK_TXS)
"""A chain `Block` [header, txs] around its transactions' encodings."""
MAX_BLOCK_TX_BYTES = MAX_BLOCK_BODY - BLOCK_FRAMING

TX_BATCH_MAX_TXS = 10_000
"""Transactions in one forwarded batch (`node.wire.TxBatch`)."""
TX_BATCH_FRAMING = _array_header(1) + _array_header(TX_BATCH_MAX_TXS)
"""An encoded `TxBatch` [txs] around its transactions."""
TX_BATCH_PER_TX = _bin_header(MAX_TX_SIZE)
"""The length prefix of one transaction in a batch, at most."""
TX_BATCH_MAX_BYTES = MAX_MESSAGE // 4
"""The most one forwarded batch encodes to: a quarter of an envelope, so a burst of
forwards spreads over frames and never holds a whole frame up on the link."""
ORIGIN_BATCH_FIELDS = _array_header(3) + _size(_U16_MAX) + _size(_U64_MAX)
"""An encoded `OriginBatch` [origin, seq, txs] around its transaction list: its
transactions are cut as a `TxBatch` of at most TX_BATCH_MAX_BYTES - ORIGIN_BATCH_FIELDS."""
BATCH_RESP_FRAMING = _array_header(2) + _size(_CHAIN_ID) + _array_header(_LONG)
"""An encoded `BatchResp` [chain_id, batches] around its batches' encodings."""

assert MAX_FRAME > FRAME_BODY_MAX > MAX_MESSAGE >= MAX_BLOCK_BODY + PROPOSE_FRAMING
assert MAX_BLOCK_BODY >= MAX_BLOCK_TX_BYTES + BLOCK_FRAMING
assert MAX_BLOCK_TX_BYTES >= MAX_TX_SIZE
assert BLOCK_LIMITS.max_size >= MAX_BLOCK_BODY
assert TX_BATCH_FRAMING + TX_BATCH_PER_TX + MAX_TX_SIZE <= TX_BATCH_MAX_BYTES - ORIGIN_BATCH_FIELDS
assert BATCH_RESP_FRAMING + TX_BATCH_MAX_BYTES <= MAX_MESSAGE


def check_node_sizes(max_block_bytes: int, max_block_txs: int, max_frame_bytes: int) -> None:
    """Raise `ConfigError`, naming the field, unless a node's size settings keep the chain:
    its blocks fit a Propose in one frame, and it reads the largest frame a peer sends."""
    if not 1 <= max_block_bytes <= MAX_BLOCK_TX_BYTES:
        raise ConfigError(
            "mempool.max_block_bytes",
            f"must be in [1, {MAX_BLOCK_TX_BYTES}]: a block of more bytes of transactions "
            f"does not fit, with its header, in a proposal of one {FRAME_BODY_MAX}-byte frame",
        )
    if not 1 <= max_block_txs <= MAX_BLOCK_TXS:
        raise ConfigError(
            "mempool.max_block_txs", f"must be in [1, {MAX_BLOCK_TXS}] (a block's encoding)"
        )
    if max_frame_bytes < MAX_FRAME:
        raise ConfigError(
            "p2p.max_frame_bytes",
            f"must be at least {MAX_FRAME}, the largest frame a peer sends (a full proposal)",
        )
