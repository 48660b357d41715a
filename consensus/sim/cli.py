"""`qchain sim`: run scenarios over seeds, or replay one run with its message trace."""

from __future__ import annotations

import argparse
import json
import time

from consensus.sim.config import EngineFactory
from consensus.sim.mutants import MUTANTS, RECONF_MUTANTS
from consensus.sim.runner import RunResult, replay_command, run_one
from consensus.sim.scenarios import IDLE_SCENARIOS, POWER_SCENARIOS, RECONF_SCENARIOS, SCENARIOS
from qchain.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_commands(parser.add_subparsers(dest="sim_command", metavar="SUBCOMMAND", required=True))


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`run` and `replay` (the whole-network simulator adds `net` beside them)."""
    run = sub.add_parser("run", help="run scenarios over a range of seeds")
    run.add_argument("--validators", type=int, default=4)
    run.add_argument("--seeds", default="20", help="K (seeds 0..K-1) or A..B (inclusive)")
    run.add_argument(
        "--scenario",
        default="all",
        help=(
            "S1..S22, all, idle-quiet/idle-txs/idle-censor, "
            "S9-counted-correct, S10-f+1-twins, S21-unguarded, "
            "reconf (every set-change scenario) or one of " + ", ".join(RECONF_SCENARIOS)
        ),
    )
    run.add_argument("--heights", type=int, default=3)
    run.add_argument(
        "--mutant",
        choices=sorted(MUTANTS | RECONF_MUTANTS),
        help="run a deliberately broken engine (every node): the sweep must find violations",
    )
    run.add_argument("--json", action="store_true")
    rep = sub.add_parser("replay", help="replay one run")
    rep.add_argument("--validators", type=int, default=4)
    rep.add_argument("--scenario", required=True)
    rep.add_argument("--seed", type=int, required=True)
    rep.add_argument("--heights", type=int, default=3)
    rep.add_argument("--trace", action="store_true")


def parse_seeds(text: str) -> range:
    if ".." in text:
        a, _, b = text.partition("..")
        if not (a.isdigit() and b.isdigit()) or int(b) < int(a):
            raise ConfigError("--seeds", f"expected A..B with A <= B, got {text!r}")
        return range(int(a), int(b) + 1)
    if not text.isdigit():
        raise ConfigError("--seeds", f"expected K or A..B, got {text!r}")
    return range(int(text))


def _names(text: str) -> list[str]:
    if text == "all":
        return list(SCENARIOS)
    if text == "reconf":
        return list(RECONF_SCENARIOS)
    if text not in SCENARIOS | IDLE_SCENARIOS | POWER_SCENARIOS | RECONF_SCENARIOS:
        raise ConfigError("--scenario", f"unknown scenario {text!r}")
    return [text]


def summarise(name: str, n: int, results: list[RunResult], wall: float) -> dict[str, object]:
    bad = [r for r in results if r.violations]
    rounds = [x + 1 for r in results for x in r.rounds]
    return {
        "scenario": name,
        "validators": n,
        "runs": len(results),
        "violations": [
            {
                "seed": r.seed,
                "replay": replay_command(name, n, r.seed),
                "invariants": sorted({v.invariant for v in r.violations}),
                "first": r.violations[0].text,
            }
            for r in bad
        ],
        "decided_heights": sum(r.heights for r in results),
        "mean_rounds_per_height": round(sum(rounds) / len(rounds), 3) if rounds else None,
        "frames_per_link_per_height": round(
            sum(r.frames_per_link_height for r in results) / max(len(results), 1), 3
        ),
        "wall_s": round(wall, 2),
    }


def run(args: argparse.Namespace) -> int:
    if args.sim_command == "replay":
        r = run_one(args.scenario, args.validators, args.seed, args.heights, trace=args.trace)
        for line in r.trace:
            print(line)
        for v in r.violations:
            print(f"VIOLATION invariant {v.invariant}: {v.text}")
        print(f"committed heights {r.heights}, decision rounds {list(r.rounds)}")
        return 1 if r.violations else 0
    seeds = parse_seeds(args.seeds)
    if args.validators < 1:
        raise ConfigError("--validators", "must be >= 1")
    failed = False
    summaries = []
    engine: EngineFactory | None = None
    if args.mutant is not None:
        engine = (MUTANTS | RECONF_MUTANTS)[args.mutant]
    for name in _names(args.scenario):
        t0 = time.perf_counter()
        results = [run_one(name, args.validators, s, args.heights, engine) for s in seeds]
        s = summarise(name, args.validators, results, time.perf_counter() - t0)
        summaries.append(s)
        failed = failed or any(r.violations for r in results)
        bad = [r for r in results if r.violations]
        if not args.json:
            print(
                f"{name:4} n={args.validators} runs={s['runs']} violations={len(bad)} "
                f"heights={s['decided_heights']} rounds/height={s['mean_rounds_per_height']} "
                f"frames/link/height={s['frames_per_link_per_height']} wall={s['wall_s']}s",
                flush=True,
            )
            for r in bad[:5]:
                cmd = replay_command(name, args.validators, r.seed)
                print(f"   seed {r.seed}: {r.violations[0].text}  -> {cmd}")
    if args.json:
        print(json.dumps(summaries, indent=2))
    return 1 if failed else 0
