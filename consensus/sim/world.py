"""The simulated world: virtual clock, network, key ledger and the drivers of the nodes.

Time is an integer number of microseconds. Every random choice comes from one
`random.Random(seed)`, and simultaneous events run in the order they were scheduled, so a
run is a pure function of its configuration and seed.

Each node is driven exactly like a real node must drive the engine (consensus/README.md):
after every step the records and bodies are written to the node's durable store, and only
then are the messages sent, coalesced into one frame per peer. A crash discards everything
but the durable store; a restart feeds the stored records back through `Start`.

Frames travel over directed links. Before GST a link may delay (with jitter, hence reorder),
duplicate or lose a frame and partitions may cut it; after GST every frame between running
nodes arrives within [delay_lo, delay_hi]. Each frame takes the next key id of its link from
the ledger; receivers reject a key id they have seen (replay), and the ledger flags any key
id issued twice.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from consensus.engine import Engine
from consensus.events import (
    Action,
    Alert,
    BlockBuilt,
    BlockFetched,
    BlockValidated,
    BuildBlock,
    CancelTimer,
    Commit,
    DeleteRecord,
    Event,
    FetchBlock,
    MempoolNonEmpty,
    MessageIn,
    Persist,
    PersistBlock,
    ReplyDone,
    ReplySync,
    Send,
    SetTimer,
    Start,
    StartHeight,
    Timeout,
    TimerKey,
    ValidateBlock,
)
from consensus.messages import (
    Block,
    BlockReq,
    BlockResp,
    Done,
    Message,
    Record,
    SyncReq,
    SyncResp,
    block_hash,
)
from consensus.params import Params
from consensus.safety import RULES, SafetyRules
from consensus.sim.app import GENESIS_HASH, app_valid, block_txs, build_block

if TYPE_CHECKING:
    from consensus.sim.byzantine import Strategy
    from consensus.sim.invariants import Monitor

MS = 1000
_DRIVER_MSGS = (SyncReq, SyncResp, BlockReq, BlockResp)
FETCH_RETRY_US = 20 * MS
CRASH_POINTS = ("after_persist", "mid_send", "after_send", "before_commit")


@dataclass(frozen=True)
class Partition:
    """From start to end, nodes in different groups cannot talk (unlisted nodes talk freely)."""

    start_us: int
    end_us: int
    groups: tuple[frozenset[int], ...]

    def cuts(self, a: int, b: int, now: int) -> bool:
        if not self.start_us <= now < self.end_us:
            return False
        ga = next((i for i, g in enumerate(self.groups) if a in g), None)
        gb = next((i for i, g in enumerate(self.groups) if b in g), None)
        return ga is not None and gb is not None and ga != gb


@dataclass(frozen=True)
class CrashSpec:
    """Crash `node` at `at_us` (or at its first step matching `trigger` after that), at
    `point` of that step; restart after `down_us` (None: never)."""

    node: int
    at_us: int = 0
    down_us: int | None = 50 * MS
    point: str = "now"
    trigger: Callable[[list[Action]], bool] | None = None
    dead: bool = False
    """A dead node's durable store no longer counts (it is faulty for invariant 13)."""


@dataclass(frozen=True)
class RandomCrashes:
    """Before `until_us`, each step of one of `nodes` crashes with `prob` at a random point."""

    nodes: frozenset[int]
    prob: float
    until_us: int
    down_us: tuple[int, int] = (5 * MS, 80 * MS)
    max_down: int = 1


@dataclass(frozen=True)
class Rollback:
    """At `at_us`, `node` crashes and restarts with its durable state of `snapshot_us`."""

    node: int
    snapshot_us: int
    at_us: int
    wipe: bool = False


DropFilter = Callable[["Sim", int, int, Message], bool]
EngineFactory = Callable[[Params, int], Engine]
Validity = Callable[[Block], bool]


