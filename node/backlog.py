"""Admission control: accept only what the chain can commit within a bound.

A pool that accepts whatever fits its static limits lets an overloaded chain queue tens
of seconds of transactions: throughput holds, but every accepted transaction waits. The
`Backlog` keeps the expected wait of a newly accepted transaction under
`admission_bound_ms` instead. It measures, from this node's own commits over a recent
window, how fast the chain commits this node's clients' transactions (its *local* commit
rate), and accepts a new local transaction while

    local pending / local commit rate  <  bound

The local rate is never taken below the node's fair share of the chain's rate (chain
rate / n): a node whose clients only now start sending has no local history yet, but the
chain's rate says what it can expect. With no commit of any transaction in the window
(a new chain, an idle one, or a stall) there is no rate to go by, and only the pool's
static limits apply, as before.

A measured commit rate is what the chain committed, not what it could: while load ramps
up, blocks are small because little was offered, and the rate understates the chain's
capacity. So the bound applies only once the node stops keeping up: while its oldest
pending client transaction has waited less than half the bound (every block takes what
it holds), it accepts within the static limits, and the next blocks, larger, raise the
measured rate. Past that, blocks are full and the rate is the chain's capacity.

A refusal is cheap (no decoding, no signature check: it needs only a few counters) and
says when to come back: `Overloaded.retry_after_s`, the time the backlog above the bound
takes to drain at the measured rate, whole seconds as `Retry-After` needs, at least 1
and at most the bound (by then the rate has been measured again).

Only local admissions are bounded. Transactions a peer forwards were accepted by that
peer, which keeps them and forwards them again until they commit; refusing them here
would only delay them, so they meet the static limits alone (`MempoolLimits.max_local`
keeps room for them).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from qchain.errors import Overloaded

WINDOW_S = 5.0
"""How far back commits count toward the measured rate."""
MIN_SPAN_S = 1.0
"""Shortest span a rate is measured over (right after the first commits)."""
UNBOUNDED = 1 << 62
"""`room` when no rate is known: only the pool's static limits apply."""


@dataclass(frozen=True)
class Rates:
    """Committed transactions per second over the window."""

    chain: float
    local: float
    """This node's clients' transactions only."""


class Backlog:
    """The admission bound of one validator: fed with its commits, asked for room."""

    def __init__(self, bound_ms: int, n: int, window_s: float = WINDOW_S) -> None:
        """bound_ms: the longest expected wait of an accepted transaction (0: no bound,
        only the pool's static limits); n: validators (for the fair share)."""
        self.bound_s = bound_ms / 1000
        self.n = max(1, n)
        self.window_s = window_s
        self._commits: deque[tuple[float, int, int]] = deque()
        """(time, transactions, local transactions) of the commits in the window."""
        self._first: float | None = None
        """Time of the first commit this node saw (the window is shorter before)."""

    def committed(self, now: float, txs: int, local: int) -> None:
        """A block of `txs` transactions, `local` of them this node's clients', committed
        at `now` (monotonic seconds)."""
        if self._first is None:
            self._first = now
        self._commits.append((now, txs, local))
        self._expire(now)

    def _expire(self, now: float) -> None:
        while self._commits and now - self._commits[0][0] > self.window_s:
            self._commits.popleft()

    def rates(self, now: float) -> Rates:
        self._expire(now)
        if self._first is None:
            return Rates(0.0, 0.0)
        span = max(MIN_SPAN_S, min(self.window_s, now - self._first))
        chain = sum(c[1] for c in self._commits) / span
        local = sum(c[2] for c in self._commits) / span
        return Rates(chain, local)

    def rate(self, now: float) -> float:
        """The rate this node's pending transactions drain at (0: unknown)."""
        r = self.rates(now)
        return max(r.local, r.chain / self.n)

    def room(self, pending: int, oldest_s: float, now: float) -> int:
        """How many more local transactions the bound lets in with `pending` local ones
        in the pool, the oldest of them waiting for `oldest_s` seconds (`UNBOUNDED` with
        no bound, no known rate, or while the node keeps up)."""
        rate = self.rate(now)
        if self.bound_s <= 0 or rate <= 0 or oldest_s < self.bound_s / 2:
            return UNBOUNDED
        return max(0, math.floor(self.bound_s * rate) - pending)

    def refusal(self, pending: int, now: float) -> Overloaded:
        """The answer to a transaction beyond the room: when to come back."""
        rate = self.rate(now)
        excess = pending + 1 - self.bound_s * rate
        wait_s = min(excess / rate, self.bound_s) if rate > 0 else 1.0
        return Overloaded(
            max(1, math.ceil(wait_s)),
            round(pending / rate * 1000) if rate > 0 else 0,
            round(self.bound_s * 1000),
        )

    def check(self, pending: int, oldest_s: float, now: float) -> None:
        """Raise `Overloaded` unless one more local transaction fits the bound."""
        if self.room(pending, oldest_s, now) <= 0:
            raise self.refusal(pending, now)
