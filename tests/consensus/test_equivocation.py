"""The pure equivocation detector: two values in one (height, round, phase) raise one
alert; far rounds and far heights are ignored; what it keeps stays bounded."""

from __future__ import annotations

import random

from consensus.equivocation import (
    EQUIVOCATION_SUSPECTED,
    VOTE_WATCH_ROUNDS,
    EquivocationDetector,
)
from consensus.messages import Vote

CID = "qchain-sim"
A, B, C = b"\x0a" * 32, b"\x0b" * 32, b"\x0c" * 32


def _vote(h: int, r: int, k: int, v: bytes) -> Vote:
    return Vote(CID, h, r, k, v)


def test_two_values_from_one_sender_raise_an_alert() -> None:
    d = EquivocationDetector()
    assert d.observe(2, _vote(5, 1, 3, A), committed=4, current_round=1) == []
    alerts = d.observe(2, _vote(5, 1, 3, B), committed=4, current_round=1)
    assert [a.kind for a in alerts] == [EQUIVOCATION_SUSPECTED]
    assert "height 5 round 1 phase 3" in alerts[0].detail
    assert "validator 2" in alerts[0].detail


def test_two_values_from_two_senders_name_both() -> None:
    d = EquivocationDetector()
    d.observe(1, _vote(5, 0, 1, A), committed=4, current_round=0)
    (alert,) = d.observe(3, _vote(5, 0, 1, B), committed=4, current_round=0)
    assert "validator 1 voted 0a0a" in alert.detail
    assert "validator 3 voted 0b0b" in alert.detail


def test_same_value_or_other_slot_is_no_alert_and_alerts_once() -> None:
    d = EquivocationDetector()
    assert not d.observe(1, _vote(5, 0, 1, A), 4, 0)
    assert not d.observe(2, _vote(5, 0, 1, A), 4, 0)
    assert not d.observe(1, _vote(5, 0, 2, B), 4, 0)
    assert not d.observe(1, _vote(5, 1, 1, B), 4, 0)
    assert d.observe(1, _vote(5, 0, 1, B), 4, 0)
    assert not d.observe(1, _vote(5, 0, 1, C), 4, 0)
    assert not d.observe(2, _vote(5, 0, 1, B), 4, 0)


def test_far_rounds_and_far_heights_are_ignored() -> None:
    d = EquivocationDetector()
    far = 3 + VOTE_WATCH_ROUNDS + 1
    assert not d.observe(1, _vote(5, far, 1, A), 4, 3)
    assert not d.observe(1, _vote(5, far, 1, B), 4, 3)
    for h in (2, 7, 2**63):
        assert not d.observe(1, _vote(h, 0, 1, A), 4, 0)
        assert not d.observe(1, _vote(h, 0, 1, B), 4, 0)
    assert d.size() == 0
    assert d.observe(1, _vote(6, 3 + VOTE_WATCH_ROUNDS, 1, A), 4, 3) == []
    assert d.observe(1, _vote(6, 3 + VOTE_WATCH_ROUNDS, 1, B), 4, 3)


def test_memory_is_bounded_under_a_flood() -> None:
    d = EquivocationDetector()
    rng = random.Random(7)
    committed, rnd = 100, 2
    for _ in range(50_000):
        h = committed + rng.randint(-5, 5)
        r = rng.randint(0, 10_000) if rng.random() < 0.5 else rng.randint(0, 80)
        d.observe(
            rng.randrange(4), _vote(h, r, rng.randint(1, 4), rng.randbytes(32)), committed, rnd
        )
    heights, rounds, phases = 4, rnd + VOTE_WATCH_ROUNDS + 1, 4
    assert d.size() <= heights * rounds * phases * 2


def test_commit_forgets_old_heights() -> None:
    d = EquivocationDetector()
    d.observe(1, _vote(5, 0, 1, A), 5, 0)
    d.observe(1, _vote(6, 0, 1, A), 5, 0)
    d.on_commit(7)
    assert d.size() == 1
    assert d.observe(1, _vote(6, 0, 1, B), 7, 0)
