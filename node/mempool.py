"""The mempool: admitted transactions waiting for a block.

Admission (`add`) checks, cheapest first: size (also against the node's block byte cap: a
transaction that can never fit a block is refused), chain id, duplicate bytes (the hash is
the idempotency key), expiry, membership of the sender, the nonce window, pool limits and
finally the signature against the sender's registered key. Nothing enters unchecked, and a
rejected transaction leaves no trace.

Transactions are kept per sender, keyed by nonce. A block takes from each sender only
the run of consecutive nonces that starts at its committed nonce (`reap`), so a block
never holds a nonce gap. Within that rule it takes the oldest first across senders (the
earliest admitted here, each sender's in nonce order), so that under load a full block
leaves the youngest behind and every transaction waits about as long as the queue is
deep. (Taking each sender's whole run in turn let one wait a whole turn of every sender,
about twice the median: p99 4.2 s against p50 2.2 s at 1.5 times the saturation rate.)
Between transactions admitted at the same time, a sender a committed block served goes
behind the others. After a commit (`on_commit`) included and stale transactions leave,
and so do expired ones.

A pending transaction in its sender's run is *ready*; one beyond a missing nonce is
*waiting* (behind a gap) and can go into no block until the gap is filled. Waiting
transactions give way, so that a gap can always be filled:

- A transaction that meets a full limit (the sender's, the pool's count or bytes, this
  node's clients' share, or, for a client's transaction, the admission bound) takes the
  place of its own sender's waiting transactions of later nonces, latest first (a later
  nonce can go into no block before it). One that is ready when it arrives (its nonce is
  the next after its sender's run) also takes the place of other senders' waiting
  transactions, the sender with the most waiting first, latest nonce first. For this
  node's share and the admission bound only waiting transactions of this node's clients
  make room. A transaction is refused only when waiting transactions cannot make the
  room: then the pool is full of transactions a block can take, which is load, or of
  earlier nonces. So a client that goes on sending a sender's later nonces after one was
  refused never locks the sender out: the refused nonce, sent again, finds room in every
  pool.
- A transaction still waiting one inclusion timeout after it was admitted leaves the
  pool (`drop_waiting`): a gap nobody fills holds no room for long.

A waiting transaction that leaves is no longer known to this node (its status is not
found): the client sends it again once its gap is filled.

The mempool is memory only: a 202-accepted transaction is lost if this node crashes
before it is committed. Resubmitting the same bytes is always safe (same hash, at most
one commit: the nonce makes a second inclusion impossible).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol

from contracts.execution import Verifier, verify_signature
from node.expiry import ExpiryIndex
from qchain.config import MempoolSection
from qchain.errors import (
    Expired,
    InvalidTransaction,
    MempoolFull,
    NonceInUse,
    NonceMismatch,
    NotAMember,
    QChainError,
    TooLarge,
    TxTooLarge,
    WrongChain,
)
from qchain.limits import MAX_BLOCK_TX_BYTES
from qchain.types import MAX_TX_SIZE, Transaction


@dataclass(frozen=True)
class Account:
    """The committed facts of one member that admission checks."""

    nonce: int
    """The next nonce the chain accepts from this member."""
    active: bool
    """False for a suspended member."""
    scheme: str
    public_key: bytes


class AccountView(Protocol):
    """Committed account facts the mempool checks against."""

    def next_nonce(self, address: bytes) -> int: ...

    def account(self, address: bytes) -> Account | None:
        """A member's facts, in one call; None for an address that is not a member."""


