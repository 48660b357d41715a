"""Scripted Byzantine attacks of CONSENSUS.md §8: the strategies and network scripts of
S3 (claim check), S13 (body withheld), S17 (transfer attack) and S19 (anchor capture).

Each is written against fixed node numbers and rounds; `consensus.sim.scenarios` puts
them in a run. A strategy reads its own engine only through `Engine.view()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from consensus.messages import (
    Block,
    BlockResp,
    Done,
    Message,
    Propose,
    Report,
    Summary,
    Vote,
    block_hash,
)
from consensus.sim.app import GENESIS_HASH
from consensus.sim.byzantine import Strategy, WithholdBodies
from consensus.sim.config import MS

if TYPE_CHECKING:
    from consensus.sim.world import Sim, SimNode


class ClaimCheckAttacker(Strategy):
    """S3's Byzantine node 3: helps decide A at node 0 only in round 0, then as leader of
    round 3 proposes a new block B and reports a phase-1 vote for B at round 1."""

    tick_us = 1000

    def __init__(self, chain_id: str) -> None:
        self.b_block = Block(1, GENESIS_HASH, 3, 3, b"forged-B")
        self.b = block_hash(self.b_block)
        self.cid = chain_id
        self.sent = False

    def outgoing(self, sim: Sim, nd: SimNode, to: int, m: Message) -> list[Message]:
        if getattr(m, "height", 0) != 1:
            return [m]
        if isinstance(m, Vote):
            if m.round == 0 and m.phase == 4:
                return [m] if to == 0 else []
            return [m] if m.round < 3 else []
        if isinstance(m, Done | Propose):
            return []
        if isinstance(m, Report) and m.round == 3:
            return []
        return [m]

    def tick(self, sim: Sim, nd: SimNode) -> list[tuple[int, Message]]:
        inst = nd.engine.view().instance(1)
        if self.sent or inst is None or inst.round != 3:
            return []
        self.sent = True
        s = (Summary(1, self.b, None), Summary(), Summary(), Summary())
        rep = Report(self.cid, 1, 3, s)
        prop = Propose(self.cid, 1, 3, self.b_block)
        out: list[tuple[int, Message]] = []
        for to in range(3):
            out += [(to, rep), (to, prop), (to, Vote(self.cid, 1, 3, 1, self.b))]
        return out


def claim_check_drop(sim: Sim, src: int, to: int, m: Message) -> bool:
    if getattr(m, "height", 0) != 1:
        return False
    if isinstance(m, Vote) and m.round == 0 and m.phase == 4 and src != 3:
        return to != 0
    if isinstance(m, Done):
        return True
    if isinstance(m, Propose) and m.round == 1:
        return to != 1
    return isinstance(m, Propose) and m.round == 2


class ProposeToFew(Strategy):
    """The round-0 leader of height 1 sends PROPOSE, VOTE1 and VOTE2 only to `targets`,
    then nothing; it also never serves a body."""

    def __init__(self, targets: frozenset[int]) -> None:
        self.targets = targets

    def outgoing(self, sim: Sim, nd: SimNode, to: int, m: Message) -> list[Message]:
        if getattr(m, "height", 0) != 1 or to not in self.targets:
            return []
        if isinstance(m, Propose) and m.round == 0:
            return [m]
        if isinstance(m, Vote) and m.round == 0 and m.phase <= 2:
            return [m]
        return []

    def serve_blocks(
        self, sim: Sim, nd: SimNode, to: int, hashes: Sequence[bytes]
    ) -> BlockResp | None:
        return WithholdBodies().serve_blocks(sim, nd, to, hashes)


class TransferAttacker(Strategy):
    """S17's Byzantine node D = 1 (leader of round 1), scripted per CONSENSUS.md §8.

    Round 0: VOTE1 and VOTE2 for w to all, VOTE3 to A only. Round 1: proposes x to A and B,
    sends VOTE1 x to A only, and reports an empty summary. Round 2: VOTE1 w to A only, empty
    summary. From round 3: every node gets the same REPORT with s2 = (r-1, y, prev 1) and
    s4 = (r-1, junk); no other message.

    Timing matters. The attack needs each correct leader of round r >= 3 to hold D's REPORT
    of round r when it has q REPORTs: with the three correct ones alone it can only justify
    w (at r2 = 0), which every correct voter accepts, rule or no rule; with D's REPORT it
    justifies a fresh value through the two ANY_VALUE claims at r2 = 1 (A's honest s2 with
    prev_round 1 and D's fake one), which voters accept only through the two-values rule.
    Sending REPORT(r) when D enters round r loses that race about half of the time (the
    correct REPORTs are sent at the same moment), which is why seeds used to pass clean
    under the mutant. So D sends REPORT(r + 1) halfway through round r (a Byzantine node
    may send any message at any time; the round-r leader has proposed by then, so the early
    REPORT no longer matters for round r), and every correct node holds it on entering r+1.
    """

    tick_us = 1000

    def __init__(self, chain_id: str) -> None:
        self.cid = chain_id
        self.x_block = Block(1, GENESIS_HASH, 1, 1, b"x")
        self.x = block_hash(self.x_block)
        self.junk = b"\x77" * 32
        self.y = b"\x55" * 32
        self.reported: set[int] = set()
        self.sent_x = False
        self.entered: dict[int, int] = {}

    def outgoing(self, sim: Sim, nd: SimNode, to: int, m: Message) -> list[Message]:
        if getattr(m, "height", 0) != 1:
            return [m]
        if isinstance(m, Vote):
            if m.round == 0 and m.phase <= 2:
                return [m]
            if (m.round == 0 and m.phase == 3) or (m.round == 2 and m.phase == 1):
                return [m] if to == 0 else []
            return []
        if isinstance(m, Report) and m.round in (1, 2):
            return [Report(m.chain_id, 1, m.round, (Summary(),) * 4)]
        if isinstance(m, Report | Propose | Done):
            return []
        return [m]

    def _report(self, r: int) -> list[tuple[int, Message]]:
        self.reported.add(r)
        s = (Summary(), Summary(r - 1, self.y, 1), Summary(), Summary(r - 1, self.junk))
        rep = Report(self.cid, 1, r, s)
        return [(to, rep) for to in (0, 2, 3)]

    def tick(self, sim: Sim, nd: SimNode) -> list[tuple[int, Message]]:
        inst = nd.engine.view().instance(1)
        if inst is None:
            return []
        r = inst.round
        entered = self.entered.setdefault(r, sim.now)
        out: list[tuple[int, Message]] = []
        if r == 1 and not self.sent_x:
            self.sent_x = True
            out += [(to, Propose(self.cid, 1, 1, self.x_block)) for to in (0, 3)]
            out.append((0, Vote(self.cid, 1, 1, 1, self.x)))
        if r >= 3 and r not in self.reported:
            out += self._report(r)
        half = sim.params.timeout_ms(r) * MS // 2
        if r >= 2 and r + 1 not in self.reported and sim.now >= entered + half:
            out += self._report(r + 1)
        return out


def transfer_drop(sim: Sim, src: int, to: int, m: Message) -> bool:
    """Nodes: A = 0, D = 1 (Byzantine), C = 2, B = 3; leader(r) = r mod 4."""
    if getattr(m, "height", 0) != 1:
        return False
    if isinstance(m, Propose | Vote) and m.round == 0:
        return to == 2
    return isinstance(m, Propose) and m.round == 2 and to == 3


TRANSFER_DELAYS: dict[tuple[int, int], tuple[int, int]] = {
    **{(0, j): (2 * MS, 2 * MS) for j in (1, 2, 3)},
    (2, 3): (10 * MS, 10 * MS),
    (3, 2): (10 * MS, 10 * MS),
}
"""Adversarial but within the post-GST bound [2, 10] ms: A's frames are fast, B <-> C slow,
so a correct leader B or C holds A's REPORT (and D's early one) before the other correct
REPORT. The first quorum of REPORTs the leader sees then contains A's and D's ANY_VALUE
claims and justifies a fresh value; with A, B and C only it would justify w, which voters
accept without the two-values rule, and the mutant would decide."""


class ForgeProposer(Strategy):
    """Leads rounds >= 1 with blocks whose header names the crashed node as proposer."""

    def __init__(self, victim: int) -> None:
        self.victim = victim
        self.forged: dict[bytes, Block] = {}

    def _forge(self, sim: Sim, nd: SimNode, b: Block) -> Block:
        inst = nd.engine.view().instance(b.height)
        if inst is None or b.round == 0:
            return b
        n = sim.params.n
        r2 = (self.victim - inst.anchor) % n
        if r2 > b.round:
            return b
        return Block(b.height, b.parent, r2, self.victim, b.body)

    def outgoing(self, sim: Sim, nd: SimNode, to: int, m: Message) -> list[Message]:
        if isinstance(m, Propose) and m.block.proposer == nd.ident:
            real = block_hash(m.block)
            forged = self.forged.get(real)
            if forged is None:
                forged = self._forge(sim, nd, m.block)
                self.forged[real] = forged
            return [Propose(m.chain_id, m.height, m.round, forged)]
        if isinstance(m, Vote) and m.value in self.forged:
            return [replace(m, value=block_hash(self.forged[m.value]))]
        return [m]
