"""The simulated world: virtual clock, event queue and the drivers of the nodes.

Time is an integer number of microseconds. Every random choice comes from one
`random.Random(seed)`, and simultaneous events run in the order they were scheduled, so a
run is a pure function of its configuration and seed.

Each node is driven exactly like the node drives the engine: the actions of a step (or of
the steps of one received frame) are ordered by `consensus.driver.plan`, then the durable
batch is written to the node's store, then the frames are sent (one per peer, the replies
included), then the local effects happen. A commit is pipelined as in the node (§3.3): the
next height starts as soon as the block is executed, and the block is durable (and
served) only when its batch lands, `commit_write_us` later, or earlier when a later batch
must wait for it (`consensus.driver.waits_for_commit`). A crash discards everything but the
durable store (`consensus.sim.crash`); frames travel over `consensus.sim.network`.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from consensus.amnesia import AmnesiaGuard
from consensus.driver import Outgoing, plan, waits_for_commit
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
    Event,
    FetchBlock,
    MempoolNonEmpty,
    MessageIn,
    Persist,
    PersistBlock,
    ReplyDone,
    ReplySync,
    SetTimer,
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
    SyncResp,
    block_hash,
)
from consensus.params import Params
from consensus.safety import RULES, SafetyRules
from consensus.sets import VSet
from consensus.sim import crash, network
from consensus.sim.app import GENESIS_HASH, app_valid, block_txs, build_block, set_history
from consensus.sim.config import FETCH_RETRY_US, MS, CrashSpec, SimConfig, Validity

if TYPE_CHECKING:
    from consensus.sim.byzantine import Strategy
    from consensus.sim.invariants import Monitor


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
        self.pending: Commit | None = None
        """The commit executed whose batch is in flight (volatile: a crash drops it)."""
        self.executed = 0
        """The highest height this run of the node executed (committed or in flight)."""
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
        self.amnesia: AmnesiaGuard | None = None
        """The amnesia guard a restore arms (§3.8); its settled bound is durable."""

    @property
    def name(self) -> str:
        return f"{self.ident}" if self.copy == 0 else f"{self.ident}'{self.copy}"

    def durable_state(self) -> tuple[dict[int, Record], dict[bytes, Block], int]:
        return dict(self.records), dict(self.blocks), len(self.chain)


class Sim:
    """The whole simulated network. `run()` returns when the target is met or time is up."""

    def __init__(self, cfg: SimConfig, monitor: Monitor | None = None) -> None:
        self.cfg = cfg
        genesis_n = cfg.n if cfg.reconf is None else cfg.reconf.genesis_n
        self.params = cfg.params or Params(n=genesis_n)
        self.changes = {} if cfg.reconf is None else {c.tx: c for c in cfg.reconf.changes}
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

    # --- validator sets (§10.2): derived by each node from the blocks it executed ---

    def sets_of(self, blocks: list[Block]) -> list[VSet] | None:
        """`[V(1), ..., V(len(blocks) + D)]` for a chain, None without set changes."""
        rc = self.cfg.reconf
        if rc is None:
            return None
        return set_history(blocks, VSet.genesis(rc.genesis_n), self.changes, rc.delay)

    def executed_blocks(self, nd: SimNode) -> list[Block]:
        blocks = list(nd.chain_blocks)
        if nd.pending is not None:
            blocks.append(nd.pending.block)
        return blocks

    def start_height(self, nd: SimNode, h: int, parent: bytes, anchor: int) -> StartHeight:
        """`StartHeight(h, parent, V(h), V(h+1))` from the node's executed chain (§10.2)."""
        sets = self.sets_of(self.executed_blocks(nd))
        if sets is None:
            return StartHeight(h, parent, anchor)
        return StartHeight(h, parent, anchor, sets[h - 1], sets[h])

    def set_epochs(self, nd: SimNode) -> tuple[tuple[int, VSet], ...]:
        """The node's set history for `Start`: `(e, V(e))` at 1 and at every activation."""
        sets = self.sets_of(self.executed_blocks(nd))
        if sets is None:
            return ()
        return tuple((h, vs) for h, vs in enumerate(sets, start=1) if h == 1 or vs != sets[h - 2])

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
            ev = self.start_height(nd, 1, GENESIS_HASH, nd.next_anchor)
            self.at(0, partial(self.step, nd, ev))
            if nd.strategy is not None and nd.strategy.tick_us:
                self.at(nd.strategy.tick_us, partial(network.tick, self, nd))
        for spec in cfg.crashes:
            self.at(spec.at_us, partial(crash.arm_crash, self, spec))
        for rb in cfg.rollbacks:
            self.at(rb.snapshot_us, partial(crash.snapshot, self, rb.node))
            self.at(rb.at_us, partial(crash.rollback, self, rb))
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
            view = nd.engine.view()
            inst = view.instance(h)
            if inst is not None and not inst.terminated:
                return False
            if (
                self.cfg.reconf is not None
                and nd.up
                and any(not i.terminated for i in view.instances if i.height < len(nd.chain))
            ):
                return False  # the last height of a set ends on its own DONEs (§10.3)
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
        """Run events through the engine and carry out the plan of their actions."""
        acts: list[Action] = []
        for ev in evs:
            if isinstance(ev, MessageIn):
                self.monitor.on_receive(nd, ev.sender, ev.msg)
            out = nd.engine.step(ev)
            if self.cfg.trace:
                self.log(f"node {nd.name} <- {network.short(ev)}")
            acts += out
        self.monitor.after_step(nd, acts)
        self.carry_out(nd, acts)

    def carry_out(self, nd: SimNode, acts: list[Action]) -> None:
        """The actions of one batch of steps, in the order of their plan (the node's
        driver runs the same order), with this node's crash point if it has one."""
        todo = plan(acts)
        if nd.pending is not None and self.cfg.commit_barrier and waits_for_commit(todo.durable):
            self._land(nd)
        for d in todo.durable:
            if isinstance(d, Persist):
                nd.records[d.record.height] = d.record
            elif isinstance(d, PersistBlock):
                nd.blocks[block_hash(d.block)] = d.block
            else:
                nd.records.pop(d.height, None)
        self.monitor.on_durable(nd, acts)
        point = crash.crash_point(self, nd, acts, todo)
        if point == "after_persist":
            crash.crash(self, nd)
            return
        frames = [(f.to, self._resolve(nd, f.messages)) for f in todo.frames]
        frames = [(to, msgs) for to, msgs in frames if msgs]
        if point == "mid_send" and frames:
            frames = frames[: self.rng.randrange(len(frames))]
        for to, msgs in frames:
            network.send_frame(self, nd, to, msgs)
        if point in ("mid_send", "after_send"):
            crash.crash(self, nd)
            return
        for a in todo.local:
            if isinstance(a, Commit) and point == "before_commit":
                crash.crash(self, nd)
                return
            self._perform(nd, a)

    def _resolve(self, nd: SimNode, outgoing: tuple[Outgoing, ...]) -> list[Message]:
        """The messages of one frame: sends as they are, replies read from the chain."""
        msgs: list[Message] = []
        for a in outgoing:
            if isinstance(a, ReplyDone):
                if 1 <= a.height <= len(nd.chain):
                    msgs.append(Done(self.params.chain_id, a.height, nd.chain[a.height - 1]))
            elif isinstance(a, ReplySync):
                resp = self._serve_sync(nd, a.to, a.from_height, a.max_count)
                if resp is not None:
                    msgs.append(resp)
            else:
                msgs.append(a.msg)
        return msgs

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
        """Execute the block and start the next height; the batch lands later (`_land`)."""
        v = block_hash(a.block)
        if a.height <= nd.executed:
            done = nd.chain[a.height - 1] if a.height <= len(nd.chain) else None
            if nd.pending is not None and nd.pending.height == a.height:
                done = block_hash(nd.pending.block)
            if done != v:
                self.monitor.violation(3, f"node {nd.name} re-commit of h {a.height} differs")
            return
        if nd.pending is not None:
            self._land(nd)  # one writer: batches land in the order they were written
        if a.height != nd.executed + 1:
            self.monitor.violation(3, f"node {nd.name} commits h {a.height} out of order")
            return
        self.monitor.on_execute(nd, a.height, a.block)
        nd.pending = a
        nd.executed = a.height
        nd.mempool -= block_txs(a.block)
        self.log(f"node {nd.name} EXECUTE h {a.height} {v.hex()[:8]}")
        epoch = nd.epoch
        write = self.rng.randint(*self.cfg.commit_write_us)
        self.at(self.now + write, lambda: self._written(nd, a, epoch))
        if self.idle_mode or a.height < self.cfg.heights + 2:
            self._later(nd, 0, self.start_height(nd, a.height + 1, v, a.next_anchor))
        if self.idle_mode:
            self._tell_mempool(nd)

    def _written(self, nd: SimNode, a: Commit, epoch: int) -> None:
        """The commit's synced batch finishes, unless the node crashed or it landed before."""
        if nd.epoch != epoch or nd.pending is not a:
            return
        spec = nd.pending_crash
        if spec is not None and spec.point == "before_durable":
            nd.pending_crash = None
            crash.schedule_restart(self, nd, spec)
            crash.crash(self, nd)
            return
        self._land(nd)

    def _land(self, nd: SimNode) -> None:
        """The commit in flight is durable: the block joins the node's chain."""
        a = nd.pending
        if a is None:
            return
        nd.pending = None
        v = block_hash(a.block)
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
        network.send_frame(self, nd, to, [BlockReq(self.params.chain_id, (v,))])
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

    def on_driver_msg(self, nd: SimNode, src: int, m: BlockReq | BlockResp) -> None:
        if isinstance(m, BlockReq):
            if nd.strategy is not None:
                resp = nd.strategy.serve_blocks(self, nd, src, m.hashes)
                if resp is not None:
                    if resp.blocks:
                        network.send_frame(self, nd, src, [resp])
                    return
            found = tuple(nd.blocks[v] for v in m.hashes if v in nd.blocks)
            if found:
                network.send_frame(self, nd, src, [BlockResp(self.params.chain_id, found)])
            return
        for blk in m.blocks:
            v = block_hash(blk)
            if v in nd.fetching:
                del nd.fetching[v]
                self.step(nd, BlockFetched(blk))
