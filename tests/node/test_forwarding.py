"""Leader suspicion: only blocks that had room for our stuck transactions count."""

from __future__ import annotations

from node.forwarding import LEADER_ROOM_TXS, leader_had_room

PERIOD = 5.0


def test_blocks_with_room_that_left_ours_out_suggest_censorship() -> None:
    recent = [(90.0, 3), (98.0, 10)]
    assert leader_had_room(recent, stuck=50, now=100.0, period=PERIOD)
    assert not leader_had_room(recent, stuck=10, now=100.0, period=PERIOD), (
        "a block as big as what we have stuck may just have been full"
    )


def test_no_recent_block_is_no_evidence() -> None:
    assert not leader_had_room([(90.0, 0)], stuck=50, now=100.0, period=PERIOD)
    assert not leader_had_room([], stuck=50, now=100.0, period=PERIOD)


def test_the_room_threshold_is_its_own_constant() -> None:
    """Blocks of LEADER_ROOM_TXS or more are full enough whatever we have stuck; the
    threshold no longer moves with the admission slice."""
    full = [(99.0, LEADER_ROOM_TXS)]
    assert not leader_had_room(full, stuck=10 * LEADER_ROOM_TXS, now=100.0, period=PERIOD)
    almost = [(99.0, LEADER_ROOM_TXS - 1)]
    assert leader_had_room(almost, stuck=10 * LEADER_ROOM_TXS, now=100.0, period=PERIOD)
