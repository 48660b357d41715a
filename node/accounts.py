"""Admission of transactions into a validator's mempool, against committed accounts.

`Accounts` reads the committed facts of a sender (membership, key, nonce) from the store
in one call and caches them until the next commit (`invalidate`). `Admission` is the one
way a transaction enters the pool, whether a client submitted it here or a peer forwarded
it: after the node's rule on what it votes for (`refuse`: no rotate, CONSENSUS.md
Revision 1.20) and the mempool's checks it updates the pool metrics, tells an idle engine
that a transaction is ready, and lets a waiting leader build.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from consensus.events import Event, MempoolNonEmpty
from contracts import membership
from contracts.state import StateReader, StateSource
from node.backlog import Backlog, Gaps
from node.mempool import Account, Mempool
from node.metrics import NodeMetrics
from node.pacing import BlockPacer
from qchain import clock as loop_clock
from qchain.errors import MempoolFull, NonceMismatch, Overloaded, QChainError
from qchain.types import Transaction

ADMIT_SLICE = 100
"""Most transactions admitted in one go before other work gets a turn (forwarded
batches are admitted in slices of this size)."""
REFUSED_RETRY_S = 1.0
"""When a client refused for a reason without `Retry-After` (`mempool-full`, a nonce
beyond its sender's window) is taken to send the transaction again."""
CACHE_LIMIT = 100_000
"""Cached addresses per table; the table is emptied when it grows past this."""


class Accounts:
    """Committed account facts for mempool admission, read from the store and cached
    until the next commit (`invalidate`)."""

    def __init__(self, store: StateSource) -> None:
        """store: the committed store, or a view through the block whose commit is in
        flight (`node.chain.HeadState`)."""
        self.state = StateReader(store, membership.NAME)
        self._members: dict[bytes, membership.Member | None] = {}
        self._nonces: dict[bytes, int] = {}

    def invalidate(self) -> None:
        self._members.clear()
        self._nonces.clear()

    def _member(self, address: bytes) -> membership.Member | None:
        if address not in self._members:
            if len(self._members) > CACHE_LIMIT:
                self._members.clear()
            self._members[address] = membership.get_member(self.state, address)
        return self._members[address]

    def next_nonce(self, address: bytes) -> int:
        nonce = self._nonces.get(address)
        if nonce is None:
            if len(self._nonces) > CACHE_LIMIT:
                self._nonces.clear()
            nonce = self._nonces[address] = membership.get_nonce(self.state, address)
        return nonce

    def account(self, address: bytes) -> Account | None:
        m = self._member(address)
        if m is None:
            return None
        return Account(self.next_nonce(address), m.active, m.scheme, m.public_key)


class Admission:
    """Transactions into the pool, and what a new one sets going. A client's
    transaction must also fit the admission bound (`node.backlog`); a peer's forwarded
    one meets the pool's static limits only."""

    def __init__(
        self,
        mempool: Mempool,
        accounts: Accounts,
        committed: Callable[[], int],
        idle_mode: bool,
        pacer: BlockPacer,
        metrics: NodeMetrics,
        feed: Callable[[Event], None],
        backlog: Backlog,
        clock: Callable[[], float] = loop_clock.monotonic,
    ) -> None:
        """committed: the last committed height; idle_mode: the chain runs without
        heartbeat blocks (CONSENSUS.md §4), so the engine must hear about the mempool;
        clock: monotonic seconds (for the pool's times and the measured commit rate)."""
        self.mempool = mempool
        self.accounts = accounts
        self.committed = committed
        self.idle_mode = idle_mode
        self.pacer = pacer
        self.metrics = metrics
        self.feed = feed
        self.backlog = backlog
        self.gaps = Gaps()
        """Which senders' missing nonces count as open gaps here (`node.backlog`)."""
        self.clock = clock
        self.ready_signalled = False
        """Idle mode: whether the engine was told the mempool has an includable tx."""
        self.queued: Callable[[], int] = lambda: 0
        """Peers' transactions received and not admitted yet (`node.forwarding`): with
        the pool, the depth ahead of a new transaction."""
        self.refuse: Callable[[Transaction], None] = lambda tx: None
        """The node's rule on what it votes for (`ChainSets.refuse_rotation`): raises for
        a transaction no block of this node's may carry, which is then refused here too."""

    def admit(self, tx: Transaction, *, local: bool = False) -> bool:
        """Admit tx (local: a client submitted it to this node). True if new; raises
        what `Mempool.add` raises."""
        now = self.clock()
        if not local:
            return self._admit(tx, now, local=False)
        try:
            return self._admit(tx, now, local=True)
        except (MempoolFull, NonceMismatch) as e:
            if self.accounts.account(tx.sender) is not None:
                # Missing here until its client sends it again: what waits behind it
                # waits at least that long (`node.backlog.Gaps`).
                retry = e.retry_after_s if isinstance(e, Overloaded) else REFUSED_RETRY_S
                self.gaps.refused(tx.sender, tx.nonce, now + retry)
            raise

    def _admit(self, tx: Transaction, now: float, *, local: bool) -> bool:
        """`admit` at `now`."""
        bounded = False
        try:
            self.refuse(tx)
        except QChainError as e:
            self.mempool.rejections[e.code] = self.mempool.rejections.get(e.code, 0) + 1
            raise
        if local and tx.hash not in self.mempool:
            pending, depth = self.mempool.local_count, self.depth()
            first = self.first_missing(tx)
            gap = first if first is not None and tx.nonce > first else None
            if (
                gap is not None
                and self.gaps.open(tx.sender, gap, now)
                and self.backlog.bounding(now)
            ):
                # It could commit only once its sender's missing nonce arrives, which no
                # bound can say when: refused, not accepted only to wait (and, under the
                # bound, give its place to a ready one without its client knowing). A
                # gap seen only now may be a nonce on its way from another validator.
                raise self.backlog.refusal(pending, now, depth, waits_for=gap)
            if self.backlog.room(pending, now, depth) <= 0:
                # Beyond the bounds, only in the place of a client's transaction waiting
                # behind a nonce gap (`node.mempool`): neither count the bounds measure
                # grows.
                if not self.mempool.may_displace_local(tx):
                    raise self.backlog.refusal(pending, now, depth)
                bounded = True
        try:
            new = self.mempool.add(
                tx, height=self.committed(), now=now, local=local, bounded=bounded
            )
        except MempoolFull:
            if local:
                # The pool, the node's share of it, or the bound with no place to take.
                self.backlog.refused(now)
            raise
        if new:
            self.metrics.observe_mempool(len(self.mempool), self.mempool.size_bytes)
            if self.idle_mode and not self.ready_signalled and self.mempool.has_ready():
                self.ready_signalled = True
                self.feed(MempoolNonEmpty(True))
            if self.pacer.pending is not None:
                self.pacer.maybe_build()
        return new

    def first_missing(self, tx: Transaction) -> int | None:
        """The first nonce of tx's sender that the pool lacks: tx waits behind it when its
        nonce is above it (None: its sender is no member, which the mempool refuses for
        what it is)."""
        if self.accounts.account(tx.sender) is None:
            return None
        return self.mempool.first_missing(tx.sender)

    def depth(self) -> int:
        """Transactions of any origin ahead of a new one: the pool and the peers'
        transactions waiting for admission."""
        return len(self.mempool) + self.queued()

    def room(self) -> int:
        """How many more client transactions the admission bounds let in now, counting
        the places of this node's clients' transactions waiting behind a nonce gap (a
        ready one may take such a place)."""
        return self.backlog.room(self.mempool.local_count, self.clock(), self.depth()) + (
            self.mempool.waiting_local
        )

    def overloaded(self) -> Overloaded:
        """The refusal of a client transaction beyond `room`."""
        return self.backlog.refusal(self.mempool.local_count, self.clock(), self.depth())

    def on_commit(self, txs: Sequence[Transaction], height: int) -> None:
        """A block of txs committed at `height`: out of the pool, into the commit rate."""
        cutoff = self.backlog.cutoff()
        now = self.clock()
        stage = self.metrics.tx_stage
        local_wait, peer_wait = stage.labels("pool_local"), stage.labels("pool_peer")
        for tx in txs:
            p = self.mempool.get(tx.hash)
            if p is not None:
                (local_wait if p.local else peer_wait).observe(now - p.seen_at)
        local = self.mempool.on_commit(txs, height)
        saturated = cutoff is not None and any(
            p.local and p.seen_at < cutoff and p.tx.nonce == self.accounts.next_nonce(p.tx.sender)
            for p in self.mempool.pending()
        )
        self.backlog.committed(now, len(txs), local, saturated)

    def after_commit(self) -> None:
        """A commit changed what is includable: tell an idle engine whether some is."""
        if self.idle_mode:
            self.ready_signalled = self.mempool.has_ready()
            self.feed(MempoolNonEmpty(self.ready_signalled))
