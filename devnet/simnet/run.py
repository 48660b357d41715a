"""One whole-network simulated run, from a seed to a verdict.

`simulate(spec)` writes a devnet plan (ed25519, the test timing profile) to a temporary
directory, starts `spec.validators` real `Validator`s on a `VirtualLoop` over a `SimNet`,
with a seeded key manager, a simulated disk per node (`devnet.simnet.disk`), a seeded
client and a follower of each node's events, plays the seed's fault schedule, heals,
lets the network recover, and runs the fault kit's checkers and the simulator's own.
The result carries a digest of the event trace: the same seed gives the same digest.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import gc
import hashlib
import logging
import multiprocessing
import os
import random
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devnet.faults.checkers import (
    CheckResult,
    check_acked_committed,
    check_agreement,
    check_app_hash,
    check_equivocation,
    check_key_reuse,
    check_liveness,
    check_lost_writes,
)
from devnet.faults.history import KmsSample
from devnet.joining import add_site
from devnet.network import NetworkPlan, load_plan, plan_network, write_network
from devnet.simnet.client import Client
from devnet.simnet.disk import Crashed, SimDisk, open_disks
from devnet.simnet.forwards import check_forwards_taken
from devnet.simnet.loop import VirtualLoop
from devnet.simnet.mutants import mutant
from devnet.simnet.reconf import SPARES, Changes, Schedule, recording_sets
from devnet.simnet.reconfcheck import (
    chain_sets,
    check_certificate_signers,
    check_reconf_flow,
    check_sets_followed,
)
from devnet.simnet.schedule import Action, draw, heal_time
from devnet.simnet.watch import check_events_followed, empty_block_times
from devnet.simnet.world import SAMPLE_EVERY_S, World
from qchain.config import NodeConfig, load_config
from qchain.qkd import certs

SPIN_BLOCKS_PER_S = 20
"""More empty blocks than this in one second of the chain is a leader spinning out
blocks (the pacing allows far fewer: CONSENSUS.md, the heartbeat and the propose wait)."""
SETTLE_S = 3.0
"""The client stops new transactions this long before the end, so the last ones commit."""


@dataclass(frozen=True)
class Spec:
    validators: int = 4
    seed: int = 0
    seconds: float = 20.0
    faults: bool = True
    crashes: bool = True
    actions: tuple[Action, ...] | None = None
    """A fixed schedule (a fault-kit scenario); None: drawn from the seed."""
    mutant: str | None = None
    """A first-wave bug put back (`devnet.simnet.mutants`)."""
    scenario: str | None = None
    """The scenario file the fixed schedule came from (for the replay command)."""
    burst_scale: float = 1.0
    """Multiplies a drawn burst's rate and peak (`devnet.simnet.schedule.draw`)."""
    client: str = "careful"
    """How the client behaves (`devnet.simnet.client.CLIENT_MODES`): `careful` holds a
    sender's later nonces in a burst while one is refused, `eager` sends them regardless,
    `patient` is careful and trusts an acknowledgement for 6 s."""
    reconf: bool = False
    """The genesis enables set changes; a spare site is added, then a member removed, on
    a seeded schedule (`devnet.simnet.reconf`)."""
    store: str = "memory"
    """The nodes' disks: `memory` (LevelDB's crash semantics, unsynced writes lost as
    the seed draws) or `leveldb` (plyvel in a temporary directory): `devnet.simnet.disk`."""

    def command(self) -> str:
        """The shortest command that reproduces this run."""
        parts = ["qchain sim net", f"--seed {self.seed}"]
        if self.validators != 4:
            parts.append(f"--validators {self.validators}")
        if self.seconds != 20.0 and self.scenario is None:
            parts.append(f"--seconds {self.seconds:g}")
        if not self.faults:
            parts.append("--no-faults")
        elif not self.crashes:
            parts.append("--no-crashes")
        if self.scenario is not None:
            parts.append(f"--scenario {self.scenario}")
        if self.mutant is not None:
            parts.append(f"--mutant {self.mutant}")
        if self.store != "memory":
            parts.append(f"--store {self.store}")
        if self.burst_scale != 1.0:
            parts.append(f"--burst-scale {self.burst_scale:g}")
        if self.client != "careful":
            parts.append(f"--client {self.client}")
        if self.reconf:
            parts.append("--reconf")
        return " ".join([*parts, "--replay"])


