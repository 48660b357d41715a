"""The consensus engine: TetraBFT run once per height, as a pure state machine (§2–§5).

`Engine.step(event) -> list[Action]` is the whole interface. The engine owns no socket,
clock, randomness or disk: messages, timer expiries and application answers come in as
events, and everything it wants done (store a record, send a message, arm a timer, build,
validate, fetch or commit a block) goes out as actions. See `consensus/README.md` for the
driver contract (persist the step's records and bodies in one synced batch, then send).

Per height the engine keeps one `Instance`: the persistent `Record` (round, abort level,
its own vote summaries, its entry REPORT, its proposal and the decision) plus volatile
per-sender slots (the highest-round vote per phase, the highest-round REPORT, the highest
ABORT level and the first DONE). Rounds advance by ABORT messages: echo a level once f+1
nodes are at or above it, move past it once n-f are. Within a round, a node votes in phase 1
for the leader's proposal when the REPORTs of the round show it safe (`consensus.safety`),
and in phase k+1 for a value with n-f phase-k votes; n-f phase-4 votes decide. Deciders
broadcast DONE; f+1 matching DONEs decide, n-f terminate.

Deviations from CONSENSUS.md, each for a reason stated where it is implemented:

- the record also stores `parent_hash`, so a restart needs no chain-store lookup;
- DONE replies for an old height (§3.4) are not sent to a peer whose own DONE for that
  height was already counted (it has decided and was sent our DONE; a DONE is answered at
  most once per peer and height, otherwise two terminated nodes answer each other's
  answers forever), nor during the first one to two serve periods after our own decision
  (our DONE to that peer is still in flight). Replies in those cases only cost frames in
  the good case, and broke the bound of 5 frames per directed link per height of §7 in the
  simulator; later asks are still answered;
- answers that need the chain store (the DONE for a height whose instance is gone, and
  SYNC_RESP) are delegated to the driver with `ReplyDone` and `ReplySync`;
- all "once" markers for validation and fetching are per round, so a value whose cached
  verdict or body was collected can be asked for again in a later round;
- idle mode (§4), two flaws found by the simulator's mempool model (`idle-txs`): (1) only
  traffic for the current or next height arms the round timer, as §4 says; late VOTE4s of
  the height just committed armed the new height's timer, so every commit was followed by
  a round change and an empty block, forever in a chain with one Byzantine node; (2) the
  mempool flag is cleared when the engine emits `Commit` (the commit removes the block's
  transactions) and set again by the driver's `MempoolNonEmpty` after the commit; with the
  stale flag the next height armed every timer and asked the leader to build although the
  mempool was empty: one empty block after every transaction (and, with a driver that
  builds only with transactions, round changes until the next transaction).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

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
    Abort,
    Block,
    BlockReq,
    BlockResp,
    ConsensusMessage,
    Done,
    Message,
    Propose,
    Record,
    Report,
    Summary,
    SyncReq,
    SyncResp,
    Vote,
    block_hash,
    report_well_formed,
)
from consensus.params import Params
from consensus.safety import FRESH, RULES, SafetyRules

SYNC_TIMER = TimerKey("sync")
SYNC_SERVE_TIMER = TimerKey("sync-serve")
SERVE_TIMER = TimerKey("serve")


def round_timer(h: int) -> TimerKey:
    return TimerKey("round", h)


def retx_timer(h: int) -> TimerKey:
    return TimerKey("retx", h)


class Instance:
    """State of one height: the persistent record and the volatile per-sender slots."""

    __slots__ = (
        "abort_of",
        "commit_emitted",
        "counts",
        "done_of",
        "h",
        "onces",
        "proposals",
        "rec",
        "report_slot",
        "terminated",
        "timer_armed",
        "timer_fired",
        "vote_slot",
    )

    def __init__(self, rec: Record, n: int) -> None:
        self.rec = rec
        self.h = rec.height
        self.proposals: dict[int, tuple[int, bytes, Block]] = {}
        """round -> (sender, value, block): the first PROPOSE of that round's leader."""
        self.vote_slot: list[list[tuple[int, bytes] | None]] = [[None] * 4 for _ in range(n)]
        self.counts: Counter[tuple[int, int, bytes]] = Counter()
        """(phase, round, value) -> number of senders whose slot holds it."""
        self.report_slot: dict[int, Report] = {}
        self.abort_of: dict[int, int] = {}
        self.done_of: dict[int, bytes] = {}
        self.onces: set[tuple[object, ...]] = set()
        self.terminated = False
        self.commit_emitted = False
        self.timer_armed = False
        self.timer_fired = 0

    def once(self, key: tuple[object, ...], action: Action) -> list[Action]:
        if key in self.onces:
            return []
        self.onces.add(key)
        return [action]

    def reports(self, r: int) -> dict[int, Report]:
        return {j: rep for j, rep in self.report_slot.items() if rep.round == r}

    def values_with_quorum(self, k: int, r: int, q: int) -> list[bytes]:
        return sorted(v for (kk, rr, v), c in self.counts.items() if kk == k and rr == r and c >= q)


