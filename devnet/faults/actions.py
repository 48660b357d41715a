"""The perturbations a scenario's timeline applies, as one table: `PERTURBATIONS` maps
each step action to how it is applied and how it is undone when its `duration_s` is
over. The timeline looks the action up and calls these; it never dispatches on action
names itself.

A step's functions take the `TimelineState` (the network, the run's randomness, history
and clock, and what the steps left behind for the heal) and the step's `StepRecord`
(the step, the nodes it resolved to, when it was applied and undone, what it did). The
perturbations themselves are plain functions over a `devnet.running.Network`, grouped by
what they reach: `transport` (node admin API rules), `keys` (key manager admin APIs),
`twins` (Byzantine modes and twin processes), `disk` (LevelDB bit flips); the ad-hoc
verbs (`qchain fault kill ...`) call those directly. Blocking calls run in a thread.

Node selectors (`resolve`): a node name, `leader` (the leader most live nodes name),
`random`, `non-leader`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from devnet.faults import disk, keys, transport, twins
from devnet.faults.attacker import Attacker, AttackSpec, victims
from devnet.faults.history import ChainViews, History
from devnet.faults.load import Accounts, partner_flood
from devnet.faults.reconf import SET_CHANGE_STEPS, SetChange
from devnet.faults.scenario import Step
from devnet.nodeapi import node_status
from devnet.running import BackendError, Network

# --- selecting nodes -----------------------------------------------------------------


def current_leader(target: Network) -> str | None:
    """The leader most live nodes name (None if no node answers)."""
    votes: dict[int, int] = {}
    for name in target.node_names():
        st = node_status(target.api_url(name), 1.0)
        leader = st.get("leader") if st is not None else None
        if isinstance(leader, int):
            votes[leader] = votes.get(leader, 0) + 1
    if not votes:
        return None
    index = max(sorted(votes), key=lambda k: votes[k])
    return target.plan.nodes[index].name


def resolve(target: Network, selectors: Iterable[str], rng: random.Random) -> list[str]:
    """Node names from names and selectors: leader, random, non-leader."""
    names = target.node_names()
    out: list[str] = []
    for sel in selectors:
        if sel in names:
            pick = sel
        elif sel == "leader":
            leader = current_leader(target)
            if leader is None:
                raise BackendError("no node answers: cannot tell the leader")
            pick = leader
        elif sel in ("random", "non-leader"):
            leader = current_leader(target) if sel == "non-leader" else None
            pool = [n for n in names if n not in out and n != leader]
            if not pool:
                raise BackendError(f"no node left for {sel!r}")
            pick = rng.choice(pool)
        else:
            raise BackendError(f"unknown node or selector {sel!r} (nodes: {', '.join(names)})")
        if pick not in out:
            out.append(pick)
    return out


# --- the timeline's state ------------------------------------------------------------


@dataclass
class StepRecord:
    step: Step
    nodes: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    """The `from` side of a partition or flap, resolved."""
    due: float | None = None
    """When it was to be applied (its `at`, or `at` after the step it follows finished)."""
    applied_at: float | None = None
    undone_at: float | None = None
    error: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    """What an attack, flood or disk step did (its counters, the flipped bit)."""


@dataclass
class TimelineState:
    net: Network
    rng: random.Random
    history: History
    clock: Callable[[], float]
    accounts: Accounts | None = None
    byzantine: set[str] = field(default_factory=set)
    twins: set[str] = field(default_factory=set)
    damaged: set[str] = field(default_factory=set)
    """Nodes whose disk a step corrupted."""
    kmes_down: set[str] = field(default_factory=set)
    """Nodes whose KME a `kme-down` step stopped and no undo started yet."""
    drained: dict[str, int] = field(default_factory=dict)
    """Links a `kme-drain` emptied and no undo refilled yet: the refill count."""
    attacks: dict[int, asyncio.Task[dict[str, Any]]] = field(default_factory=dict)
    """Running attacks, by id() of their step record."""
    follow: Callable[[list[str]], None] = lambda names: None
    """Tells the observer and the load which nodes to reach from now on (a set change)."""
    changes: list[SetChange] = field(default_factory=list)
    """The set changes the timeline made, in the order they were scheduled."""
    left: ChainViews = field(default_factory=dict)
    """The chain of each validator a set change removed, read just before it stopped."""


StepFn = Callable[[TimelineState, StepRecord], Awaitable[None]]


@dataclass(frozen=True)
class Perturbation:
    apply: StepFn
    undo: StepFn | None = None
    """None: undoing the step only records when it ended."""
    self_timed: bool = False
    """The step runs for its duration itself (and records its end): no undo at the end."""


async def call(fn: Callable[..., Any], *args: Any) -> Any:
    """A blocking perturbation, run in a thread."""
    return await asyncio.to_thread(fn, *args)


def each_node(fn: Callable[[TimelineState, StepRecord, str], Any]) -> StepFn:
    """A step that does fn(state, rec, node) for each of its nodes, in a thread."""

    async def run(st: TimelineState, rec: StepRecord) -> None:
        for name in rec.nodes:
            await call(fn, st, rec, name)

    return run


def whole(fn: Callable[[TimelineState, StepRecord], Any]) -> StepFn:
    """A step that does fn(state, rec) once, in a thread."""

    async def run(st: TimelineState, rec: StepRecord) -> None:
        await call(fn, st, rec)

    return run


# --- steps that need more than one call ----------------------------------------------


async def _flap(st: TimelineState, rec: StepRecord) -> None:
    """Cut and heal the partition every half period until the step's end."""
    s = rec.step
    end = (s.at if rec.due is None else rec.due) + (s.duration_s or 0)
    period = float(s.param("period_s"))
    while st.clock() + period / 2 <= end:
        await call(transport.partition, st.net, rec.nodes, rec.other)
        st.history.event(st.clock(), "flap-cut", nodes=rec.nodes)
        await asyncio.sleep(period / 2)
        await call(transport.unpartition, st.net, rec.nodes, rec.other)
        st.history.event(st.clock(), "flap-heal", nodes=rec.nodes)
        await asyncio.sleep(period / 2)
    rec.undone_at = st.clock()


