"""Run a scenario end to end: network, load, timeline, observation, checks, report.

1. The network: an existing devnet directory (local processes, or Docker with
   `docker=True`), or a fresh local devnet in a temporary directory.
2. Setup (closed loop): a voucher programme with grants for the payers.
3. Load starts (time 0 of the timeline) and runs open-loop for `load.duration_s`; the
   timeline applies each step at its `at`, and undoes it `duration_s` later. Observers
   sample every node's `/v1/status` (0.5 s), `/v1/qkd` and the key manager's counters
   (1 s).
4. At `duration_s` everything is healed (transport rules cleared, paused nodes resumed,
   dead nodes started, Byzantine modes off, twins stopped, key manager cleared): the
   liveness clock starts. Pending operations may commit until the liveness deadline.
5. Every node's chain is read block by block and the checks run (`checkers`).

Recovery time of a step = seconds from its undo until every node is above the highest
height any node had at the undo. Transactions committed during a step = acknowledged
operations whose commit height lies between the highest heights at its start and end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devnet.faults import actions
from devnet.faults.attacker import Attacker, AttackError, AttackSpec, victims
from devnet.faults.backends import BackendError, DockerTarget, LocalTarget, Target
from devnet.faults.checkers import (
    CheckResult,
    check_acked_committed,
    check_agreement,
    check_app_hash,
    check_equivocation,
    check_halt,
    check_key_reuse,
    check_latency,
    check_liveness,
    check_lost_writes,
    check_no_restart,
    check_progress,
    check_readiness,
    check_resume,
    check_served_blocks,
    check_starvation,
    rejections_total,
)
from devnet.faults.history import (
    BlockView,
    ChainViews,
    History,
    KmsSample,
    QkdSample,
    ReadySample,
    StatusSample,
    link_counters_from_qkd,
)
from devnet.faults.load import Accounts, LoadGenerator, partner_flood, setup_vouchers, summarize
from devnet.faults.scenario import Scenario, Step
from qchain.client import AsyncClient
from qchain.errors import ApiError, CodecError, NodeUnavailable
from qchain.types import Block

STATUS_EVERY_S = 0.5
QKD_EVERY_S = 1.0
TAMPERING = ("corrupt", "replay")
TAMPERING_MODES = ("forge-mac", "twin")


@dataclass
class StepRecord:
    step: Step
    nodes: list[str] = field(default_factory=list)
    applied_at: float | None = None
    undone_at: float | None = None
    error: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    """What an attack, flood or disk step did (its counters, the flipped bit)."""


@dataclass
class RunResult:
    scenario: Scenario
    seed: int
    directory: Path
    checks: list[CheckResult]
    history: History
    steps: list[StepRecord]
    step_stats: list[dict[str, Any]]
    healed_at: float
    load: dict[str, int]
    rejections: dict[str, int]
    kept_up: bool
    hints: list[str]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.name,
            "seed": self.seed,
            "ok": self.ok,
            "directory": str(self.directory),
            "network_left_up": self.kept_up,
            "checks": [c.to_json() for c in self.checks],
            "steps": self.step_stats,
            "healed_at": round(self.healed_at, 3),
            "load": self.load,
            "frame_rejections": self.rejections,
            "where_to_look": self.hints,
            "history": self.history.to_json(),
        }


# --- network setup -------------------------------------------------------------------


def fresh_local_network(scenario: Scenario, directory: Path) -> LocalTarget:
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
    )
    create_network(directory, plan)
    target = LocalTarget(directory)
    target.net.start_all(min_height=1, timeout=60)
    return target


def open_target(directory: Path, docker: bool) -> Target:
    return DockerTarget(directory) if docker else LocalTarget(directory)


def stop_network(target: Target) -> None:
    for name in target.node_names():
        with contextlib.suppress(OSError, BackendError):
            actions.stop_twin(target, name)
    if isinstance(target, LocalTarget):
        target.net.stop()


# --- observation ---------------------------------------------------------------------


class Observer:
    def __init__(self, target: Target, history: History, clock: Callable[[], float]) -> None:
        self.target = target
        self.history = history
        self.clock = clock
        self.names = target.node_names()
        self.sae_to_node = {n.sae_id: n.name for n in target.plan.nodes}
        self.clients = {n: AsyncClient(target.api_url(n), timeout_s=2.0) for n in self.names}
        self.kme_last: dict[str, dict[str, dict[str, int]]] = {}
        """Each key manager's counters as last read."""
        self.kme_base: dict[str, dict[str, dict[str, int]]] = {}
        """Each key manager's counters before its latest restart."""

    async def status(self, name: str) -> StatusSample:
        t = self.clock()
        try:
            st = await asyncio.wait_for(self.clients[name].status(), 2.0)
        except (NodeUnavailable, ApiError, TimeoutError):
            return StatusSample(t, name, None, latency_s=round(self.clock() - t, 4))
        return StatusSample(
            t,
            name,
            int(st.get("height", 0)),
            {str(k): int(v) for k, v in (st.get("alerts") or {}).items()},
            st.get("halted"),
            round(self.clock() - t, 4),
            None if st.get("uptime_s") is None else float(st["uptime_s"]),
        )

    async def ready(self, name: str) -> ReadySample:
        t = self.clock()
        try:
            ok, reasons = await asyncio.wait_for(self.clients[name].ready(), 2.0)
        except (NodeUnavailable, ApiError, TimeoutError):
            return ReadySample(t, name, None)
        return ReadySample(t, name, ok, tuple(reasons))

    async def sample_status(self) -> list[StatusSample]:
        samples, readiness = await asyncio.gather(
            asyncio.gather(*(self.status(n) for n in self.names)),
            asyncio.gather(*(self.ready(n) for n in self.names)),
        )
        self.history.statuses.extend(samples)
        self.history.readiness.extend(readiness)
        return list(samples)

    async def qkd(self, name: str) -> QkdSample | None:
        t = self.clock()
        try:
            doc = await asyncio.wait_for(self.clients[name].qkd(), 2.0)
        except (NodeUnavailable, ApiError, TimeoutError):
            return None
        return QkdSample(t, name, link_counters_from_qkd(doc, self.sae_to_node))

    async def sample_qkd(self) -> None:
        # All nodes at once: a node that hangs must not delay the others' samples.
        for sample in await asyncio.gather(*(self.qkd(n) for n in self.names)):
            if sample is not None:
                self.history.qkd.append(sample)
        t = self.clock()
        try:
            per_kme = await asyncio.to_thread(self._kme_links)
        except (OSError, BackendError, ValueError):
            return
        self.history.kms.append(KmsSample(t, actions.sum_links(per_kme)))

    def _kme_links(self) -> list[dict[str, dict[str, int]]]:
        """Every key manager's counters, carried over its restarts (a restarted KME counts
        from zero; the keys it handed out before still count)."""
        out = []
        for kme in self.target.kme_names():
            now = actions.kme_links(self.target, kme)
            last = self.kme_last.get(kme, {})
            base = self.kme_base.get(kme, {})
            if actions.restarted(last, now):
                final = self.history.kme_at_stop.pop(kme, {})
                base = actions.carry_over(base, last, final)
                self.kme_base[kme] = base
            self.kme_last[kme] = now
            out.append(actions.sum_links([base, now]))
        return out

    async def run(self, stop: asyncio.Event) -> None:
        # Key counters are read beside the status loop, so nodes that hang (their reads
        # time out) do not stretch the status samples' cadence.
        next_qkd = 0.0
        qkd: asyncio.Task[None] | None = None
        while not stop.is_set():
            await self.sample_status()
            if self.clock() >= next_qkd and (qkd is None or qkd.done()):
                qkd = asyncio.create_task(self.sample_qkd())
                next_qkd = self.clock() + QKD_EVERY_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STATUS_EVERY_S)
        if qkd is not None:
            await qkd

    async def chains(self) -> ChainViews:
        """Every node's chain. A block that does not verify against its own header (the
        client checks tx_root) is left out and recorded in `history.bad_blocks`."""
        out: ChainViews = {}
        for name in self.names:
            blocks: dict[int, BlockView] = {}
            start = 1
            with contextlib.suppress(NodeUnavailable, ApiError):
                while True:
                    try:
                        page = await self.clients[name].blocks(start, 100)
                    except CodecError:
                        page, full = await self._one_by_one(name, start, 100)
                    else:
                        full = len(page) == 100
                    for b in page:
                        blocks[b.height] = BlockView(
                            b.height,
                            b.hash.hex(),
                            b.header.app_hash.hex(),
                            tuple(tx.hash.hex() for tx in b.txs),
                        )
                    if not full:
                        break
                    start += 100
            out[name] = blocks
        return out

    async def _one_by_one(self, name: str, start: int, count: int) -> tuple[list[Block], bool]:
        """The blocks start..start+count-1 one at a time, recording those that do not
        verify. Returns the good ones and whether the node had the whole range."""
        good: list[Block] = []
        for h in range(start, start + count):
            try:
                page = await self.clients[name].blocks(h, 1)
            except CodecError as e:
                self.history.bad_blocks.setdefault(name, []).append(f"height {h}: {e.message}")
                continue
            if not page:
                return good, False
            good += page
        return good, True

    async def close(self) -> None:
        for c in self.clients.values():
            await c.close()


