"""The simulator's toy application: random block bodies and a deterministic validity rule.

A body is a few bytes from the seeded RNG, followed by the ids of the simulated transactions
the block includes (idle mode, §4). A body that starts with `INVALID` is invalid for
every correct node (Byzantine leaders can build such blocks); the rule depends on nothing
but the block, as §3.1 requires. Scenario S16 swaps in a node-specific, non-deterministic
rule to show its liveness impact.
"""

from __future__ import annotations

import random

from consensus.messages import Block

INVALID = b"INVALID"
GENESIS_HASH = b"\x00" * 32


TX_MARK = b"T"


def build_block(
    rng: random.Random,
    height: int,
    rnd: int,
    parent: bytes,
    proposer: int,
    txs: tuple[int, ...] = (),
) -> Block:
    """A block with 8 random bytes and, if any, the ids of the transactions it includes."""
    body = rng.randbytes(8)
    if txs:
        body += TX_MARK + b"".join(t.to_bytes(4, "big") for t in txs)
    return Block(height, parent, rnd, proposer, body)


def block_txs(block: Block) -> frozenset[int]:
    """The transaction ids a block includes (none for a body not built by `build_block`)."""
    rest = block.body[8:]
    if not rest.startswith(TX_MARK) or (len(rest) - 1) % 4:
        return frozenset()
    return frozenset(int.from_bytes(rest[i : i + 4], "big") for i in range(1, len(rest), 4))


def app_valid(block: Block) -> bool:
    """The application predicate every correct node applies (deterministic)."""
    return not block.body.startswith(INVALID)