@dataclass
class Outcome:
    spec: Spec
    checks: list[CheckResult]
    digest: str
    events: int
    heights: dict[str, int]
    wall_s: float
    trace: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[str]:
        """Each failed check: its name, summary and details."""
        return [f"{c.name}: {c.summary} {c.details}" for c in self.checks if not c.ok]

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.spec.seed,
            "ok": self.ok,
            "virtual_s": self.spec.seconds,
            "wall_s": round(self.wall_s, 3),
            "heights": self.heights,
            "trace_events": self.events,
            "trace_digest": self.digest,
            "checks": [c.to_json() for c in self.checks],
            "errors": self.errors[:20],
            "replay": self.spec.command(),
        }


class Trace:
    def __init__(self, loop: VirtualLoop, keep: bool) -> None:
        self.loop = loop
        self.hash = hashlib.sha256()
        self.count = 0
        self.lines: list[str] | None = [] if keep else None

    def __call__(self, kind: str, *detail: Any) -> None:
        line = f"{self.loop.time():.6f} {kind} {' '.join(map(str, detail))}"
        self.hash.update(line.encode() + b"\n")
        self.count += 1
        if self.lines is not None:
            self.lines.append(line)


def sweep(specs: Sequence[Spec], jobs: int = 1) -> Iterator[Outcome]:
    """The outcomes of `specs`, in their order. With jobs > 1 the runs go to that many
    worker processes, spawned with `PYTHONHASHSEED=0` as the command runs (each run
    depends on its spec alone, so where it runs changes nothing of it); jobs 0 is one
    per core. Spawned workers import the caller's main module again: a script that
    calls this with jobs > 1 keeps its work under `if __name__ == "__main__":`."""
    jobs = jobs or os.cpu_count() or 1
    if jobs <= 1 or len(specs) <= 1:
        for spec in specs:
            yield simulate(spec)
        return
    saved = os.environ.get("PYTHONHASHSEED")
    os.environ["PYTHONHASHSEED"] = "0"  # the workers start with it (spawned lazily)
    try:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(min(jobs, len(specs)), context) as pool:
            yield from pool.map(simulate, specs)
    finally:
        if saved is None:
            os.environ.pop("PYTHONHASHSEED", None)
        else:
            os.environ["PYTHONHASHSEED"] = saved


def simulate(spec: Spec, *, keep_trace: bool = False) -> Outcome:
    started = time.perf_counter()
    loop = VirtualLoop(spec.seed)
    trace = Trace(loop, keep_trace)
    errors: list[str] = []

    def on_error(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, Crashed):
            return  # the end of a step that a crash interrupted
        errors.append(f"{loop.time():.3f} {context.get('message')}: {exc!r}")

    loop.set_exception_handler(on_error)
    logging.disable(logging.CRITICAL)
    network = _network(spec.validators, spec.reconf)
    changes = Changes()
    with (
        mutant(spec.mutant),
        recording_sets(changes),
        tempfile.TemporaryDirectory(prefix="qchain-simdisk-") as tmp,
    ):
        disks = open_disks(spec.store, len(network[0].nodes), spec.seed, Path(tmp))
        try:
            checks, heights = loop.run_until_complete(
                _main(spec, network, loop, trace, disks, changes)
            )
        finally:
            _drain(loop)
            # A task that failed and was never awaited is reported when it is collected:
            # now, to this run's handler, rather than whenever the collector runs.
            gc.collect()
            loop.close()
            logging.disable(logging.NOTSET)
            for disk in disks:
                disk.release()
    return Outcome(
        spec,
        checks,
        trace.hash.hexdigest(),
        trace.count,
        heights,
        time.perf_counter() - started,
        trace.lines or [],
        errors,
    )