# --- the timeline --------------------------------------------------------------------


class Timeline:
    def __init__(
        self,
        target: Target,
        scenario: Scenario,
        rng: random.Random,
        history: History,
        clock: Callable[[], float],
        accounts: Accounts | None = None,
    ) -> None:
        self.target = target
        self.scenario = scenario
        self.rng = rng
        self.history = history
        self.clock = clock
        self.accounts = accounts
        self.records = [StepRecord(s) for s in scenario.steps]
        self.byzantine: set[str] = set()
        self.twins: set[str] = set()
        self.damaged: set[str] = set()
        """Nodes whose disk a step corrupted."""
        self.kmes_down: set[str] = set()
        """Nodes whose KME a `kme-down` step stopped and no undo started yet."""
        self.drained: dict[str, int] = {}
        """Links a `kme-drain` emptied and no undo refilled yet: the refill count."""
        self.attacks: dict[int, asyncio.Task[dict[str, Any]]] = {}

    async def _at(self, t: float) -> None:
        delay = t - self.clock()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def apply(self, rec: StepRecord) -> None:
        s = rec.step
        tg = self.target
        sel = s.param("target") or s.param("nodes") or ()
        if sel:
            rec.nodes = await self._call(actions.resolve, tg, sel, self.rng)
        other = list(s.param("from") or ())
        if other:
            other = await self._call(actions.resolve, tg, other, self.rng)
        rec.applied_at = self.clock()
        a = s.action
        if a in ("kill", "restart", "stop", "pause"):
            for name in rec.nodes:
                if a == "kill":
                    await self._call(actions.kill, tg, name)
                elif a == "restart":
                    await self._call(actions.restart, tg, name)
                elif a == "stop":
                    await self._call(tg.stop, name)
                else:
                    await self._call(actions.pause, tg, name)
        if a == "partition":
            await self._call(actions.partition, tg, rec.nodes, other)
        elif a == "flap":
            end = s.at + (s.duration_s or 0)
            period = float(s.param("period_s"))
            while self.clock() + period / 2 <= end:
                await self._call(actions.partition, tg, rec.nodes, other)
                self.history.event(self.clock(), "flap-cut", nodes=rec.nodes)
                await asyncio.sleep(period / 2)
                await self._call(actions.unpartition, tg, rec.nodes, other)
                self.history.event(self.clock(), "flap-heal", nodes=rec.nodes)
                await asyncio.sleep(period / 2)
            rec.undone_at = self.clock()
        elif a == "heal":
            await self._call(actions.heal, tg)
        elif a == "delay":
            for n in rec.nodes:
                await self._call(actions.delay, tg, n, s.param("ms"), s.param("jitter_ms", 0))
        elif a in ("drop", "corrupt", "replay"):
            fn = {"drop": actions.drop, "corrupt": actions.corrupt, "replay": actions.replay}[a]
            for n in rec.nodes:
                await self._call(fn, tg, n, s.param("pct"))
        elif a == "keys":
            await self._call(actions.set_keys, tg, s.param("link"), s.param("rate"))
        elif a == "kms":
            await self._call(actions.kms_fault, tg, s.param("mode"), s.param("link"))
        elif a == "kme-down":
            for n in rec.nodes:
                self.kmes_down.add(n)
                kme = await self._call(tg.kme_of, n)
                with contextlib.suppress(OSError, BackendError, ValueError):
                    self.history.kme_at_stop[kme] = await self._call(actions.kme_links, tg, kme)
                rec.detail[n] = await self._call(actions.kme_down, tg, n)
        elif a == "kme-behaviour":
            switches = dict(s.param("switches"))
            await self._call(actions.set_behaviour, tg, switches, rec.nodes or None)
        elif a == "kme-drain":
            self.drained[s.param("link")] = s.param("refill")
            await self._call(actions.drain, tg, s.param("link"), s.param("rate"))
        elif a == "byzantine":
            mode = s.param("mode")
            for n in rec.nodes:
                self.byzantine.add(n)
                if mode == "twin":
                    self.twins.add(n)
                    await self._call(actions.start_twin, tg, n)
                else:
                    await self._call(actions.byzantine, tg, n, mode)
        elif a == "attack":
            self.attacks[id(rec)] = asyncio.create_task(self._attack(rec))
        elif a == "partner-flood":
            if self.accounts is None:
                raise BackendError("partner-flood needs the run's accounts")
            urls = {n: tg.api_url(n) for n in tg.node_names()}
            tag = f"flood-{self.rng.randrange(1 << 32):08x}"
            rec.detail = await partner_flood(
                urls, self.accounts, s.param("account"), s.param("count"), tag
            )
        elif a == "corrupt-disk":
            for n in rec.nodes:
                self.damaged.add(n)
                rec.detail[n] = await self._call(actions.corrupt_disk, tg, n, self.rng)
        self.history.event(rec.applied_at, a, nodes=rec.nodes, params=dict(s.params), **rec.detail)

    async def _attack(self, rec: StepRecord) -> dict[str, Any]:
        s = rec.step
        everyone = victims(self.target.plan)
        claims = s.param("claim")
        claimed = (
            await self._call(actions.resolve, self.target, claims, self.rng)
            if claims
            else list(everyone)
        )
        spec = AttackSpec(
            kind=s.param("mode"),
            targets=tuple(everyone[n] for n in rec.nodes),
            claims=tuple(everyone[n] for n in claimed),
            chain_id=self.target.plan.chain_id,
            duration_s=float(s.duration_s or 0.0),
            rate=s.param("rate"),
            connections=s.param("connections"),
        )
        stats = await Attacker(spec, self.rng).run()
        return stats.to_json()

    async def undo(self, rec: StepRecord) -> None:
        s = rec.step
        tg = self.target
        a = s.action
        if a == "kill" or a == "stop":
            for n in rec.nodes:
                await self._call(actions.start, tg, n)
        elif a == "pause":
            for n in rec.nodes:
                await self._call(actions.resume, tg, n)
        elif a == "partition":
            await self._call(
                actions.unpartition, tg, rec.nodes, list(s.param("from") or ()) or None
            )
        elif a in actions.RULE_OF_ACTION:
            for n in rec.nodes:
                await self._call(actions.clear_rule, tg, n, a)
        elif a == "keys":
            await self._call(actions.set_keys, tg, s.param("link"), tg.plan.kms_rate)
        elif a == "kms":
            await self._call(actions.kms_fault, tg, "clear", s.param("link"))
        elif a == "kme-down":
            for n in rec.nodes:
                await self._call(actions.kme_up, tg, n)
                self.kmes_down.discard(n)
        elif a == "kme-behaviour":
            await self._call(actions.set_behaviour, tg, {}, rec.nodes or None)
        elif a == "kme-drain":
            link = s.param("link")
            await self._call(actions.refill, tg, link, self.drained.pop(link, s.param("refill")))
        elif a == "byzantine":
            for n in rec.nodes:
                if s.param("mode") == "twin":
                    await self._call(actions.stop_twin, tg, n)
                else:
                    with contextlib.suppress(OSError, BackendError):
                        await self._call(actions.byzantine, tg, n, None)
        elif a == "attack":
            task = self.attacks.pop(id(rec), None)
            if task is not None:
                rec.detail = await task
        rec.undone_at = self.clock()
        self.history.event(rec.undone_at, f"undo {a}", nodes=rec.nodes)

    async def _one(self, rec: StepRecord) -> None:
        await self._at(rec.step.at)
        try:
            await self.apply(rec)
            if rec.step.duration_s is not None and rec.step.action != "flap":
                await self._at(rec.step.end)
                await self.undo(rec)
        except (OSError, BackendError, AttackError) as e:
            rec.error = str(e)
            self.history.event(self.clock(), "error", step=rec.step.action, detail=str(e))

    async def run(self) -> None:
        await asyncio.gather(*(self._one(r) for r in self.records))

    async def heal_all(self) -> None:
        """Undo everything: the end of the timeline."""
        tg = self.target
        for task in self.attacks.values():
            task.cancel()
        await asyncio.gather(*self.attacks.values(), return_exceptions=True)
        self.attacks.clear()
        for n in self.twins:
            await self._call(actions.stop_twin, tg, n)
        await self._call(actions.heal, tg)
        for name in tg.node_names():
            with contextlib.suppress(OSError, BackendError):
                await self._call(tg.resume, name)
            if not await self._call(tg.alive, name):
                await self._call(tg.start, name)
        for name in self.byzantine - self.twins:
            with contextlib.suppress(OSError, BackendError):
                await self._call(actions.byzantine, tg, name, None)
        for n in sorted(self.kmes_down):
            with contextlib.suppress(OSError, BackendError):
                await self._call(actions.kme_up, tg, n)
        self.kmes_down.clear()
        for link, count in sorted(self.drained.items()):
            with contextlib.suppress(OSError, BackendError):
                await self._call(actions.refill, tg, link, count)
        self.drained.clear()
        if any(r.step.action == "kme-behaviour" for r in self.records):
            with contextlib.suppress(OSError, BackendError):
                await self._call(actions.set_behaviour, tg, {}, None)
        with contextlib.suppress(OSError, BackendError):
            await self._call(actions.kms_fault, tg, "clear", "all")
        # Nodes just started answer after a moment: clear their rules once they do.
        deadline = self.clock() + 30
        while self.clock() < deadline:
            missed = await self._call(actions.heal, tg)
            if not missed:
                break
            await asyncio.sleep(0.5)


