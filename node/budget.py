"""Per-peer resource budgets: what one validator's frames may make this node do.

Every authenticated frame still comes from someone who may be Byzantine (up to f of the
n validators). The consensus engine keeps at most a fixed number of slots per sender, so
its state is bounded by construction; the work around it is not: serving block bodies
reads the store, a commit signature costs an ML-DSA-65 verification, a forwarded
transaction costs a signature check. Each such kind of work gets a token bucket per peer
(`Budgets`): a peer that asks for more than its rate is refused the excess, counted by
kind, and nobody else is slowed. The budgets are listed in docs/SECURITY.md.

Rates are generous next to what an honest peer needs (an honest node asks for a block
body only when it lacks one, and signs each height once), so they bite only on abuse.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from qchain import clock as loop_clock
from qchain.ratelimit import TokenBuckets


@dataclass(frozen=True)
class Rate:
    """`per_s` tokens a second, at most `burst` saved up."""

    per_s: float
    burst: float


BLOCK_LOOKUPS = "block-lookups"
"""Block bodies looked up for a peer's BlockReq (one token per requested hash)."""
CERT_SIGS = "cert-sigs"
"""Commit signatures of a peer checked or answered (one token per CERT_SIG)."""
BATCH_LOOKUPS = "batch-lookups"
"""Batches looked up for a peer's BatchReq (one token per requested digest)."""
BATCH_FETCHES = "batch-fetches"
"""Batches this node fetches because a peer's proposal names them (one token per
missing digest)."""
FORWARDED_TXS = "forwarded-txs"
"""Transactions a peer forwards for admission (one token per transaction)."""

DEFAULT_RATES: Mapping[str, Rate] = {
    BLOCK_LOOKUPS: Rate(per_s=256, burst=512),
    BATCH_LOOKUPS: Rate(per_s=256, burst=512),
    BATCH_FETCHES: Rate(per_s=256, burst=1024),
    CERT_SIGS: Rate(per_s=64, burst=256),
    FORWARDED_TXS: Rate(per_s=20_000, burst=40_000),
}


class Budgets:
    """Token buckets per (peer, kind). `take` answers how many of `count` units may go on."""

    def __init__(
        self,
        rates: Mapping[str, Rate] = DEFAULT_RATES,
        clock: Callable[[], float] = loop_clock.monotonic,
    ) -> None:
        self._kinds = {k: TokenBuckets[int](r.per_s, r.burst, clock) for k, r in rates.items()}
        self.refused: Counter[tuple[int, str]] = Counter()
        """Units refused, by (peer, kind)."""

    def take(self, peer: int, kind: str, count: int = 1) -> int:
        """Spend up to `count` tokens of peer's `kind` bucket; return how many were granted
        (the rest is refused and counted)."""
        granted = self._kinds[kind].take(peer, count)
        if granted < count:
            self.refused[(peer, kind)] += count - granted
        return granted
