"""Per-peer token buckets (node.budget): a peer gets its rate and burst, no more, and one
peer's spending never touches another's."""

from __future__ import annotations

from node.budget import Budgets, Rate
from qchain.qkd.clock import VirtualClock


def test_burst_then_rate_per_peer() -> None:
    clock = VirtualClock()
    b = Budgets({"x": Rate(per_s=10, burst=20)}, clock=clock.now)
    assert b.take(1, "x", 15) == 15
    assert b.take(1, "x", 15) == 5
    assert b.take(1, "x") == 0
    assert b.refused[(1, "x")] == 11
    # Another peer has its own bucket.
    assert b.take(2, "x", 20) == 20
    clock.advance(1.0)
    assert b.take(1, "x", 100) == 10
    clock.advance(99.0)
    assert b.take(1, "x", 100) == 20, "savings stop at the burst"


def test_flood_is_refused_at_the_rate() -> None:
    clock = VirtualClock()
    b = Budgets({"x": Rate(per_s=64, burst=256)}, clock=clock.now)
    granted = 0
    for _ in range(10_000):  # 10,000 asks over 10 s
        granted += b.take(3, "x")
        clock.advance(0.001)
    assert 256 + 64 * 9 <= granted <= 256 + 64 * 10
