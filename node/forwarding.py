"""Sending this node's clients' transactions to every peer, admitting its peers', and
suspecting a leader that leaves them out.

Transactions admitted locally go to every validator as this node's next batch
(`node.batches`): the leader of any height finds them at hand and names them in its
proposal by batch. Every batch costs a frame (a key) on each of the n - 1 links, so a
batch is coalesced (`Coalescing`) before it leaves: it goes when it holds
`[node] batch_max_txs` transactions or a batch's bytes, at the next commit, or after a
delay. The delay is what the chain allows without costing latency. The batch *holds*
(waits up to `[node] batch_delay_ms`, and leaves at the next commit at the latest, in
time for the build after it) when the next build is known to come after a commit:

- the leader's proposal for the current height is out (heard or made here, not
  committed): the next leader builds only after that height commits, plus its propose
  wait;
- or the chain is busy (this node's pool held ready transactions right after its last
  commit, so the leader had some too) and that commit is more than the propose wait
  (`propose_wait_min`, plus `BUILD_SLACK_S`) ago: the leader built then, and what
  arrives now goes into the block after the next commit whenever it is sent.

Otherwise the leader may be about to build, and the batch waits only `PROMPT_S` (it
collects what arrives in the same few milliseconds, e.g. a client's batch admitted in
slices). On a link with a low key rate a batch then waits briefly to ride in the next
frame to that peer instead of costing a key of its own (`node.keypacing`). When the
leader changes, pending ones go to the new leader in a batch of their own. A
transaction that stays pending past the inclusion timeout goes out again, in a new batch
to every validator; one that stays past twice the timeout makes the node fire its round
timer early (CONSENSUS.md R8), so that a quorum of honest validators moves away from a
censoring leader.

Transactions in peers' batches are queued and admitted in slices by a task, so that
checking thousands of signatures never holds up consensus messages behind it; with
verify workers (`[node] verify_workers`), a slice's signatures are checked in worker
processes first, while the event loop goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from consensus.events import Event, Timeout, TimerKey
from consensus.view import EngineView
from node.accounts import ADMIT_SLICE, Admission
from node.batches import Dissemination
from node.budget import FORWARDED_TXS, Budgets
from node.keypacing import forward_wait_s
from node.links import Links
from node.mempool import Mempool, PendingTx
from node.verifypool import VerifyPool
from node.wire import OriginBatch
from qchain.config import NodeConfig
from qchain.errors import QChainError
from qchain.limits import ORIGIN_BATCH_FIELDS, TX_BATCH_MAX_BYTES, TX_BATCH_MAX_TXS
from qchain.types import Transaction, decode_transaction

log = logging.getLogger("qchain.node")

FORWARD_QUEUE_MAX = 50_000
MAX_REFORWARD = 4000
"""Most transactions a node sends again at once."""
LEADER_ROOM_TXS = 100
"""A block with fewer transactions than this (or than we have stuck, if fewer) had room
for our stuck ones: leaving them out then suggests censorship rather than load."""
RESEND_AFTER_S = 1.0
"""A client's submission of a transaction this node already holds sends it to the
leader again, at most once in this long per transaction."""
RESEND_RUN = 100
"""Most transactions of one sender sent again to the leader when a client asks again."""
RECENT_BLOCKS = 256
"""Commits remembered (time, transaction count) for the censorship test."""
PROMPT_S = 0.005
"""How long a batch waits when the leader may be about to build (no proposal out for the
current height): what arrives in the same few milliseconds goes with it."""
BUILD_SLACK_S = 0.005
"""A leader's commit and this node's are a network hop apart: the window in which the
leader may still build runs this much past this node's commit plus the propose wait."""
STAGE_SAMPLES = 100_000
"""Stage times kept for the metrics between two of their syncs (once a second)."""
PROPOSED_AHEAD = 2
"""A proposal heard for a height at most this far above the committed one counts as out
(pipelined heights: the next height's may come before this node commits); one claiming
a height further ahead is a peer's word for nothing and holds no batch."""


