"""Byzantine behaviours for the simulator.

A Byzantine identity runs an ordinary engine (so it knows the protocol state and can
follow it when that suits it) and a `Strategy` rewrites everything it sends: it may drop a
message, send different versions to different peers, lie in its REPORT summaries, flood
peers on a timer, answer SYNC and body requests with garbage, or build blocks of its own.
None of this is checked by the invariants: only correct nodes are held to them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from consensus.events import BuildBlock
from consensus.messages import (
    Abort,
    Block,
    BlockResp,
    Done,
    Message,
    Propose,
    Report,
    Summary,
    SyncResp,
    Vote,
    block_hash,
)

if TYPE_CHECKING:
    from consensus.sim.world import Sim, SimNode


class Strategy:
    """Honest by default; subclasses override the hooks they need."""

    tick_us: int | None = None

    def outgoing(self, sim: Sim, nd: SimNode, to: int, m: Message) -> list[Message]:
        return [m]

    def tick(self, sim: Sim, nd: SimNode) -> list[tuple[int, Message]]:
        return []

    def build(self, sim: Sim, nd: SimNode, a: BuildBlock) -> Block | None:
        return None

    def serve_sync(self, sim: Sim, nd: SimNode, to: int, frm: int, count: int) -> Message | None:
        return None

    def serve_blocks(
        self, sim: Sim, nd: SimNode, to: int, hashes: Sequence[bytes]
    ) -> BlockResp | None:
        return None


class Silent(Strategy):
    """Sends nothing at all."""

    def outgoing(self, sim: Sim, nd: SimNode, to: int, m: Message) -> list[Message]:
        return []


def _rand_hash(rng: random.Random) -> bytes:
    return rng.randbytes(32)


class Chaos(Strategy):
    """Mixes every lie: split votes, REPORTs and DONEs, fake summaries, equivocating
    proposals, withholding; `p` is the chance to tamper with each message."""

    def __init__(self, p: float = 0.5, seed: int = 0) -> None:
        self.p = p
        self.rng = random.Random(seed)
        self.values: list[bytes] = []
        self.alt_blocks: dict[tuple[int, int], Block] = {}

    def _value(self) -> bytes:
        if self.values and self.rng.random() < 0.8:
            return self.rng.choice(self.values)
        return _rand_hash(self.rng)

    def _learn(self, v: bytes) -> None:
        if v not in self.values:
            self.values.append(v)
            del self.values[:-8]

    def outgoing(self, sim: Sim, nd: SimNode, to: int, m: Message) -> list[Message]:
        rng = self.rng
        if isinstance(m, Vote):
            self._learn(m.value)
        if isinstance(m, Propose):
            self._learn(block_hash(m.block))
        if rng.random() >= self.p:
            return [m]
        choice = rng.random()
        if choice < 0.2:
            return []
        if isinstance(m, Vote):
            return [Vote(m.chain_id, m.height, m.round, m.phase, self._value())]
        if isinstance(m, Report):
            return [fake_report(rng, m, self._value)]
        if isinstance(m, Done):
            return [Done(m.chain_id, m.height, self._value())]
        if isinstance(m, Propose):
            key = (m.height, m.round)
            alt = self.alt_blocks.get(key)
            if alt is None:
                b = m.block
                alt = Block(b.height, b.parent, b.round, b.proposer, rng.randbytes(8))
                self.alt_blocks[key] = alt
                self._learn(block_hash(alt))
            return [Propose(m.chain_id, m.height, m.round, alt)]
        if isinstance(m, Abort):
            return [Abort(m.chain_id, m.height, m.level + rng.randint(0, 3))]
        return [m]


def fake_report(rng: random.Random, m: Report, value: object) -> Report:
    """A well-formed REPORT with invented summaries (high rounds, fake prev_round)."""
    pick = value if callable(value) else (lambda: _rand_hash(rng))
    s: list[Summary] = []
    for _ in range(4):
        if m.round == 0 or rng.random() < 0.3:
            s.append(Summary())
            continue
        last = rng.randrange(m.round)
        prev = rng.randrange(last) if last > 0 and rng.random() < 0.5 else None
        s.append(Summary(last, pick(), prev))
    return Report(m.chain_id, m.height, m.round, tuple(s))


class EquivocatingLeader(Strategy):
    """As leader, sends one block to the even peers and another to the odd peers, and votes
    for whichever block each peer received."""

    def __init__(self) -> None:
        self.alt: dict[bytes, Block] = {}

    def outgoing(self, sim: Sim, nd: SimNode, to: int, m: Message) -> list[Message]:
        if to % 2 == 0:
            return [m]
        if isinstance(m, Propose):
            b = m.block
            alt = Block(b.height, b.parent, b.round, b.proposer, b.body + b"'")
            self.alt[block_hash(b)] = alt
            return [Propose(m.chain_id, m.height, m.round, alt)]
        if isinstance(m, Vote) and m.value in self.alt:
            return [Vote(m.chain_id, m.height, m.round, m.phase, block_hash(self.alt[m.value]))]
        return [m]


class Withholding(Strategy):
    """Sends its votes of phase >= `phase` (and DONEs) only to the peers in `to_peers`."""

    def __init__(self, to_peers: frozenset[int], phase: int = 4) -> None:
        self.to_peers = to_peers
        self.phase = phase

    def outgoing(self, sim: Sim, nd: SimNode, to: int, m: Message) -> list[Message]:
        if isinstance(m, Vote) and m.phase >= self.phase and to not in self.to_peers:
            return []
        if isinstance(m, Done) and to not in self.to_peers:
            return []
        return [m]


class Flooder(Strategy):
    """Follows the protocol, and every tick floods wrong DONEs, huge ABORT levels and
    messages for future heights."""

    tick_us = 3000

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def tick(self, sim: Sim, nd: SimNode) -> list[tuple[int, Message]]:
        cid = sim.params.chain_id
        h = max(nd.engine.view().height, 1)
        rng = self.rng
        out: list[tuple[int, Message]] = []
        for to in range(sim.cfg.n):
            if to == nd.ident:
                continue
            out.append((to, Done(cid, h, _rand_hash(rng))))
            out.append((to, Abort(cid, h, rng.randint(1000, 2**40))))
            fh = h + rng.randint(1, 50)
            out.append((to, Vote(cid, fh, rng.randint(0, 9), rng.randint(1, 4), _rand_hash(rng))))
            out.append((to, Done(cid, fh, _rand_hash(rng))))
        return out


class WrongSync(Strategy):
    """Answers SYNC requests with invented hashes and body requests with wrong bodies."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def serve_sync(self, sim: Sim, nd: SimNode, to: int, frm: int, count: int) -> Message | None:
        hashes = tuple(_rand_hash(self.rng) for _ in range(min(count, 64)))
        return SyncResp(sim.params.chain_id, frm, hashes)

    def serve_blocks(
        self, sim: Sim, nd: SimNode, to: int, hashes: Sequence[bytes]
    ) -> BlockResp | None:
        fake = Block(1, b"\x00" * 32, 0, 0, self.rng.randbytes(8))
        return BlockResp(sim.params.chain_id, (fake,))

    def outgoing(self, sim: Sim, nd: SimNode, to: int, m: Message) -> list[Message]:
        if isinstance(m, Done):
            return [Done(m.chain_id, m.height, _rand_hash(self.rng))]
        return [m]


class WithholdBodies(Strategy):
    """Never answers a body request."""

    def serve_blocks(
        self, sim: Sim, nd: SimNode, to: int, hashes: Sequence[bytes]
    ) -> BlockResp | None:
        return BlockResp(sim.params.chain_id, ())


class Censor(Strategy):
    """Follows the protocol but, as leader, ignores transactions: it never sends a PROPOSE
    (nor its own votes for what it built), so a pending transaction gets no block from it."""

    def __init__(self) -> None:
        self.own: set[bytes] = set()

    def outgoing(self, sim: Sim, nd: SimNode, to: int, m: Message) -> list[Message]:
        if isinstance(m, Propose) and m.block.proposer == nd.ident:
            self.own.add(block_hash(m.block))
            return []
        if isinstance(m, Vote) and m.value in self.own:
            return []
        return [m]