@dataclass(frozen=True)
class MempoolLimits:
    max_txs: int = 10_000
    max_bytes: int = 256 * 1024 * 1024
    max_per_sender: int = 256
    max_local: int | None = None
    """How many of the pending transactions may be local (submitted to this node by
    clients). A validator sets it to max_txs / n: then the local transactions of all n
    validators, forwarded to the leader, fit in the leader's pool. Without this, under
    overload the leader silently drops forwarded transactions, their senders' later
    nonces wait behind the gaps, and throughput collapses. With it, a peer's transaction
    a block could take may also go up to one share past max_txs (the lag between
    validators' commits, `_room`)."""
    max_block_bytes: int = MAX_BLOCK_TX_BYTES
    """Bytes of transactions in a block of this node: a larger transaction could never
    be included and is refused (`TxTooLarge`)."""

    @classmethod
    def of_validator(cls, m: MempoolSection, n: int) -> MempoolLimits:
        """The limits of one of n validators configured with m."""
        return cls(
            m.max_txs,
            m.max_bytes,
            m.max_per_sender,
            max_local=max(1, m.max_txs // n),
            max_block_bytes=m.max_block_bytes,
        )

    def shared_among(self, n: int) -> MempoolLimits:
        """These limits with the local share of one of n validators (unchanged when no
        share is set: a pool that is not a validator's)."""
        if self.max_local is None or n < 1:
            return self
        return replace(self, max_local=max(1, self.max_txs // n))


@dataclass
class PendingTx:
    tx: Transaction
    size: int
    seen_at: float
    """Local monotonic time of admission (for the inclusion timer)."""
    forwarded_to_all: bool = False
    local: bool = False
    """Submitted to this node by a client (not forwarded by a peer): this node is the one
    that keeps it moving toward the leader."""
    resent_at: float = float("-inf")
    """When a client's submission of it here last sent it to the leader again
    (`node.forwarding.Forwarder.resubmitted`)."""
    waiting: bool = False
    """Behind a nonce gap: not in its sender's run of pending nonces from its committed
    nonce."""


@dataclass
class _Sender:
    by_nonce: dict[int, PendingTx] = field(default_factory=dict)
    base: int = -1
    """The committed nonce the run below was measured from (-1: not measured)."""
    run_end: int = 0
    """The first nonce after the run of pending nonces that starts at `base`."""
    waiting: int = 0
    waiting_local: int = 0


class Mempool:
    def __init__(
        self,
        chain_id: str,
        limits: MempoolLimits,
        accounts: AccountView,
        verifier: Verifier = verify_signature,
    ) -> None:
        self.chain_id = chain_id
        self.limits = limits
        self.accounts = accounts
        self.verifier = verifier
        """Checks a signature against a public key; a validator passes the
        `SignatureCache` that block execution uses, so that a transaction admitted here
        is not verified again when a block includes it."""
        self._by_hash: dict[bytes, PendingTx] = {}
        self._senders: OrderedDict[bytes, _Sender] = OrderedDict()
        self._bytes = 0
        self._local = 0
        self._waiting = 0
        self._waiting_local = 0
        self._became_ready: list[PendingTx] = []
        self._expiring: ExpiryIndex[PendingTx] = ExpiryIndex()
        self.rejections: dict[str, int] = {}
        self.waiting_dropped: dict[str, int] = {"displaced": 0, "expired": 0}
        """Waiting transactions that left the pool: `displaced` by a ready one, `expired`
        by `drop_waiting`."""

    def share_among(self, n: int) -> None:
        """Follow a validator set of n: this validator's local share becomes max_txs / n
        (a chain whose set changes; `ChainSets.sized`)."""
        self.limits = self.limits.shared_among(n)

    def __len__(self) -> int:
        return len(self._by_hash)

    @property
    def local_count(self) -> int:
        """Pending transactions that clients submitted to this node."""
        return self._local

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def waiting_count(self) -> int:
        """Pending transactions behind a nonce gap."""
        return self._waiting

    @property
    def waiting_local(self) -> int:
        """Pending transactions of this node's clients behind a nonce gap: a ready client
        transaction may take the place of one of them when nothing else has room."""
        return self._waiting_local

    def oldest_local_age(self, now: float) -> float:
        """Seconds since the oldest pending client transaction was admitted (0: none)."""
        oldest = min((p.seen_at for p in self._by_hash.values() if p.local), default=now)
        return max(0.0, now - oldest)

    def get(self, tx_hash: bytes) -> PendingTx | None:
        return self._by_hash.get(tx_hash)

    def __contains__(self, tx_hash: bytes) -> bool:
        return tx_hash in self._by_hash

    def add(
        self,
        tx: Transaction,
        *,
        height: int,
        now: float,
        local: bool = False,
        bounded: bool = False,
    ) -> bool:
        """Admit tx (height: the last committed height). True if new, False if these
        exact bytes are already pending. Raises an `InvalidTransaction` or `MempoolFull`.
        bounded: the admission bound leaves no room for another client transaction, so a
        local tx gets in only in the place of a waiting one of this node's clients."""
        try:
            return self._add(tx, height, now, local, bounded)
        except QChainError as e:
            self.rejections[e.code] = self.rejections.get(e.code, 0) + 1
            raise

    def _add(self, tx: Transaction, height: int, now: float, local: bool, bounded: bool) -> bool:
        size = len(tx.encoded)
        if size > MAX_TX_SIZE:
            raise TooLarge(size, MAX_TX_SIZE)
        if size > self.limits.max_block_bytes:
            raise TxTooLarge(size, self.limits.max_block_bytes)
        known = self._by_hash.get(tx.hash)
        if known is not None:
            if local and not known.local:
                known.local = True
                self._local += 1
                if known.waiting:
                    self._senders[tx.sender].waiting_local += 1
                    self._waiting_local += 1
            return False
        if tx.chain_id != self.chain_id:
            raise WrongChain(self.chain_id, tx.chain_id)
        if tx.expiry_height and tx.expiry_height <= height:
            raise Expired(tx.expiry_height, height + 1)
        account = self.accounts.account(tx.sender)
        if account is None:
            raise NotAMember(tx.sender.hex())
        if not account.active:
            raise NotAMember(tx.sender.hex(), "is suspended")
        expected = account.nonce
        if tx.nonce < expected or tx.nonce >= expected + self.limits.max_per_sender:
            raise NonceMismatch(expected, tx.nonce)
        sender = self._senders.get(tx.sender)
        if sender is not None:
            other = sender.by_nonce.get(tx.nonce)
            if other is not None:
                raise NonceInUse(tx.nonce, other.tx.hash)
            self._measure(sender, expected)
        ready = tx.nonce == (expected if sender is None else sender.run_end)
        victims = self._room(tx, sender, size, local, bounded, ready)
        if tx.scheme != account.scheme:
            raise InvalidTransaction(
                f"sender's registered key is {account.scheme}, not {tx.scheme}"
            )
        self.verifier(tx, account.public_key)
        for victim in victims:
            self._remove(victim)
        self.waiting_dropped["displaced"] += len(victims)
        pending = PendingTx(tx, size, now, local=local, waiting=not ready)
        sender = self._senders.get(tx.sender)
        if sender is None:
            sender = self._senders[tx.sender] = _Sender(base=expected, run_end=expected)
        sender.by_nonce[tx.nonce] = pending
        self._by_hash[tx.hash] = pending
        self._expiring.add(tx.expiry_height, tx.hash)
        self._bytes += size
        self._local += local
        if ready:
            # The run grows, through the waiting transactions whose gap this filled.
            nonce = tx.nonce + 1
            while (later := sender.by_nonce.get(nonce)) is not None:
                self._set_waiting(sender, later, False)
                nonce += 1
            sender.run_end = nonce
        else:
            self._set_waiting(sender, pending, True, new=True)
        return True

    def _room(
        self,
        tx: Transaction,
        sender: _Sender | None,
        size: int,
        local: bool,
        bounded: bool,
        ready: bool,
    ) -> list[PendingTx]:
        """The waiting transactions that must leave for tx to fit every limit (none when
        it fits); raises `MempoolFull` for a limit they cannot make room under."""
        lim = self.limits
        need_sender = 0 if sender is None else len(sender.by_nonce) + 1 - lim.max_per_sender
        ceiling = lim.max_txs
        if not local and ready and lim.max_local is not None:
            # A peer's transaction a block could take. The validators' shares fill a
            # pool exactly only while every validator has committed the same blocks: a
            # peer that committed a block and refilled its share before this node
            # committed it sends more than a share meanwhile. One share more covers
            # that lag; the count stays bounded.
            ceiling += lim.max_local
        need_count = len(self._by_hash) + 1 - ceiling
        need_bytes = self._bytes + size - lim.max_bytes
        need_local = 0
        if local:
            if lim.max_local is not None:
                need_local = self._local + 1 - lim.max_local
            if bounded:
                need_local = max(need_local, 1)
        if max(need_sender, need_count, need_bytes, need_local) <= 0:
            return []
        victims: list[PendingTx] = []
        for p in self._gives_way_to(tx, sender, ready):
            if not (
                need_count > 0
                or need_bytes > 0
                or (need_sender > 0 and p.tx.sender == tx.sender)
                or (need_local > 0 and p.local)
            ):
                continue
            victims.append(p)
            need_sender -= p.tx.sender == tx.sender
            need_count -= 1
            need_bytes -= p.size
            need_local -= p.local
            if max(need_sender, need_count, need_bytes, need_local) <= 0:
                return victims
        if need_sender > 0:
            raise MempoolFull("too many pending transactions from this sender")
        if need_count > 0:
            raise MempoolFull("transaction count limit reached")
        if need_local > 0 and not bounded:
            raise MempoolFull("this node's share of the pool is taken; retry shortly")
        if need_bytes > 0:
            raise MempoolFull("byte limit reached")
        raise MempoolFull("the admission bound is reached and no client transaction waits")

    def _gives_way_to(
        self, tx: Transaction, sender: _Sender | None, ready: bool
    ) -> Iterator[PendingTx]:
        """The waiting transactions that may leave to make room for tx, in the order they
        do: its sender's waiting ones of later nonces, latest first (a later nonce can go
        into no block before tx); then, for a ready tx, every other sender's waiting ones,
        the sender with the most waiting first, latest nonce first."""
        if sender is not None and sender.waiting:
            yield from _latest_waiting(sender, tx.nonce)
        if not ready:
            return
        others = sorted(
            (s for a, s in self._senders.items() if s.waiting and a != tx.sender),
            key=lambda s: s.waiting,
            reverse=True,
        )
        for s in others:
            yield from _latest_waiting(s, -1)

    def _set_waiting(
        self, sender: _Sender, p: PendingTx, waiting: bool, new: bool = False, gone: bool = False
    ) -> None:
        if p.waiting == waiting and not new:
            return
        p.waiting = waiting
        step = 1 if waiting else -1
        sender.waiting += step
        self._waiting += step
        if p.local:
            sender.waiting_local += step
            self._waiting_local += step
            if not waiting and not gone:
                self._became_ready.append(p)

    def became_ready(self) -> list[PendingTx]:
        """This node's clients' transactions that waited behind a gap and are ready now
        (each returned once, still pending), since the last call."""
        out, self._became_ready = self._became_ready, []
        return [p for p in out if self._by_hash.get(p.tx.hash) is p and not p.waiting]

    def _measure(self, sender: _Sender, committed: int) -> None:
        """Mark the sender's ready and waiting transactions from its committed nonce (a
        no-op while that nonce is the one they were marked from)."""
        if sender.base == committed:
            return
        sender.base = committed
        nonce = committed
        run: set[int] = set()
        while nonce in sender.by_nonce:
            run.add(nonce)
            nonce += 1
        sender.run_end = nonce
        for n, p in sender.by_nonce.items():
            self._set_waiting(sender, p, n not in run)

    def may_displace_local(self, tx: Transaction) -> bool:
        """Whether tx could take the place of a waiting transaction of this node's
        clients (checked before its signature: it does not say tx is valid)."""
        if not self._waiting_local:
            return False
        sender = self._senders.get(tx.sender)
        committed = self.accounts.next_nonce(tx.sender)
        if sender is not None:
            self._measure(sender, committed)
            if any(p.local for p in self._gives_way_to(tx, sender, False)):
                return True
            return tx.nonce == sender.run_end
        return tx.nonce == committed

    def drop_waiting(self, admitted_before: float) -> int:
        """Remove the waiting transactions admitted before `admitted_before` (local
        monotonic time); how many left."""
        old = [
            p
            for s in list(self._senders.values())
            if s.waiting
            for p in s.by_nonce.values()
            if p.waiting and p.seen_at < admitted_before
        ]
        for p in old:
            self._remove(p)
        self.waiting_dropped["expired"] += len(old)
        return len(old)

    def has_ready(self) -> bool:
        """Whether some sender's next nonce is pending, so a block could include a
        transaction now (a pool holding only nonce gaps has nothing to propose)."""
        return any(
            self.accounts.next_nonce(address) in sender.by_nonce
            for address, sender in self._senders.items()
        )

    def reap(self, max_txs: int, max_bytes: int) -> list[Transaction]:
        """Transactions for the next block: per sender, consecutive nonces from the
        committed nonce; across senders, the earliest admitted first (a sender whose next
        transaction does not fit the bytes left gives no more). Ties go to senders in
        order of arrival, a sender a committed block served last."""
        heads: list[tuple[float, int, int, _Sender]] = []
        for turn, (address, sender) in enumerate(self._senders.items()):
            nonce = self.accounts.next_nonce(address)
            p = sender.by_nonce.get(nonce)
            if p is not None:
                heads.append((p.seen_at, turn, nonce, sender))
        heapq.heapify(heads)
        out: list[Transaction] = []
        used = 0
        while heads and len(out) < max_txs:
            _, turn, nonce, sender = heads[0]
            p = sender.by_nonce[nonce]
            if used + p.size > max_bytes:
                heapq.heappop(heads)
                continue
            out.append(p.tx)
            used += p.size
            after = sender.by_nonce.get(nonce + 1)
            if after is None:
                heapq.heappop(heads)
            else:
                heapq.heapreplace(heads, (after.seen_at, turn, nonce + 1, sender))
        return out

    def _remove(self, p: PendingTx) -> None:
        self._by_hash.pop(p.tx.hash, None)
        self._bytes -= p.size
        self._local -= p.local
        sender = self._senders.get(p.tx.sender)
        if sender is not None:
            if p.waiting:
                self._set_waiting(sender, p, False, gone=True)
            elif p.tx.nonce < sender.run_end:
                # A ready one leaves: the run is measured again when next needed.
                sender.base = -1
            sender.by_nonce.pop(p.tx.nonce, None)
            if not sender.by_nonce:
                del self._senders[p.tx.sender]

    def on_commit(self, txs: Iterable[Transaction], height: int) -> int:
        """Drop what the committed block included, what its nonces made stale, and what
        expired at `height`. Returns how many of the included were local."""
        touched: set[bytes] = set()
        local = 0
        for tx in txs:
            p = self._by_hash.get(tx.hash)
            if p is not None:
                local += p.local
                self._remove(p)
            touched.add(tx.sender)
        for address in touched:
            sender = self._senders.get(address)
            if sender is None:
                continue
            # A sender a block served goes behind those it left out: between transactions
            # admitted at the same time, the next block takes the others' first.
            self._senders.move_to_end(address)
            nonce = self.accounts.next_nonce(address)
            if sender.by_nonce and min(sender.by_nonce) < nonce:
                for stale in [p for n, p in sender.by_nonce.items() if n < nonce]:
                    self._remove(stale)
        for p in self._expiring.due(height, self._by_hash):
            self._remove(p)
            touched.add(p.tx.sender)
        for address in touched:
            sender = self._senders.get(address)
            if sender is not None:
                self._measure(sender, self.accounts.next_nonce(address))
        return local

    def heads(self) -> Iterator[PendingTx]:
        """Each sender's pending transaction of its committed nonce (the one a block
        takes next from it), where this pool holds it."""
        for address, sender in list(self._senders.items()):
            p = sender.by_nonce.get(self.accounts.next_nonce(address))
            if p is not None:
                yield p

    def run_from(self, address: bytes, nonce: int, limit: int) -> list[PendingTx]:
        """The sender's pending transactions of consecutive nonces from `nonce`, at most
        `limit` of them."""
        sender = self._senders.get(address)
        out: list[PendingTx] = []
        while sender is not None and len(out) < limit:
            p = sender.by_nonce.get(nonce + len(out))
            if p is None:
                break
            out.append(p)
        return out

    def gap_before(self, address: bytes, nonce: int) -> int | None:
        """The first missing nonce of the sender's, if `nonce` would wait behind it (None:
        it would be ready, or is pending or stale)."""
        free = self.first_missing(address)
        return free if nonce > free else None

    def first_missing(self, address: bytes) -> int:
        """The sender's first nonce neither committed nor pending (the one a block needs
        next from it). The run is measured once per committed nonce, so this costs no
        walk down the sender's pending nonces."""
        committed = self.accounts.next_nonce(address)
        sender = self._senders.get(address)
        if sender is None:
            return committed
        self._measure(sender, committed)
        return sender.run_end

    def next_free_nonce(self, address: bytes, committed: int) -> int:
        """The nonce after the run of pending nonces that starts at `committed`."""
        sender = self._senders.get(address)
        nonce = committed
        while sender is not None and nonce in sender.by_nonce:
            nonce += 1
        return nonce

    def pending(self) -> Iterable[PendingTx]:
        return list(self._by_hash.values())


def _latest_waiting(sender: _Sender, after: int) -> Iterator[PendingTx]:
    """The sender's waiting transactions of nonces above `after`, latest first (nonces
    are within the nonce window, so the walk down is at most `max_per_sender` long)."""
    if not sender.by_nonce:
        return
    nonce = max(sender.by_nonce)
    low = max(after, min(sender.by_nonce) - 1)
    while nonce > low:
        p = sender.by_nonce.get(nonce)
        if p is not None and p.waiting:
            yield p
        nonce -= 1