@dataclass(frozen=True)
class Coalescing:
    """When this node's outgoing batch leaves (`[node] batch_delay_ms`,
    `batch_max_txs`)."""

    delay_s: float = 0.25
    """The longest a batch waits while the current height's proposal is out (0: every
    batch leaves at the end of its turn of the event loop)."""
    max_txs: int = 256
    """A batch of this many transactions leaves at once."""
    max_bytes: int = TX_BATCH_MAX_BYTES - ORIGIN_BATCH_FIELDS
    """A batch of this many bytes of transactions leaves at once (one batch's worth:
    `node.wire.origin_batches` cuts at it, within the transport's frame limits)."""
    build_wait_s: float = 0.0
    """The propose wait (`[timing] propose_wait_min_ms`): a busy leader builds this long
    after its commit."""

    @classmethod
    def of(cls, cfg: NodeConfig) -> Coalescing:
        """A validator's, from its config (`[node] batch_delay_ms`, `batch_max_txs`,
        `[timing] propose_wait_min_ms`)."""
        n = cfg.node
        return cls(
            n.batch_delay_ms / 1000,
            n.batch_max_txs,
            build_wait_s=cfg.timing.propose_wait_min_ms / 1000,
        )

    def __post_init__(self) -> None:
        if not 0 <= self.delay_s <= 5 or not 1 <= self.max_txs <= TX_BATCH_MAX_TXS:
            raise ValueError("need 0 <= delay_s <= 5 and 1 <= max_txs <= TX_BATCH_MAX_TXS")
        if self.max_bytes < 1 or not 0 <= self.build_wait_s <= 60:
            raise ValueError("need max_bytes >= 1 and 0 <= build_wait_s <= 60")