# --- the run -------------------------------------------------------------------------


def _max_height(samples: list[StatusSample], t: float) -> int:
    best: dict[str, int] = {}
    for s in samples:
        if s.t <= t and s.height is not None:
            best[s.node] = s.height
    return max(best.values(), default=0)


def _step_stats(rec: StepRecord, history: History, nodes: list[str]) -> dict[str, Any]:
    s = rec.step
    out: dict[str, Any] = {
        "action": s.action,
        "at": s.at,
        "duration_s": s.duration_s,
        "nodes": rec.nodes,
        "params": dict(s.params),
        "error": rec.error,
        "detail": rec.detail,
    }
    if rec.applied_at is None:
        return out
    end = rec.undone_at if rec.undone_at is not None else rec.applied_at
    h0 = _max_height(history.statuses, rec.applied_at)
    h1 = _max_height(history.statuses, end)
    out["height_at_start"] = h0
    out["height_at_end"] = h1
    out["txs_committed_during"] = sum(
        1 for o in history.ops if o.height is not None and h0 < o.height <= h1
    )
    if rec.undone_at is not None and s.duration_s:
        reached: dict[str, float] = {}
        for smp in sorted(history.statuses, key=lambda x: x.t):
            if smp.t >= rec.undone_at and smp.height is not None and smp.height > h1:
                reached.setdefault(smp.node, smp.t - rec.undone_at)
        out["recovery_s"] = round(max(reached.values()), 2) if set(nodes) <= set(reached) else None
    return out


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
    fresh = devnet is None
    if fresh and docker:
        raise BackendError("--docker needs --devnet DIR of a running Docker devnet")
    if docker and not scenario.docker_ok:
        raise BackendError(
            f"{scenario.name} needs local processes (twins, P2P attacks or disk corruption)"
        )
    directory = (
        Path(tempfile.mkdtemp(prefix=f"qchain-fault-{scenario.name}-"))
        if devnet is None
        else devnet
    )
    if fresh:
        log(f"starting a fresh {scenario.network.validators}-validator devnet in {directory}")
        target: Target = await asyncio.to_thread(fresh_local_network, scenario, directory)
    else:
        target = open_target(directory, docker)
    try:
        return await _run_on(target, scenario, seed, rng, directory, fresh, keep, log)
    finally:
        target.close()