SIM_POOL_TXS = 1280
"""The simulated validators' pool: 1,280 pending transactions (a quarter of them a
node's own clients' share), and as many from one sender (the workload has two). Small
enough that a burst can fill a leader's pool, large enough for blocks of over 1,024
transactions."""


def _sim_config(cfg: NodeConfig) -> NodeConfig:
    """A node's configuration in the simulator: signature checks inline (the virtual
    loop cannot wait on a worker process), and the simulated pool's size."""
    return dataclasses.replace(
        cfg,
        node=dataclasses.replace(cfg.node, verify_workers=0),
        mempool=dataclasses.replace(cfg.mempool, max_txs=SIM_POOL_TXS, max_per_sender=SIM_POOL_TXS),
    )


def _drain(loop: VirtualLoop) -> None:
    """Cancel what crashed nodes left behind, so the loop closes clean."""
    left = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in left:
        t.cancel()
    if left:
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())


_NETWORKS: dict[tuple[int, bool], tuple[NetworkPlan, Path]] = {}
_TMP: list[tempfile.TemporaryDirectory[str]] = []


def _network(validators: int, reconf: bool = False) -> tuple[NetworkPlan, Path]:
    """The devnet plan of `validators` nodes, written once per process (its keys and
    genesis do not depend on the seed; every run has its own memory stores). With
    `reconf`, the genesis enables set changes and `SPARES` more sites are written as
    `qchain devnet add-validator` writes them, at fixed ports (a run's transactions name
    the joiner's address, so they must not depend on the process)."""
    if (validators, reconf) not in _NETWORKS:
        if not _TMP:
            _TMP.append(tempfile.TemporaryDirectory(prefix="qchain-simnet-"))
        directory = Path(_TMP[0].name) / f"n{validators}{'-reconf' if reconf else ''}"
        base = 27000
        plan = plan_network(
            base_port=base,
            scheme="ed25519",
            heartbeat_ms=200,
            validators=validators,
            reconfiguration=reconf,
        )
        write_network(directory, plan)
        if reconf:
            # add_site issues the site's client certificate from the devnet's CA (the
            # simulator's key manager is in-process and never reads it).
            (directory / "ca").mkdir()
            certs.save(certs.make_ca(), directory / "ca" / "ca.pem", directory / "ca" / "ca.key")
        for i in range(validators, validators + SPARES if reconf else validators):
            add_site(directory, (base + 100 + i, base + 200 + i, base + 300 + i))
        _NETWORKS[(validators, reconf)] = (load_plan(directory), directory)
    return _NETWORKS[(validators, reconf)]


async def _main(
    spec: Spec,
    network: tuple[NetworkPlan, Path],
    loop: VirtualLoop,
    trace: Trace,
    disks: list[SimDisk],
    changes: Changes,
) -> tuple[list[CheckResult], dict[str, int]]:
    plan, directory = network
    configs = [
        _sim_config(load_config(directory / "nodes" / n.name / "config.toml")) for n in plan.nodes
    ]
    world = World(loop, plan, configs, spec.seed, trace, disks, spec.validators)
    if spec.actions is not None:
        actions = list(spec.actions)
    elif spec.faults:
        actions = draw(
            random.Random(spec.seed),
            len(plan.nodes),
            spec.seconds,
            crashes=spec.crashes,
            burst_scale=spec.burst_scale,
        )
    else:
        actions = []
    heals = [a.t for a in actions if a.kind == "heal"]
    healed_at = max(heals) if heals else heal_time(spec.seconds) if actions else 0.0
    for i in range(spec.validators):
        await world.start(i)
    client = world.client = Client(world, spec.seconds - SETTLE_S, spec.client)
    background = [loop.create_task(client.run()), loop.create_task(_sampler(world))]
    if spec.reconf:
        background.append(loop.create_task(Schedule(world, plan, spec.validators, changes).run()))
    for a in actions:
        await asyncio.sleep(max(0.0, a.t - loop.time()))
        await world.apply(a)
    await asyncio.sleep(max(0.0, spec.seconds - loop.time()))
    client._poll()
    world.sample()
    background += client.tasks
    for t in background:
        t.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    checks = _judge(world, spec, healed_at, tampering=bool(actions))
    if spec.reconf:
        checks += _judge_changes(world, changes)
    chains = world.chains(retired=True)
    for name, blocks in sorted(chains.items()):
        for h, b in sorted(blocks.items()):
            trace("block", name, h, b.hash[:16], b.app_hash[:16], len(b.txs))
    heights = {name: max(blocks, default=0) for name, blocks in chains.items()}
    await world.stop_all()
    return checks, heights


