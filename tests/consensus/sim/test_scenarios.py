"""S1-S19 over many seeds for n = 4 and n = 7: zero violations, and liveness everywhere."""

from __future__ import annotations

import pytest

from consensus.sim.runner import replay_command, run_one
from consensus.sim.scenarios import SCENARIOS

SEEDS_PER_CASE = 14  # 19 scenarios x 2 sizes x 14 seeds = 532 seeded runs


@pytest.mark.parametrize("n", [4, 7])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_has_no_violation(name: str, n: int) -> None:
    for seed in range(SEEDS_PER_CASE):
        r = run_one(name, n, seed)
        if r.violations:
            print(f"FAILING SEED {seed}: {replay_command(name, n, seed)}")
        assert not r.violations, (seed, replay_command(name, n, seed), r.violations)
        assert r.heights >= 1


def test_good_case_frames_per_link_per_height() -> None:
    for n in (4, 7):
        r = run_one("S14", n, 0, heights=30)
        assert r.ok
        assert r.max_frames_per_link_height <= 5.0, r.max_frames_per_link_height
        assert set(r.rounds) == {0}


def test_one_round_change_costs_about_seven_frames() -> None:
    r = run_one("S1", 4, 0, heights=1)
    assert r.ok
    assert r.rounds[0] == 1
    assert r.frames_per_link_height <= 8.0


def test_runs_are_deterministic() -> None:
    a = run_one("S4", 4, 5)
    b = run_one("S4", 4, 5)
    assert a == b
