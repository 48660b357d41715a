"""Per-peer token buckets (node.budget): a peer gets its rate and burst, no more, and one
peer's spending never touches another's."""

from __future__ import annotations

from node.budget import Budgets, Rate


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_rate_per_peer() -> None:
    clock = _Clock()
    b = Budgets({"x": Rate(per_s=10, burst=20)}, clock=clock)
    assert b.take(1, "x", 15) == 15
    assert b.take(1, "x", 15) == 5
    assert b.take(1, "x") == 0
    assert b.refused[(1, "x")] == 11
    # Another peer has its own bucket.
    assert b.take(2, "x", 20) == 20
    clock.now = 1.0
    assert b.take(1, "x", 100) == 10
    clock.now = 100.0
    assert b.take(1, "x", 100) == 20, "savings stop at the burst"


def test_flood_is_refused_at_the_rate() -> None:
    clock = _Clock()
    b = Budgets({"x": Rate(per_s=64, burst=256)}, clock=clock)
    granted = 0
    for step in range(10_000):
        clock.now = step / 1000  # 10,000 asks over 10 s
        granted += b.take(3, "x")
    assert 256 + 64 * 9 <= granted <= 256 + 64 * 10