async def _sampler(world: World) -> None:
    while True:
        world.sample()
        await asyncio.sleep(SAMPLE_EVERY_S)


def check_block_rate(empty_block_times: list[float], limit: int) -> CheckResult:
    """At most `limit` empty blocks in any one second at the chain's tip (the times at
    which the first node committed them). Blocks that carry transactions do not count:
    under load the pacing lets a leader build faster, and that is not a spin."""
    times = sorted(empty_block_times)
    worst, at = 0, 0.0
    j = 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        if i - j + 1 > worst:
            worst, at = i - j + 1, t
    ok = worst <= limit
    summary = f"at most {worst} empty blocks in one second" + (
        "" if ok else f" (at {at:.1f}s; the bound is {limit})"
    )
    return CheckResult("no-block-spin", ok, summary, data={"max_empty_blocks_per_s": worst})


def _judge_changes(world: World, changes: Changes) -> list[CheckResult]:
    up = [v for v in world.nodes if v is not None]
    top = max(up, key=lambda v: v.chain.height())
    truth = chain_sets(top, top.chain.height() + 2)
    return [
        check_reconf_flow(changes),
        check_sets_followed(changes.starts, truth, world.names),
        check_certificate_signers(world.signers(), truth),
    ]


def _judge(world: World, spec: Spec, healed_at: float, *, tampering: bool) -> list[CheckResult]:
    chains = world.chains()
    rec = world.rec
    deadline = spec.seconds - healed_at - 0.5
    # The nodes' counters are stamped with the time rounded to the millisecond
    # (`World.qkd_now`); the key manager's must not be stamped before them (virtual time
    # sums floats: 19.999999999999996 rounds up to 20.0), or the check compares no link.
    kms = [KmsSample(round(world.loop.time(), 3), world.kms_now())]
    final = [n for i, n in enumerate(world.names) if i not in world.absent]
    checks = [
        check_agreement(world.chains(retired=True)),
        check_app_hash(world.chains(retired=True)),
        check_lost_writes(rec.ops, chains),
        check_acked_committed(rec.ops),
        check_liveness(rec.statuses, final, healed_at, deadline),
        check_key_reuse(
            world.qkd_now(), kms, {p.name: p.sae_id for p in world.plan.nodes}, tampering
        ),
        check_equivocation(
            rec.alerts,
            "ignore" if world.byzantine else "absent",
            [world.names[i] for i in sorted(world.byzantine)],
        ),
        check_block_rate(empty_block_times(world.follows), SPIN_BLOCKS_PER_S),
        CheckResult(
            "no-frame-accepted-twice",
            not rec.accepted_twice,
            f"{len(rec.accepted)} frames accepted, none twice"
            if not rec.accepted_twice
            else f"{len(rec.accepted_twice)} frames accepted twice",
            tuple(rec.accepted_twice[:20]),
        ),
        check_events_followed(world.follows),
        check_forwards_taken(
            world.live_forwards(),
            world.forwards_queued(),
            [world.names[i] for i in sorted(world.byzantine)],
        ),
        CheckResult(
            "durable-commits",
            not rec.regressions,
            "no node restarted below a height it had reported"
            if not rec.regressions
            else f"{len(rec.regressions)} restarts below a reported height",
            tuple(rec.regressions[:20]),
        ),
    ]
    return checks
