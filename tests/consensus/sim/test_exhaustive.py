"""The bounded exhaustive search: every round-0 VOTE4 delivery pattern among correct nodes."""

from __future__ import annotations

from consensus.sim.exhaustive import search


def test_all_vote4_delivery_patterns() -> None:
    count, bad = search(phases=(4,))
    assert count == 64
    assert not bad, bad[:3]
