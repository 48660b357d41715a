"""The invariant checker of CONSENSUS.md §6, fed by the simulator as things happen.

The monitor keeps the ground truth: every message each node sent (whatever the network
then did with it) and, per correct node, every message it received directly. Correct
nodes are the identities that are neither Byzantine, twins nor declared faulty; a node
that crashes and restarts from its own durable state stays correct. The numbered checks:

1 agreement, 2 validity (height, parent, proposer under the anchor rule, application
predicate), 3 order of commits across restarts, 4 no equivocation by a correct node, 5 round
monotonicity, 6 truthful REPORTs, 7 justified VOTEs and DONEs, 8 decision evidence (q VOTE4
of one round in the log), 9 liveness (every live correct node commits the target and every
transaction by the deadline; from T, the moment after GST when the network is stable and
every correct node that restarts has restarted, each height h is committed by every live
correct node within D(R) of §6 after T or after the last commit of h - 1, R the highest
round of h among correct nodes then; every instance below the committed height has
terminated, and the run ends only when the target height's instances have), 10 bounded
buffers, bounded block cache and at most two live instances, 11 no key id reused by a
correct sender, 12 correct proposals of rounds >= 1 pass the voters' check on the correct
REPORTs alone (transfer), 13 every decided value has f+1 correct durable holders, 14 no
height is lost by a crash while its commit is in flight (pipelined heights, §3.3): a correct
node's decision of h+1 is durable only once its block h is, and a restarted node holds, for
every height it had executed, the block or the decided record.

Across validator-set changes (§10.8) every count above is over the members of `V(h)`
with `q(h)`, `b(h)`, `f(h)`, `V(h)` derived from the ground-truth chain by 10.2, and the
checks of 10.8 that the engine's slice of §10 makes checkable are numbered 100 + their
R-number: 101 (R1) every correct node that starts h uses the ground-truth `V(h)`; 102 (R2)
no correct node sends PROPOSE, VOTE, REPORT, ABORT or DONE of a height where it is not a
member, and no correct node decides h without q(h) VOTE4 or b(h) DONE claims from members
of `V(h)`; 104 (R4) the anchor of every instance of a correct node follows 10.4; 105 (R5)
the bound of invariant 9 binds the members of `V(h)`, and the instance of the last height
of a set may outlive the two-instance bound of invariant 10 only decided.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from consensus.events import Action, Persist, Send
from consensus.messages import (
    Abort,
    Block,
    Done,
    Message,
    Propose,
    Report,
    SyncResp,
    Vote,
    block_hash,
)
from consensus.safety import RULES, summarize
from consensus.sets import VSet, next_anchor
from consensus.sim.app import GENESIS_HASH, app_valid

if TYPE_CHECKING:
    from consensus.sim.world import Sim, SimNode
    from consensus.view import InstanceView

MAX_VIOLATIONS = 20


@dataclass(frozen=True)
class Violation:
    invariant: int
    text: str


class Monitor:
    """Checks the invariants online; `finish()` adds the end-of-run checks."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        p = sim.params
        self.q, self.b, self.f = p.q, p.b, p.f
        self.violations: list[Violation] = []
        self._seen_violation: set[tuple[int, str]] = set()
        # ground truth, every sender
        self.vote4_senders: dict[tuple[int, int, bytes], set[int]] = defaultdict(set)
        # ground truth, correct senders
        self.sent_votes: dict[tuple[int, int, int, int], bytes] = {}
        self.vote_hist: dict[tuple[int, int, int], list[tuple[int, bytes]]] = defaultdict(list)
        self.sent_props: dict[tuple[int, int, int], bytes] = {}
        self.sent_reports: dict[tuple[int, int, int], Report] = {}
        self.reports_by_round: dict[tuple[int, int], dict[int, Report]] = defaultdict(dict)
        self.sent_dones: dict[tuple[int, int], bytes] = {}
        self.sent_abort: dict[tuple[int, int], int] = {}
        self.abort_levels: dict[tuple[int, int], set[int]] = defaultdict(set)
        self.max_round: dict[tuple[int, int], int] = {}
        # what each correct node received directly
        self.rx_votes: dict[tuple[int, int, int, int, bytes], set[int]] = defaultdict(set)
        self.rx_vote4_rounds: dict[tuple[int, int, bytes], set[int]] = defaultdict(set)
        """(node, h, value) -> rounds in which the node received a VOTE4 for it."""
        self.rx_props: dict[tuple[int, int, int], dict[tuple[int, bytes], Block]] = defaultdict(
            dict
        )
        """(node, h, r) -> (sender, value) -> block: PROPOSEs received directly."""
        self.rx_reports: dict[tuple[int, int, int], dict[int, Report]] = defaultdict(dict)
        self.rx_dones: dict[tuple[int, int, bytes], set[int]] = defaultdict(set)
        # decisions and commits
        self.decided: dict[tuple[int, int], bytes] = {}
        self.decided_round: dict[int, int] = {}
        self.committed: dict[int, Block] = {}
        self.executed: dict[int, Block] = {}
        """height -> the block correct nodes executed there (their commit maybe in flight)."""
        self.commit_at: dict[tuple[int, int], int] = {}
        """(correct node, h) -> time it committed h."""
        self.round_hist: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
        """(correct node, h) -> [(time, round)] at every round change of its instance."""
        n = p.n
        if sim.cfg.reconf is not None:
            n = max(n, sim.cfg.n)
        self.max_n = n
        self.cache_bound = 2 * (n + 7)
        """Bodies (and verdicts) one engine may cache: per live instance (at most two) one
        proposal per leader of the current and later rounds (n + 1), four summary values,
        its own proposal and the decision."""
        self.genesis = VSet.genesis(p.n)
        self._sets: dict[int, VSet] = {}
        self._anchors: dict[int, int] = {1: self.genesis.ids[p.first_leader]}

    # --- helpers ---

    def violation(self, inv: int, text: str) -> None:
        key = (inv, text)
        if key in self._seen_violation or len(self.violations) >= MAX_VIOLATIONS:
            return
        self._seen_violation.add(key)
        self.violations.append(Violation(inv, text))
        self.sim.log(f"VIOLATION {inv}: {text}")

    def correct(self, ident: int) -> bool:
        return ident not in self.sim.faulty

    def set_of(self, h: int) -> VSet | None:
        """The ground-truth `V(h)` (§10.2), None while the chain below it is unknown."""
        rc = self.sim.cfg.reconf
        if rc is None:
            return self.genesis
        if h in self._sets:
            return self._sets[h]
        blocks: list[Block] = []
        for x in range(1, max(h - rc.delay, 0) + 1):
            blk = self.committed.get(x, self.executed.get(x))
            if blk is None:
                return None
            blocks.append(blk)
        sets = self.sim.sets_of(blocks)
        assert sets is not None
        vs = sets[h - 1]
        self._sets[h] = vs
        return vs

    def _vs(self, h: int) -> VSet:
        """`set_of(h)`, or the genesis set while it is unknown (checks then err lax:
        counts of non-members are refused by the engine and by invariant 102)."""
        vs = self.set_of(h)
        return self.genesis if vs is None else vs

    def anchor(self, h: int) -> int | None:
        """anchor(h) from the ground-truth chain, None if h-1 is not executed yet."""
        if h in self._anchors:
            return self._anchors[h]
        prev = self.anchor(h - 1) if h > 1 else None
        blk = self.committed.get(h - 1, self.executed.get(h - 1))
        if prev is None or blk is None:
            return None
        cur, nxt = self.set_of(h - 1), self.set_of(h)
        if cur is None or nxt is None:
            return None
        a = next_anchor(h - 1, self.sim.params.tenure, prev, blk.proposer, cur, nxt)
        self._anchors[h] = a
        return a

    # --- hooks ---

    def on_send(self, nd: SimNode, to: int, msgs: list[Message]) -> None:
        src = nd.ident
        good = self.correct(src)
        for m in msgs:
            if good and isinstance(m, Vote | Report | Propose | Done | Abort):
                vs = self.set_of(m.height)
                if vs is not None and src not in vs:
                    kind = type(m).__name__.upper()
                    self.violation(102, f"node {src} sends {kind} of h {m.height}, not a member")
            if isinstance(m, Vote):
                if m.phase == 4:
                    self.vote4_senders[(m.height, m.round, m.value)].add(src)
                if good:
                    self._check_vote(src, m)
            elif not good:
                continue
            elif isinstance(m, Report):
                self._check_report(src, m)
            elif isinstance(m, Propose):
                self._check_propose(src, m)
            elif isinstance(m, Done):
                self._check_done(src, m)
            elif isinstance(m, Abort):
                key = (src, m.height)
                levels = self.abort_levels[key]
                if m.level in levels:
                    continue
                if m.level < self.sent_abort.get(key, -1):
                    self.violation(4, f"node {src} h {m.height}: ABORT level decreased")
                levels.add(m.level)
                self.sent_abort[key] = max(m.level, self.sent_abort.get(key, -1))

    def _round_seen(self, src: int, h: int, r: int) -> None:
        key = (src, h)
        if r > self.max_round.get(key, -1):
            self.max_round[key] = r

    def _check_vote(self, src: int, m: Vote) -> None:
        key = (src, m.height, m.round, m.phase)
        old = self.sent_votes.get(key)
        if old is not None:
            if old != m.value:
                self.violation(4, f"node {src} h {m.height} r {m.round}: two VOTE{m.phase} values")
            return
        if m.round < self.max_round.get((src, m.height), -1):
            self.violation(
                5, f"node {src} h {m.height}: VOTE in round {m.round} after a later round"
            )
        self.sent_votes[key] = m.value
        self.vote_hist[(src, m.height, m.phase)].append((m.round, m.value))
        self._round_seen(src, m.height, m.round)
        h, r, v = m.height, m.round, m.value
        vs = self._vs(h)
        q = vs.q
        if m.phase >= 2:
            if len(self.rx_votes[(src, h, r, m.phase - 1, v)] & vs.members) < q:
                self.violation(
                    7, f"node {src} h {h} r {r}: VOTE{m.phase} without q VOTE{m.phase - 1}"
                )
        else:
            a = self.anchor(h)
            leader = vs.leader(a, r) if a is not None and a in vs else src
            blk = self.rx_props[(src, h, r)].get((leader, v))
            nd = self.sim.nodes[src][0]
            if blk is None:
                self.violation(7, f"node {src} h {h} r {r}: VOTE1 without the leader's PROPOSE")
            elif not nd.validity(blk) and self.sent_props.get((src, h, blk.round)) != v:
                self.violation(7, f"node {src} h {h} r {r}: VOTE1 for an invalid block")
            if v not in nd.blocks:
                self.violation(7, f"node {src} h {h} r {r}: VOTE1 before its body is durable")
            reps = self.rx_reports[(src, h, r)]
            if r > 0 and not RULES.shows_safe(reps, v, r, 4, 1, q, vs.b):
                self.violation(7, f"node {src} h {h} r {r}: VOTE1 not shown safe by its REPORTs")
        self._rx_vote(src, src, m)

    def _check_report(self, src: int, m: Report) -> None:
        key = (src, m.height, m.round)
        old = self.sent_reports.get(key)
        if old is not None:
            if old != m:
                self.violation(4, f"node {src} h {m.height} r {m.round}: two REPORTs")
            return
        self.sent_reports[key] = m
        self.reports_by_round[(m.height, m.round)][src] = m
        self._round_seen(src, m.height, m.round)
        for k in (1, 2, 3, 4):
            truth = summarize(self.vote_hist[(src, m.height, k)], m.round)
            if m.s[k - 1] != truth:
                self.violation(6, f"node {src} h {m.height} r {m.round}: untruthful s{k}")
        self.rx_reports[(src, m.height, m.round)].setdefault(src, m)

    def _check_propose(self, src: int, m: Propose) -> None:
        key = (src, m.height, m.round)
        v = block_hash(m.block)
        old = self.sent_props.get(key)
        if old is not None:
            if old != v:
                self.violation(4, f"node {src} h {m.height} r {m.round}: two PROPOSE values")
            return
        self.sent_props[key] = v
        self._round_seen(src, m.height, m.round)
        self.rx_props[(src, m.height, m.round)][(src, v)] = m.block

    def _check_done(self, src: int, m: Done) -> None:
        key = (src, m.height)
        old = self.sent_dones.get(key)
        if old is not None:
            if old != m.value:
                self.violation(4, f"node {src} h {m.height}: two DONE values")
            return
        self.sent_dones[key] = m.value
        h, v = m.height, m.value
        if not self._evidence(src, h, v):
            self.violation(7, f"node {src} h {h}: DONE without q VOTE4 or b DONE")

    def _evidence(self, node: int, h: int, v: bytes, own: frozenset[int] = frozenset()) -> bool:
        """`node` received q(h) VOTE4 of one round, or b(h) DONE claims, for v at h, from
        members of `V(h)` (itself included for the votes it cast; `own`: rounds of its
        VOTE4 for v leaving in the step being checked)."""
        vs = self._vs(h)
        for r in self.rx_vote4_rounds[(node, h, v)] | own:
            got = self.rx_votes[(node, h, r, 4, v)] | ({node} if r in own else set())
            if len(got & vs.members) >= vs.q:
                return True
        return len((self.rx_dones[(node, h, v)] - {node}) & vs.members) >= vs.b

    def _rx_vote(self, node: int, src: int, m: Vote) -> None:
        senders = self.rx_votes[(node, m.height, m.round, m.phase, m.value)]
        senders.add(src)
        if m.phase == 4:
            self.rx_vote4_rounds[(node, m.height, m.value)].add(m.round)

    def on_receive(self, nd: SimNode, src: int, m: Message) -> None:
        node = nd.ident
        if not self.correct(node):
            return
        if isinstance(m, Vote):
            self._rx_vote(node, src, m)
        elif isinstance(m, Report):
            self.rx_reports[(node, m.height, m.round)].setdefault(src, m)
        elif isinstance(m, Propose):
            props = self.rx_props[(node, m.height, m.round)]
            props.setdefault((src, block_hash(m.block)), m.block)
        elif isinstance(m, Done):
            self.rx_dones[(node, m.height, m.value)].add(src)
        elif isinstance(m, SyncResp):
            for i, v in enumerate(m.hashes):
                self.rx_dones[(node, m.height + i, v)].add(src)

    def after_step(self, nd: SimNode, acts: list[Action]) -> None:
        if not self.correct(nd.ident):
            return
        view = nd.engine.view()
        live = [i for i in view.instances if not i.terminated]
        # The last height of a set stays live, decided, until q of its DONEs (§10.3).
        lasting = [i for i in live if i.decided is not None and self._set_changes(i.height)]
        if len(live) - len(lasting) > 2:
            self.violation(10, f"node {nd.name}: {len(live)} live instances")
        if self.sim.cfg.reconf is not None:
            self._check_sets(nd, view.instances)
        fp = view.footprint
        if fp.next_buffer_per_sender > self.sim.params.next_buffer_per_sender:
            self.violation(10, f"node {nd.name}: next-height buffer over its bound")
        n = self.max_n
        if fp.claims > n * self.sim.params.sync_max_count:
            self.violation(10, f"node {nd.name}: claims table over its bound")
        if fp.blocks > self.cache_bound or fp.verdicts > self.cache_bound:
            self.violation(10, f"node {nd.name}: block cache over its bound")
        for inst in view.instances:
            if inst.proposals > n + 1 or inst.reports > n:
                self.violation(10, f"node {nd.name} h {inst.height}: slots over their bound")
            hist = self.round_hist[(nd.ident, inst.height)]
            if not hist or hist[-1][1] != inst.round:
                hist.append((self.sim.now, inst.round))

    def _set_changes(self, h: int) -> bool:
        a, b = self.set_of(h), self.set_of(h + 1)
        return a is not None and b is not None and a != b

    def _check_sets(self, nd: SimNode, instances: tuple[InstanceView, ...]) -> None:
        """R1 and R4 of §10.8: the set and the anchor of every live instance."""
        for inst in instances:
            h = inst.height
            vs = self.set_of(h)
            if vs is not None and inst.members != vs.ids:
                self.violation(101, f"node {nd.name} h {h}: set {inst.members}, not {vs.ids}")
            a = self.anchor(h)
            if a is not None and inst.anchor != a:
                self.violation(104, f"node {nd.name} h {h}: anchor {inst.anchor}, not {a}")

    def on_durable(self, nd: SimNode, acts: list[Action]) -> None:
        if not self.correct(nd.ident):
            return
        for a in acts:
            if not isinstance(a, Persist) or a.record.decided is None:
                continue
            h = a.record.height
            if nd.pending is not None and nd.pending.height < h:
                self.violation(
                    14, f"node {nd.name}: decision of h {h} durable before block {h - 1}"
                )
            key = (nd.ident, h)
            if key in self.decided:
                continue
            v = a.record.decided
            self.decided[key] = v
            self.decided_round.setdefault(h, a.record.round)
            own = frozenset(
                x.msg.round
                for x in acts
                if isinstance(x, Send)
                and isinstance(x.msg, Vote)
                and (x.msg.height, x.msg.phase, x.msg.value) == (h, 4, v)
            )
            if self.sim.cfg.reconf is not None and not self._evidence(nd.ident, h, v, own):
                self.violation(
                    102, f"node {nd.name} decides h {h} without a quorum or b claims of V(h)"
                )
            holders = sum(
                1
                for x in self.sim.correct_nodes()
                if x.ident not in self.sim.dead
                and x.ident not in self.sim.crashed_forever
                and (v in x.blocks or v in x.chain)
            )
            if holders < self._vs(h).f + 1:
                self.violation(13, f"h {h}: value decided by node {nd.ident} has {holders} holders")

    def on_execute(self, nd: SimNode, h: int, blk: Block) -> None:
        """A commit executed (its batch in flight): the next height may start on it."""
        if not self.correct(nd.ident):
            return
        prev = self.executed.setdefault(h, blk)
        if block_hash(prev) != block_hash(blk):
            self.violation(1, f"h {h}: node {nd.ident} executes a different block")

    def on_restart(self, nd: SimNode) -> None:
        """Invariant 14 at a restart: every height executed before the crash is durable,
        as a block or as a decided record from which the node commits it again."""
        if not self.correct(nd.ident):
            return
        for h in range(len(nd.chain) + 1, nd.executed + 1):
            rec = nd.records.get(h)
            if rec is None or rec.decided is None:
                self.violation(14, f"node {nd.name} lost h {h}: executed, not durable")

    def on_commit(self, nd: SimNode, h: int, blk: Block) -> None:
        if not self.correct(nd.ident):
            return
        v = block_hash(blk)
        prev = self.committed.get(h)
        if prev is not None and block_hash(prev) != v:
            self.violation(1, f"h {h}: node {nd.ident} commits a different block")
            return
        parent = nd.chain[-1] if nd.chain else GENESIS_HASH
        if blk.height != h or blk.parent != parent:
            self.violation(2, f"h {h}: node {nd.ident} commits a block with a wrong height/parent")
        if prev is None:
            self.committed[h] = blk
        self.commit_at.setdefault((nd.ident, h), self.sim.now)
        a = self.anchor(h)
        vs = self._vs(h)
        if a is not None and (a not in vs or blk.proposer != vs.leader(a, blk.round)):
            self.violation(2, f"h {h}: proposer {blk.proposer} is not leader of round {blk.round}")
        if not app_valid(blk):
            self.violation(2, f"h {h}: committed block fails the application predicate")
        if not any(
            len(s & vs.members) >= vs.q
            for (hh, _, vv), s in self.vote4_senders.items()
            if hh == h and vv == v
        ):
            self.violation(8, f"h {h}: committed without q VOTE4 of one round in the log")

    def finish(self) -> None:
        sim = self.sim
        for src, to, kid in sim.key_reuse:
            if self.correct(src):
                self.violation(11, f"link {src}->{to}: key id {kid} reused")
        rules = sim.rules
        for (src, h, r), v in sorted(self.sent_props.items()):
            if r == 0:
                continue
            reps = self.reports_by_round.get((h, r), {})
            vs = self._vs(h)
            if len(reps) >= vs.q and not rules.shows_safe(reps, v, r, 4, 1, vs.q, vs.b):
                self.violation(
                    12, f"node {src} h {h} r {r}: proposal not acceptable on correct REPORTs"
                )
        if sim.cfg.expect_live:
            for nd in sim.correct_nodes():
                if nd.ident in sim.crashed_forever:
                    continue
                if len(nd.chain) < sim.cfg.heights:
                    self.violation(
                        9, f"node {nd.ident} committed {len(nd.chain)} of {sim.cfg.heights} heights"
                    )
                missing = len(sim.cfg.txs_us) - len(nd.included)
                if missing:
                    self.violation(9, f"node {nd.ident}: {missing} transactions never committed")
                for inst in nd.engine.view().instances:
                    if inst.height < len(nd.chain) and not inst.terminated and nd.up:
                        self.violation(
                            9, f"node {nd.ident} h {inst.height}: instance never terminated"
                        )
            if not sim.idle_mode:
                self._check_bound()

    def _round_at(self, node: int, h: int, t: int) -> int:
        best = 0
        for when, r in self.round_hist.get((node, h), []):
            if when > t:
                break
            best = r
        return best

    def _check_bound(self) -> None:
        """Invariant 9 with the bound D of §6: from T (or from the moment every live correct
        node committed h - 1, if later), every live correct node commits h within D(R),
        R the highest round of h among correct nodes at that moment."""
        sim = self.sim
        live = [nd.ident for nd in sim.correct_nodes() if nd.ident not in sim.crashed_forever]
        t_stable = sim.stable_from_us()
        everyone = live
        for h in range(1, sim.cfg.heights + 1):
            # R5: the bound binds the members of V(h) (a learner follows by catching up).
            vs = self._vs(h)
            live = [i for i in everyone if i in vs]
            if not live:
                continue
            prev = [self.commit_at.get((i, h - 1), 0) for i in live] if h > 1 else [0]
            if any((i, h - 1) not in self.commit_at for i in live) and h > 1:
                return
            t0 = max([t_stable, *prev])
            r = max(self._round_at(i, h, t0) for i in live)
            limit = t0 + sim.liveness_bound_us(r)
            for i in live:
                at = self.commit_at.get((i, h))
                if at is not None and at > limit:
                    self.violation(
                        9,
                        f"node {i} h {h}: committed at {at / 1000:.1f} ms, after T0 + D = "
                        f"{t0 / 1000:.1f} + {(limit - t0) / 1000:.1f} ms (R = {r})",
                    )
