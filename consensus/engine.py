"""The consensus engine: TetraBFT run once per height, as a pure state machine (§2–§5).

`Engine.step(event) -> list[Action]` is the whole interface. The engine owns no socket,
clock, randomness or disk: messages, timer expiries and application answers come in as
events, and everything it wants done (store a record, send a message, arm a timer, build,
validate, fetch or commit a block) goes out as actions. `consensus.driver.plan` orders
them for the driver (persist the step's records and bodies in one synced batch, then
send, then the rest); `Engine.view()` is what a driver or a checker may read back.

The rules of one height (§2) are in `consensus.height`; this class adds the chain on top
(§3): starting heights, restart, routing messages by height, timers, idle mode, the
next-height buffer (`consensus.buffer`) and catching up (`consensus.catchup`).

Deviations from CONSENSUS.md, each for a reason stated where it is implemented:

- the record also stores `parent_hash`, so a restart needs no chain-store lookup;
- DONE replies for an old height (§3.4) are not sent to a peer whose own DONE for that
  height was already counted (it has decided and gets our DONE; a DONE is answered at
  most once per peer and height, otherwise two terminated nodes answer each other's
  answers forever), nor during the first one to two serve periods after our own decision
  (our DONE to that peer is in flight or owed). Replies in those cases only cost frames in
  the good case, and broke the bound of frames per directed link per height of §7 in the
  simulator; later asks are still answered, and a DONE still owed (R7.1) is answered at
  once;
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

from consensus.buffer import NextBuffer
from consensus.catchup import LEARN_TIMER, CatchUp, DoneServer
from consensus.events import (
    Action,
    Alert,
    BlockBuilt,
    BlockFetched,
    BlockValidated,
    DeleteRecord,
    Event,
    MempoolNonEmpty,
    MessageIn,
    Send,
    SetTimer,
    Start,
    StartHeight,
    Timeout,
    TimerKey,
)
from consensus.height import HeightProtocol
from consensus.instance import Instance, retx_timer, round_timer
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
    SyncReq,
    SyncResp,
    Vote,
    block_hash,
)
from consensus.params import Params
from consensus.sets import SetHistory, VSet
from consensus.view import EngineView, Footprint, InstanceView


class Engine(HeightProtocol):
    """One validator's consensus state machine. Feed events to `step`; perform the actions."""

    def __init__(self, params: Params, me: int) -> None:
        super().__init__(params, me)
        self.genesis = VSet.genesis(params.n)
        self.sets = SetHistory(self.genesis)
        """The set of every height this engine knows (§10.2); given by the driver."""
        self.committed = 0
        self.buffer = NextBuffer()
        self.catchup = CatchUp(params, self.genesis.others(me))
        self.not_member = 0
        """Consensus messages dropped because their sender is not a member of the set of
        their height (§10.3, `not-member`)."""
        self.serving = DoneServer(params)
        self.undeleted: set[int] = set()
        self.durable = 0
        """The highest height whose block is known to be durable: a record is deleted only
        at or below it (§3.6), never while its block's commit may be in flight."""
        self.owed: dict[int, Done] = {}
        """peer -> our DONE of the latest height we decided that has not left for it yet:
        it rides in the frame of our next message to that peer (R7, §7)."""

    def view(self) -> EngineView:
        """A frozen snapshot of what outsiders may read (`consensus.view`)."""
        cur = self.inst.get(self.cur)
        return EngineView(
            height=self.cur,
            committed=self.committed,
            round=None if cur is None else cur.rec.round,
            leader=None if cur is None else self.leader(cur, cur.rec.round),
            decided=None if cur is None else cur.rec.decided,
            idle_mode=self.idle_mode,
            peer_heights=dict(self.catchup.peer_height),
            instances=tuple(
                InstanceView(
                    i.rec, i.terminated, len(i.proposals), len(i.report_slot), i.vs.ids, i.member
                )
                for _, i in sorted(self.inst.items())
            ),
            footprint=Footprint(
                next_buffer_per_sender=self.buffer.most_per_sender(),
                claims=sum(len(c) for c in self.catchup.claims.values()),
                blocks=len(self.blocks),
                verdicts=len(self.valid),
            ),
            not_member=self.not_member,
        )

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
            out = self._on_start_height(ev)
        elif isinstance(ev, Start):
            out = self._on_start(ev)
        elif isinstance(ev, MempoolNonEmpty):
            out = self._on_mempool(ev.nonempty)
        else:
            raise TypeError(f"not a consensus event: {type(ev).__name__}")
        self._finish_step(out)
        return out

    def _finish_step(self, out: list[Action]) -> None:
        """Put owed DONEs in front of the step's messages, then drop terminated
        instances (at the end of the step, never mid-handler, §3.6)."""
        if self.owed:
            out[:] = self._ride_dones(out)
        if self.amnesia is not None:
            out[:] = [a for a in out if not isinstance(a, Send) or self.amnesia.allows(a.msg)]
        for h in sorted(self.inst):
            inst = self.inst[h]
            if not inst.terminated or not (inst.commit_emitted or h <= self.committed):
                continue
            del self.inst[h]
            self.serving.forget(h, inst.done_of)
            if h <= self.durable:
                out.append(DeleteRecord(h))
            else:
                self.undeleted.add(h)
            self._gc_blocks()

    # --- our DONE, riding our next message to each peer (R7, §7) ---

    def _owe_done(self, inst: Instance, done: Done) -> list[Action]:
        out: list[Action] = []
        for j in inst.done_peers(self.me):
            if inst.changes and j not in inst.next_vs:
                # A leaving member gets no frame of h+1 to ride in: our DONE of its last
                # height leaves alone (10.6 L4); it ends that height on q(h) DONEs.
                out.append(Send(j, done))
                continue
            old = self.owed.get(j)
            if old is None or old.height < done.height:
                if old is not None and self.sets.changes_after(old.height):
                    # The last height of a set ends only on its own DONEs (§10.3): a
                    # debt there is paid now, not dropped for a later height's.
                    out.append(Send(j, old))
                self.owed[j] = done
        return out + self._deliver(inst, self.me, done)

    def _ride_dones(self, out: list[Action]) -> list[Action]:
        """Each owed DONE joins this step's consensus messages to its peer, so they share
        one frame (`plan` keeps messages to one peer in engine order): just before the
        first one for a later height, or else just after the last one for the DONE's own
        height (a VOTE4, say, after which the DONE is justified). An explicit send of
        that DONE (the retransmit timer, a restart) settles the debt as well."""
        place: dict[int, int] = {}
        """peer -> index in `out` its DONE goes before."""
        settled: set[int] = set()
        for i, a in enumerate(out):
            if not isinstance(a, Send) or not isinstance(
                a.msg, Propose | Vote | Report | Abort | Done
            ):
                continue
            j, m = a.to, a.msg
            done = self.owed.get(j)
            if done is None or j in settled or m.height < done.height:
                continue
            if m == done:
                settled.add(j)
                place.pop(j, None)
            elif m.height > done.height:
                settled.add(j)
                place.setdefault(j, i)
            else:
                place[j] = i + 1
        if not place and not settled:
            return out
        dones = {j: self.owed.pop(j) for j in settled | set(place)}
        at: dict[int, list[int]] = {}
        for j, i in place.items():
            at.setdefault(i, []).append(j)
        rode: list[Action] = []
        for i in range(len(out) + 1):
            rode += [Send(j, dones[j]) for j in sorted(at.get(i, ()))]
            if i < len(out):
                rode.append(out[i])
        return rode

    # --- heights ---

    def _sync_peers(self) -> tuple[int, ...]:
        """Where SYNC_REQ goes: the other members of `V(cur)` and `V(cur+1)` (§10.3)."""
        a, b = self.sets.of(self.cur), self.sets.of(self.cur + 1)
        ids = (a.members if a is not None else frozenset()) | (
            b.members if b is not None else frozenset()
        )
        return tuple(sorted(ids - {self.me}))

    def _on_start_height(self, ev: StartHeight) -> list[Action]:
        h, parent_hash = ev.height, ev.parent_hash
        vs = ev.members if ev.members is not None else self.genesis
        nxt = ev.next_members if ev.next_members is not None else vs
        live = self.inst.get(h)
        if live is not None and not live.next_known and live.vs == vs:
            # Restored from its record before the block below was executed again: the
            # set after it is known only now (§10.2), and with it the next anchor.
            self.sets.learn(h + 1, nxt)
            live.next_vs, live.next_known = nxt, True
            return self._try_commit(live)
        if h in self.inst or h <= self.committed or h < self.cur:
            return []
        self.sets.learn(h, vs)
        self.sets.learn(h + 1, nxt)
        if self.amnesia is not None:
            self.amnesia.try_settle(h)
        out: list[Action] = []
        self.committed = h - 1
        self.handed = max(self.handed, h - 1)
        # Block h-1 may still be on its way to the disk; block h-2 is durable: its commit
        # finished before h-1's began (§3.3, pipelined heights).
        self.durable = max(self.durable, h - 2)
        for x in sorted(self.undeleted):
            if x <= self.durable:
                self.undeleted.discard(x)
                out.append(DeleteRecord(x))
        for inst in list(self.inst.values()):
            if inst.h < h - 1 and not inst.changes:
                # The last height of a set is not terminated by later heights: only by
                # q of its own DONEs (§10.3, termination).
                out += self._terminate(inst)
        rec = Record(height=h, anchor=vs.at(ev.anchor), parent_hash=parent_hash)
        inst = Instance(rec, vs, nxt, self.me)
        self.inst[h] = inst
        self.cur = h
        self.catchup.peers = self._sync_peers()
        claims = self.catchup.take_claims(h)
        inst.done_of = {j: v for j, v in claims.items() if j in vs}
        if inst.member:
            out += self._enter_round(inst, 0)
        else:
            out += self.catchup.arm_learner()
        out += self._check_done(inst)
        for j, m in self.buffer.drain(h):
            out += self._on_message(j, m)
        return out

    def _on_start(self, ev: Start) -> list[Action]:
        """Restart: rebuild from the records and repeat, never recompute (§2.6). Each
        record is restored with its own set, `V(x)` and `V(x+1)` from the history."""
        if ev.sets:
            # Block c (the committed height) executed: V(c+1) and V(c+2) are known
            # (§10.2); a record above c+1 learns V(x+1) from StartHeight(x).
            self.sets = SetHistory.of_epochs(ev.sets, ev.committed_height + 2)
        else:
            top = max([ev.committed_height, *(r.height for r in ev.records)]) + 1
            self.sets.learn(top, self.genesis)
        self.committed = ev.committed_height
        self.handed = max(self.handed, ev.committed_height)
        self.durable = max(self.durable, ev.committed_height)
        self.cur = max(self.cur, ev.committed_height)
        for blk in ev.blocks:
            self.blocks[block_hash(blk)] = blk
        by_h = {rec.height: rec for rec in ev.records}
        out: list[Action] = []
        for h in sorted(by_h):
            rec = by_h[h]
            nxt = by_h.get(h + 1)
            above = nxt is not None and nxt.decided is not None
            vs, next_vs = self.sets.of(h), self.sets.of(h + 1)
            if vs is None:
                out.append(Alert("record-without-set", f"h {h}"))
                continue
            known = next_vs is not None
            if next_vs is None:
                # Block h-1 is not executed again yet; StartHeight(h) will tell V(h+1).
                next_vs = vs
            changes = vs != next_vs
            if not changes and ev.committed_height >= h + (0 if above else 1):
                out.append(DeleteRecord(h))
                continue
            if changes and ev.committed_height >= h and rec.decided is None:
                out.append(DeleteRecord(h))
                continue
            inst = Instance(rec, vs, next_vs, self.me)
            inst.next_known = known
            self.inst[h] = inst
            self.cur = max(self.cur, h)
            if h <= self.committed:
                inst.commit_emitted = True
            if not inst.member:
                # A learner's record only carries what it learnt (§10.3, Learners).
                if rec.decided is not None:
                    inst.terminated = True
                    out += self._try_commit(inst)
                continue
            if above and not changes:
                # Decided above but not committed (its commit was in flight at the crash,
                # §3.3): terminated (§3.6), committed again before the height above.
                inst.terminated = True
                out += self._try_commit(inst)
                continue
            if rec.decided is None:
                inst.timer_armed = True
                out.append(SetTimer(round_timer(h), self.p.timeout_ms(rec.round)))
            else:
                out.append(SetTimer(retx_timer(h), self.p.timeout_ms(rec.round)))
            out += self._resend(inst)
            out += self._try_commit(inst)
        self.catchup.peers = self._sync_peers()
        return out + self.catchup.request(self.cur, self.committed)

    def _resend(self, inst: Instance) -> list[Action]:
        """Re-send, unchanged, what the record says this node already sent."""
        rec = inst.rec
        out: list[Action] = []
        cid = self.p.chain_id
        if rec.entry_report is not None and rec.entry_report.round == rec.round:
            out += self._bcast(inst, rec.entry_report)
        own = rec.proposal_value if rec.proposal_round == rec.round else None
        blk = None if own is None else self.blocks.get(own)
        if blk is not None:  # its VOTE1 for its own PROPOSE goes only with it (§2.6)
            out += self._bcast(inst, Propose(cid, inst.h, rec.round, blk))
        for k in (1, 2, 3, 4) if own is None or blk is not None else (2, 3, 4):
            s = rec.s[k - 1]
            if s.last_round == rec.round and s.last_value is not None:
                out += self._bcast(inst, Vote(cid, inst.h, rec.round, k, s.last_value))
        if rec.abort_level >= 0 and not self._silent(inst.h):
            inst.abort_of[self.me] = rec.abort_level
            out += [Send(j, Abort(cid, inst.h, rec.abort_level)) for j in inst.peers(self.me)]
        if rec.decided is not None:
            out += self._bcast(inst, Done(cid, inst.h, rec.decided))
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

    # --- messages ---

    def _admits(self, j: int, h: int) -> bool:
        """Membership by the message's height (§10.3): a message of height h <= cur+1
        counts only from a member of `V(h)`; one of a height above only from a member of
        `V(cur)` (it can only note a height)."""
        vs = self.sets.of(h if h <= self.cur + 1 else self.cur)
        if vs is None:
            return h > self.cur + 1
        return j in vs

    def _on_message(self, j: int, m: Message) -> list[Action]:
        if j == self.me or m.chain_id != self.p.chain_id:
            return []
        if j not in self.sets.all_ids:
            # A SYNC_REQ is answered from any linked peer (10.6 L2): an approved add
            # catches up before any set holds it. It notes no height; nothing else is read.
            return self.catchup.on_request(j, m) if isinstance(m, SyncReq) else []
        if (
            isinstance(m, Propose | Vote | Report | Abort | Done)
            and m.height >= 1
            and not self._admits(j, m.height)
        ):
            self.not_member += 1
            return []
        if self.amnesia is not None:
            self.amnesia.observe(j, m, self.cur)
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
        self.catchup.note_height(j, h, self.cur)
        inst = self.inst.get(h)
        if inst is None:
            if h == self.cur + 1:
                self.buffer.add(j, m)
                return self._arm_idle(m)
            if h > self.cur + 1:
                return self._maybe_sync()
            return self._serve_done(j, h, m)
        if inst.terminated:
            return self._serve_done(j, h, m)
        if not inst.member:
            # A learner counts DONEs of members as claims; nothing else (§10.3).
            return self._on_done(inst, j, m) if isinstance(m, Done) else []
        return self._arm_idle(m) + self._deliver(inst, j, m) + self._pay_if_stuck(inst, j, m)

    def _pay_if_stuck(self, inst: Instance, j: int, m: ConsensusMessage) -> list[Action]:
        """An ABORT or REPORT from `j` for a height we decided: `j` is changing rounds
        there, so the DONE we owe it (R7.1) leaves now rather than with our next height."""
        owed = self.owed.get(j)
        if owed is None or owed.height != inst.h or not isinstance(m, Abort | Report):
            return []
        return [Send(j, owed)]

    def _arm_idle(self, m: ConsensusMessage) -> list[Action]:
        """Idle mode (§4): consensus traffic for the current or next height arms the timer.

        Traffic for an older height (late votes of the height just committed) does not: it
        would make every node suspect an idle leader right after each commit.
        """
        if not self.idle_mode or isinstance(m, Done) or m.height < self.cur:
            return []
        inst = self.inst.get(self.cur)
        if (
            inst is None
            or inst.terminated
            or not inst.member
            or inst.timer_armed
            or inst.rec.decided is not None
        ):
            return []
        inst.timer_armed = True
        return [SetTimer(round_timer(inst.h), self.p.timeout_ms(inst.rec.round))]

    def _on_mempool(self, nonempty: bool) -> list[Action]:
        self.mempool_nonempty = nonempty
        inst = self.inst.get(self.cur)
        if not nonempty or inst is None or inst.terminated or not inst.member:
            return []
        out: list[Action] = []
        if not inst.timer_armed and inst.rec.decided is None:
            inst.timer_armed = True
            out.append(SetTimer(round_timer(inst.h), self.p.timeout_ms(inst.rec.round)))
        return out + self._try_propose(inst)

    # --- timers ---

    def _on_timeout(self, key: TimerKey) -> list[Action]:
        if key == LEARN_TIMER:
            inst = self.inst.get(self.cur)
            member = inst is not None and inst.member
            return self.catchup.on_learn_timer(self.cur, self.committed, member)
        if self.catchup.on_timeout(key):
            return []
        if key.kind == "serve":
            return self.serving.on_timer(self.inst, self._serve_period())
        inst = self.inst.get(key.height)
        if inst is None or inst.terminated:
            return []
        cid, h = self.p.chain_id, inst.h
        peers = inst.peers(self.me)
        if key.kind == "round":
            if inst.rec.decided is not None:
                return []
            inst.timer_fired += 1
            if inst.rec.abort_level < inst.rec.round:
                out = self._send_abort(inst, inst.rec.round) + self._check_aborts(inst)
            else:
                out = [Send(j, Abort(cid, h, inst.rec.abort_level)) for j in peers]
            out.append(SetTimer(round_timer(h), self.p.timeout_ms(inst.rec.round)))
            return out + self._maybe_sync()
        decided = inst.rec.decided
        if decided is None:
            return []
        # Peers we owe our DONE get it now, as do peers not known to have decided: the
        # chain did not move on within a retransmit period (idle, or a height stuck).
        mine = Done(cid, h, decided)
        out = [
            Send(j, mine)
            for j in inst.done_peers(self.me)
            if (j in inst.vs and j not in inst.done_of) or self.owed.get(j) == mine
        ]
        if inst.rec.abort_level >= 0:
            out += [Send(j, Abort(cid, h, inst.rec.abort_level)) for j in peers]
        out.append(SetTimer(retx_timer(h), self.p.timeout_ms(inst.rec.round)))
        return out

    # --- catching up and serving peers that are behind (§3.4, `consensus.catchup`) ---

    def _maybe_sync(self) -> list[Action]:
        inst = self.inst.get(self.cur)
        fired = inst.timer_fired if inst is not None else 0
        vs = self.sets.of(self.cur)
        return self.catchup.maybe_request(self.cur, self.committed, fired, vs)

    def _on_sync(self, j: int, m: SyncReq | SyncResp) -> list[Action]:
        if isinstance(m, SyncReq):
            return self.catchup.on_request(j, m)
        out: list[Action] = []
        for h, value in self.catchup.on_response(j, m, self.cur):
            if h >= self.cur:
                self.catchup.learn_behind = True
            if h <= self.cur + 1 and not self._admits(j, h):
                # Every entry is a claim, counted only from a member of V(h) (§10.3).
                continue
            inst = self.inst.get(h)
            if inst is not None and not inst.terminated:
                out += self._on_done(inst, j, Done(self.p.chain_id, h, value))
            elif inst is None:
                self.catchup.claim(j, h, value, self.cur)
        return out

    def _serve_done(self, j: int, h: int, m: ConsensusMessage) -> list[Action]:
        """Answer a message for a terminated height with DONE, rate-limited per peer.

        A DONE we still owe `j` for that height goes at once, outside the budget: it
        is one message per peer and height, and `j` is still at that height (it may
        need it to terminate, and it re-sends until it has it).
        """
        owed = self.owed.get(j)
        if owed is not None and owed.height == h:
            return [Send(j, owed)]
        vs = self.sets.of(h)
        if vs is None or self.me not in vs:
            # No DONE of a height where this node is not a member (§10.3, §10.8 R2).
            return []
        changes = self.sets.changes_after(h)
        if changes and isinstance(m, Vote | Propose):
            # The last height of a set: late VOTEs and PROPOSEs are not answered (§10.3).
            return []
        return self.serving.serve(j, h, m, self.inst, self._serve_period(), changes)

    def _serve_period(self) -> int:
        """The serve period: the retransmit period of the current round (§3.4)."""
        inst = self.inst.get(self.cur)
        return self.p.timeout_ms(inst.rec.round if inst is not None else 0)

    def _serve_decided(self, inst: Instance) -> list[Action]:
        return self.serving.on_decided(inst.h, self._serve_period())

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
            out += self._try_commit(inst)
            out += self._try_propose(inst)
        return out
