"""Run a scenario end to end, in phases:

1. bootstrap: the network, an existing devnet directory (local processes, or Docker with
   `docker=True`), or a fresh local devnet in a temporary directory; then the setup
   (closed loop): a voucher programme with grants for the payers.
2. load: the run's clock starts (time 0 of the timeline, `RunClock`), the load runs
   open-loop for `load.duration_s` and the observer samples every node's `/v1/status`
   (0.5 s), `/v1/qkd` and the key managers' counters (1 s) (`observer`).
3. timeline: each step is applied at its `at` and undone `duration_s` later (`timeline`,
   `actions.PERTURBATIONS`).
4. heal: at `duration_s` everything is healed (`timeline.heal_all`) and the liveness
   clock starts; pending operations may commit until the liveness deadline.
5. check: every node's chain is read block by block and the checks run (`judge`).
6. report: the result, its per-step figures and where to look (`report`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from devnet.faults import twins
from devnet.faults.actions import StepRecord, TimelineState
from devnet.faults.checkers import rejections_total
from devnet.faults.history import History
from devnet.faults.judge import judge
from devnet.faults.load import Accounts, LoadGenerator, setup_vouchers, summarize
from devnet.faults.observer import STATUS_EVERY_S, Observer
from devnet.faults.reconf import collect
from devnet.faults.report import RunResult, hints, max_height, step_stats
from devnet.faults.scenario import SET_CHANGES, Scenario
from devnet.faults.timeline import Timeline, heal_all
from devnet.running import BackendError, Network, open_network
from qchain.client import AsyncClient


@dataclass(frozen=True)
class RunClock:
    """Seconds since time 0 of the timeline. Made once, when the load starts: the
    observer, the load and the timeline all read this one zero."""

    zero: float
    source: Callable[[], float] = time.monotonic

    @classmethod
    def start(cls, source: Callable[[], float] = time.monotonic) -> RunClock:
        return cls(source(), source)

    def __call__(self) -> float:
        return self.source() - self.zero


# --- 1. bootstrap --------------------------------------------------------------------


def fresh_local_network(scenario: Scenario, directory: Path) -> Network:
    """Write and start a local devnet as the scenario's `network` asks."""
    from devnet.local import create_network
    from devnet.network import plan_network

    spec = scenario.network
    plan = plan_network(
        validators=spec.validators,
        base_port=None,
        scheme=spec.scheme,
        heartbeat_ms=spec.heartbeat_ms,
        kms_rate=spec.kms_rate,
        kme_mode="per-node" if spec.kme_per_node else "shared",
        relay_delay_ms=spec.relay_delay_ms,
        reconfiguration=spec.reconfiguration,
    )
    net = create_network(directory, plan)
    net.start_all(min_height=1, timeout=60)
    return net


def stop_network(net: Network) -> None:
    """Stop a local devnet the kit started (twins included)."""
    from devnet.local import LocalNetwork

    for name in net.node_names():
        with contextlib.suppress(OSError, BackendError):
            twins.stop_twin(net, name)
    if isinstance(net, LocalNetwork):
        net.stop()


async def bootstrap(
    scenario: Scenario, devnet: Path | None, docker: bool, log: Callable[[str], None]
) -> tuple[Network, Path]:
    """The network to run on and its directory (a fresh devnet if devnet is None)."""
    if devnet is None and docker:
        raise BackendError("--docker needs --devnet DIR of a running Docker devnet")
    if docker and not scenario.docker_ok:
        raise BackendError(
            f"{scenario.name} needs local processes (twins, P2P attacks or disk corruption)"
        )
    if devnet is not None:
        return open_network(devnet, docker), devnet
    directory = Path(tempfile.mkdtemp(prefix=f"qchain-fault-{scenario.name}-"))
    log(f"starting a fresh {scenario.network.validators}-validator devnet in {directory}")
    return await asyncio.to_thread(fresh_local_network, scenario, directory), directory


async def setup(net: Network, scenario: Scenario, seed: int, rng: random.Random) -> Run:
    """The voucher programme the load uses, then the run's clock and everything that
    reads it."""
    accounts = Accounts(net.plan.scheme, net.plan.chain_id)
    programme = f"fault-{scenario.name}-{seed}-{rng.randrange(1 << 32):08x}".lower()
    client = AsyncClient(net.api_url(net.node_names()[0]), timeout_s=10)
    try:
        await accounts.sync(client)
        await setup_vouchers(client, accounts, programme)
    finally:
        await client.close()
    return start_run(net, scenario, rng, accounts, programme, RunClock.start())


@dataclass
class Run:
    """One run's parts, all on one clock."""

    scenario: Scenario
    clock: RunClock
    history: History
    observer: Observer
    load: LoadGenerator
    state: TimelineState
    records: list[StepRecord]
    stop_observer: asyncio.Event = field(default_factory=asyncio.Event)
    stop_load: asyncio.Event = field(default_factory=asyncio.Event)


