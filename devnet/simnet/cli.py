"""`qchain sim`: the consensus engine's simulator (`run`, `replay`: `consensus.sim.cli`) and
the whole-network simulator (`net`).

`qchain sim net --seed S` runs one seeded network; `--seeds K` (or `A..B`) sweeps seeds
(`--jobs N`: in N worker processes) and prints, for each failing seed, the shortest
command that reproduces it; `--replay`
runs one seed and prints its event trace, the checks and the trace digest. The process
re-executes itself with `PYTHONHASHSEED=0` first, so nothing that iterates a set of
strings can differ between a run and its replay.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from consensus.sim import cli as consensus_cli
from consensus.sim.cli import parse_seeds
from devnet.simnet.client import CLIENT_MODES
from devnet.simnet.mutants import MUTANTS
from devnet.simnet.run import Outcome, Spec, simulate, sweep
from devnet.simnet.scenarios import load as load_scenario
from qchain.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sim_command", metavar="SUBCOMMAND", required=True)
    consensus_cli.add_commands(sub)
    net = sub.add_parser("net", help="simulate whole validators on virtual time, from seeds")
    net.add_argument("--validators", type=int, default=4)
    net.add_argument("--seed", type=int, default=None, help="one run (default: seed 0)")
    net.add_argument("--seeds", default=None, help="a sweep: K (seeds 0..K-1) or A..B")
    net.add_argument("--seconds", type=float, default=20.0, help="virtual seconds per run")
    net.add_argument("--replay", action="store_true", help="print the run's event trace")
    net.add_argument("--no-faults", action="store_true", help="no fault schedule")
    net.add_argument("--no-crashes", action="store_true", help="faults, but no crashes")
    net.add_argument("--mutant", choices=MUTANTS, help="put back a first-wave bug")
    net.add_argument("--scenario", type=Path, help="a fault-kit scenario (TOML) as the schedule")
    net.add_argument(
        "--store",
        choices=("memory", "leveldb"),
        default="memory",
        help="the nodes' disks: memory stores that lose unsynced writes in a crash as the "
        "seed draws, or LevelDB in a temporary directory",
    )
    net.add_argument(
        "--client",
        choices=CLIENT_MODES,
        default="careful",
        help="how the client behaves: careful holds a sender's later nonces in a burst "
        "while one is refused, eager sends them regardless, patient is careful and sends "
        "an acknowledged transaction again only after 6 s",
    )
    net.add_argument(
        "--burst-scale",
        type=float,
        default=1.0,
        help="multiply a drawn burst's rate and peak (2: peaks of 2,200-3,000 transactions, "
        "about twice the simulated pool)",
    )
    net.add_argument(
        "--reconf",
        action="store_true",
        help="a genesis whose set changes: a spare site is added, then a member removed",
    )
    net.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="a sweep's runs in this many worker processes (0: one per core); each run "
        "is the same wherever it runs",
    )
    net.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    if args.sim_command != "net":
        return consensus_cli.run(args)
    if os.environ.get("PYTHONHASHSEED") != "0":
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    if args.validators < 1 or args.validators % 3 != 1:
        raise ConfigError("--validators", "n = 3f+1 validators are needed (1, 4, 7, ...)")
    if args.seconds < 2:
        raise ConfigError("--seconds", "a run needs at least 2 virtual seconds")
    if args.seeds is not None and (args.seed is not None or args.replay):
        raise ConfigError("--seeds", "a sweep takes neither --seed nor --replay")
    if args.jobs < 0:
        raise ConfigError("--jobs", "0 (one per core) or more")
    seeds = parse_seeds(args.seeds) if args.seeds is not None else [args.seed or 0]
    actions, seconds, scenario = None, args.seconds, None
    if args.scenario is not None:
        sc, actions, seconds, skipped = load_scenario(args.scenario, args.validators)
        scenario = str(args.scenario)
        if args.seed is None and args.seeds is None:
            seeds = [sc.seed]
        for step in skipped:
            print(f"scenario {sc.name}: cannot simulate step {step}; played without it")
    started = time.perf_counter()
    specs = [
        Spec(
            validators=args.validators,
            seed=seed,
            seconds=seconds,
            faults=not args.no_faults,
            crashes=not args.no_crashes,
            mutant=args.mutant,
            actions=actions,
            scenario=scenario,
            store=args.store,
            client=args.client,
            burst_scale=args.burst_scale,
            reconf=args.reconf,
        )
        for seed in seeds
    ]
    if args.replay:
        runs: Iterable[Outcome] = [simulate(specs[0], keep_trace=True)]
    else:
        runs = sweep(specs, args.jobs)
    outcomes = []
    for o in runs:
        outcomes.append(o)
        if args.replay:
            print("\n".join(o.trace))
        if not args.json:
            _print_outcome(o, verbose=args.replay or len(seeds) == 1)
    wall = time.perf_counter() - started
    failed = [o for o in outcomes if not o.ok]
    if args.json:
        print(json.dumps([o.to_json() for o in outcomes], indent=2))
    else:
        virtual = seconds * len(outcomes)
        print(
            f"{len(outcomes)} runs, {len(failed)} failed; {virtual:g} virtual s in "
            f"{wall:.1f} wall s ({virtual / wall:.1f} virtual s per wall s, "
            f"{len(outcomes) * 3600 / wall:.0f} runs per hour)"
        )
    return 1 if failed else 0


def _print_outcome(o: Outcome, *, verbose: bool) -> None:
    heights = ",".join(str(h) for _, h in sorted(o.heights.items()))
    status = "ok" if o.ok else "FAILED"
    print(
        f"seed {o.spec.seed}: {status} heights {heights} trace {o.events} events "
        f"digest {o.digest[:16]} wall {o.wall_s:.2f}s",
        flush=True,
    )
    for c in o.checks:
        if verbose or not c.ok:
            print(f"  {'ok ' if c.ok else 'BAD'} {c.name}: {c.summary}")
            for d in c.details[:10] if not c.ok else ():
                print(f"      {d}")
    if verbose and o.errors:
        print(f"  {len(o.errors)} errors in node tasks, first: {o.errors[0]}")
    if not o.ok:
        print(f"  reproduce: {o.spec.command()}")