async def _run_on(
    target: Target,
    scenario: Scenario,
    seed: int,
    rng: random.Random,
    directory: Path,
    fresh: bool,
    keep: bool,
    log: Callable[[str], None],
) -> RunResult:
    history = History()
    t0 = time.monotonic()

    def clock() -> float:
        return time.monotonic() - t0

    observer = Observer(target, history, clock)
    names = target.node_names()
    accounts = Accounts(target.plan.scheme, target.plan.chain_id)
    programme = f"fault-{scenario.name}-{seed}-{rng.randrange(1 << 32):08x}".lower()
    setup_client = AsyncClient(target.api_url(names[0]), timeout_s=10)
    try:
        await accounts.sync(setup_client)
        await setup_vouchers(setup_client, accounts, programme)
    finally:
        await setup_client.close()
    urls = {n: target.api_url(n) for n in names}
    gen = LoadGenerator(scenario.load, urls, accounts, programme, rng, clock)
    timeline = Timeline(target, scenario, rng, history, clock, accounts)
    stop_obs = asyncio.Event()
    stop_load = asyncio.Event()
    t0 = time.monotonic()
    log(
        f"{scenario.name}: seed {seed}, {len(scenario.steps)} steps over {scenario.duration_s:.0f}s"
    )
    obs_task = asyncio.create_task(observer.run(stop_obs))
    load_task = asyncio.create_task(
        gen.run(scenario.load.duration_s or scenario.duration_s, stop_load)
    )
    try:
        await timeline.run()
        for rec in timeline.records:
            if rec.error:
                log(f"  step {rec.step.action} at {rec.step.at}s failed: {rec.error}")
        await asyncio.sleep(max(0.0, scenario.duration_s - clock()))
        healed_at = clock()
        history.event(healed_at, "heal-all")
        await timeline.heal_all()
        stop_load.set()
        await load_task
        deadline = healed_at + scenario.checks.liveness_deadline_s
        # Liveness: wait (polling) until every node passes the heal-time height.
        base = _max_height(history.statuses, healed_at)
        while clock() < deadline:
            samples = await observer.sample_status()
            if all(s.height is not None and s.height > base for s in samples):
                break
            await asyncio.sleep(STATUS_EVERY_S)
        await gen.drain(deadline)
        top = max((o.height or 0 for o in gen.ops), default=0)
        while clock() < deadline + 10:
            samples = await observer.sample_status()
            if all(s.height is not None and s.height >= top for s in samples):
                break
            await asyncio.sleep(STATUS_EVERY_S)
    finally:
        stop_obs.set()
        await obs_task
        stop_load.set()
        await gen.close()
    await observer.sample_status()
    await observer.sample_qkd()
    history.ops = gen.ops
    chains = await observer.chains()
    await observer.close()

    final_alerts: dict[str, dict[str, int]] = {}
    for s in history.statuses:
        if s.height is not None:
            final_alerts[s.node] = s.alerts
    tampering = any(
        st.action in TAMPERING or (st.action == "byzantine" and st.param("mode") in TAMPERING_MODES)
        for st in scenario.steps
    )
    # A node with a corrupted disk is judged by the readiness check; once it says it is
    # ready, it is held to everything else too.
    last_ready = {r.node: r.ready for r in history.readiness}
    trusted = [n for n in names if n not in timeline.damaged or last_ready.get(n)]
    judged = {n: c for n, c in chains.items() if n in trusted}
    checks = [
        check_served_blocks(history.bad_blocks, trusted),
        check_agreement(judged),
        check_app_hash(judged),
        check_lost_writes(history.ops, judged, scenario.checks.max_lost),
        check_liveness(history.statuses, trusted, healed_at, scenario.checks.liveness_deadline_s),
        check_key_reuse(
            history.qkd, history.kms, {n.name: n.sae_id for n in target.plan.nodes}, tampering
        ),
        check_equivocation(final_alerts, scenario.checks.equivocation, timeline.byzantine),
    ]
    for rec in timeline.records:
        if rec.step.expect_halt and rec.applied_at is not None:
            end = rec.undone_at if rec.undone_at is not None else rec.applied_at
            checks.append(
                check_halt(history.statuses, names, rec.applied_at + rec.step.halt_after_s, end)
            )
            if scenario.checks.max_resume_s is not None and rec.undone_at is not None:
                checks.append(
                    check_resume(
                        history.statuses,
                        names,
                        f"{rec.step.action}@{rec.step.at:g}s",
                        rec.undone_at,
                        scenario.checks.max_resume_s,
                    )
                )
    if scenario.checks.all_acked_commit:
        checks.append(check_acked_committed(history.ops))
    if scenario.checks.no_restart:
        checks.append(check_no_restart(history.statuses, names))
    for link in scenario.checks.starvation:
        window = _key_window(timeline.records, link)
        if window is None:
            checks.append(CheckResult(f"starvation {link}", False, "no step cut this link's keys"))
        else:
            checks.append(check_starvation(history.qkd, link, *window))
    checks += _hostile_checks(scenario, timeline, history, target, healed_at)
    stats = [_step_stats(r, history, names) for r in timeline.records]
    ok = all(c.ok for c in checks)
    hints = _hints(target, timeline) if not ok else []
    kept_up = not ok or keep or not fresh
    result = RunResult(
        scenario=scenario,
        seed=seed,
        directory=directory,
        checks=checks,
        history=history,
        steps=timeline.records,
        step_stats=stats,
        healed_at=healed_at,
        load=summarize(history.ops),
        rejections=dict(rejections_total(history.qkd)),
        kept_up=kept_up,
        hints=hints,
    )
    if fresh and not kept_up:
        await asyncio.to_thread(stop_network, target)
        shutil.rmtree(directory, ignore_errors=True)
    return result


