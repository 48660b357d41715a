"""TetraBFT for one height: the rules R1-R9 of CONSENSUS.md §2 over an `Instance`.

Per height the engine keeps one `Instance`: the persistent `Record` (round, abort level,
its own vote summaries, its entry REPORT, its proposal and the decision) plus volatile
per-sender slots (the highest-round vote per phase, the highest-round REPORT, the highest
ABORT level and the first DONE). Rounds advance by ABORT messages: echo a level once f+1
nodes are at or above it, move past it once n-f are. Within a round, a node votes in phase 1
for the leader's proposal when the REPORTs of the round show it safe (`consensus.safety`),
and in phase k+1 for a value with n-f phase-k votes; n-f phase-4 votes decide. Deciders
broadcast DONE; f+1 matching DONEs decide, n-f terminate.

`HeightProtocol` holds these rules and the state they share across heights (the body
cache and the validation verdicts); `consensus.engine.Engine` adds the chain on top
(§3: heights, restart, message routing, timers, catching up). Every method returns the
actions the driver must perform; none does I/O.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import replace

from consensus.amnesia import AmnesiaGuard
from consensus.events import (
    Action,
    Alert,
    BuildBlock,
    CancelTimer,
    Commit,
    FetchBlock,
    Persist,
    PersistBlock,
    Send,
    SetTimer,
    ValidateBlock,
)
from consensus.instance import Instance, retx_timer, round_timer
from consensus.messages import (
    Abort,
    Block,
    ConsensusMessage,
    Done,
    Propose,
    Report,
    Summary,
    Vote,
    block_hash,
    report_well_formed,
)
from consensus.params import Params
from consensus.safety import FRESH, RULES, SafetyRules
from consensus.sets import next_anchor


class HeightProtocol(ABC):
    """The single-shot protocol of §2, run per height over the live instances."""

    rules: SafetyRules = RULES

    def __init__(self, params: Params, me: int) -> None:
        self.p = params
        self.me = me
        self.inst: dict[int, Instance] = {}
        self.cur = 0
        self.blocks: dict[bytes, Block] = {}
        self.valid: dict[bytes, bool] = {}
        self.untimely: set[bytes] = set()
        """Values whose block time was outside the driver's window when validated (§3.7)."""
        self.mempool_nonempty = False
        self.handed = 0
        """The highest height whose `Commit` was emitted (or committed before a restart):
        commits leave in height order (§3.3)."""
        self.amnesia: AmnesiaGuard | None = None
        """Set after a restore (§3.8): silent, and not counting itself, at the heights it
        may have voted in before."""

    # --- thresholds of a height's set (overridable by the simulator's test mutants only) ---

    def quorum(self, inst: Instance) -> int:
        """`q(h)` of the instance's set (§10.3)."""
        return inst.vs.q

    def blocking(self, inst: Instance) -> int:
        """`b(h)` of the instance's set (§10.3)."""
        return inst.vs.b

    @property
    def idle_mode(self) -> bool:
        return self.p.propose_wait_max_ms is None

    def leader(self, inst: Instance, r: int) -> int:
        return inst.vs.leader(inst.rec.anchor, r)

    # --- sending ---

    def _silent(self, h: int) -> bool:
        return self.amnesia is not None and self.amnesia.silent_at(h)

    def _bcast(self, inst: Instance, m: ConsensusMessage) -> list[Action]:
        """Frames to every peer, and local delivery to self (after the step's persist);
        nothing at all for what the amnesia guard silences."""
        if self.amnesia is not None and not self.amnesia.allows(m):
            return []
        out: list[Action] = [Send(j, m) for j in inst.peers(self.me)]
        return out + self._deliver(inst, self.me, m)

    def _persist(self, inst: Instance) -> list[Action]:
        """The persist that MUST precede a message that shows the record (§2.6)."""
        return [Persist(inst.rec)]

    def _vote1_body(self, blk: Block) -> list[Action]:
        """The body that MUST be durable together with S[1] before a VOTE1 (§2.3)."""
        return [PersistBlock(blk)]

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
            for v in inst.values_with_quorum(k, r, self.quorum(inst)):
                out += self._cast(inst, k + 1, v)
        return out

    def _send_abort(self, inst: Instance, level: int) -> list[Action]:
        inst.rec = replace(inst.rec, abort_level=level)
        out = self._persist(inst)
        if self._silent(inst.h):
            return out
        inst.abort_of[self.me] = level
        abort = Abort(self.p.chain_id, inst.h, level)
        return out + [Send(j, abort) for j in inst.peers(self.me)]

    def _levels(self, inst: Instance) -> list[int]:
        return sorted((inst.abort_of.get(x, -1) for x in inst.vs.ids), reverse=True)

    def _check_aborts(self, inst: Instance) -> list[Action]:
        out: list[Action] = []
        u = self._levels(inst)[self.blocking(inst) - 1]
        if u > inst.rec.abort_level:
            out += self._send_abort(inst, u)
        w = self._levels(inst)[self.quorum(inst) - 1]
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
        q, b = self.quorum(inst), self.blocking(inst)
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
        q, b = self.quorum(inst), self.blocking(inst)
        if r > 0 and not self.rules.shows_safe(inst.reports(r), v, r, 4, 1, q, b):
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
        out = self._persist(inst)
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
        q = self.quorum(inst)
        out: list[Action] = []
        if m.phase == 4 and inst.rec.decided is None and c >= q:
            out += self._decide(inst, m.value)
        if m.phase < 4 and m.round == inst.rec.round and c >= q:
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
        if not inst.member:
            # A learner has learnt h from b(h) members' claims; it owes nobody a DONE
            # and counts for nothing, so it is done with h (§10.3, Learners).
            out = [*self._persist(inst), *self._terminate(inst)]
            return out + self._try_commit(inst)
        out = [
            *self._persist(inst),
            CancelTimer(round_timer(inst.h)),
            SetTimer(retx_timer(inst.h), self.p.timeout_ms(inst.rec.round)),
        ]
        out += self._owe_done(inst, Done(self.p.chain_id, inst.h, v))
        out += self._serve_decided(inst)
        out += self._try_commit(inst)
        prev = self.inst.get(inst.h - 1)
        if prev is not None and not prev.changes:
            # Across a change, deciding h does not terminate h-1: only q(h-1) DONEs of
            # h-1 do (§10.3, termination).
            out += self._terminate(prev)
        return out

    @abstractmethod
    def _owe_done(self, inst: Instance, done: Done) -> list[Action]:
        """Our DONE of a fresh decision: delivered to self now, to peers on our next
        message to them or by the retransmit timer (R7, §7)."""

    @abstractmethod
    def _serve_decided(self, inst: Instance) -> list[Action]:
        """The chain's part of a fresh decision: start serving our DONE (§3.4)."""

    def _try_commit(self, inst: Instance) -> list[Action]:
        v = inst.rec.decided
        if v is None or inst.commit_emitted or inst.h > self.handed + 1 or not inst.next_known:
            return []
        blk = self.blocks.get(v)
        if blk is None:
            return inst.once(("fetch-commit", v), FetchBlock(v))
        if blk.height != inst.h or blk.parent != inst.rec.parent_hash:
            return inst.once(("bad-commit", v), Alert("fatal-commit-parent", f"h {inst.h}"))
        inst.commit_emitted = True
        self.handed = inst.h
        if self.idle_mode:
            # The commit removes the block's transactions from the mempool; until the
            # driver reports the mempool after the commit, assume it is empty (§4).
            self.mempool_nonempty = False
        tenure, anchor = self.p.tenure, inst.rec.anchor
        nxt = next_anchor(inst.h, tenure, anchor, blk.proposer, inst.vs, inst.next_vs)
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
            if c >= self.blocking(inst) and inst.rec.decided is None:
                out += self._decide(inst, v)
            if c >= self.quorum(inst):
                out += self._terminate(inst)
        return out

    def _terminate(self, inst: Instance) -> list[Action]:
        if inst.terminated:
            return []
        inst.terminated = True
        inst.timer_armed = False
        return [CancelTimer(round_timer(inst.h)), CancelTimer(retx_timer(inst.h))]

    # --- the body cache (§3.6) ---

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
