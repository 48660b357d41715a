"""The simulator's toy application: random block bodies and a deterministic validity rule.

A body is a few bytes from the seeded RNG, followed by the ids of the simulated transactions
the block includes (idle mode, §4). A body that starts with `INVALID` is invalid for
every correct node (Byzantine leaders can build such blocks); the rule depends on nothing
but the block, as §3.1 requires. Scenario S16 swaps in a node-specific, non-deterministic
rule to show its liveness impact.

Validator-set changes (CONSENSUS.md §10.2) are transactions too: a `SetChange` names the
transaction that carries it, and the first block of the chain that includes that
transaction approves it (approved and ready in one block, as a `remove` is at approval); it
activates `delay` heights later. `set_history` derives the set of every height from the
chain alone, as the `validators` contract does; a rotation (same id, new key) is modelled as
a new identity replacing the old one at one activation (§10.1: the old machine stops being a
member at the activation height, the new one is not a member before it).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from consensus.messages import Block
from consensus.sets import VSet

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


MIN_SET = 4
"""§10.1: always n(h) >= 4."""


@dataclass(frozen=True)
class SetChange:
    """A change carried by transaction `tx`: the ids it removes and the ids it adds."""

    tx: int
    remove: tuple[int, ...] = ()
    add: tuple[int, ...] = ()


def set_history(
    chain: Sequence[Block],
    genesis: VSet,
    changes: Mapping[int, SetChange],
    delay: int,
) -> list[VSet]:
    """`[V(1), ..., V(len(chain) + delay)]` from the blocks of a chain (§10.2).

    A change takes effect at `a + delay`, `a` the first block that includes its
    transaction, if against the set of `a` with every change in flight applied it removes
    members only, adds ids never used, and leaves at least `MIN_SET` members; otherwise
    it is refused (deterministically: every node refuses it).
    """
    sets = [genesis]
    used = set(genesis.ids)
    seen: set[int] = set()
    pending: dict[int, list[SetChange]] = {}
    for a, blk in enumerate(chain, start=1):
        # V(a) is sets[a - 1]; the changes scheduled for a + 1 .. a + delay - 1 are pending.
        future = set(sets[a - 1].ids)
        for e in sorted(pending):
            if e > a:
                for p in pending[e]:
                    future = (future - set(p.remove)) | set(p.add)
        for tx in sorted(block_txs(blk)):
            c = changes.get(tx)
            if c is None or tx in seen:
                continue
            seen.add(tx)
            ok = (
                set(c.remove) <= future
                and not set(c.add) & used
                and len((future - set(c.remove)) | set(c.add)) >= MIN_SET
            )
            if not ok:
                continue
            used |= set(c.add)
            future = (future - set(c.remove)) | set(c.add)
            pending.setdefault(a + delay, []).append(c)
        # V(a + 1): the changes scheduled for it applied, in order.
        ids = set(sets[a - 1].ids)
        for c in pending.pop(a + 1, []):
            ids = (ids - set(c.remove)) | set(c.add)
        sets.append(VSet(tuple(sorted(ids))))
    for h in range(len(chain) + 2, len(chain) + delay + 1):
        ids = set(sets[h - 2].ids)
        for c in pending.pop(h, []):
            ids = (ids - set(c.remove)) | set(c.add)
        sets.append(VSet(tuple(sorted(ids))))
    return sets
