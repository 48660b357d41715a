"""Sanity checks of test power (CONSENSUS.md §8, S9 and S10): with more faults than the
checker is told about, or than the protocol tolerates, the simulator must see a violation."""

from __future__ import annotations

import pytest

from consensus.sim.runner import replay_command, run_one

# (n, seeds to try): the first seed that catches it is 2 (n = 4) and 14 (n = 7)
S9_BUDGET = {4: 10, 7: 20}


@pytest.mark.parametrize("n", [4, 7])
def test_rolled_back_node_counted_correct_is_caught_equivocating(n: int) -> None:
    for seed in range(S9_BUDGET[n]):
        r = run_one("S9-counted-correct", n, seed)
        if 4 in {v.invariant for v in r.violations}:
            print(f"caught at seed {seed}: {replay_command('S9-counted-correct', n, seed)}")
            return
    pytest.fail(
        f"S9 with the rolled-back node counted correct: no equivocation in {S9_BUDGET[n]} seeds"
    )


@pytest.mark.parametrize("n", [4, 7])
def test_f_plus_one_twins_break_agreement(n: int) -> None:
    for seed in range(5):
        r = run_one("S10-f+1-twins", n, seed)
        found = {v.invariant for v in r.violations}
        assert 1 in found, (seed, replay_command("S10-f+1-twins", n, seed), found)


def test_the_same_s9_seeds_are_clean_with_the_node_declared_faulty() -> None:
    for seed in (2, 6, 28):
        r = run_one("S9", 4, seed)
        assert r.ok, (seed, replay_command("S9", 4, seed), r.violations)
