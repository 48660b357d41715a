"""Run scenarios over seeds and summarise: violations, decided heights, rounds, frames."""

from __future__ import annotations

from dataclasses import dataclass, field

from consensus.sim.config import EngineFactory
from consensus.sim.invariants import Violation
from consensus.sim.scenarios import build
from consensus.sim.world import Sim


@dataclass(frozen=True)
class RunResult:
    scenario: str
    n: int
    seed: int
    violations: tuple[Violation, ...]
    heights: int
    """Heights committed by every correct node."""
    rounds: tuple[int, ...]
    """Decision round of each height (first correct decider)."""
    frames_per_link_height: float
    max_frames_per_link_height: float
    alerts: int
    sim_ms: float
    events: int
    trace: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.violations


def run_one(
    scenario: str,
    n: int,
    seed: int,
    heights: int = 3,
    engine: EngineFactory | None = None,
    trace: bool = False,
) -> RunResult:
    cfg = build(scenario, n, seed, heights, engine)
    if trace:
        from dataclasses import replace

        cfg = replace(cfg, trace=True)
    sim = Sim(cfg)
    sim.run()
    correct = [nd for nd in sim.correct_nodes() if nd.ident not in sim.crashed_forever]
    decided = min((len(nd.chain) for nd in correct), default=0)
    links = cfg.n * (cfg.n - 1)
    total = sum(sim.frames.values())
    per = total / links / max(decided, 1)
    worst = max(sim.frames.values(), default=0) / max(decided, 1)
    rounds = tuple(sim.monitor.decided_round[h] for h in sorted(sim.monitor.decided_round))
    return RunResult(
        scenario=scenario,
        n=cfg.n,
        seed=seed,
        violations=tuple(sim.monitor.violations),
        heights=decided,
        rounds=rounds,
        frames_per_link_height=per,
        max_frames_per_link_height=worst,
        alerts=len(sim.alerts),
        sim_ms=sim.now / 1000,
        events=sim.events,
        trace=tuple(sim.trace),
    )


def replay_command(scenario: str, n: int, seed: int) -> str:
    return f"qchain sim replay --validators {n} --scenario {scenario} --seed {seed} --trace"
