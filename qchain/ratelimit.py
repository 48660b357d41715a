"""Token buckets: how much of something a key (a client, a source address, a peer) may
do, at a steady rate with bursts. Everything that bounds what outsiders can make a node
do by rate uses this one class."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")


class TokenBuckets(Generic[K]):
    """Token buckets by key: `per_s` tokens a second, at most `burst` saved up. At most
    `max_keys` keys are remembered: past that, buckets that have refilled are forgotten
    first (forgetting them changes nothing), then the least recently used. The one token
    bucket of the project: the API's rate limit per client, the transport's accepts per
    source address, the node's per-peer budgets (`node.budget`) and the key pools'
    lookups of unannounced keys."""

    def __init__(
        self,
        per_s: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 65_536,
    ) -> None:
        self.per_s = per_s
        self.burst = float(burst)
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[K, tuple[float, float]] = {}
        """key -> (tokens, when they were counted), least recently used first."""

    def _tokens(self, key: K, now: float) -> float:
        tokens, at = self._buckets.pop(key, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.per_s)

    def take(self, key: K, count: int = 1) -> int:
        """Spend up to `count` tokens of key's bucket; return how many were granted."""
        now = self.clock()
        tokens = self._tokens(key, now)
        granted = max(0, min(count, int(tokens)))
        self._buckets[key] = (tokens - granted, now)
        if len(self._buckets) > self.max_keys:
            self._forget(now)
        return granted

    def wait_s(self, key: K) -> float:
        """Seconds until key's bucket holds a whole token (0.0 if it does now)."""
        now = self.clock()
        tokens = self._tokens(key, now)
        self._buckets[key] = (tokens, now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.per_s

    def _forget(self, now: float) -> None:
        full = [
            k for k, (t, at) in self._buckets.items() if t + (now - at) * self.per_s >= self.burst
        ]
        for k in full:
            del self._buckets[k]
        while len(self._buckets) > self.max_keys:
            del self._buckets[next(iter(self._buckets))]
