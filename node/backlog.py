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
(a new chain, an idle one, or a stall) there is no rate to go by: the node then keeps at
most `UNSATURATED_MIN_ROOM` (1,000) of its clients' transactions pending, as it does
while the chain is not saturated. (Before, only the pool's static limits applied there:
at the start of an overload each node took up to its 2,500 before the first commits gave
a rate, and those transactions made the tail of the latency.) A stalled chain so stops
acknowledging what it cannot commit once 1,000 wait.

A measured commit rate is what the chain committed, not what it could: while the chain
keeps up, blocks are as small as the load offered, the rate understates the chain's
capacity, and a bound on pending / rate would bound the chain's own latency (the time
from admission to commit even with no queue), not the wait in a queue: it would hold
throughput wherever it happens to be. So the bound applies only while the chain is
*saturated*: one of the last `SATURATED_COMMITS` (3) commits left out a transaction of
this node's clients that was ready (its sender's next nonce) well before that block was
built (admitted before the commit two commits earlier). Then blocks are full, the
measured rate is the chain's capacity, and pending / rate is the wait in the queue.
Otherwise the room is `UNSATURATED_GROWTH` (2) times larger, and at least
`UNSATURATED_MIN_ROOM` (1,000) pending: enough for the load to grow (with the floor below,
the admitted rate can quadruple per block interval), and the larger blocks that follow
raise the measured rate, without letting a sudden burst queue tens of seconds before the
chain's first full blocks show it is saturated.

Pending / rate is the whole time from admission to commit (Little's law), queue and
commit path together. When the commit path alone takes longer than the bound (a loaded
machine, large blocks), a bound below it would admit less than the chain commits, the
measured rate would fall, and throughput with it. A transaction's shortest path is about
two block intervals (waiting for the next block to be built, then that block's
consensus, which with pipelined heights overlaps the next interval), so the bound in
force is never below `INTERVALS` (2) times the mean block interval over the window; the
floor below keeps a block's worth admitted whatever the bound says, so the queue never
runs dry. (It was 3 intervals: at 1.5 times the saturation rate the bound in force was
then the floor, about 1.8 s, not the configured bound, and p99 was 4.2 s; with 2 and a
1 s bound it was 3.3 s at the same throughput, docs/BENCHMARKS.md.) Latency then stays as
low as the chain allows, and throughput holds. (The interval does not grow with the
queue, so this floor does not chase the latency it is meant to bound.)

A refusal is cheap (no decoding, no signature check: it needs only a few counters) and
says when to come back: `Overloaded.retry_after_s`, the time the backlog above the bound
takes to drain at the measured rate, whole seconds as `Retry-After` needs, at least 1
and at most the bound (by then the rate has been measured again).

The pool as a whole is bounded the same way. A new transaction waits behind everything
this node holds for the chain, not only its own clients': the pool (every origin's
transactions, admitted from their batches) and the peers' transactions received and
not admitted yet. While the chain is saturated the node also refuses once that *depth*
drains no sooner than the bound at the chain's measured rate,

    depth / chain rate  >=  bound

so that every node, seeing about the same pool, refuses when the queue ahead of a new
transaction is long, whichever node's clients filled it, and a node whose local rate
was measured high in a lull does not add its own queue on top of a deep pool. The
*floor* keeps the pipeline fed: while the depth is below the largest block of the
window (a block's worth), local transactions are admitted whatever the bounds say, so
the next block can be full (refusing then would cut throughput below the peak).

A client's transaction that would wait behind a nonce gap (an earlier nonce of its
sender that the pool does not hold) cannot be committed within any bound: it waits for a
nonce nobody may send. While the node is under load (`bounding`: the chain saturated, or
a client transaction refused for want of room within the window) it is refused,
`overloaded` with the nonce it `waits_for` (`node.accounts.Admission`), once the gap is
*open* (`Gaps`). Accepted, it took room the bound measures and, the bound reached, gave
its place to a ready one (`node.mempool`), its client told 202 and never learning: under
overload most of the accepted transactions that waited tens of seconds were those.