def start_run(
    net: Network,
    scenario: Scenario,
    rng: random.Random,
    accounts: Accounts,
    programme: str,
    clock: RunClock,
) -> Run:
    history = History()
    urls = {n: net.api_url(n) for n in net.node_names()}
    observer = Observer(net, history, clock)
    load = LoadGenerator(scenario.load, urls, accounts, programme, rng, clock)

    def follow(names: list[str]) -> None:
        observer.follow(names)
        load.follow({n: net.api_url(n) for n in names})

    return Run(
        scenario=scenario,
        clock=clock,
        history=history,
        observer=observer,
        load=load,
        state=TimelineState(net, rng, history, clock, accounts, follow=follow),
        records=[StepRecord(s) for s in scenario.steps],
    )


# --- 2-5. load, timeline, heal, settle -------------------------------------------------


async def perturb(run: Run, log: Callable[[str], None]) -> float:
    """Load and observe while the timeline runs, heal at the scenario's end, then wait
    for liveness and the pending operations. Returns when everything was healed."""
    scenario = run.scenario
    obs_task = asyncio.create_task(run.observer.run(run.stop_observer))
    # A timeline with steps that follow others (set changes take as long as they take)
    # keeps its load going until the heal.
    chained = any(s.after is not None or s.action in SET_CHANGES for s in scenario.steps)
    load_task = asyncio.create_task(
        run.load.run(
            scenario.load.duration_s or (math.inf if chained else scenario.duration_s),
            run.stop_load,
        )
    )
    try:
        await Timeline(run.state, run.records).run()
        for rec in run.records:
            if rec.error:
                log(f"  step {rec.step.action} at {rec.step.at}s failed: {rec.error}")
        await asyncio.sleep(max(0.0, scenario.duration_s - run.clock()))
        healed_at = run.clock()
        run.history.event(healed_at, "heal-all")
        await heal_all(run.state, run.records)
        run.stop_load.set()
        await load_task
        await settle(run, healed_at)
    finally:
        run.stop_observer.set()
        await obs_task
        run.stop_load.set()
        await run.load.close()
    return healed_at


async def settle(run: Run, healed_at: float) -> None:
    """Wait (polling) until every node passes the heal-time height, the load's pending
    operations are settled, and every node has the highest committed operation."""
    deadline = healed_at + run.scenario.checks.liveness_deadline_s
    base = max_height(run.history.statuses, healed_at)
    while run.clock() < deadline:
        samples = await run.observer.sample_status()
        if all(s.height is not None and s.height > base for s in samples):
            break
        await asyncio.sleep(STATUS_EVERY_S)
    await run.load.drain(deadline)
    top = max((o.height or 0 for o in run.load.ops), default=0)
    while run.clock() < deadline + 10:
        samples = await run.observer.sample_status()
        if all(s.height is not None and s.height >= top for s in samples):
            break
        await asyncio.sleep(STATUS_EVERY_S)


# --- the run -------------------------------------------------------------------------


async def run_scenario(
    scenario: Scenario,
    *,
    devnet: Path | None = None,
    docker: bool = False,
    seed: int | None = None,
    keep: bool = False,
    log: Callable[[str], None] = print,
) -> RunResult:
    seed = scenario.seed if seed is None else seed
    rng = random.Random(seed)
    net, directory = await bootstrap(scenario, devnet, docker, log)
    try:
        run = await setup(net, scenario, seed, rng)
        log(
            f"{scenario.name}: seed {seed}, {len(scenario.steps)} steps "
            f"over {scenario.duration_s:.0f}s"
        )
        healed_at = await perturb(run, log)
        result = await conclude(run, seed, directory, healed_at, keep or devnet is not None)
    finally:
        net.close()
    if devnet is None and not result.kept_up:
        await asyncio.to_thread(stop_network, net)
        shutil.rmtree(directory, ignore_errors=True)
    return result


async def conclude(run: Run, seed: int, directory: Path, healed_at: float, keep: bool) -> RunResult:
    """The check and report phases: last samples, every chain, the verdicts."""
    await run.observer.sample_status()
    await run.observer.sample_qkd()
    run.history.ops = run.load.ops
    chains = await run.observer.chains()
    await run.observer.close()
    evidence = None
    if run.state.net.plan.reconfiguration or run.state.changes:
        evidence = await collect(run.state.net, run.history.ops, run.state.changes)
    checks = judge(run.scenario, run.history, chains, run.state, run.records, healed_at, evidence)
    ok = all(c.ok for c in checks)
    return RunResult(
        scenario=run.scenario,
        seed=seed,
        directory=directory,
        checks=checks,
        history=run.history,
        steps=run.records,
        step_stats=step_stats(run.records, run.history, run.state.net.node_names()),
        healed_at=healed_at,
        load=summarize(run.history.ops),
        rejections=dict(rejections_total(run.history.qkd)),
        kept_up=not ok or keep,
        hints=[] if ok else hints(run.state),
    )
