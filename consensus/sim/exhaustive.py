"""A bounded exhaustive search at n = 4, beyond random seeds.

The scripted prefix is height 1, round 0, with node 3 Byzantine (a `Chaos` strategy with a
fixed seed) and the round-0 PROPOSE, VOTE1 and VOTE2 delivered everywhere. The search then
enumerates every subset of the 6 directed links among the correct nodes 0-2 that deliver
the round-0 VOTE3s, times every subset that delivers the round-0 VOTE4s (2^6 x 2^6 = 4096
delivery patterns), each run to completion with the full invariant checker. Every pattern
of who reaches phase 4 and who decides in round 0 is covered, and with it every state from
which rounds >= 1 must recover the round-0 decision.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from consensus.messages import Message, Vote
from consensus.sim.byzantine import Chaos
from consensus.sim.config import EngineFactory, SimConfig
from consensus.sim.invariants import Violation
from consensus.sim.world import Sim

LINKS = tuple((a, b) for a in range(3) for b in range(3) if a != b)


@dataclass(frozen=True)
class Pattern:
    vote3: frozenset[tuple[int, int]]
    vote4: frozenset[tuple[int, int]]


def patterns(phases: tuple[int, ...] = (3, 4)) -> Iterator[Pattern]:
    full = (1 << len(LINKS)) - 1
    m3_range = range(1 << len(LINKS)) if 3 in phases else (full,)
    m4_range = range(1 << len(LINKS)) if 4 in phases else (full,)
    for m3 in m3_range:
        for m4 in m4_range:
            yield Pattern(_links(m3), _links(m4))


def _links(mask: int) -> frozenset[tuple[int, int]]:
    return frozenset(link for i, link in enumerate(LINKS) if mask >> i & 1)


def run_pattern(
    pat: Pattern, engine: EngineFactory | None = None, seed: int = 0
) -> tuple[Violation, ...]:
    def drop(sim: Sim, src: int, to: int, m: Message) -> bool:
        if not isinstance(m, Vote) or m.height != 1 or m.round != 0 or src == 3 or to == 3:
            return False
        if m.phase == 3:
            return (src, to) not in pat.vote3
        if m.phase == 4:
            return (src, to) not in pat.vote4
        return False

    engines = {i: engine for i in range(4)} if engine is not None else {}
    cfg = SimConfig(
        n=4,
        seed=seed,
        heights=2,
        byzantine={3: Chaos(p=0.5, seed=seed)},
        drop=drop,
        engines=engines,
    )
    sim = Sim(cfg)
    sim.run()
    return tuple(sim.monitor.violations)


def search(
    phases: tuple[int, ...] = (3, 4), engine: EngineFactory | None = None
) -> tuple[int, list[tuple[Pattern, tuple[Violation, ...]]]]:
    """Run every pattern; returns (patterns run, failures)."""
    count = 0
    bad: list[tuple[Pattern, tuple[Violation, ...]]] = []
    for pat in patterns(phases):
        count += 1
        v = run_pattern(pat, engine)
        if v:
            bad.append((pat, v))
    return count, bad
