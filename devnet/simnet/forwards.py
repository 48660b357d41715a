"""What each validator does with the transactions its peers send it: the
`forwards-taken` check.

A validator acknowledges a client's transaction (202) and sends it to every peer in its
next batch (`node.forwarding`); no peer answers for a transaction, so the validator that
acknowledged it never learns that a peer dropped it. What makes that safe is a promise of
the node's design (README, "Known limits"): each validator's clients hold at most
`max_txs` / n of its pool, so that every validator's share fits in any peer's pool, and
an honest peer's transactions are always taken. A transaction dropped anyway is left to
its client's retries and to the inclusion timeout, and a leader that dropped it builds
without it: its partner waits for nothing.

The check holds every honest validator to that promise. Each transaction of a batch an
honest peer sent it must be *decided* by its admission (`node.accounts.Admission.admit`),
where the pool's rules apply: taken into the pool, found there already, or refused for a
reason of the transaction's own (its nonce committed or in use, expired, a bad
signature), never left undecided (save what still waits in the admission queue when the
run ends); and one that a block of the validator could take (its sender's next nonce
there) is never refused because the pool had no room (`mempool-full`). A transaction
that would wait behind a nonce gap may be refused for room: the pool's rules let such
transactions give way (`node.mempool`), and a validator catching up after a crash or a
partition holds many (the nonces it knows are the old ones). A life of a validator that
ends in a crash is not judged (the pool and the queue die with it: the mempool is memory
only), nor is a validator a schedule made Byzantine, nor a batch from one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from devnet.faults.checkers import CheckResult, first_items


@dataclass
class Life:
    """What one life of one validator received from honest peers and decided."""

    node: str
    received: Counter[bytes] = field(default_factory=Counter)
    """Encoded transaction -> how many times it came in an honest peer's batch."""
    first_at: dict[bytes, float] = field(default_factory=dict)
    """Encoded transaction -> when it first came."""
    decided: Counter[bytes] = field(default_factory=Counter)
    """Encoded transaction -> how many times admission decided it (a forwarded one)."""
    refused_for_room: list[str] = field(default_factory=list)
    """Refusals for lack of room of transactions a block could take."""
    waiting_refused: int = 0
    """Refusals for lack of room of transactions that would wait behind a nonce gap."""

    def receive(self, txs: Iterable[bytes], now: float) -> None:
        for raw in txs:
            self.received[raw] += 1
            self.first_at.setdefault(raw, now)

    def decide(self, raw: bytes, now: float, room: str | None = None, ready: bool = True) -> None:
        """Admission decided a forwarded transaction; room: the pool's reason, when it
        refused it for lack of room; ready: whether a block could take it then."""
        self.decided[raw] += 1
        if room is None or raw not in self.received:
            return
        if ready:
            self.refused_for_room.append(f"{self.node} at {now:.3f}s: {room}")
        else:
            self.waiting_refused += 1

    def undecided(self, queued: Iterable[bytes]) -> list[bytes]:
        """Transactions received more often than decided or still queued for admission."""
        left = self.received - self.decided - Counter(queued)
        return sorted(left, key=lambda raw: (self.first_at[raw], raw))


@dataclass
class Forwards:
    """The current life of each validator."""

    lives: dict[int, Life] = field(default_factory=dict)

    def start(self, i: int, name: str) -> Life:
        self.lives[i] = Life(name)
        return self.lives[i]

    def crashed(self, i: int) -> None:
        self.lives.pop(i, None)


def check_forwards_taken(
    lives: Iterable[Life], queued: Mapping[str, Iterable[bytes]], byzantine: Iterable[str]
) -> CheckResult:
    """lives: the validators' current lives; queued: node -> the forwarded transactions
    still waiting for admission; byzantine: the nodes not judged."""
    hostile = set(byzantine)
    judged = [life for life in lives if life.node not in hostile]
    received = sum(life.received.total() for life in judged)
    gave_way = sum(life.waiting_refused for life in judged)
    room: list[str] = []
    dropped: list[str] = []
    dropped_count = 0
    for life in judged:
        room += life.refused_for_room
        left = life.undecided(queued.get(life.node, ()))
        if left:
            dropped_count += len(left)
            dropped.append(
                f"{life.node}: {len(left)} txs of honest peers' batches never decided "
                f"(the first received at {life.first_at[left[0]]:.3f}s)"
            )
    ok = not room and not dropped
    if ok:
        summary = (
            f"{received} txs of honest peers' batches received, each taken or refused "
            f"for a reason of its own ({gave_way} waiting behind a nonce gap refused for room)"
        )
    else:
        summary = (
            f"{dropped_count} txs of honest peers' batches dropped undecided, "
            f"{len(room)} refused for lack of room, of {received} received"
        )
    return CheckResult(
        "forwards-taken",
        ok,
        summary,
        first_items(dropped + room),
        {
            "received": received,
            "undecided": dropped_count,
            "refused_for_room": len(room),
            "waiting_refused": gave_way,
        },
    )
