"""`qchain fault`: run fault scenarios and perturb a running devnet by hand.

    qchain fault run SCENARIO [--devnet DIR] [--docker] [--seed N] [--report FILE] [--keep]
    qchain fault list
    qchain fault kill|restart|pause|resume NODE
    qchain fault partition NODES... [--from NODES...]
    qchain fault heal
    qchain fault delay NODE MS [--jitter MS]
    qchain fault drop|corrupt NODE PCT
    qchain fault replay NODE [--pct PCT]
    qchain fault keys NODEA~NODEB|all --rate PROFILE|BITS|0
    qchain fault kms outage|eavesdrop|clear [--link NODEA~NODEB|all]
    qchain fault byzantine NODE MODE|twin|off      (MODE: see BYZ below)
    qchain fault attack hijack|forge|conn-flood --target NODE... [--claim NODE...]
                        [--duration S] [--rate R] [--connections N]
    qchain fault corrupt-disk NODE
    qchain fault kme-down|kme-up NODE            (one KME per node: that node's KME)
    qchain fault kme-drain [--link NODEA~NODEB|all] [--rate BITS]
    qchain fault kme-refill [--link NODEA~NODEB|all] [--count N]
    qchain fault kme-behaviour [JSON] [--node NODE...]   (no JSON: the standard set)

SCENARIO is a TOML file or the name of a shipped scenario (`qchain fault list`). NODE may
be a node name or `leader`. The ad-hoc verbs act on `--dir` (default devnet-data).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devnet.running import Network

DEFAULT_DIR = Path("devnet-data")
BYZ = (
    "equivocate",
    "double-vote",
    "withhold",
    "forge-mac",
    "silent",
    "far-height-vote",
    "vote-flood",
    "future-time",
    "far-claims",
    "unknown-batch",
    "twin",
    "off",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from devnet.faults.scenario import REFILL_KEYS

    sub = p.add_subparsers(dest="fault_cmd", metavar="VERB", required=True)
    run = sub.add_parser("run", help="run a scenario and check the invariants")
    run.add_argument("scenario", help="a TOML file or a shipped scenario name")
    run.add_argument("--devnet", type=Path, default=None, help="a running devnet (default: fresh)")
    run.add_argument("--docker", action="store_true", help="the devnet runs under Docker")
    run.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    run.add_argument("--report", type=Path, default=None, help="write the JSON report here")
    run.add_argument("--keep", action="store_true", help="leave a fresh network up")
    sub.add_parser("list", help="the shipped scenarios")

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        v = sub.add_parser(name, help=help_text)
        v.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="devnet directory")
        v.add_argument("--docker", action="store_true", help="the devnet runs under Docker")
        return v

    for name, h in (
        ("kill", "SIGKILL a node"),
        ("restart", "SIGTERM and start a node"),
        ("pause", "SIGSTOP a node"),
        ("resume", "SIGCONT a node"),
    ):
        verb(name, h).add_argument("node")
    part = verb("partition", "cut NODES off from the rest (or from --from NODES)")
    part.add_argument("nodes", nargs="+")
    part.add_argument("--from", dest="other", nargs="+", default=None)
    verb("heal", "clear every node's transport fault rules")
    d = verb("delay", "delay a node's outgoing frames")
    d.add_argument("node")
    d.add_argument("ms", type=int)
    d.add_argument("--jitter", type=int, default=0)
    for name in ("drop", "corrupt"):
        v = verb(name, f"{name} PCT%% of a node's outgoing frames")
        v.add_argument("node")
        v.add_argument("pct", type=float)
    r = verb("replay", "send a node's outgoing frames twice (replays)")
    r.add_argument("node")
    r.add_argument("--pct", type=float, default=30.0)
    k = verb("keys", "set a link's key rate at the key manager (0 cuts and flushes)")
    k.add_argument("link", help="nodeA~nodeB or all")
    k.add_argument("--rate", required=True, help="profile name or bits per second")
    m = verb("kms", "key manager faults")
    m.add_argument("mode", choices=["outage", "eavesdrop", "clear"])
    m.add_argument("--link", default="all")
    b = verb("byzantine", "a test-only misbehaviour, or a twin process")
    b.add_argument("node")
    b.add_argument("mode", choices=BYZ)
    a = verb("attack", "an unauthenticated outsider on the devnet's P2P ports (bounded)")
    a.add_argument("kind", choices=["hijack", "forge", "conn-flood"])
    a.add_argument("--target", nargs="+", required=True)
    a.add_argument("--claim", nargs="+", default=None, help="identities to claim (default: all)")
    a.add_argument("--duration", type=float, default=10.0, help="seconds (at most 120)")
    a.add_argument("--rate", type=float, default=16.0)
    a.add_argument("--connections", type=int, default=64)
    verb("corrupt-disk", "stop a node, flip one bit in a LevelDB table, start it").add_argument(
        "node"
    )
    verb("kme-down", "SIGTERM one node's KME (one KME per node)").add_argument("node")
    verb("kme-up", "start one node's KME again").add_argument("node")
    kd = verb("kme-drain", "empty the links' key pools at their KMEs, generating --rate bits/s")
    kd.add_argument("--link", default="all")
    kd.add_argument("--rate", type=int, default=0)
    kr = verb("kme-refill", "back to the devnet's rate profile with --count keys per link")
    kr.add_argument("--link", default="all")
    kr.add_argument("--count", type=int, default=REFILL_KEYS)
    kb = verb("kme-behaviour", "set KME behaviour switches (a JSON object; none: standard)")
    kb.add_argument("switches", nargs="?", default="{}")
    kb.add_argument("--node", nargs="+", default=None, help="these nodes' KMEs (default: all)")


def run(args: argparse.Namespace) -> int:
    from devnet.faults.attacker import AttackError
    from devnet.running import BackendError

    try:
        if args.fault_cmd == "run":
            return _run(args)
        if args.fault_cmd == "list":
            return _list()
        return _verb(args)
    except (BackendError, AttackError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: cannot reach the devnet: {e}", file=sys.stderr)
        return 1


def _list() -> int:
    from devnet.faults.scenario import load_scenario, shipped_scenarios

    for name, path in shipped_scenarios().items():
        sc = load_scenario(path)
        print(f"{name:<28} {sc.duration_s:4.0f}s  {sc.description}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from devnet.faults.report import render, write_report
    from devnet.faults.runner import run_scenario
    from devnet.faults.scenario import load_scenario, resolve_scenario

    scenario = load_scenario(resolve_scenario(args.scenario))
    result = asyncio.run(
        run_scenario(
            scenario, devnet=args.devnet, docker=args.docker, seed=args.seed, keep=args.keep
        )
    )
    print(render(result))
    if args.report is not None:
        write_report(result, args.report)
        print(f"JSON report: {args.report}")
    return 0 if result.ok else 1


def _verb(args: argparse.Namespace) -> int:
    from devnet.running import open_network

    target = open_network(args.dir, args.docker)
    try:
        return _verb_on(target, args)
    finally:
        target.close()


def _verb_on(target: Network, args: argparse.Namespace) -> int:
    print(_VERBS[args.fault_cmd](target, args, random.Random()))
    return 0


def _one(target: Network, sel: str, rng: random.Random) -> str:
    from devnet.faults import actions

    return actions.resolve(target, [sel], rng)[0]


def _process(target: Network, args: argparse.Namespace, rng: random.Random) -> str:
    node = _one(target, args.node, rng)
    {
        "kill": target.kill_node,
        "restart": target.restart_node,
        "pause": target.pause_node,
        "resume": target.resume_node,
    }[args.fault_cmd](node)
    return f"{args.fault_cmd} {node}"


def _partition(target: Network, args: argparse.Namespace, rng: random.Random) -> str:
    from devnet.faults import actions, transport

    side = actions.resolve(target, args.nodes, rng)
    other = actions.resolve(target, args.other, rng) if args.other else None
    transport.partition(target, side, other)
    return f"cut {','.join(side)} from {','.join(other) if other else 'the rest'}"


def _heal(target: Network, args: argparse.Namespace, rng: random.Random) -> str:
    from devnet.faults import transport

    missed = transport.heal(target)
    return "healed" + (f" (no answer from {', '.join(missed)})" if missed else "")


def _frames(target: Network, args: argparse.Namespace, rng: random.Random) -> str:
    from devnet.faults import transport

    node = _one(target, args.node, rng)
    cmd = args.fault_cmd
    if cmd == "delay":
        transport.delay(target, node, args.ms, args.jitter)
        return f"{node}: outgoing frames delayed {args.ms}±{args.jitter} ms"
    if cmd == "replay":
        transport.replay(target, node, args.pct)
        return f"{node}: {args.pct}% of outgoing frames replayed"
    (transport.drop if cmd == "drop" else transport.corrupt)(target, node, args.pct)
    return f"{node}: {cmd} {args.pct}% of outgoing frames"


def _keys(target: Network, args: argparse.Namespace, rng: random.Random) -> str:
    from devnet.faults import keys

    rate: str | int = int(args.rate) if args.rate.isdigit() else args.rate
    keys.set_keys(target, args.link, rate)
    return f"keys on {args.link}: rate {rate}" + (" (stored keys flushed)" if rate == 0 else "")


def _kms(target: Network, args: argparse.Namespace, rng: random.Random) -> str:
    from devnet.faults import keys

    keys.kms_fault(target, args.mode, args.link)
    return f"key manager: {args.mode} on {args.link}"


def _byzantine(target: Network, args: argparse.Namespace, rng: random.Random) -> str:
    from devnet.faults import twins

    node = _one(target, args.node, rng)
    if args.mode == "twin":
        pid = twins.start_twin(target, node)
        return f"twin of {node} started (pid {pid}, log {twins.twin_log(target, node)})"
    if args.mode == "off":
        stopped = twins.stop_twin(target, node)
        twins.byzantine(target, node, None)
        return f"{node}: honest again" + (" (twin stopped)" if stopped else "")
    twins.byzantine(target, node, args.mode)
    return f"{node}: byzantine mode {args.mode}"


def _attack(target: Network, args: argparse.Namespace, rng: random.Random) -> str:
    from devnet.faults import actions
    from devnet.faults.attacker import Attacker, AttackSpec, victims

    everyone = victims(target.plan)
    spec = AttackSpec(
        kind=args.kind,
        targets=tuple(everyone[n] for n in actions.resolve(target, args.target, rng)),
        claims=tuple(
            everyone[n]
            for n in (actions.resolve(target, args.claim, rng) if args.claim else everyone)
        ),
        chain_id=target.plan.chain_id,
        duration_s=args.duration,
        rate=args.rate,
        connections=args.connections,
    )
    stats = asyncio.run(Attacker(spec, rng).run())
    return f"{args.kind} on {','.join(t.name for t in spec.targets)}: {stats.to_json()}"


def _kme_site(target: Network, args: argparse.Namespace, rng: random.Random) -> str:
    from devnet.faults import keys

    node = _one(target, args.node, rng)
    if args.fault_cmd == "kme-down":
        return f"{keys.kme_down(target, node)} stopped"
    keys.kme_up(target, node)
    return f"{target.kme_of(node)} started"


def _kme_pool(target: Network, args: argparse.Namespace, rng: random.Random) -> str:
    from devnet.faults import keys

    if args.fault_cmd == "kme-drain":
        keys.drain(target, args.link, args.rate)
        return f"keys on {args.link}: pools emptied, {args.rate} bits/s"
    keys.refill(target, args.link, args.count)
    return f"keys on {args.link}: {args.count} stored, rate {target.plan.kms_rate}"


def _kme_behaviour(target: Network, args: argparse.Namespace, rng: random.Random) -> str:
    from devnet.faults import actions, keys
    from devnet.running import BackendError

    switches = json.loads(args.switches)
    if not isinstance(switches, dict):
        raise BackendError("give the switches as a JSON object")
    nodes = actions.resolve(target, args.node, rng) if args.node else None
    keys.set_behaviour(target, switches, nodes)
    return f"behaviour of {', '.join(keys.kmes_for_nodes(target, nodes))}: {switches}"


def _corrupt_disk(target: Network, args: argparse.Namespace, rng: random.Random) -> str:
    from devnet.faults import disk

    node = _one(target, args.node, rng)
    where = disk.corrupt_disk(target, node, rng)
    return f"{node}: flipped bit {where['bit']} at offset {where['offset']} of {where['file']}"


_VERBS: dict[str, Callable[[Network, argparse.Namespace, random.Random], str]] = {
    "kill": _process,
    "restart": _process,
    "pause": _process,
    "resume": _process,
    "partition": _partition,
    "heal": _heal,
    "delay": _frames,
    "drop": _frames,
    "corrupt": _frames,
    "replay": _frames,
    "keys": _keys,
    "kms": _kms,
    "byzantine": _byzantine,
    "attack": _attack,
    "kme-down": _kme_site,
    "kme-up": _kme_site,
    "kme-drain": _kme_pool,
    "kme-refill": _kme_pool,
    "kme-behaviour": _kme_behaviour,
    "corrupt-disk": _corrupt_disk,
}
"""The ad-hoc verbs: each perturbs the devnet and returns what to print."""
