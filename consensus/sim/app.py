"""The simulator's toy application: random block bodies and a deterministic validity rule.

A body is a few bytes from the seeded RNG. A body that starts with `INVALID` is invalid for
every correct node (Byzantine leaders can build such blocks); the rule depends on nothing
but the block, as §3.1 requires. Scenario S16 swaps in a node-specific, non-deterministic
rule to show its liveness impact.
"""

from __future__ import annotations

import random

from consensus.messages import Block

INVALID = b"INVALID"
GENESIS_HASH = b"\x00" * 32


def build_block(rng: random.Random, height: int, rnd: int, parent: bytes, proposer: int) -> Block:
    return Block(height, parent, rnd, proposer, rng.randbytes(8))


def app_valid(block: Block) -> bool:
    """The application predicate every correct node applies (deterministic)."""
    return not block.body.startswith(INVALID)