A gap is open when this node refused the missing nonce (its client sends it again after
`Retry-After`, which has not passed: until then what waits behind it waits at least that
long), or when the nonce has been missing here for longer than `GAP_GRACE_S` (1 s) since
it could have arrived (its first sight here behind a client's transaction, or the end of
that `Retry-After`). A gap seen for less may be a nonce on its way: a client that sends a
sender's consecutive nonces at once to different validators (a load balancer, or a retry
that goes to another node) has the missing nonce in another validator's pool, whose batch
reaches this one within its batch delay (250 ms by default) and a hop. Refusing then let
a sender that sends everything it has outstanding at once commit one nonce per
`Retry-After` under load: each time, only the nonce whose predecessor had committed found
it everywhere (the whole-network simulator's eager client, `docs/SIMULATION.md`). What
the grace admits behind a gap nobody fills is at most a second's worth, per missing
nonce, of one sender's transactions at one node; a client that sends everything to one
node, and a refused nonce again before its later ones, never gets a transaction accepted
behind a nonce that node refused (`tests/node/test_overload.py`).

The bound is on the mean wait (pending / rate, Little's law). Blocks take the oldest
first across senders (`Mempool.reap`), so the slowest accepted transactions wait about
1.6 times the median (taking each sender's run in turn made it about 2). With the oldest
taken first, a block leaves an old ready transaction behind only once the queue is about
two block intervals deep, so saturation is seen at that depth: with the bound in force
never below two intervals, the two agree. (Measured at 1.5 times the saturation rate,
docs/BENCHMARKS.md: p99 3.3 s against 4.2 s before, the same committed rate.)

Only local admissions are bounded. Transactions a peer forwards were accepted by that
peer, which keeps them and forwards them again until they commit; refusing them here
would only delay them, so they meet the static limits alone (`MempoolLimits.max_local`
keeps room for them).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from qchain.errors import Overloaded

WINDOW_S = 5.0
"""How far back commits count toward the measured rate."""
MIN_SPAN_S = 1.0
"""Shortest span a rate is measured over (right after the first commits)."""
INTERVALS = 2
"""The bound in force is at least this many mean block intervals: two for the path of
a transaction through a block, one for the queue that keeps the next block full."""
SATURATED_COMMITS = 3
"""Commits a left-behind transaction keeps the chain counted as saturated (one block
that happens to take everything does not lift the bound)."""
UNSATURATED_GROWTH = 2
"""While the chain is not saturated, the room is this many times the bound's: the rate
then measures the load offered, and may grow this much in one bound's time."""
UNSATURATED_MIN_ROOM = 1000
"""While the chain is not saturated, at least this many client transactions may be
pending: the first blocks after load starts may hold a handful, and a rate measured
from them says nothing about the chain."""
UNBOUNDED = 1 << 62
"""`room` with admission control off: only the pool's static limits apply."""
GAP_GRACE_S = 1.0
"""How long a sender's missing nonce may be missing at this node, not refused here, before
what waits behind it counts as waiting for a gap nobody fills (`Gaps`): longer than a
batch takes from another validator's pool to this one's (the batch delay, 250 ms by
default, a hop, and the peers' admission queue, within 1 s under overload:
docs/BENCHMARKS.md)."""
GAP_SENDERS_KEPT = 4096
"""Senders whose gap, and whose refused nonces, `Gaps` remembers; the one seen least
recently is forgotten first (a forgotten gap is fresh again when next seen)."""
GAP_NONCES_KEPT = 32
"""Refused nonces `Gaps` remembers of one sender, the lowest (the first missing nonce is
the lowest missing)."""


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
        self._txs = 0
        self._local = 0
        """The sums of those transactions and local transactions, kept with the window
        (asked for at every admission)."""
        self._first: float | None = None
        """When the transactions committed in the window began to accumulate: the commit
        before the first one that carried any since the window last held none (the
        window is shorter before)."""
        self._last: float | None = None
        """Time of the last commit."""
        self._left_behind: deque[bool] = deque(maxlen=SATURATED_COMMITS)
        """Whether each of the last commits left ready client transactions behind."""
        self._recent: deque[float] = deque(maxlen=2)
        """Times of the last two commits."""
        self._refused_at: float | None = None
        """When the node last refused a client transaction for want of room (`refused`)."""

    def cutoff(self) -> float | None:
        """Client transactions admitted before this time were in the leader's pool when
        the block committed next was built (the commit two commits back: a pipelined
        leader builds a block before the previous one commits)."""
        return self._recent[0] if len(self._recent) == 2 else None

    def committed(self, now: float, txs: int, local: int, saturated: bool) -> None:
        """A block of `txs` transactions, `local` of them this node's clients', committed
        at `now` (monotonic seconds); saturated: it left ready client transactions
        admitted before `cutoff()` behind."""
        self._expire(now)
        if txs and not self._txs:
            self._first = self._last if self._last is not None else now
        self._last = now
        self._commits.append((now, txs, local))
        self._txs += txs
        self._local += local
        self._recent.append(now)
        self._left_behind.append(saturated)
        self._expire(now)

    def _expire(self, now: float) -> None:
        while self._commits and now - self._commits[0][0] > self.window_s:
            _, txs, local = self._commits.popleft()
            self._txs -= txs
            self._local -= local

    def rates(self, now: float) -> Rates:
        self._expire(now)
        if self._first is None or not self._txs:
            return Rates(0.0, 0.0)
        span = max(MIN_SPAN_S, min(self.window_s, now - self._first))
        return Rates(self._txs / span, self._local / span)

    @property
    def saturated(self) -> bool:
        """Whether one of the last `SATURATED_COMMITS` commits left ready client
        transactions behind."""
        return any(self._left_behind)

    def bounding(self, now: float) -> bool:
        """Whether the node is under load: admission control is on, and the chain is
        saturated or the node refused a client transaction for want of room (`refused`)
        within the window (the saturation signal comes and goes from block to block
        under overload, the refusals do not). A client's transaction that would wait
        behind a nonce gap is then refused (`node.accounts.Admission`)."""
        if self.bound_s <= 0:
            return False
        refused = self._refused_at is not None and now - self._refused_at <= self.window_s
        return self.saturated or refused

    def refused(self, now: float) -> None:
        """A client transaction was refused for want of room at `now` (the bound here,
        or the pool's share for the node's clients): the node is under load."""
        self._refused_at = now

    def bound_in_force(self, now: float) -> float:
        """The bound, in seconds, raised to `INTERVALS` mean block intervals."""
        self._expire(now)
        commits = self._commits
        if len(commits) < 2:
            return self.bound_s
        interval = (commits[-1][0] - commits[0][0]) / (len(commits) - 1)
        return max(self.bound_s, INTERVALS * interval)

    def rate(self, now: float) -> float:
        """The rate this node's pending transactions drain at (0: unknown)."""
        r = self.rates(now)
        return max(r.local, r.chain / self.n)

    def block_worth(self, now: float) -> int:
        """The most transactions a commit of the window carried (0: none)."""
        self._expire(now)
        return max((txs for _, txs, _ in self._commits), default=0)

    def room(self, pending: int, now: float, depth: int) -> int:
        """How many more local transactions the bounds let in with `pending` local ones
        in the pool and `depth` transactions of any origin ahead of a new one
        (`UNBOUNDED` with no bound; `UNSATURATED_MIN_ROOM` in all with no known rate)."""
        if self.bound_s <= 0:
            return UNBOUNDED
        rate = self.rate(now)
        if rate <= 0:
            return max(0, UNSATURATED_MIN_ROOM - pending)
        bound = self.bound_in_force(now)
        allowed = bound * rate
        if not self.saturated:
            allowed = max(UNSATURATED_MIN_ROOM, UNSATURATED_GROWTH * allowed)
            return max(0, math.floor(allowed) - pending)
        room = min(math.floor(allowed) - pending, math.floor(bound * self.rates(now).chain) - depth)
        if room > 0:
            return room
        return max(0, self.block_worth(now) - depth)

    def refusal(
        self, pending: int, now: float, depth: int, waits_for: int | None = None
    ) -> Overloaded:
        """The answer to a transaction beyond the room: when to come back (the time the
        larger excess above a bound drains, at most half the bound in force: by then a
        commit has opened room and measured again). waits_for: the transaction would wait
        behind this missing nonce of its sender (refused while `bounding`); any other
        refusal marks the node under load (`bounding`)."""
        if waits_for is None:
            self.refused(now)
        rate = self.rate(now)
        chain = self.rates(now).chain
        bound = self.bound_in_force(now)
        if rate <= 0:
            return Overloaded(1, 0, round(bound * 1000), waits_for)
        waits = [pending / rate]
        excess = [(pending + 1 - bound * rate) / rate]
        if chain > 0:
            waits.append(depth / chain)
            excess.append((depth + 1 - bound * chain) / chain)
        wait_s = min(max(excess), bound / 2)
        return Overloaded(
            max(1, math.ceil(wait_s)), round(max(waits) * 1000), round(bound * 1000), waits_for
        )

    def check(self, pending: int, now: float, depth: int) -> None:
        """Raise `Overloaded` unless one more local transaction fits the bounds."""
        if self.room(pending, now, depth) <= 0:
            raise self.refusal(pending, now, depth)


class Gaps:
    """Whether a sender's first missing nonce counts as an open gap at this node: its
    client was told to send it later (this node refused it, and its `Retry-After` has
    not passed), or it has been missing for longer than the grace (`GAP_GRACE_S`) since
    it might first have arrived (its first sight here behind a client's transaction, or
    the end of that `Retry-After`). Bounded: at most `senders` senders of each kind
    (the least recently seen forgotten first) and `per_sender` refused nonces of one
    sender (the lowest kept: the first missing one is the lowest)."""

    def __init__(
        self,
        grace_s: float = GAP_GRACE_S,
        senders: int = GAP_SENDERS_KEPT,
        per_sender: int = GAP_NONCES_KEPT,
    ) -> None:
        self.grace_s = grace_s
        self.senders = max(1, senders)
        self.per_sender = max(1, per_sender)
        self._seen: OrderedDict[bytes, tuple[int, float]] = OrderedDict()
        """sender -> (its first missing nonce, when it was first seen missing here)."""
        self._refused: OrderedDict[bytes, dict[int, float]] = OrderedDict()
        """sender -> {nonce this node refused: when its client may send it again}."""

    def kept(self) -> tuple[int, int]:
        """(senders with a gap seen, refused nonces remembered)."""
        return len(self._seen), sum(len(r) for r in self._refused.values())

    def open(self, sender: bytes, missing: int, now: float) -> bool:
        """Whether the sender's `missing` nonce (its first missing one) counts as an
        open gap at `now`: a client transaction behind it is refused under load. The
        first sight of a gap starts its clock."""
        since = None
        refused = self._refused.get(sender)
        if refused is not None:
            for n in [n for n in refused if n < missing]:
                del refused[n]  # committed or pending since
            retry_at = refused.get(missing)
            if not refused:
                del self._refused[sender]
            if retry_at is not None:
                if now < retry_at:
                    return True
                since = retry_at
        seen = self._seen.get(sender)
        if seen is None or seen[0] != missing:
            _note(self._seen, sender, (missing, now), self.senders)
            first = now
        else:
            self._seen.move_to_end(sender)
            first = seen[1]
        return now - max(first, since if since is not None else first) > self.grace_s

    def refused(self, sender: bytes, nonce: int, retry_at: float) -> None:
        """This node refused the sender's `nonce`, its client told to send it again at
        `retry_at`: until then a transaction behind it would wait for it at least."""
        refused = self._refused.pop(sender, {})
        refused[nonce] = retry_at
        if len(refused) > self.per_sender:
            del refused[max(refused)]
        _note(self._refused, sender, refused, self.senders)


def _note(table: OrderedDict[bytes, Any], sender: bytes, value: Any, kept: int) -> None:
    table.pop(sender, None)
    table[sender] = value
    while len(table) > kept:
        table.popitem(last=False)