def _hostile_checks(
    scenario: Scenario, timeline: Timeline, history: History, target: Target, healed_at: float
) -> list[CheckResult]:
    """Progress during each step, honest nodes' latency, truthful readiness."""
    spec = scenario.checks
    windows = [
        (r.applied_at, r.undone_at)
        for r in timeline.records
        if r.applied_at is not None and r.undone_at is not None and r.step.duration_s
    ]
    honest = [n for n in target.node_names() if n not in timeline.byzantine | timeline.damaged]
    out = []
    if spec.min_progress:
        for r in timeline.records:
            if r.applied_at is None or r.undone_at is None or not r.step.duration_s:
                continue
            if r.step.expect_halt:
                continue
            name = f"{r.step.action}@{r.step.at:g}s"
            out.append(
                check_progress(
                    history.statuses,
                    name,
                    r.applied_at,
                    r.undone_at,
                    spec.min_progress,
                    spec.max_stall_s,
                )
            )
    if spec.max_latency_s is not None:
        out.append(check_latency(history.statuses, honest, windows, spec.max_latency_s))
    if spec.readiness:
        tails = {n: _log_tail(target, n) for n in timeline.damaged}
        out.append(
            check_readiness(
                history.readiness,
                history.statuses,
                honest,
                windows,
                healed_at,
                spec.readiness_stall_s,
                sorted(timeline.damaged),
                tails,
            )
        )
    return out


