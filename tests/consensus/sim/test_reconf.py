"""Validator-set changes in the simulator (CONSENSUS.md §10.8): C1-C5 at n = 4 -> 5 -> 4
and n = 7 -> 8 -> 7 with every invariant of §6 and R1, R2, R4, R5; the changes really
happen; the early-activation mutant (M1) is caught."""

from __future__ import annotations

import pytest

from consensus.sim.mutants import RECONF_MUTANTS
from consensus.sim.runner import replay_command, run_one
from consensus.sim.scenarios import RECONF_SCENARIOS, build
from consensus.sim.world import Sim

SEEDS = {4: 16, 7: 6}  # 8 scenarios x (16 + 6) seeds = 176 seeded runs
MUTANT_SEEDS = 2
"""The early-activation mutant must be caught within this many seeds of C1."""


def _run(name: str, n: int, seed: int) -> Sim:
    sim = Sim(build(name, n, seed, 3))
    sim.run()
    return sim


def _activations(sim: Sim) -> list[tuple[int, tuple[int, ...]]]:
    chain = [sim.monitor.committed[h] for h in sorted(sim.monitor.committed)]
    sets = sim.sets_of(chain)
    assert sets is not None
    return [(h, vs.ids) for h, vs in enumerate(sets, start=1) if h > 1 and vs != sets[h - 2]]


@pytest.mark.parametrize("n", [4, 7])
@pytest.mark.parametrize("name", list(RECONF_SCENARIOS))
def test_reconf_scenario_has_no_violation_and_changes_the_set(name: str, n: int) -> None:
    for seed in range(SEEDS[n]):
        where = replay_command(name, n, seed)
        sim = _run(name, n, seed)
        assert not sim.monitor.violations, (seed, where, sim.monitor.violations)
        acts = _activations(sim)
        top = max(sim.monitor.committed)
        assert acts, (seed, where, "no change activated")
        # the joiner (id n) is a member from the first activation on, and votes there
        first = acts[0][0]
        assert n in acts[0][1], (seed, where, acts)
        votes = {h for (src, h, _, _) in sim.monitor.sent_votes if src == n}
        assert votes and min(votes) >= first and max(votes) > first, (seed, where)
        # every correct node that is up committed the target, the learners included
        for nd in sim.correct_nodes():
            if nd.ident not in sim.crashed_forever and nd.up:
                assert len(nd.chain) >= sim.cfg.heights, (seed, where, nd.name)
        assert top >= sim.cfg.heights


def test_a_removed_member_speaks_no_more_and_a_removed_byzantine_one_is_dropped() -> None:
    """C4: from its removal on, a correct node is never sent to (nothing to count), and
    everything the removed Byzantine member still sends for later heights is dropped
    as `not-member` by correct nodes."""
    for seed in range(4):
        sim = _run("C4", 4, seed)
        assert not sim.monitor.violations, seed
        acts = _activations(sim)
        removal = next(h for h, ids in acts if len(ids) == 4)
        (byz,) = sim.cfg.byzantine
        assert byz not in dict(acts)[removal]
        dropped = sum(nd.engine.view().not_member for nd in sim.correct_nodes())
        if seed % 2 == 0:  # the flooder keeps flooding after its removal
            assert dropped > 0, seed


def test_the_anchor_moves_to_the_next_unchanged_member_when_the_leader_leaves() -> None:
    """C2: node 0, the stable leader, is removed; the first block of the new set is
    proposed in round 0 by the next unchanged member (§10.4): no round change there."""
    for seed in range(4):
        sim = _run("C2", 4, seed)
        assert not sim.monitor.violations, seed
        removal = next(h for h, ids in _activations(sim) if 0 not in ids)
        assert sim.monitor.anchor(removal) != 0
        assert all(src != 0 for (src, h, _r) in sim.monitor.sent_props if h >= removal), seed


def test_a_rotated_key_votes_up_to_the_activation_and_the_new_one_from_it() -> None:
    """C5 (rotation as a new identity, §10.1): the old machine of k votes only below the
    activation height e, the new machine (id n) only from e on (R2, by the ground truth
    of what was sent; invariant 102 checks it online too)."""
    for seed in range(4):
        sim = _run("C5", 4, seed)
        assert not sim.monitor.violations, seed
        ((e, ids),) = _activations(sim)
        (k,) = set(range(4)) - set(ids)
        heights = {
            src: {h for (s2, h, _r, _k) in sim.monitor.sent_votes if s2 == src} for src in (k, 4)
        }
        assert heights[k] and max(heights[k]) < e, (seed, e, heights[k])
        assert heights[4] and min(heights[4]) >= e, (seed, e, heights[4])


def test_early_activation_mutant_is_caught_while_the_engine_passes_the_same_seeds() -> None:
    """§10.8 M1: a change activated one height early is caught by R1 (101) within
    `MUTANT_SEEDS` seeds of C1; the correct engine passes those seeds."""
    mutant = RECONF_MUTANTS["early-activation"]
    caught = None
    for seed in range(MUTANT_SEEDS):
        good = run_one("C1", 4, seed)
        assert good.ok, (seed, good.violations)
        bad = run_one("C1", 4, seed, engine=mutant)
        if 101 in {v.invariant for v in bad.violations}:
            caught = seed
            break
    assert caught is not None, f"early-activation survived {MUTANT_SEEDS} seeds of C1"


def test_c1s_leader_is_up_again_before_the_remove_arrives_whenever_its_crash_fires() -> None:
    """C1's leader, crashed by a trigger (its next proposal's send) that can fire well after
    the scheduled time, is up again before the remove's transaction reaches it: seed 1802
    at n = 7 crashed at 345 ms, was down 119 ms, missed the remove, and as the stable
    leader never included it (invariant 9 in the 2,000-seed sweep)."""
    sim = _run("C1", 7, 1802)
    assert not sim.monitor.violations, sim.monitor.violations
    leader = sim.nodes[0][0]
    assert leader.up and 1 in leader.included
