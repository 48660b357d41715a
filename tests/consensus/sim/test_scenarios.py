"""S1-S22 over many seeds for n = 4 and n = 7: zero violations, and liveness everywhere."""

from __future__ import annotations

from dataclasses import replace

import pytest

from consensus.sim import crash
from consensus.sim.config import CrashSpec, SimConfig
from consensus.sim.runner import replay_command, run_one
from consensus.sim.scenarios import SCENARIOS, build
from consensus.sim.world import Sim, SimNode

SEEDS_PER_CASE = 28  # 22 scenarios x 2 sizes x 28 seeds = 1232 seeded runs
SMOKE_SEEDS = 8
"""Seeds 0..7 of each case run in `make test` (352 runs); 8..27 are `sweep` (`make
test-sweeps`)."""


@pytest.mark.parametrize(
    "seeds",
    [
        pytest.param(range(SMOKE_SEEDS), id="smoke"),
        pytest.param(range(SMOKE_SEEDS, SEEDS_PER_CASE), id="sweep", marks=pytest.mark.sweep),
    ],
)
@pytest.mark.parametrize("n", [4, 7])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_has_no_violation(name: str, n: int, seeds: range) -> None:
    for seed in seeds:
        r = run_one(name, n, seed)
        if r.violations:
            print(f"FAILING SEED {seed}: {replay_command(name, n, seed)}")
        assert not r.violations, (seed, replay_command(name, n, seed), r.violations)
        assert r.heights >= 1


@pytest.mark.parametrize(("n", "seed"), [(4, 871), (7, 288)])
def test_found_by_the_2000_seed_sweep(n: int, seed: int) -> None:
    """Seeds the nightly-size sweep (`qchain sim run --scenario all --seeds 0..1999`) found:
    a leader restarted with a committed height's record re-sent its VOTE1 without its
    PROPOSE (invariant 7; `test_engine.py`, restart)."""
    r = run_one("S8", n, seed)
    assert not r.violations, (replay_command("S8", n, seed), r.violations)


def test_good_case_frames_per_link_per_height() -> None:
    """§7 good case: VOTE1 (with the DONE of the height before riding in its frame),
    VOTE2, VOTE3, VOTE4: at most 4 frames per directed link per height. A frame counts
    for the highest height it carries, so the riding DONE counts for the next height."""
    for n in (4, 7):
        r = run_one("S14", n, 0, heights=30)
        assert r.ok
        assert set(r.rounds) == {0}
        # the run ends once height 30 terminated, which takes the DONEs riding in the
        # first frames of height 31: up to two of its frames per link are counted too
        assert r.max_frames_per_link_height <= 4.0 + 2 / 30, r.max_frames_per_link_height
        sim = Sim(build("S14", n, 0, 30))
        sim.run()
        for h in range(1, 31):
            per = _height_frames(sim, h, range(n))
            assert max(per.values()) <= 4, (n, h, per)


def _height_frames(sim: Sim, h: int, senders: range) -> dict[tuple[int, int], int]:
    n = sim.cfg.n
    return {
        (a, b): sim.height_frames.get((a, b, h), 0) for a in senders for b in range(n) if a != b
    }


@pytest.mark.parametrize(("n", "seeds"), [(4, 10), (7, 4), (16, 1)])
def test_one_round_change_costs_seven_frames_per_link(n: int, seeds: int) -> None:
    """§7: a height decided in round 1 after a crashed round-0 leader costs 6 frames per
    directed link (ABORT, REPORT, PROPOSE+VOTE1 or VOTE1, VOTE2, VOTE3, VOTE4; its DONE
    rides in the first frame of the next height); the crashed node's own links carry
    none, so the total is 6(n-1)^2 rather than 6n(n-1). At n = 4 a few links carry 5: a
    node that sees q ABORTs before its own timer fires sends its ABORT echo and its REPORT
    in one frame. The next height (new leader) costs at most 4."""
    for seed in range(seeds):
        cfg = SimConfig(n=n, seed=seed, heights=3, crashes=(CrashSpec(0, down_us=None, dead=True),))
        sim = Sim(cfg)
        sim.run()
        assert not sim.monitor.violations, (seed, sim.monitor.violations)
        assert sim.monitor.decided_round[1] == 1, seed
        h1 = _height_frames(sim, 1, range(1, n))
        assert max(h1.values()) == 6, (seed, h1)
        assert min(h1.values()) >= 5, (seed, h1)
        if n > 4:
            assert set(h1.values()) == {6}, (seed, h1)
            assert sum(h1.values()) == 6 * (n - 1) ** 2
        h2 = _height_frames(sim, 2, range(1, n))
        assert max(h2.values()) <= 4, (seed, h2)