class Engine:
    """One validator's consensus state machine. Feed events to `step`; perform the actions."""

    rules: SafetyRules = RULES

    def __init__(self, params: Params, me: int) -> None:
        self.p = params
        self.me = me
        self.peers = tuple(j for j in range(params.n) if j != me)
        self.inst: dict[int, Instance] = {}
        self.cur = 0
        self.committed = 0
        self.blocks: dict[bytes, Block] = {}
        self.valid: dict[bytes, bool] = {}
        self.untimely: set[bytes] = set()
        """Values whose block time was outside the driver's window when validated (§3.7)."""
        self.next_buffer: dict[tuple[int, int, int], ConsensusMessage] = {}
        self.claims: dict[int, dict[int, bytes]] = {}
        self.peer_height: dict[int, int] = {}
        self.sync_pending = False
        self.sync_served: set[int] = set()
        self.sync_serve_armed = False
        self.done_served: set[int] = set()
        self.done_pending: dict[int, int] = {}
        self.serve_armed = False
        self.recent_done: dict[int, set[int]] = {}
        self.fresh_done: set[int] = set()
        self.fresh_old: set[int] = set()
        """Heights decided in the current serve period: our DONE to every peer is in flight."""
        self.undeleted: set[int] = set()
        self.mempool_nonempty = False

    # --- thresholds (overridable by the simulator's test mutants only) ---

    @property
    def q(self) -> int:
        return self.p.q

    @property
    def b(self) -> int:
        return self.p.b

    @property
    def idle_mode(self) -> bool:
        return self.p.propose_wait_max_ms is None

    def leader(self, inst: Instance, r: int) -> int:
        return self.p.leader(inst.rec.anchor, r)

    # --- the one entry point ---

    def step(self, ev: Event) -> list[Action]:
        """Process one event and return the actions the driver must perform."""
        if isinstance(ev, MessageIn):
            out = self._on_message(ev.sender, ev.msg)
        elif isinstance(ev, Timeout):
            out = self._on_timeout(ev.key)
        elif isinstance(ev, BlockValidated):
            out = self._on_block_validated(ev.value, ev.ok, ev.timely)
        elif isinstance(ev, BlockFetched):
            out = self._on_block_fetched(ev.block)
        elif isinstance(ev, BlockBuilt):
            out = self._on_block_built(ev.height, ev.round, ev.block)
        elif isinstance(ev, StartHeight):
            out = self._on_start_height(ev.height, ev.parent_hash, ev.anchor)
        elif isinstance(ev, Start):
            out = self._on_start(ev)
        else:
            out = self._on_mempool(ev.nonempty)
        self._finish_step(out)
        return out

    def _finish_step(self, out: list[Action]) -> None:
        """Drop terminated instances at the end of the step (never mid-handler, §3.6)."""
        for h in sorted(self.inst):
            inst = self.inst[h]
            if not inst.terminated or not (inst.commit_emitted or h <= self.committed):
                continue
            del self.inst[h]
            self.recent_done[h] = set(inst.done_of)
            for old in [x for x in self.recent_done if x < h - 1]:
                del self.recent_done[old]
            if h <= self.committed:
                out.append(DeleteRecord(h))
            else:
                self.undeleted.add(h)
            self._gc_blocks()

    def _gc_blocks(self) -> None:
        """Keep only bodies a live proposal, a summary or a pending commit refers to."""
        keep: set[bytes] = set()
        for inst in self.inst.values():
            keep.update(v for _, v, _ in inst.proposals.values())
            keep.update(s.last_value for s in inst.rec.s if s.last_value is not None)
            if inst.rec.proposal_value is not None:
                keep.add(inst.rec.proposal_value)
            if inst.rec.decided is not None:
                keep.add(inst.rec.decided)
        lowest = min(self.inst, default=self.cur)
        for v in [v for v, blk in self.blocks.items() if v not in keep and blk.height <= lowest]:
            del self.blocks[v]
            self.valid.pop(v, None)
            self.untimely.discard(v)

    # --- sending ---

    def _bcast(self, inst: Instance, m: ConsensusMessage) -> list[Action]:
        """Frames to every peer, and local delivery to self (after the step's persist)."""
        out: list[Action] = [Send(j, m) for j in self.peers]
        return out + self._deliver(inst, self.me, m)

    def _persist(self, inst: Instance) -> list[Action]:
        return [Persist(inst.rec)]

    def _persist_vote(self, inst: Instance) -> list[Action]:
        """The persist that MUST precede a VOTE (§2.6)."""
        return [Persist(inst.rec)]

    def _vote1_body(self, blk: Block) -> list[Action]:
        """The body that MUST be durable together with S[1] before a VOTE1 (§2.3)."""
        return [PersistBlock(blk)]

    # --- heights ---

    def _on_start_height(self, h: int, parent_hash: bytes, anchor: int) -> list[Action]:
        if h in self.inst or h <= self.committed or h < self.cur:
            return []
        out: list[Action] = []
        self.committed = h - 1
        for x in sorted(self.undeleted):
            if x <= self.committed:
                self.undeleted.discard(x)
                out.append(DeleteRecord(x))
        for inst in list(self.inst.values()):
            if inst.h < h - 1:
                out += self._terminate(inst)
        rec = Record(height=h, anchor=anchor % self.p.n, parent_hash=parent_hash)
        inst = Instance(rec, self.p.n)
        self.inst[h] = inst
        self.cur = h
        inst.done_of = self.claims.pop(h, {})
        for x in [x for x in self.claims if x <= h]:
            del self.claims[x]
        out += self._enter_round(inst, 0) + self._check_done(inst)
        buffered = sorted(self.next_buffer.items(), key=lambda kv: kv[0])
        self.next_buffer = {}
        for (j, _, _), m in buffered:
            if m.height == h:
                out += self._on_message(j, m)
        return out

    def _on_start(self, ev: Start) -> list[Action]:
        """Restart: rebuild from the records and repeat, never recompute (§2.6)."""
        self.committed = ev.committed_height
        self.cur = max(self.cur, ev.committed_height)
        for blk in ev.blocks:
            self.blocks[block_hash(blk)] = blk
        by_h = {rec.height: rec for rec in ev.records}
        out: list[Action] = []
        for h in sorted(by_h):
            rec = by_h[h]
            nxt = by_h.get(h + 1)
            if (nxt is not None and nxt.decided is not None) or ev.committed_height >= h + 1:
                out.append(DeleteRecord(h))
                continue
            inst = Instance(rec, self.p.n)
            self.inst[h] = inst
            self.cur = max(self.cur, h)
            if h <= self.committed:
                inst.commit_emitted = True
            if rec.decided is None:
                inst.timer_armed = True
                out.append(SetTimer(round_timer(h), self.p.timeout_ms(rec.round)))
            else:
                out.append(SetTimer(retx_timer(h), self.p.timeout_ms(rec.round)))
            out += self._resend(inst)
            out += self._try_commit(inst)
        return out + self._request_sync()

    def _resend(self, inst: Instance) -> list[Action]:
        """Re-send, unchanged, what the record says this node already sent."""
        rec = inst.rec
        out: list[Action] = []
        cid = self.p.chain_id
        if rec.entry_report is not None and rec.entry_report.round == rec.round:
            out += self._bcast(inst, rec.entry_report)
        if rec.proposal_round == rec.round and rec.proposal_value is not None:
            blk = self.blocks.get(rec.proposal_value)
            if blk is not None:
                out += self._bcast(inst, Propose(cid, inst.h, rec.round, blk))
        for k in (1, 2, 3, 4):
            s = rec.s[k - 1]
            if s.last_round == rec.round and s.last_value is not None:
                out += self._bcast(inst, Vote(cid, inst.h, rec.round, k, s.last_value))
        if rec.abort_level >= 0:
            inst.abort_of[self.me] = rec.abort_level
            out += [Send(j, Abort(cid, inst.h, rec.abort_level)) for j in self.peers]
        if rec.decided is not None:
            out += self._bcast(inst, Done(cid, inst.h, rec.decided))
        return out

    # --- rounds (R1, R8, R9) ---

    def _enter_round(self, inst: Instance, r: int) -> list[Action]:
        rep = Report(self.p.chain_id, inst.h, r, inst.rec.s) if r > 0 else None
        inst.rec = replace(inst.rec, round=r, entry_report=rep)
        for old in [x for x in inst.proposals if x < r]:
            del inst.proposals[old]
        out = self._persist(inst)
        if inst.rec.decided is None and (
            not self.idle_mode or r > 0 or self.mempool_nonempty or inst.timer_armed
        ):
            inst.timer_armed = True
            out.append(SetTimer(round_timer(inst.h), self.p.timeout_ms(r)))
        if rep is not None:
            out += self._bcast(inst, rep)
        self._gc_blocks()
        return out + self._try_propose(inst) + self._reevaluate(inst)

    def _reevaluate(self, inst: Instance) -> list[Action]:
        out = self._try_vote1(inst)
        r = inst.rec.round
        for k in (1, 2, 3):
            for v in inst.values_with_quorum(k, r, self.q):
                out += self._cast(inst, k + 1, v)
        return out

    def _send_abort(self, inst: Instance, level: int) -> list[Action]:
        inst.rec = replace(inst.rec, abort_level=level)
        inst.abort_of[self.me] = level
        out = self._persist(inst)
        return out + [Send(j, Abort(self.p.chain_id, inst.h, level)) for j in self.peers]

    def _levels(self, inst: Instance) -> list[int]:
        return sorted((inst.abort_of.get(x, -1) for x in range(self.p.n)), reverse=True)

    def _check_aborts(self, inst: Instance) -> list[Action]:
        out: list[Action] = []
        u = self._levels(inst)[self.b - 1]
        if u > inst.rec.abort_level:
            out += self._send_abort(inst, u)
        w = self._levels(inst)[self.q - 1]
        if w >= inst.rec.round:
            out += self._enter_round(inst, w + 1)
        return out

    # --- proposals (R2, R3) ---

    def _structurally_valid(self, inst: Instance, blk: Block, r: int) -> bool:
        """Rules 1-3 of §3.1."""
        return (
            blk.height == inst.h
            and blk.parent == inst.rec.parent_hash
            and blk.round <= r
            and blk.proposer == self.leader(inst, blk.round)
            and len(blk.body) <= self.p.max_block_bytes
        )

    def _try_propose(self, inst: Instance) -> list[Action]:
        r = inst.rec.round
        if inst.terminated or self.leader(inst, r) != self.me or inst.rec.proposal_round == r:
            return []
        build = BuildBlock(inst.h, r, inst.rec.parent_hash)
        if r == 0:
            if self.idle_mode and not self.mempool_nonempty:
                return []
            return inst.once(("build", 0), build)
        reps = inst.reports(r)
        q, b = self.q, self.b
        if self.rules.shows_safe(reps, FRESH, r, 3, 2, q, b):
            return inst.once(("build", r), build)
        out: list[Action] = []
        for v in self.rules.justified_values(reps, r, 3, 2, q, b):
            blk = self.blocks.get(v)
            if blk is None:
                out += inst.once(("fetch", r, v), FetchBlock(v))
                continue
            if not self._structurally_valid(inst, blk, r):
                continue
            ok = self.valid.get(v)
            if ok is None:
                out += inst.once(("val", r, v), ValidateBlock(blk))
                continue
            if ok:
                return out + self._do_propose(inst, blk, v)
        return out

    def _on_block_built(self, h: int, r: int, blk: Block) -> list[Action]:
        inst = self.inst.get(h)
        if inst is None or inst.terminated or inst.rec.round != r or inst.rec.proposal_round == r:
            return []
        if blk.round != r or blk.proposer != self.me or not self._structurally_valid(inst, blk, r):
            return [Alert("bad-built-block", f"height {h} round {r}")]
        v = block_hash(blk)
        self.blocks[v] = blk
        self.valid[v] = True
        return self._do_propose(inst, blk, v)

    def _do_propose(self, inst: Instance, blk: Block, v: bytes) -> list[Action]:
        r = inst.rec.round
        inst.rec = replace(inst.rec, proposal_round=r, proposal_value=v)
        out = [*self._persist(inst), PersistBlock(blk)]
        return out + self._bcast(inst, Propose(self.p.chain_id, inst.h, r, blk))

    # --- votes (R4, R5, R6) ---

    def _try_vote1(self, inst: Instance) -> list[Action]:
        r = inst.rec.round
        prop = inst.proposals.get(r)
        if inst.terminated or inst.rec.s[0].last_round == r or prop is None:
            return []
        _, v, blk = prop
        if not self._structurally_valid(inst, blk, r):
            return []
        ok = self.valid.get(v)
        if ok is None:
            return inst.once(("val", r, v), ValidateBlock(blk))
        if not ok:
            return []
        if blk.round == r and v in self.untimely:
            # A fresh proposal must be timely (§3.7); a re-proposal of a value built in an
            # earlier round is not judged by the clock, or a value locked by a quorum
            # could never be decided once its time had passed.
            return []
        if r > 0 and not self.rules.shows_safe(inst.reports(r), v, r, 4, 1, self.q, self.b):
            return []
        return self._vote1_body(blk) + self._cast(inst, 1, v)

    def _cast(self, inst: Instance, k: int, v: bytes) -> list[Action]:
        """The only place that emits a VOTE: at most one per (height, round, phase)."""
        r = inst.rec.round
        s = inst.rec.s[k - 1]
        if inst.terminated or s.last_round == r:
            return []
        prev = s.last_round if s.last_value is not None and s.last_value != v else s.prev_round
        summaries = (*inst.rec.s[: k - 1], Summary(r, v, prev), *inst.rec.s[k:])
        inst.rec = replace(inst.rec, s=summaries)
        out = self._persist_vote(inst)
        return out + self._bcast(inst, Vote(self.p.chain_id, inst.h, r, k, v))

    def _on_vote(self, inst: Instance, j: int, m: Vote) -> list[Action]:
        slots = inst.vote_slot[j]
        old = slots[m.phase - 1]
        if old is not None and m.round <= old[0]:
            if m.round == old[0] and m.value != old[1]:
                return [Alert("vote-equivocation", f"node {j} h {inst.h} r {m.round} k {m.phase}")]
            return []
        if old is not None:
            key = (m.phase, old[0], old[1])
            inst.counts[key] -= 1
            if inst.counts[key] == 0:
                del inst.counts[key]
        slots[m.phase - 1] = (m.round, m.value)
        inst.counts[(m.phase, m.round, m.value)] += 1
        c = inst.counts[(m.phase, m.round, m.value)]
        out: list[Action] = []
        if m.phase == 4 and inst.rec.decided is None and c >= self.q:
            out += self._decide(inst, m.value)
        if m.phase < 4 and m.round == inst.rec.round and c >= self.q:
            out += self._cast(inst, m.phase + 1, m.value)
        return out

    def _on_propose(self, inst: Instance, j: int, m: Propose) -> list[Action]:
        if m.block.height != inst.h or j != self.leader(inst, m.round) or m.round < inst.rec.round:
            return []
        v = block_hash(m.block)
        old = inst.proposals.get(m.round)
        if old is not None:
            if old[1] != v:
                return [Alert("leader-equivocation", f"node {j} h {inst.h} r {m.round}")]
            return []
        if m.round > inst.rec.round:
            for r2 in [x for x, p in inst.proposals.items() if p[0] == j and x > inst.rec.round]:
                if r2 > m.round:
                    return []
                del inst.proposals[r2]
        inst.proposals[m.round] = (j, v, m.block)
        self.blocks[v] = m.block
        return self._try_vote1(inst) if m.round == inst.rec.round else []

    def _on_report(self, inst: Instance, j: int, m: Report) -> list[Action]:
        if not report_well_formed(m):
            return []
        old = inst.report_slot.get(j)
        if old is not None and m.round <= old.round:
            if m.round == old.round and m != old:
                return [Alert("report-equivocation", f"node {j} h {inst.h} r {m.round}")]
            return []
        inst.report_slot[j] = m
        if m.round != inst.rec.round:
            return []
        return self._try_propose(inst) + self._try_vote1(inst)

    def _on_abort(self, inst: Instance, j: int, m: Abort) -> list[Action]:
        if m.level <= inst.abort_of.get(j, -1):
            return []
        inst.abort_of[j] = m.level
        return self._check_aborts(inst)

    # --- decisions (R6, R7) ---

    def _decide(self, inst: Instance, v: bytes) -> list[Action]:
        inst.rec = replace(inst.rec, decided=v)
        inst.timer_armed = False
        out = [
            *self._persist(inst),
            CancelTimer(round_timer(inst.h)),
            SetTimer(retx_timer(inst.h), self.p.timeout_ms(inst.rec.round)),
        ]
        out += self._bcast(inst, Done(self.p.chain_id, inst.h, v))
        self.fresh_done.add(inst.h)
        out += self._arm_serve()
        out += self._try_commit(inst)
        prev = self.inst.get(inst.h - 1)
        if prev is not None:
            out += self._terminate(prev)
        return out

    def _try_commit(self, inst: Instance) -> list[Action]:
        v = inst.rec.decided
        if v is None or inst.commit_emitted:
            return []
        blk = self.blocks.get(v)
        if blk is None:
            return inst.once(("fetch-commit", v), FetchBlock(v))
        if blk.height != inst.h or blk.parent != inst.rec.parent_hash:
            return inst.once(("bad-commit", v), Alert("fatal-commit-parent", f"h {inst.h}"))
        inst.commit_emitted = True
        if self.idle_mode:
            # The commit removes the block's transactions from the mempool; until the
            # driver reports the mempool after the commit, assume it is empty (§4).
            self.mempool_nonempty = False
        nxt = self.p.next_anchor(inst.h, inst.rec.anchor, blk.proposer)
        return [Commit(inst.h, blk, nxt)]

    def _on_done(self, inst: Instance, j: int, m: Done) -> list[Action]:
        old = inst.done_of.get(j)
        if old is not None:
            if old != m.value:
                return [Alert("done-equivocation", f"node {j} h {inst.h}")]
            return []
        inst.done_of[j] = m.value
        return self._check_done(inst)

    def _check_done(self, inst: Instance) -> list[Action]:
        out: list[Action] = []
        for v, c in sorted(Counter(inst.done_of.values()).items()):
            if c >= self.b and inst.rec.decided is None:
                out += self._decide(inst, v)
            if c >= self.q:
                out += self._terminate(inst)
        return out

    def _terminate(self, inst: Instance) -> list[Action]:
        if inst.terminated:
            return []
        inst.terminated = True
        inst.timer_armed = False
        return [CancelTimer(round_timer(inst.h)), CancelTimer(retx_timer(inst.h))]

    # --- messages ---

    def _on_message(self, j: int, m: Message) -> list[Action]:
        if not 0 <= j < self.p.n or j == self.me or m.chain_id != self.p.chain_id:
            return []
        if isinstance(m, SyncReq | SyncResp):
            return self._on_sync(j, m)
        if isinstance(m, BlockReq | BlockResp):
            return []
        h = m.height
        if h < 1:
            return []
        # A height more than the window above ours is only a claim that the sender is far
        # ahead: it is recorded as cur + window (enough to start catching up) and never
        # reaches an instance, a buffer or a timer (§3.5).
        claim = min(h, self.cur + self.p.height_window)
        if claim > self.peer_height.get(j, 0):
            self.peer_height[j] = claim
        inst = self.inst.get(h)
        if inst is None:
            if h == self.cur + 1:
                self._buffer_next(j, m)
                return self._arm_idle(m)
            if h > self.cur + 1:
                return self._maybe_sync()
            return self._serve_done(j, h, m)
        if inst.terminated:
            return self._serve_done(j, h, m)
        return self._arm_idle(m) + self._deliver(inst, j, m)

    def _deliver(self, inst: Instance, j: int, m: ConsensusMessage) -> list[Action]:
        if isinstance(m, Vote):
            return self._on_vote(inst, j, m)
        if isinstance(m, Report):
            return self._on_report(inst, j, m)
        if isinstance(m, Propose):
            return self._on_propose(inst, j, m)
        if isinstance(m, Abort):
            return self._on_abort(inst, j, m)
        return self._on_done(inst, j, m)

    def _buffer_next(self, j: int, m: ConsensusMessage) -> None:
        """Next-height buffer: one slot per (sender, type, phase), 8 per sender (§3.5)."""
        if isinstance(m, Vote):
            key, rank = (j, 1, m.phase), m.round
        elif isinstance(m, Propose):
            key, rank = (j, 0, 0), m.round
        elif isinstance(m, Report):
            key, rank = (j, 2, 0), m.round
        elif isinstance(m, Abort):
            key, rank = (j, 3, 0), m.level
        else:
            key, rank = (j, 4, 0), 0
        old = self.next_buffer.get(key)
        if old is not None and old.height == m.height and self._rank(old) >= rank:
            return
        self.next_buffer[key] = m

    @staticmethod
    def _rank(m: ConsensusMessage) -> int:
        if isinstance(m, Abort):
            return m.level
        if isinstance(m, Done):
            return 0
        return m.round

    def _arm_idle(self, m: ConsensusMessage) -> list[Action]:
        """Idle mode (§4): consensus traffic for the current or next height arms the timer.

        Traffic for an older height (late votes of the height just committed) does not: it
        would make every node suspect an idle leader right after each commit.
        """
        if not self.idle_mode or isinstance(m, Done) or m.height < self.cur:
            return []
        inst = self.inst.get(self.cur)
        if inst is None or inst.terminated or inst.timer_armed or inst.rec.decided is not None:
            return []
        inst.timer_armed = True
        return [SetTimer(round_timer(inst.h), self.p.timeout_ms(inst.rec.round))]

    def _on_mempool(self, nonempty: bool) -> list[Action]:
        self.mempool_nonempty = nonempty
        inst = self.inst.get(self.cur)
        if not nonempty or inst is None or inst.terminated:
            return []
        out: list[Action] = []
        if not inst.timer_armed and inst.rec.decided is None:
            inst.timer_armed = True
            out.append(SetTimer(round_timer(inst.h), self.p.timeout_ms(inst.rec.round)))
        return out + self._try_propose(inst)

    # --- timers ---

    def _on_timeout(self, key: TimerKey) -> list[Action]:
        if key.kind == "sync":
            self.sync_pending = False
            return []
        if key.kind == "sync-serve":
            self.sync_served.clear()
            self.sync_serve_armed = False
            return []
        if key.kind == "serve":
            return self._on_serve_timer()
        inst = self.inst.get(key.height)
        if inst is None or inst.terminated:
            return []
        cid, h = self.p.chain_id, inst.h
        if key.kind == "round":
            if inst.rec.decided is not None:
                return []
            inst.timer_fired += 1
            if inst.rec.abort_level < inst.rec.round:
                out = self._send_abort(inst, inst.rec.round) + self._check_aborts(inst)
            else:
                out = [Send(j, Abort(cid, h, inst.rec.abort_level)) for j in self.peers]
            out.append(SetTimer(round_timer(h), self.p.timeout_ms(inst.rec.round)))
            return out + self._maybe_sync()
        decided = inst.rec.decided
        if decided is None:
            return []
        out = [Send(j, Done(cid, h, decided)) for j in self.peers if j not in inst.done_of]
        if inst.rec.abort_level >= 0:
            out += [Send(j, Abort(cid, h, inst.rec.abort_level)) for j in self.peers]
        out.append(SetTimer(retx_timer(h), self.p.timeout_ms(inst.rec.round)))
        return out

    # --- catching up (§3.4) ---

    def _maybe_sync(self) -> list[Action]:
        if self.sync_pending:
            return []
        ahead = sum(1 for h in self.peer_height.values() if h >= self.cur + 2)
        inst = self.inst.get(self.cur)
        fired = inst.timer_fired if inst is not None else 0
        if ahead >= self.b or fired >= 2:
            return self._request_sync()
        return []

    def _request_sync(self) -> list[Action]:
        self.sync_pending = True
        frm = max(self.cur, self.committed + 1)
        m = SyncReq(self.p.chain_id, frm, self.p.sync_max_count)
        out: list[Action] = [Send(j, m) for j in self.peers]
        return [*out, SetTimer(SYNC_TIMER, self.p.sync_interval_ms)]

    def _on_sync(self, j: int, m: SyncReq | SyncResp) -> list[Action]:
        if isinstance(m, SyncReq):
            if j in self.sync_served or m.height < 1:
                return []
            self.sync_served.add(j)
            out: list[Action] = [ReplySync(j, m.height, min(m.max_count, self.p.sync_max_count))]
            if not self.sync_serve_armed:
                self.sync_serve_armed = True
                out.append(SetTimer(SYNC_SERVE_TIMER, self.p.sync_interval_ms))
            return out
        out = []
        if m.height > self.cur + 1:
            # We ask from our current height (or the one after the last commit): an answer
            # from higher up is not an answer to us (§3.4).
            return []
        top = min(m.height + len(m.hashes) - 1, self.cur + self.p.height_window)
        if m.hashes and top > self.peer_height.get(j, 0):
            self.peer_height[j] = top
        for i, value in enumerate(m.hashes[: self.p.sync_max_count]):
            h = m.height + i
            inst = self.inst.get(h)
            if inst is not None and not inst.terminated:
                out += self._on_done(inst, j, Done(self.p.chain_id, h, value))
            elif inst is None and self.cur < h <= self.cur + self.p.sync_max_count:
                self.claims.setdefault(h, {}).setdefault(j, value)
        return out

    def _serve_done(self, j: int, h: int, m: ConsensusMessage) -> list[Action]:
        """Answer a message for a terminated height with DONE, rate-limited per peer."""
        if h in self.fresh_done or h in self.fresh_old:
            return []
        if isinstance(m, Done):
            inst = self.inst.get(h)
            if inst is not None:
                if j in inst.done_of:
                    return []
                inst.done_of[j] = m.value
            else:
                seen = self.recent_done.setdefault(h, set())
                if j in seen:
                    return []
                seen.add(j)
        if j in self.done_served:
            pend = self.done_pending.get(j)
            if pend is None or h < pend:
                self.done_pending[j] = h
            return []
        self.done_served.add(j)
        return [self._done_reply(j, h), *self._arm_serve()]

    def _arm_serve(self) -> list[Action]:
        if self.serve_armed:
            return []
        self.serve_armed = True
        inst = self.inst.get(self.cur)
        period = self.p.timeout_ms(inst.rec.round if inst is not None else 0)
        return [SetTimer(SERVE_TIMER, period)]

    def _done_reply(self, j: int, h: int) -> Action:
        inst = self.inst.get(h)
        if inst is not None and inst.rec.decided is not None:
            return Send(j, Done(self.p.chain_id, h, inst.rec.decided))
        return ReplyDone(j, h)

    def _on_serve_timer(self) -> list[Action]:
        self.serve_armed = False
        self.done_served.clear()
        self.fresh_old = self.fresh_done
        self.fresh_done = set()
        pending = sorted(self.done_pending.items())
        self.done_pending = {}
        out: list[Action] = []
        for j, h in pending:
            self.done_served.add(j)
            out.append(self._done_reply(j, h))
        return out + (self._arm_serve() if pending or self.fresh_old else [])

    # --- application answers ---

    def _on_block_validated(self, v: bytes, ok: bool, timely: bool = True) -> list[Action]:
        self.valid[v] = ok
        if timely:
            self.untimely.discard(v)
        else:
            self.untimely.add(v)
        out: list[Action] = []
        for h in sorted(self.inst):
            inst = self.inst[h]
            out += self._try_vote1(inst) + self._try_propose(inst)
        return out

    def _on_block_fetched(self, blk: Block) -> list[Action]:
        v = block_hash(blk)
        self.blocks[v] = blk
        out: list[Action] = []
        for h in sorted(self.inst):
            inst = self.inst[h]
            if inst.rec.decided == v:
                out += self._try_commit(inst)
            out += self._try_propose(inst)
        return out