def _kme_down(st: TimelineState, rec: StepRecord, name: str) -> None:
    st.kmes_down.add(name)
    kme = st.net.kme_of(name)
    with contextlib.suppress(OSError, BackendError, ValueError):
        st.history.kme_at_stop[kme] = keys.kme_links(st.net, kme)
    rec.detail[name] = keys.kme_down(st.net, name)


def _kme_up(st: TimelineState, rec: StepRecord, name: str) -> None:
    keys.kme_up(st.net, name)
    st.kmes_down.discard(name)


def _drain(st: TimelineState, rec: StepRecord) -> None:
    st.drained[rec.step.param("link")] = rec.step.param("refill")
    keys.drain(st.net, rec.step.param("link"), rec.step.param("rate"))


def _refill(st: TimelineState, rec: StepRecord) -> None:
    link = rec.step.param("link")
    keys.refill(st.net, link, st.drained.pop(link, rec.step.param("refill")))


def _byzantine(st: TimelineState, rec: StepRecord, name: str) -> None:
    mode = rec.step.param("mode")
    st.byzantine.add(name)
    if mode == "twin":
        st.twins.add(name)
        twins.start_twin(st.net, name)
    else:
        twins.byzantine(st.net, name, mode)


def _honest(st: TimelineState, rec: StepRecord, name: str) -> None:
    if rec.step.param("mode") == "twin":
        twins.stop_twin(st.net, name)
        return
    with contextlib.suppress(OSError, BackendError):
        twins.byzantine(st.net, name, None)


async def _attack(st: TimelineState, rec: StepRecord) -> None:
    st.attacks[id(rec)] = asyncio.create_task(_run_attack(st, rec))


async def _run_attack(st: TimelineState, rec: StepRecord) -> dict[str, Any]:
    s = rec.step
    everyone = victims(st.net.plan)
    claims = s.param("claim")
    claimed = await call(resolve, st.net, claims, st.rng) if claims else list(everyone)
    spec = AttackSpec(
        kind=s.param("mode"),
        targets=tuple(everyone[n] for n in rec.nodes),
        claims=tuple(everyone[n] for n in claimed),
        chain_id=st.net.plan.chain_id,
        duration_s=float(s.duration_s or 0.0),
        rate=s.param("rate"),
        connections=s.param("connections"),
    )
    stats = await Attacker(spec, st.rng).run()
    return stats.to_json()