def _log_tail(target: Target, name: str, size: int = 8192) -> str:
    """The end of a local node's log ("" if it cannot be read)."""
    try:
        with open(target.log_hint(name), "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _key_window(records: list[StepRecord], link: str) -> tuple[float, float] | None:
    a, b = sorted(link.split("~"))
    for rec in records:
        s = rec.step
        if s.action not in ("keys", "kms", "kme-drain"):
            continue
        if rec.applied_at is None or rec.undone_at is None:
            continue
        if s.action in ("keys", "kme-drain") and s.param("rate") != 0:
            continue
        if s.action == "kms" and s.param("mode") == "clear":
            continue
        lk = s.param("link")
        if lk == "all" or sorted(lk.split("~")) == [a, b]:
            return rec.applied_at, rec.undone_at
    return None


def _hints(target: Target, timeline: Timeline) -> list[str]:
    out = []
    for n in target.node_names():
        out.append(
            f"{n}: log {target.log_hint(n)}; engine state: GET {target.admin_url(n)}/admin/dump"
        )
    for twin in timeline.twins:
        out.append(f"twin of {twin}: log {actions.twin_log(target, twin)}")
    with contextlib.suppress(BackendError):
        logs = ", ".join(target.log_hint(k) for k in target.kme_names())
        out.append(f"key managers: logs {logs}; counters: {target.kms_admin_hint()}")
    out.append(f"stop the network with: {target.down_hint()}")
    return out


# --- the report ----------------------------------------------------------------------


def render(result: RunResult) -> str:
    lines = [
        f"scenario {result.scenario.name} (seed {result.seed}): "
        + ("ALL CHECKS HELD" if result.ok else "CHECKS FAILED"),
    ]
    if result.scenario.description:
        lines.append(f"  {result.scenario.description}")
    ld = result.load
    lines.append(
        f"load: {ld['submitted']} submitted, {ld['acknowledged']} acknowledged, "
        f"{ld['committed']} committed, {ld['uncommitted']} not committed by the deadline"
    )
    lines.append("timeline:")
    for st in result.step_stats:
        desc = f"  {st['at']:6.1f}s {st['action']:<10} {','.join(st['nodes']) or ''}"
        params = {k: v for k, v in st["params"].items() if k not in ("target", "nodes")}
        if params:
            desc += " " + " ".join(f"{k}={v}" for k, v in params.items())
        if st.get("duration_s"):
            desc += f" for {st['duration_s']:.0f}s"
        if "txs_committed_during" in st:
            desc += (
                f"; heights {st['height_at_start']}->{st['height_at_end']}, "
                f"{st['txs_committed_during']} txs committed"
            )
        if "recovery_s" in st:
            rec = st["recovery_s"]
            desc += f"; recovered in {rec:.1f}s" if rec is not None else "; did not recover"
        if st.get("detail"):
            shown = {k: v for k, v in st["detail"].items() if k != "hellos"}
            desc += "; " + json.dumps(shown, separators=(",", ":"))
        if st["error"]:
            desc += f"; ERROR {st['error']}"
        lines.append(desc)
    lines.append(f"healed everything at {result.healed_at:.1f}s")
    if result.rejections:
        lines.append(
            "frames rejected: "
            + ", ".join(f"{k} {v}" for k, v in sorted(result.rejections.items()))
        )
    lines.append("checks:")
    for c in result.checks:
        lines.append(f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.summary}")
        for d in c.details if not c.ok or c.name == "equivocation" else ():
            lines.append(f"         {d}")
    if result.hints:
        lines.append(f"the network is left up in {result.directory}; where to look:")
        lines += [f"  {h}" for h in result.hints]
    elif result.kept_up:
        lines.append(f"network left up in {result.directory}")
    return "\n".join(lines)


def write_report(result: RunResult, path: Path) -> None:
    path.write_text(json.dumps(result.to_json(), indent=2) + "\n")