@dataclass(frozen=True)
class SimConfig:
    n: int
    seed: int
    heights: int = 3
    params: Params | None = None
    delay_us: tuple[int, int] = (2 * MS, 10 * MS)
    """Per-frame delay after GST (and before GST, on links that deliver)."""
    pre_delay_us: tuple[int, int] = (2 * MS, 10 * MS)
    loss: float = 0.0
    dup: float = 0.0
    gst_us: int = 0
    partitions: tuple[Partition, ...] = ()
    byzantine: dict[int, Strategy] = field(default_factory=dict)
    declared_faulty: frozenset[int] = frozenset()
    """Identities the invariants treat as faulty besides Byzantine and twins."""
    crashes: tuple[CrashSpec, ...] = ()
    random_crashes: RandomCrashes | None = None
    rollbacks: tuple[Rollback, ...] = ()
    twins: dict[int, tuple[frozenset[int], ...]] = field(default_factory=dict)
    """identity -> one peer set per copy; a copy talks only with the peers in its set."""
    twin_keys_cloned: bool = False
    engines: dict[int, EngineFactory] = field(default_factory=dict)
    validity: dict[int, Validity] = field(default_factory=dict)
    drop: DropFilter | None = None
    link_delay_us: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)
    build_delay_us: int = 20 * MS
    validate_delay_us: int = 1 * MS
    deadline_us: int | None = None
    expect_live: bool = True
    trace: bool = False
    max_events: int = 2_000_000
    txs_us: tuple[int, ...] = ()
    """Submission time of each transaction (its id is its index). A transaction is forwarded
    to every validator (§4): it reaches each running node's mempool one network delay later.
    In idle mode (`propose_wait_max_ms=None`) the driver tells the engine `MempoolNonEmpty`
    when the mempool becomes non-empty and after every commit, as `node/runtime.py` does."""
    run_to_deadline: bool = False
    stable_us: int = 0
    """A lower bound for T of invariant 9, for scripted adversaries (a `drop` filter) that
    keep disrupting the network after `gst_us`."""
    """Keep running until the deadline even when the target is met (idle-mode checks)."""


class SimNode:
    """One copy of one identity: its engine, its durable store and its driver state."""

    def __init__(self, sim: Sim, ident: int, copy: int, reach: frozenset[int]) -> None:
        self.sim = sim
        self.ident = ident
        self.copy = copy
        self.reach = reach
        self.up = True
        self.epoch = 0
        self.records: dict[int, Record] = {}
        self.blocks: dict[bytes, Block] = {}
        self.chain: list[bytes] = []
        self.chain_blocks: list[Block] = []
        self.next_anchor = sim.params.first_leader
        self.timers: dict[TimerKey, int] = {}
        self.timer_seq = 0
        self.fetching: dict[bytes, int] = {}
        self.snapshots: list[tuple[int, dict[int, Record], dict[bytes, Block], int]] = []
        self.seen_keys: dict[int, set[tuple[int, int]]] = {}
        self.pending_crash: CrashSpec | None = None
        self.mempool: set[int] = set()
        self.included: set[int] = set()
        """Transactions in this node's committed chain."""
        self.engine = sim.make_engine(ident)
        self.validity: Validity = sim.cfg.validity.get(ident, app_valid)
        self.strategy: Strategy | None = sim.cfg.byzantine.get(ident)

    @property
    def name(self) -> str:
        return f"{self.ident}" if self.copy == 0 else f"{self.ident}'{self.copy}"

    def durable_state(self) -> tuple[dict[int, Record], dict[bytes, Block], int]:
        return dict(self.records), dict(self.blocks), len(self.chain)