async def _attack_done(st: TimelineState, rec: StepRecord) -> None:
    task = st.attacks.pop(id(rec), None)
    if task is not None:
        rec.detail = await task


async def _partner_flood(st: TimelineState, rec: StepRecord) -> None:
    if st.accounts is None:
        raise BackendError("partner-flood needs the run's accounts")
    s = rec.step
    urls = {n: st.net.api_url(n) for n in st.net.node_names()}
    tag = f"flood-{st.rng.randrange(1 << 32):08x}"
    rec.detail = await partner_flood(urls, st.accounts, s.param("account"), s.param("count"), tag)


def _corrupt_disk(st: TimelineState, rec: StepRecord, name: str) -> None:
    st.damaged.add(name)
    rec.detail[name] = disk.corrupt_disk(st.net, name, st.rng)


def _partition(st: TimelineState, rec: StepRecord) -> None:
    missed = transport.partition(st.net, rec.nodes, rec.other)
    if missed:
        rec.detail["no_rules_on"] = missed


def _rule(fn: Callable[..., None], *params: str) -> StepFn:
    """A transport rule set on each node from the step's parameters."""
    return each_node(lambda st, rec, n: fn(st.net, n, *(rec.step.param(p) for p in params)))


def _clear_rule(action: str) -> StepFn:
    return each_node(lambda st, rec, n: transport.clear_rule(st.net, n, action))


# --- the table -----------------------------------------------------------------------

PERTURBATIONS: dict[str, Perturbation] = {
    "kill": Perturbation(
        each_node(lambda st, rec, n: st.net.kill_node(n)),
        each_node(lambda st, rec, n: st.net.start_node(n)),
    ),
    "restart": Perturbation(each_node(lambda st, rec, n: st.net.restart_node(n))),
    "stop": Perturbation(
        each_node(lambda st, rec, n: st.net.stop_node(n)),
        each_node(lambda st, rec, n: st.net.start_node(n)),
    ),
    "pause": Perturbation(
        each_node(lambda st, rec, n: st.net.pause_node(n)),
        each_node(lambda st, rec, n: st.net.resume_node(n)),
    ),
    "partition": Perturbation(
        whole(_partition),
        whole(
            lambda st, rec: transport.unpartition(
                st.net, rec.nodes, list(rec.step.param("from") or ()) or None
            )
        ),
    ),
    "flap": Perturbation(_flap, self_timed=True),
    "heal": Perturbation(whole(lambda st, rec: transport.heal(st.net))),
    "delay": Perturbation(_rule(transport.delay, "ms", "jitter_ms"), _clear_rule("delay")),
    "drop": Perturbation(_rule(transport.drop, "pct"), _clear_rule("drop")),
    "corrupt": Perturbation(_rule(transport.corrupt, "pct"), _clear_rule("corrupt")),
    "replay": Perturbation(_rule(transport.replay, "pct"), _clear_rule("replay")),
    "keys": Perturbation(
        whole(
            lambda st, rec: keys.set_keys(st.net, rec.step.param("link"), rec.step.param("rate"))
        ),
        whole(lambda st, rec: keys.set_keys(st.net, rec.step.param("link"), st.net.plan.kms_rate)),
    ),
    "kms": Perturbation(
        whole(
            lambda st, rec: keys.kms_fault(st.net, rec.step.param("mode"), rec.step.param("link"))
        ),
        whole(lambda st, rec: keys.kms_fault(st.net, "clear", rec.step.param("link"))),
    ),
    "kme-down": Perturbation(each_node(_kme_down), each_node(_kme_up)),
    "kme-behaviour": Perturbation(
        whole(
            lambda st, rec: keys.set_behaviour(
                st.net, dict(rec.step.param("switches")), rec.nodes or None
            )
        ),
        whole(lambda st, rec: keys.set_behaviour(st.net, {}, rec.nodes or None)),
    ),
    "kme-drain": Perturbation(whole(_drain), whole(_refill)),
    "byzantine": Perturbation(each_node(_byzantine), each_node(_honest)),
    "attack": Perturbation(_attack, _attack_done),
    "partner-flood": Perturbation(_partner_flood),
    "corrupt-disk": Perturbation(each_node(_corrupt_disk)),
    **{a: Perturbation(fn) for a, fn in SET_CHANGE_STEPS.items()},
}
"""Every timeline action: how it is applied, and how it is undone at its end."""