class Forwarder:
    """Transaction forwarding and leader suspicion of one validator."""

    def __init__(
        self,
        links: Links,
        mempool: Mempool,
        admission: Admission,
        budgets: Budgets,
        idle_mode: bool,
        view: Callable[[], EngineView],
        inclusion_timeout_s: float,
        feed: Callable[[Event], None],
        verify_pool: VerifyPool,
        batches: Dissemination,
        coalescing: Coalescing = Coalescing(),
    ) -> None:
        """idle_mode: no heartbeat blocks (batches never ride lazily); view: the
        engine's view; verify_pool: checks the signatures of a slice in worker
        processes before it is admitted (`node.verifypool`); batches: where this node's
        batches go and peers' are kept; coalescing: when this node's batch leaves."""
        self.links = links
        self.me = links.me
        self.mempool = mempool
        self.admission = admission
        self.budgets = budgets
        self.idle_mode = idle_mode
        self.view = view
        self.inclusion_timeout_s = inclusion_timeout_s
        self.feed = feed
        self.verify_pool = verify_pool
        self.batches = batches
        self.coalescing = coalescing
        self.stages: deque[tuple[str, float]] = deque(maxlen=STAGE_SAMPLES)
        """Seconds transactions spent in a stage (`forward`, `admit_queue`:
        `node.metrics.STAGES`), for `MetricsSync` to observe (the oldest go first when
        it falls behind)."""
        self.dropped = 0
        """Forwarded transactions refused for lack of queue room or budget."""
        self.refused: Counter[str] = Counter()
        """Peers' transactions not taken into the pool, by reason (`queue`: no room or
        budget to queue them; else the mempool's problem code)."""
        self.resent: Counter[str] = Counter()
        """This node's clients' transactions sent again, by reason (`late`, `leader`,
        `ready`, `asked`)."""
        self.recent_blocks: deque[tuple[float, int]] = deque(maxlen=RECENT_BLOCKS)
        self._queue: list[tuple[Transaction, bool, float]] = []
        """This batch's locally admitted transactions, each with whether a kept batch
        already held it when it was admitted, and when it was queued."""
        self._queue_bytes = 0
        self._first_at = 0.0
        """When the first transaction of the batch being coalesced was queued."""
        self._flush_at: float | None = None
        """When the batch being coalesced leaves (None: no batch waits)."""
        self._flush_timer: asyncio.Handle | None = None
        self._committed = 0
        """The last height this node committed."""
        self._commit_at = 0.0
        """When (event loop time) this node last committed."""
        self._busy = False
        """Whether this node's pool held ready transactions right after that commit."""
        self.flushes = 0
        """Batches of this node's clients' transactions sent (each to every peer)."""
        self._admit_queue: deque[tuple[int, bytes, float]] = deque()
        self._admit_queued: Counter[int] = Counter()
        """Forwarded transactions waiting for admission, by the peer that sent them."""
        self._resend: list[bytes] = []
        self._resend_scheduled = False
        self._admit_task: asyncio.Task[None] | None = None
        self._last_suspect = 0.0
        self._stopping = False

    def stop(self) -> asyncio.Task[None] | None:
        """Admit nothing more, send no batch; the admission task, if any, for the
        caller to cancel."""
        self._stopping = True
        self._cancel_flush()
        return self._admit_task

    def queued(self) -> int:
        """Peers' transactions received and waiting for admission."""
        return len(self._admit_queue)

    def forward(self, raw_txs: list[bytes], lazy: bool = False) -> None:
        """raw_txs as this node's next batches to every peer (lazily on links whose key
        rate is low, when `lazy`)."""
        if self.links.transport is None or not raw_txs:
            return

        def wait_s(peer: int) -> float:
            return forward_wait_s(self.links.key_rate(peer)) if lazy else 0.0

        self.batches.send(raw_txs, self.links.others(), wait_s)

    def queue(self, tx: Transaction) -> None:
        """Send tx (a locally admitted transaction) in this node's next batch, which
        leaves when `Coalescing` says."""
        if self._stopping:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._queue.append((tx, self.batches.store.locate(tx.hash) is not None, now))
        self._queue_bytes += len(tx.encoded)
        c = self.coalescing
        if len(self._queue) >= c.max_txs or self._queue_bytes >= c.max_bytes:
            self._flush()
            return
        if len(self._queue) == 1:
            self._first_at = now
        # From the batch's first transaction: a proposal heard since it was queued moves
        # the next build behind a commit, and the batch may wait longer.
        wait = c.delay_s if self.holds(now) else min(c.delay_s, PROMPT_S)
        due = self._first_at + wait
        if self._flush_at == due:
            return
        self._cancel_flush()
        self._flush_at = due
        if due <= now:
            self._flush_timer = loop.call_soon(self._flush)
        else:
            self._flush_timer = loop.call_later(due - now, self._flush)

    def holds(self, now: float) -> bool:
        """Whether the next build comes after a commit (see the module's doc), so that
        a batch may wait for it."""
        if self.proposal_out():
            return True
        return self._busy and now > self._commit_at + self.coalescing.build_wait_s + BUILD_SLACK_S

    def proposal_out(self) -> bool:
        """Whether a proposal for a height above the committed one was heard (or made
        here): the next leader then builds after a commit, which sends the batch."""
        return self._committed < self.batches.proposed <= self._committed + PROPOSED_AHEAD

    def _cancel_flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        self._flush_timer = None
        self._flush_at = None

    def _flush(self) -> None:
        self._cancel_flush()
        batch, self._queue, self._queue_bytes = self._queue, [], 0
        # A proposal may have sent some since they were admitted, in a batch of this
        # node's (`node.batches`). One that a batch held before it was admitted goes
        # again: the peers that got that batch may not have taken it into their pools
        # (full), or dropped it since (it waited behind a nonce gap, `node.mempool`),
        # and this node's pool did not hold it either, or it would not be new here.
        raws = [
            tx.encoded
            for tx, known, _ in batch
            if known or self.batches.store.locate(tx.hash) is None
        ]
        if raws and self.links.transport is not None:
            self.flushes += 1
            now = asyncio.get_running_loop().time()
            self.stages.extend(("forward", now - at) for _, _, at in batch)
        self.forward(raws, lazy=not self.idle_mode)

    def resubmitted(self, tx_hash: bytes, now: float) -> None:
        """A client submitted a transaction this node holds pending: if it is its
        sender's next nonce (the one every later nonce of the sender waits for), send it
        to the leader again, with the next `RESEND_RUN` - 1 of the sender's nonces this
        node holds in a run after it and the others of this turn, unless this node got or
        sent it less than `RESEND_AFTER_S` ago. The client asks again because it has not
        seen it commit, and the leader may never have had it, nor the nonces after it (a
        batch lost on a faulty link, a full pool, or places given up behind a nonce gap,
        `node.mempool`), while this node, holding them, would not otherwise send them
        again before the inclusion timeout (and never, when a peer forwarded them here).
        Only from the sender's next nonce: what a client asks again costs the links at
        most `RESEND_RUN` transactions per sender a second."""
        p = self.mempool.get(tx_hash)
        if p is None or self.links.transport is None:
            return
        if p.tx.nonce != self.mempool.accounts.next_nonce(p.tx.sender):
            return
        if now - max(p.seen_at, p.resent_at) < RESEND_AFTER_S:
            return
        self._resend_run(p, RESEND_RUN, now, "asked")

    def _resend_run(self, head: PendingTx, limit: int, now: float, reason: str) -> int:
        """Queue head and the next of its sender's nonces this node holds in a run after
        it, `limit` in all at most, for the leader (`_flush_resend`); how many."""
        run = self.mempool.run_from(head.tx.sender, head.tx.nonce, limit)
        for q in run:
            q.resent_at = now
            self._resend.append(q.tx.encoded)
        self.resent[reason] += len(run)
        if run and not self._resend_scheduled:
            self._resend_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_resend)
        return len(run)

    def _resend_stalled(self, now: float, timeout: float) -> None:
        """A sender's next nonce this node has held for an inclusion timeout, of any
        origin, goes to the leader again with the run after it (`RESEND_RUN` at most),
        once per timeout, at most `MAX_REFORWARD` transactions in all. Every later nonce
        of the sender waits for it; the validator whose client sent it forwards it, but
        may have let it go since (it waited behind a gap there for a timeout,
        `drop_waiting`) while the leader dropped it or never had it, and then this node
        alone would hold what the sender's whole queue needs."""
        if self.links.transport is None:
            return
        budget = MAX_REFORWARD
        for head in self.mempool.heads():
            if budget <= 0:
                break
            if now - max(head.seen_at, head.resent_at) > timeout:
                budget -= self._resend_run(head, min(RESEND_RUN, budget), now, "stalled")

    def _flush_resend(self) -> None:
        self._resend_scheduled = False
        raws, self._resend = self._resend, []
        leader = self.view().leader
        if leader is not None and leader != self.me and self.links.transport is not None:
            self.batches.send(raws, [leader], lambda j: 0.0)

    def send_became_ready(self) -> None:
        """This node's clients' transactions that waited behind a nonce gap and are
        ready now go to the leader again, in a batch of their own: while they waited,
        the leader's pool may have given their places to others or let them expire
        (`node.mempool`), and nothing else would send them before the inclusion
        timeout. Each such transaction is sent once per gap it waited behind."""
        ready = self.mempool.became_ready()
        leader = self.view().leader
        if not ready or leader is None or leader == self.me or self.links.transport is None:
            return
        self.resent["ready"] += len(ready[:MAX_REFORWARD])
        self.batches.send([p.tx.encoded for p in ready[:MAX_REFORWARD]], [leader], lambda j: 0.0)

    def leader_changed(self, leader: int) -> None:
        """This node's clients' pending transactions again, to the new leader only, in a
        batch of their own: a batch lost on a broken link reaches the next leader (which
        then names the new batch only for transactions it had in no other, and followers
        fetch that one from it)."""
        if leader != self.me and self.links.transport is not None and len(self.mempool):
            mine = [p.tx.encoded for p in self.mempool.pending() if p.local]
            if mine:
                self.resent["leader"] += len(mine[:MAX_REFORWARD])
                self.batches.send(mine[:MAX_REFORWARD], [leader], lambda j: 0.0)

    def received(self, sender: int, batch: OriginBatch) -> None:
        """Keep a peer's batch (`node.batches`) and queue its transactions; a task admits
        them in slices. Each peer may fill at most its share of the queue, at most at its
        budget's rate, so one Byzantine peer's junk never crowds out the others'
        transactions."""
        if not self.batches.received(sender, batch):
            return
        share = FORWARD_QUEUE_MAX // max(1, self.links.n - 1)
        room = max(
            0, min(FORWARD_QUEUE_MAX - len(self._admit_queue), share - self._admit_queued[sender])
        )
        take = self.budgets.take(sender, FORWARDED_TXS, min(room, len(batch.txs)))
        now = asyncio.get_running_loop().time()
        self._admit_queue.extend((sender, raw, now) for raw in batch.txs[:take])
        self._admit_queued[sender] += take
        self.dropped += len(batch.txs) - take
        self.refused["queue"] += len(batch.txs) - take
        if self._admit_task is None or self._admit_task.done():
            self._admit_task = asyncio.create_task(self._admit_forwarded(), name="admit")

    async def _admit_forwarded(self) -> None:
        while self._admit_queue and not self._stopping:
            txs: list[Transaction] = []
            now = asyncio.get_running_loop().time()
            for _ in range(min(self._slice(), len(self._admit_queue))):
                sender, raw, at = self._admit_queue.popleft()
                self._admit_queued[sender] -= 1
                self.stages.append(("admit_queue", now - at))
                try:
                    txs.append(decode_transaction(raw))
                except QChainError as e:
                    self.refused[e.code] += 1
                    continue
            await self.verify_pool.prefetch(txs)
            for tx in txs:
                try:
                    self.admission.admit(tx)
                except QChainError as e:
                    self.refused[e.code] += 1
                    continue
            await asyncio.sleep(0)

    def _slice(self) -> int:
        """Forwarded transactions admitted in one go: ADMIT_SLICE inline; with verify
        workers, a chunk per worker (the loop only admits what they checked)."""
        return ADMIT_SLICE * max(1, self.verify_pool.workers)

    def committed(self, now: float, height: int, txs: int) -> None:
        """The block of height, of `txs` transactions, was committed at `now` and has
        left the pool."""
        self.recent_blocks.append((now, txs))
        self.batches.committed(height)
        self._committed = max(self._committed, height)
        self._commit_at = asyncio.get_running_loop().time()
        self._busy = self.mempool.has_ready()
        if self._queue:
            # The next leader builds after this commit (and its propose wait).
            self._flush()

    def check_inclusion(self, now: float) -> None:
        """Drop transactions waiting behind a nonce gap since an inclusion timeout ago;
        send this node's transactions pending past the inclusion timeout again, in a new
        batch to every validator; past twice the timeout, suspect the leader (fire the
        round timer)."""
        timeout = self.inclusion_timeout_s
        # A transaction waiting behind a nonce gap for an inclusion timeout leaves.
        self.mempool.drop_waiting(now - timeout)
        self.send_became_ready()
        late = [p for p in self.mempool.pending() if p.local and now - p.seen_at > timeout]
        fresh = [p for p in late if not p.forwarded_to_all][:MAX_REFORWARD]
        if fresh:
            for p in fresh:
                p.forwarded_to_all = True
            self.resent["late"] += len(fresh)
            self.forward([p.tx.encoded for p in fresh])
        self._resend_stalled(now, timeout)
        stuck = [p for p in late if now - p.seen_at > 2 * timeout]
        if (
            stuck
            and now - self._last_suspect > timeout
            and leader_had_room(self.recent_blocks, len(stuck), now, timeout)
        ):
            self._last_suspect = now
            view = self.view()
            if view.round is not None and view.decided is None:
                log.info("transactions not included for %.1fs: suspecting the leader", timeout)
                self.feed(Timeout(TimerKey("round", view.height)))


def leader_had_room(
    recent_blocks: Iterable[tuple[float, int]], stuck: int, now: float, period: float
) -> bool:
    """Whether the blocks of the last inclusion period (recent_blocks: commit time and
    transaction count) left out our `stuck` transactions although they had room for
    them: each of those blocks held fewer transactions than we have stuck (up to
    LEADER_ROOM_TXS). Full blocks mean load, not censorship, and suspecting then would
    only add round changes to an overloaded chain. A leader that fills every block with
    others' transactions is not caught by this test."""
    recent = [n for t, n in recent_blocks if now - t <= period]
    return bool(recent) and max(recent) < min(stuck, LEADER_ROOM_TXS)
