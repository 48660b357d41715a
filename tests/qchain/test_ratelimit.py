"""The one token bucket (qchain.ratelimit): rate and burst per key, partial grants, the
wait for the next token, and a bounded memory of keys."""

from __future__ import annotations

from qchain.qkd.clock import VirtualClock
from qchain.ratelimit import TokenBuckets


def test_partial_grant_and_wait() -> None:
    clock = VirtualClock()
    b = TokenBuckets[str](per_s=4, burst=3, clock=clock.now)
    assert b.take("a", 5) == 3
    assert b.take("a") == 0
    assert b.wait_s("a") == 0.25
    clock.advance(0.25)
    assert b.wait_s("a") == 0.0
    assert b.take("a") == 1
    assert b.take("b", 3) == 3, "keys have their own buckets"


def test_memory_forgets_refilled_buckets_first_then_the_least_recently_used() -> None:
    clock = VirtualClock()
    b = TokenBuckets[str](per_s=1, burst=2, clock=clock.now, max_keys=3)
    for key in ("a", "b", "c"):
        b.take(key, 2)
    clock.advance(1.0)
    b.take("a", 1)  # a is now the most recently used, b and c half refilled
    clock.advance(0.5)
    b.take("d", 2)  # four keys: none full, so the least recently used (b) goes
    assert b.take("b", 2) == 2, "a forgotten key starts with a full bucket"
    assert b.take("a", 2) == 0, "a kept its spent tokens (half a token refilled)"