class Sim:
    """The whole simulated network. `run()` returns when the target is met or time is up."""

    def __init__(self, cfg: SimConfig, monitor: Monitor | None = None) -> None:
        self.cfg = cfg
        self.params = cfg.params or Params(n=cfg.n)
        self.rng = random.Random(cfg.seed)
        self.app_rng = random.Random(cfg.seed * 7919 + 1)
        self.now = 0
        self._seq = 0
        self._queue: list[tuple[int, int, Callable[[], None]]] = []
        self.trace: list[str] = []
        self.key_next: dict[tuple[int, int, int], int] = {}
        self.keys_used: dict[tuple[int, int], set[tuple[int, int]]] = {}
        self.key_reuse: list[tuple[int, int, tuple[int, int]]] = []
        self.frames: dict[tuple[int, int], int] = {}
        self.last_frame_us: int | None = None
        self.last_restart_us = 0
        self.height_frames: dict[tuple[int, int, int], int] = {}
        """(src, to, h) -> frames whose lowest consensus height is h (0: sync and bodies only)."""
        self.commit_times: dict[int, int] = {}
        """height -> time the first correct node committed it."""
        self.alerts: list[tuple[str, str, str]] = []
        self.down_count = 0
        self.events = 0
        self.dead: set[int] = set()
        self.nodes: list[list[SimNode]] = []
        for i in range(cfg.n):
            sets = cfg.twins.get(i, (frozenset(range(cfg.n)),))
            self.nodes.append([SimNode(self, i, c, s) for c, s in enumerate(sets)])
        self.faulty = frozenset(cfg.byzantine) | frozenset(cfg.twins) | cfg.declared_faulty
        self.crashed_forever = frozenset(c.node for c in cfg.crashes if c.down_us is None)
        """Crashed for good: faulty for liveness, still checked for what they sent."""
        rules = getattr(cfg.engines.get(0, Engine), "rules", RULES)
        self.rules: SafetyRules = rules if isinstance(rules, SafetyRules) else RULES
        """The rules of the engine under test (invariant 12 checks their transfer property)."""
        if monitor is None:
            from consensus.sim.invariants import Monitor

            monitor = Monitor(self)
        self.monitor = monitor

    # --- helpers ---

    def make_engine(self, ident: int) -> Engine:
        factory = self.cfg.engines.get(ident, Engine)
        return factory(self.params, ident)

    def all_nodes(self) -> list[SimNode]:
        return [nd for copies in self.nodes for nd in copies]

    def correct_nodes(self) -> list[SimNode]:
        return [copies[0] for i, copies in enumerate(self.nodes) if i not in self.faulty]

    def at(self, t: int, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (max(t, self.now), self._seq, fn))

    def log(self, text: str) -> None:
        if self.cfg.trace:
            self.trace.append(f"{self.now / MS:10.3f}ms {text}")

    # --- running ---

    def run(self) -> None:
        cfg = self.cfg
        for nd in self.all_nodes():
            self.at(0, partial(self.step, nd, StartHeight(1, GENESIS_HASH, nd.next_anchor)))
            if nd.strategy is not None and nd.strategy.tick_us:
                self.at(nd.strategy.tick_us, partial(self._tick, nd))
        for spec in cfg.crashes:
            self.at(spec.at_us, partial(self._arm_crash, spec))
        for rb in cfg.rollbacks:
            self.at(rb.snapshot_us, partial(self._snapshot, rb.node))
            self.at(rb.at_us, partial(self._rollback, rb))
        for tx, t in enumerate(cfg.txs_us):
            for nd in self.all_nodes():
                self.at(t + self.rng.randint(*cfg.delay_us), partial(self._tx_arrive, nd, tx))
        deadline = self.deadline()
        while self._queue:
            t, _, fn = heapq.heappop(self._queue)
            if t > deadline:
                break
            self.now = t
            fn()
            self.events += 1
            if self.events >= cfg.max_events or self.done():
                break
        if cfg.run_to_deadline and self.events < cfg.max_events:
            self.now = deadline
        self.monitor.finish()

    def deadline(self) -> int:
        if self.cfg.deadline_us is not None:
            return self.cfg.deadline_us
        p = self.params
        per_height = sum(p.timeout_ms(r) for r in range(p.f + 3)) * MS + 200 * MS
        heights = self.cfg.heights + len(self.cfg.txs_us)
        last_tx = max(self.cfg.txs_us, default=0)
        return max(self.cfg.gst_us, last_tx) + heights * per_height + 2000 * MS

    @property
    def idle_mode(self) -> bool:
        return self.params.propose_wait_max_ms is None

    def done(self) -> bool:
        """Every live correct node has committed the target (and every transaction), and
        its instance of the target height has terminated (invariant 9)."""
        if self.cfg.run_to_deadline:
            return False
        h = self.cfg.heights
        txs = len(self.cfg.txs_us)
        for nd in self.correct_nodes():
            if nd.ident in self.crashed_forever:
                continue
            if len(nd.chain) < h or len(nd.included) < txs:
                return False
            inst = nd.engine.inst.get(h)
            if inst is not None and not inst.terminated:
                return False
        return True

    def stable_from_us(self) -> int:
        """T of invariant 9: after GST, every partition healed, every scheduled disruption
        over and every correct node that will restart restarted (known at the end)."""
        cfg = self.cfg
        t = max(cfg.gst_us, cfg.stable_us, self.last_restart_us)
        t = max([t] + [p.end_us for p in cfg.partitions])
        if cfg.random_crashes is not None:
            t = max(t, cfg.random_crashes.until_us)
        return t

    def delta_us(self) -> int:
        """Δ: the largest per-frame delay after GST."""
        return max([self.cfg.delay_us[1]] + [hi for _, hi in self.cfg.link_delay_us.values()])

    def liveness_bound_us(self, r: int) -> int:
        """D of §6 invariant 9 for highest round R = r at T: the timeouts of rounds 0..f+R,
        one retransmission period, 20Δ, and processing (build, validation, a body fetch
        retry and a SYNC interval)."""
        p = self.params
        top = p.f + r
        timeouts = sum(p.timeout_ms(i) for i in range(top + 1)) + p.timeout_ms(top)
        processing = (
            self.cfg.build_delay_us
            + 4 * self.cfg.validate_delay_us
            + 2 * FETCH_RETRY_US
            + p.sync_interval_ms * MS
        )
        return timeouts * MS + 20 * self.delta_us() + processing

    # --- driving one node ---

    def step(self, nd: SimNode, ev: Event) -> None:
        if not nd.up:
            return
        self.step_batch(nd, [ev])

    def step_batch(self, nd: SimNode, evs: list[Event]) -> None:
        """Run events through the engine; one durable batch, then one frame per peer."""
        acts: list[Action] = []
        for ev in evs:
            if isinstance(ev, MessageIn):
                self.monitor.on_receive(nd, ev.sender, ev.msg)
            out = nd.engine.step(ev)
            if self.cfg.trace:
                self.log(f"node {nd.name} <- {_short(ev)}")
            acts += out
        self.monitor.after_step(nd, acts)
        for a in acts:
            if isinstance(a, Persist):
                nd.records[a.record.height] = a.record
            elif isinstance(a, PersistBlock):
                nd.blocks[block_hash(a.block)] = a.block
            elif isinstance(a, DeleteRecord):
                nd.records.pop(a.height, None)
        self.monitor.on_durable(nd, acts)
        point = self._crash_point(nd, acts)
        if point == "after_persist":
            self.crash(nd)
            return
        frames: dict[int, list[Message]] = {}
        for a in acts:
            if isinstance(a, Send):
                frames.setdefault(a.to, []).append(a.msg)
            elif isinstance(a, ReplyDone):
                if 1 <= a.height <= len(nd.chain):
                    m: Message = Done(self.params.chain_id, a.height, nd.chain[a.height - 1])
                    frames.setdefault(a.to, []).append(m)
            elif isinstance(a, ReplySync):
                resp = self._serve_sync(nd, a.to, a.from_height, a.max_count)
                if resp is not None:
                    frames.setdefault(a.to, []).append(resp)
        targets = list(frames)
        if point == "mid_send" and targets:
            targets = targets[: self.rng.randrange(len(targets))]
        for to in targets:
            self.send_frame(nd, to, frames[to])
        if point in ("mid_send", "after_send"):
            self.crash(nd)
            return
        for a in acts:
            if isinstance(a, Commit) and point == "before_commit":
                self.crash(nd)
                return
            self._perform(nd, a)

    def _perform(self, nd: SimNode, a: Action) -> None:
        if isinstance(a, SetTimer):
            nd.timer_seq += 1
            token = nd.timer_seq
            nd.timers[a.key] = token
            epoch = nd.epoch
            self.at(self.now + a.duration_ms * MS, lambda: self._fire(nd, a.key, token, epoch))
        elif isinstance(a, CancelTimer):
            nd.timers.pop(a.key, None)
        elif isinstance(a, BuildBlock):
            delay = self.cfg.build_delay_us if a.round == 0 else MS
            blk = self._build(nd, a)
            self._later(nd, delay, BlockBuilt(a.height, a.round, blk))
        elif isinstance(a, ValidateBlock):
            ok = nd.validity(a.block)
            self._later(nd, self.cfg.validate_delay_us, BlockValidated(block_hash(a.block), ok))
        elif isinstance(a, FetchBlock):
            self._fetch(nd, a.value, 0)
        elif isinstance(a, Commit):
            self._commit(nd, a)
        elif isinstance(a, Alert):
            self.alerts.append((nd.name, a.kind, a.detail))

    def _build(self, nd: SimNode, a: BuildBlock) -> Block:
        if nd.strategy is not None:
            blk = nd.strategy.build(self, nd, a)
            if blk is not None:
                return blk
        txs = tuple(sorted(nd.mempool))
        return build_block(self.app_rng, a.height, a.round, a.parent_hash, nd.ident, txs)

    def _later(self, nd: SimNode, delay: int, ev: Event) -> None:
        epoch = nd.epoch
        self.at(self.now + delay, lambda: self.step(nd, ev) if nd.epoch == epoch else None)

    def _fire(self, nd: SimNode, key: TimerKey, token: int, epoch: int) -> None:
        if nd.epoch != epoch or nd.timers.get(key) != token:
            return
        del nd.timers[key]
        self.step(nd, Timeout(key))

    def _commit(self, nd: SimNode, a: Commit) -> None:
        v = block_hash(a.block)
        if a.height <= len(nd.chain):
            if nd.chain[a.height - 1] != v:
                self.monitor.violation(3, f"node {nd.name} re-commit of h {a.height} differs")
            return
        if a.height != len(nd.chain) + 1:
            self.monitor.violation(3, f"node {nd.name} commits h {a.height} out of order")
            return
        self.monitor.on_commit(nd, a.height, a.block)
        nd.chain.append(v)
        nd.chain_blocks.append(a.block)
        nd.blocks[v] = a.block
        nd.next_anchor = a.next_anchor
        txs = block_txs(a.block)
        nd.included |= txs
        nd.mempool -= txs
        self.commit_times.setdefault(a.height, self.now)
        self.log(f"node {nd.name} COMMIT h {a.height} {v.hex()[:8]}")
        if self.idle_mode or a.height < self.cfg.heights + 2:
            self._later(nd, 0, StartHeight(a.height + 1, v, a.next_anchor))
        if self.idle_mode:
            self._tell_mempool(nd)

    # --- transactions (idle mode, §4) ---

    def _tx_arrive(self, nd: SimNode, tx: int) -> None:
        if not nd.up or tx in nd.included or tx in nd.mempool:
            return
        nd.mempool.add(tx)
        self.log(f"node {nd.name} TX {tx}")
        if self.idle_mode and len(nd.mempool) == 1:
            self.step(nd, MempoolNonEmpty(True))

    def _tell_mempool(self, nd: SimNode) -> None:
        """After a commit (and its StartHeight), tell the engine the mempool state."""
        epoch = nd.epoch
        self.at(
            self.now,
            lambda: self.step(nd, MempoolNonEmpty(bool(nd.mempool))) if nd.epoch == epoch else None,
        )

    # --- body fetching (driver level, §3.4) ---

    def _fetch(self, nd: SimNode, v: bytes, attempt: int) -> None:
        if not nd.up:
            return
        blk = nd.blocks.get(v)
        if blk is not None:
            nd.fetching.pop(v, None)
            self._later(nd, 0, BlockFetched(blk))
            return
        if attempt == 0 and v in nd.fetching:
            return
        nd.fetching[v] = attempt
        peers = [j for j in range(self.cfg.n) if j != nd.ident and j in nd.reach]
        to = peers[(nd.ident + attempt) % len(peers)]
        self.send_frame(nd, to, [BlockReq(self.params.chain_id, (v,))])
        epoch = nd.epoch
        self.at(
            self.now + FETCH_RETRY_US,
            lambda: (
                self._fetch(nd, v, attempt + 1) if nd.epoch == epoch and v in nd.fetching else None
            ),
        )

    def _serve_sync(self, nd: SimNode, to: int, frm: int, count: int) -> Message | None:
        if nd.strategy is not None:
            fake = nd.strategy.serve_sync(self, nd, to, frm, count)
            if fake is not None:
                return fake
        hashes = tuple(nd.chain[frm - 1 : frm - 1 + count]) if frm >= 1 else ()
        return SyncResp(self.params.chain_id, frm, hashes) if hashes else None

    def _on_driver_msg(self, nd: SimNode, src: int, m: BlockReq | BlockResp) -> None:
        if isinstance(m, BlockReq):
            if nd.strategy is not None:
                resp = nd.strategy.serve_blocks(self, nd, src, m.hashes)
                if resp is not None:
                    if resp.blocks:
                        self.send_frame(nd, src, [resp])
                    return
            found = tuple(nd.blocks[v] for v in m.hashes if v in nd.blocks)
            if found:
                self.send_frame(nd, src, [BlockResp(self.params.chain_id, found)])
            return
        for blk in m.blocks:
            v = block_hash(blk)
            if v in nd.fetching:
                del nd.fetching[v]
                self.step(nd, BlockFetched(blk))

    # --- network ---

    def send_frame(self, nd: SimNode, to: int, msgs: list[Message], raw: bool = False) -> None:
        """Send one frame; a Byzantine node's strategy rewrites it unless `raw`."""
        src = nd.ident
        if nd.strategy is not None and not raw:
            msgs = [x for m in msgs for x in nd.strategy.outgoing(self, nd, to, m)]
            if not msgs:
                return
        lane = nd.copy if not self.cfg.twin_keys_cloned else 0
        ctr_key = (src, to, lane)
        kid = self.key_next.get(ctr_key, 0)
        self.key_next[ctr_key] = kid + 1
        key_id = (lane, kid)
        used = self.keys_used.setdefault((src, to), set())
        if key_id in used:
            self.key_reuse.append((src, to, key_id))
        used.add(key_id)
        self.frames[(src, to)] = self.frames.get((src, to), 0) + 1
        self.last_frame_us = self.now
        h = min((m.height for m in msgs if not isinstance(m, _DRIVER_MSGS)), default=0)
        self.height_frames[(src, to, h)] = self.height_frames.get((src, to, h), 0) + 1
        self.monitor.on_send(nd, to, msgs)
        if self.cfg.trace:
            self.log(f"node {nd.name} -> {to}: " + ", ".join(_short(m) for m in msgs))
        if to not in nd.reach:
            return
        if self.cfg.drop is not None:
            msgs = [m for m in msgs if not self.cfg.drop(self, src, to, m)]
        frame = tuple(msgs)
        if not frame:
            return
        for dst in self.nodes[to]:
            if src not in dst.reach:
                continue
            for _ in range(self._copies(src, to)):
                delay = self._delay(src, to)
                self.at(self.now + delay, partial(self._arrive, dst, src, key_id, frame))

    def _copies(self, src: int, to: int) -> int:
        cfg = self.cfg
        if any(p.cuts(src, to, self.now) for p in cfg.partitions):
            return 0
        if self.now >= cfg.gst_us:
            return 1
        if cfg.loss and self.rng.random() < cfg.loss:
            return 0
        if cfg.dup and self.rng.random() < cfg.dup:
            return 2
        return 1

    def _delay(self, src: int, to: int) -> int:
        lo, hi = self.cfg.link_delay_us.get(
            (src, to), self.cfg.delay_us if self.now >= self.cfg.gst_us else self.cfg.pre_delay_us
        )
        return self.rng.randint(lo, hi)

    def _arrive(
        self, dst: SimNode, src: int, key_id: tuple[int, int], frame: tuple[Message, ...]
    ) -> None:
        if not dst.up:
            return
        seen = dst.seen_keys.setdefault(src, set())
        if key_id in seen:
            return
        seen.add(key_id)
        evs: list[Event] = []
        for m in frame:
            if isinstance(m, BlockReq | BlockResp):
                self._on_driver_msg(dst, src, m)
            else:
                evs.append(MessageIn(src, m))
        if evs and dst.up:
            self.step_batch(dst, evs)

    def _tick(self, nd: SimNode) -> None:
        st = nd.strategy
        if st is None or st.tick_us is None:
            return
        if nd.up:
            frames: dict[int, list[Message]] = {}
            for to, m in st.tick(self, nd):
                frames.setdefault(to, []).append(m)
            for to, msgs in frames.items():
                self.send_frame(nd, to, msgs, raw=True)
        self.at(self.now + st.tick_us, lambda: self._tick(nd))

    # --- crashes ---

    def _arm_crash(self, spec: CrashSpec) -> None:
        nd = self.nodes[spec.node][0]
        if spec.point == "now" and spec.trigger is None:
            self._crash_for(nd, spec)
        else:
            nd.pending_crash = spec

    def _crash_point(self, nd: SimNode, acts: list[Action]) -> str | None:
        spec = nd.pending_crash
        if spec is not None:
            if spec.trigger is not None and not spec.trigger(acts):
                return None
            point = spec.point
            if point == "before_commit" and not any(isinstance(a, Commit) for a in acts):
                return None
            if point in ("after_persist", "mid_send") and not any(
                isinstance(a, Send) for a in acts
            ):
                return None
            nd.pending_crash = None
            self._schedule_restart(nd, spec)
            return point if point != "now" else "after_persist"
        rc = self.cfg.random_crashes
        if (
            rc is None
            or nd.ident not in rc.nodes
            or self.now >= rc.until_us
            or self.down_count >= rc.max_down
            or self.rng.random() >= rc.prob
        ):
            return None
        point = self.rng.choice(CRASH_POINTS)
        if point == "before_commit" and not any(isinstance(a, Commit) for a in acts):
            point = "after_persist"
        down = self.rng.randint(*rc.down_us)
        self._schedule_restart(nd, CrashSpec(nd.ident, down_us=down))
        return point

    def _crash_for(self, nd: SimNode, spec: CrashSpec) -> None:
        self._schedule_restart(nd, spec)
        self.crash(nd)

    def _schedule_restart(self, nd: SimNode, spec: CrashSpec) -> None:
        if spec.dead:
            self.dead.add(nd.ident)
        if spec.down_us is not None:
            self.at(self.now + spec.down_us, lambda: self.restart(nd))

    def crash(self, nd: SimNode) -> None:
        if not nd.up:
            return
        self.log(f"node {nd.name} CRASH")
        nd.up = False
        nd.epoch += 1
        nd.timers.clear()
        nd.fetching.clear()
        self.down_count += 1

    def restart(self, nd: SimNode) -> None:
        if nd.up:
            return
        self.log(f"node {nd.name} RESTART")
        nd.up = True
        self.last_restart_us = self.now
        self.down_count -= 1
        self.dead.discard(nd.ident)
        nd.engine = self.make_engine(nd.ident)
        nd.seen_keys = {}
        committed = len(nd.chain)
        recs = tuple(nd.records[h] for h in sorted(nd.records))
        blocks = tuple(b for b in nd.blocks.values() if b.height > committed)
        self.step(nd, Start(recs, blocks, committed))
        if not any(h > committed for h in nd.records):
            parent = nd.chain[-1] if nd.chain else GENESIS_HASH
            self.step(nd, StartHeight(committed + 1, parent, nd.next_anchor))
        if self.idle_mode and nd.mempool:
            self.step(nd, MempoolNonEmpty(True))

    def _snapshot(self, ident: int) -> None:
        nd = self.nodes[ident][0]
        recs, blocks, _ = nd.durable_state()
        nd.snapshots.append((self.now, recs, blocks, nd.next_anchor))

    def _rollback(self, rb: Rollback) -> None:
        nd = self.nodes[rb.node][0]
        self.crash(nd)
        if rb.wipe or not nd.snapshots:
            nd.records, nd.blocks = {}, {}
        else:
            _, recs, blocks, _ = nd.snapshots[-1]
            nd.records, nd.blocks = recs, blocks
        self.at(self.now + 5 * MS, lambda: self.restart(nd))


def _short(x: object) -> str:
    text = repr(x)
    return text if len(text) < 160 else text[:157] + "..."
