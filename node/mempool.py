"""The mempool: admitted transactions waiting for a block.

Admission (`add`) checks, cheapest first: size (also against the node's block byte cap: a
transaction that can never fit a block is refused), chain id, duplicate bytes (the hash is
the idempotency key), expiry, membership of the sender, the nonce window, pool limits and
finally the signature against the sender's registered key. Nothing enters unchecked, and a
rejected transaction leaves no trace.

Transactions are kept per sender, keyed by nonce. A block takes, sender by sender, the
run of consecutive nonces that starts at the sender's committed nonce (`reap`), so a
block never holds a nonce gap. Senders come in order of arrival, and a sender a
committed block served goes behind the others, so that under load full blocks serve
senders in turn instead of leaving the same ones out. After a commit (`on_commit`) included and
stale transactions leave, and so do expired ones.

The mempool is memory only: a 202-accepted transaction is lost if this node crashes
before it is committed. Resubmitting the same bytes is always safe (same hash, at most
one commit: the nonce makes a second inclusion impossible).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from contracts.execution import Verifier, verify_signature
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
    nonces wait behind the gaps, and throughput collapses."""
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


@dataclass
class _Sender:
    by_nonce: dict[int, PendingTx] = field(default_factory=dict)


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
        self.rejections: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._by_hash)

    @property
    def local_count(self) -> int:
        """Pending transactions that clients submitted to this node."""
        return self._local

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get(self, tx_hash: bytes) -> PendingTx | None:
        return self._by_hash.get(tx_hash)

    def __contains__(self, tx_hash: bytes) -> bool:
        return tx_hash in self._by_hash

    def add(self, tx: Transaction, *, height: int, now: float, local: bool = False) -> bool:
        """Admit tx (height: the last committed height). True if new, False if these
        exact bytes are already pending. Raises an `InvalidTransaction` or `MempoolFull`."""
        try:
            return self._add(tx, height, now, local)
        except QChainError as e:
            self.rejections[e.code] = self.rejections.get(e.code, 0) + 1
            raise

    def _add(self, tx: Transaction, height: int, now: float, local: bool) -> bool:
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
            if len(sender.by_nonce) >= self.limits.max_per_sender:
                raise MempoolFull("too many pending transactions from this sender")
        if len(self._by_hash) >= self.limits.max_txs:
            raise MempoolFull("transaction count limit reached")
        if local and self.limits.max_local is not None and self._local >= self.limits.max_local:
            raise MempoolFull("this node's share of the pool is taken; retry shortly")
        if self._bytes + size > self.limits.max_bytes:
            raise MempoolFull("byte limit reached")
        if tx.scheme != account.scheme:
            raise InvalidTransaction(
                f"sender's registered key is {account.scheme}, not {tx.scheme}"
            )
        self.verifier(tx, account.public_key)
        pending = PendingTx(tx, size, now, local=local)
        if sender is None:
            sender = self._senders[tx.sender] = _Sender()
        sender.by_nonce[tx.nonce] = pending
        self._by_hash[tx.hash] = pending
        self._bytes += size
        self._local += local
        return True

    def has_ready(self) -> bool:
        """Whether some sender's next nonce is pending, so a block could include a
        transaction now (a pool holding only nonce gaps has nothing to propose)."""
        return any(
            self.accounts.next_nonce(address) in sender.by_nonce
            for address, sender in self._senders.items()
        )

    def reap(self, max_txs: int, max_bytes: int) -> list[Transaction]:
        """Transactions for the next block: per sender, consecutive nonces from the
        committed nonce, senders in order of first arrival."""
        out: list[Transaction] = []
        used = 0
        for address, sender in self._senders.items():
            nonce = self.accounts.next_nonce(address)
            while len(out) < max_txs:
                p = sender.by_nonce.get(nonce)
                if p is None or used + p.size > max_bytes:
                    break
                out.append(p.tx)
                used += p.size
                nonce += 1
            if len(out) >= max_txs:
                break
        return out

    def _remove(self, p: PendingTx) -> None:
        self._by_hash.pop(p.tx.hash, None)
        self._bytes -= p.size
        self._local -= p.local
        sender = self._senders.get(p.tx.sender)
        if sender is not None:
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
            # Round robin: a sender a block served goes behind those it left out, so that
            # under load a full block never leaves the same senders out again.
            self._senders.move_to_end(address)
            nonce = self.accounts.next_nonce(address)
            for stale in [p for n, p in sender.by_nonce.items() if n < nonce]:
                self._remove(stale)
        expired = [
            p for p in self._by_hash.values() if p.tx.expiry_height and p.tx.expiry_height <= height
        ]
        for p in expired:
            self._remove(p)
        return local

    def next_free_nonce(self, address: bytes, committed: int) -> int:
        """The nonce after the run of pending nonces that starts at `committed`."""
        sender = self._senders.get(address)
        nonce = committed
        while sender is not None and nonce in sender.by_nonce:
            nonce += 1
        return nonce

    def pending(self) -> Iterable[PendingTx]:
        return list(self._by_hash.values())
