"""Teeth: every deliberately broken engine is caught within a bounded number of seeds."""

from __future__ import annotations

import pytest

from consensus.sim.mutants import MUTANTS
from consensus.sim.runner import replay_command, run_one
from consensus.sim.scenarios import build
from consensus.sim.world import Sim

# mutant -> (scenario that must catch it, seeds to try, invariants that may report it)
EXPECT: dict[str, tuple[str, int, set[int]]] = {
    "leq-eligibility": ("S3", 2, {1, 7}),
    "value-blind-claims": ("S3", 2, {1, 7}),
    "no-blocking-claim": ("S3", 2, {1, 7}),
    "no-two-values": ("S17", 1, {9, 12}),
    "skip-persist-before-vote": ("S8", 30, {4, 6}),
    "no-body-with-vote1": ("S18", 2, {9, 13}),
    "quorum-n-f-1": ("S7", 4, {1, 7, 8}),
}


@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_mutant_is_caught(mutant: str) -> None:
    scenario, seeds, invariants = EXPECT[mutant]
    for seed in range(seeds):
        r = run_one(scenario, 4, seed, engine=MUTANTS[mutant])
        found = {v.invariant for v in r.violations}
        if found & invariants:
            print(f"{mutant}: caught by {scenario} seed {seed}, invariants {sorted(found)}")
            return
    pytest.fail(f"{mutant} survived {seeds} seeds of {scenario}")


def test_agreement_itself_breaks_under_claim_mutants() -> None:
    for mutant in ("leq-eligibility", "value-blind-claims", "no-blocking-claim"):
        r = run_one("S3", 4, 0, engine=MUTANTS[mutant])
        assert 1 in {v.invariant for v in r.violations}, mutant


def test_s17_decides_in_round_3_and_stalls_without_the_two_values_rule() -> None:
    """§8 S17: the correct engine decides in round 3 (leader B, correct); the mutant never
    decides: every correct leader from round 3 on proposes a fresh value that correct
    voters refuse, for as many rounds as the run lasts (round 9 after 8 s)."""
    for seed in range(5):
        where = replay_command("S17", 4, seed)
        good = Sim(build("S17", 4, seed, 1))
        good.run()
        assert not good.monitor.violations, (seed, where, good.monitor.violations)
        # the run ends once height 1 terminated, which height 2 may do (R7, DONE riding)
        assert good.monitor.decided_round[1] == 3, (seed, where)
        bad = Sim(build("S17", 4, seed, 1, MUTANTS["no-two-values"]))
        bad.run()
        assert not bad.monitor.decided_round, (seed, where + " (mutant no-two-values)")
        views = [nd.engine.view().instance(1) for nd in bad.correct_nodes()]
        rounds = [-1 if i is None else i.round for i in views]
        assert min(rounds) >= 8, (seed, rounds)
        assert {9, 12} <= {v.invariant for v in bad.monitor.violations}, seed