def test_good_case_n16_four_frames_per_link_per_height() -> None:
    """§7 good case at n = 16: every directed link carries at most 4 frames per height."""
    sim = Sim(build("S14", 16, 0, 10))
    sim.run()
    assert not sim.monitor.violations, sim.monitor.violations
    assert set(sim.monitor.decided_round.values()) == {0}
    for h in range(1, 11):
        per = _height_frames(sim, h, range(16))
        assert max(per.values()) <= 4, (h, max(per.values()))
        assert sum(per.values()) <= 4 * 16 * 15


def test_runs_are_deterministic() -> None:
    a = run_one("S4", 4, 5)
    b = run_one("S4", 4, 5)
    assert a == b


def test_liveness_bound_has_teeth() -> None:
    """Invariant 9's bound D is evaluated on real commit times: shrink D and it fires."""

    class TightSim(Sim):
        def liveness_bound_us(self, r: int) -> int:
            return 1

    sim = TightSim(build("S1", 4, 0, 3))
    sim.run()
    assert any("T0 + D" in v.text for v in sim.monitor.violations if v.invariant == 9)
    normal = Sim(build("S1", 4, 0, 3))
    normal.run()
    assert not normal.monitor.violations


def test_s20_crashes_around_the_commit_and_the_riding_done() -> None:
    """S20 has teeth: every run crashes a node (before its commit, or at the step that
    sends a DONE riding with the next height) and restarts it, and still commits."""
    for n in (4, 7):
        for seed in range(9):
            sim = Sim(build("S20", n, seed, 4))
            sim.run()
            assert not sim.monitor.violations, (n, seed, sim.monitor.violations)
            assert sim.last_restart_us > 0, (n, seed)
            assert min(len(nd.chain) for nd in sim.correct_nodes()) >= 4, (n, seed)


def test_s22_crashes_with_the_commit_in_flight_and_loses_no_height(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """S22 has teeth: every run crashes (between decide and execute, or with the commit
    executed and its batch in flight) and restarts, some after the node already voted or
    proposed in the next height; every height executed is recovered (invariant 14) and
    the chain goes on."""
    ahead: list[tuple[int, int]] = []
    real = crash.crash

    def watched(sim: Sim, nd: SimNode) -> None:
        p = nd.pending
        if nd.up and p is not None:
            rec = nd.records.get(p.height + 1)
            if rec is not None and (rec.s[0].last_value or rec.proposal_value):
                ahead.append((nd.ident, p.height))
        real(sim, nd)

    monkeypatch.setattr(crash, "crash", watched)
    for n in (4, 7):
        for seed in range(12):
            sim = Sim(build("S22", n, seed, 4))
            sim.run()
            assert not sim.monitor.violations, (n, seed, sim.monitor.violations)
            assert sim.last_restart_us > 0, (n, seed)
            assert min(len(nd.chain) for nd in sim.correct_nodes()) >= 4, (n, seed)
    assert len(ahead) >= 3, ahead


def test_without_the_commit_barrier_a_crash_loses_a_height() -> None:
    """Invariant 14 has teeth: with a decision allowed to reach the disk before the commit
    in flight below it (no barrier), S22's crashes are caught."""
    caught = 0
    for seed in range(30):
        cfg = replace(build("S22", 4, seed, 4), commit_barrier=False)
        sim = Sim(cfg)
        sim.run()
        caught += any(v.invariant == 14 for v in sim.monitor.violations)
    assert caught >= 10
