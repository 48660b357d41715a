"""The admission bound (`node.backlog`), on a clock the test sets."""

from __future__ import annotations

import pytest

from node.backlog import (
    GAP_GRACE_S,
    SATURATED_COMMITS,
    UNBOUNDED,
    UNSATURATED_MIN_ROOM,
    WINDOW_S,
    Backlog,
    Gaps,
)
from qchain.errors import MempoolFull, Overloaded


def test_no_commit_history_means_the_unsaturated_floor() -> None:
    """Before the first commits give a rate (the start of an overload, an idle chain, a
    stall) a node keeps at most UNSATURATED_MIN_ROOM client transactions pending."""
    b = Backlog(2000, 4)
    assert b.room(0, 5.0, 0) == UNSATURATED_MIN_ROOM
    assert b.room(UNSATURATED_MIN_ROOM - 1, 5.0, UNSATURATED_MIN_ROOM - 1) == 1
    b.check(UNSATURATED_MIN_ROOM - 1, 5.0, UNSATURATED_MIN_ROOM - 1)
    with pytest.raises(Overloaded) as e:
        b.check(UNSATURATED_MIN_ROOM, 5.0, UNSATURATED_MIN_ROOM)
    assert e.value.retry_after_s == 1
    b.committed(6.0, 0, 0, True)
    assert b.room(10_000, 6.5, 10_000) == 0, "empty blocks give no rate to go by"
    assert b.room(10, 6.5, 10) == UNSATURATED_MIN_ROOM - 10


def test_room_is_bound_times_local_rate_minus_pending() -> None:
    b = Backlog(2000, 4, window_s=10.0)
    b.committed(0.0, 40, 10, True)
    b.committed(0.5, 40, 10, True)
    # 20 local in 1 s (the span since the first commit, at least 1 s): 20/s; the fair
    # share of the chain's 80/s is 20/s as well.
    assert b.rate(1.0) == pytest.approx(20.0)
    assert b.room(0, 1.0, 0) == 40
    assert b.room(39, 1.0, 39) == 1
    assert b.room(40, 1.0, 40) == 0
    assert b.room(500, 1.0, 500) == 0
    b.check(39, 1.0, 39)
    with pytest.raises(Overloaded):
        b.check(40, 1.0, 40)


def test_fair_share_of_the_chain_rate_when_local_history_is_thin() -> None:
    b = Backlog(1000, 4)
    b.committed(0.0, 4000, 0, True)
    # No local transaction committed yet: a quarter of 4000 tx/s (span at least 1 s).
    assert b.rate(1.0) == pytest.approx(1000.0)
    assert b.room(0, 1.0, 0) == 1000


def test_old_commits_leave_the_window() -> None:
    b = Backlog(2000, 1, window_s=10.0)
    b.committed(0.0, 1000, 1000, True)
    assert b.room(0, 5.0, 0) > 0
    assert b.room(0, 10.5, 0) == UNSATURATED_MIN_ROOM, "the window holds no commit any more"


def test_refusal_says_when_the_backlog_above_the_bound_drains() -> None:
    b = Backlog(2000, 1, window_s=10.0)
    b.committed(0.0, 1000, 1000, True)
    now = 10.0  # 100 tx/s: the bound admits 200 pending
    e = b.refusal(200, now, 200)
    assert isinstance(e, MempoolFull) and e.code == "overloaded"
    assert e.retry_after_s == 1
    assert e.backlog_ms == 2000 and e.bound_ms == 2000
    over = b.refusal(250, now, 250)  # 51 over the bound at 100/s: 0.51 s
    assert over.retry_after_s == 1
    far = b.refusal(1000, now, 1000)  # 801 over: 8.01 s, but a commit opens room sooner
    assert far.retry_after_s == 1, "at most half the bound"
    assert far.fields()["retry_after"] == 1
    assert Backlog(9000, 1).refusal(0, 0.0, 0).retry_after_s == 1, "no rate: 1 s"


def test_the_bound_in_force_is_never_below_two_block_intervals() -> None:
    """A commit path longer than the bound (a loaded machine) would make the bound admit
    less than the chain commits, and throughput would fall: the bound rises to two mean
    block intervals (a transaction's path: the next build, then its consensus)."""
    b = Backlog(2000, 1, window_s=10.0)
    b.committed(0.0, 100, 100, True)
    assert b.bound_in_force(0.0) == 2.0, "one commit: no interval yet"
    b.committed(0.5, 100, 100, True)
    assert b.bound_in_force(0.5) == 2.0, "2 x 0.5 s is below the bound"
    b.committed(2.0, 100, 100, True)
    b.committed(3.5, 100, 100, True)
    assert b.bound_in_force(3.5) == pytest.approx(2 * 3.5 / 3)
    rate = b.rate(3.5)
    assert b.room(0, 3.5, 0) == int(2 * 3.5 / 3 * rate)
    assert b.refusal(10_000, 3.5, 10_000).bound_ms == 2333


def test_an_unsaturated_chain_is_not_bounded_by_a_rate_that_only_measured_supply() -> None:
    """While blocks take every ready transaction, the rate measures the load offered,
    not the chain: the room is twice the bound's until a commit leaves ready ones
    behind (and for three commits after), so the load can grow."""
    b = Backlog(3000, 1, window_s=10.0)
    assert b.cutoff() is None
    b.committed(0.0, 0, 0, False)  # a heartbeat block
    b.committed(1.0, 20, 20, False)  # a small block: 20 tx/s measured since the last
    assert b.rate(1.0) == 20.0
    bound = b.bound_in_force(1.0)
    assert bound == 3.0, "the bound: above two intervals of 1 s"
    assert b.room(0, 1.0, 0) == 1000, "at least 1,000: a small first block says little"
    assert b.room(990, 1.0, 990) == 10
    b.committed(2.0, 20, 20, True)
    assert b.cutoff() == 1.0, "two commits back"
    assert b.room(60, 2.0, 60) == 0
    assert b.room(10, 2.0, 10) == 50
    b.committed(3.0, 500, 500, False)
    assert b.cutoff() == 2.0
    assert b.saturated, "one block that took everything does not lift the bound"
    assert b.room(500, 3.0, 500) == 3 * 540 // 3 - 500
    b.committed(4.0, 0, 0, False)
    b.committed(5.0, 0, 0, False)
    assert not b.saturated, "three commits took everything"


def test_bound_zero_turns_admission_control_off() -> None:
    b = Backlog(0, 4)
    b.committed(0.0, 10, 10, True)
    assert b.room(1_000_000, 1.0, 1_000_000) == UNBOUNDED


def test_accepting_up_to_room_keeps_the_expected_wait_under_the_bound() -> None:
    """Whatever the rate and the pending count, filling the room never makes the
    expected wait (pending / rate) exceed the bound."""
    for local, chain, n, pending in [(1, 1, 1, 0), (37, 900, 4, 12), (2500, 2500, 7, 3000)]:
        b = Backlog(2000, n)
        b.committed(0.0, chain, local, True)
        rate = b.rate(1.0)
        room = b.room(pending, 1.0, pending)
        assert (pending + room) / rate <= 2.0
        assert room == 0 or (pending + room + 1) / rate > 2.0


def _saturated_at_800_per_s(n: int) -> Backlog:
    """Blocks of 400, 100 of them local, one a second, left ready ones behind: chain
    800 tx/s and local 200 tx/s at t = 1 (span at least 1 s); bound in force 3 s."""
    b = Backlog(3000, n, window_s=10.0)
    b.committed(0.0, 400, 100, True)
    b.committed(1.0, 400, 100, True)
    assert b.rates(1.0).chain == pytest.approx(800.0)
    assert b.rate(1.0) == pytest.approx(200.0)
    assert b.bound_in_force(1.0) == 3.0
    return b


def test_a_deep_pool_refuses_though_few_of_it_are_this_nodes() -> None:
    """A new transaction waits behind the whole pool: every origin's transactions and
    the peers' ones not admitted yet. Past bound x chain rate it is refused, whatever
    this node's own share."""
    b = _saturated_at_800_per_s(4)
    assert b.room(0, 1.0, 0) == 600, "the local bound: 3 s x 200/s"
    assert b.room(0, 1.0, 2000) == 400, "the pool bound: 3 s x 800/s - 2000"
    assert b.room(0, 1.0, 2399) == 1
    assert b.room(0, 1.0, 2400) == 0
    with pytest.raises(Overloaded) as e:
        b.check(0, 1.0, 2400)
    assert e.value.backlog_ms == 3000, "the pool's wait, the longer of the two"
    assert e.value.retry_after_s == 1
    far = b.refusal(0, 1.0, 3200)  # 801 over the pool bound at 800/s: 1.0 s
    assert far.retry_after_s == 2 and far.backlog_ms == 4000
    assert b.refusal(0, 1.0, 1_000_000).retry_after_s == 2, "at most half of 3 s"


def test_the_floor_keeps_a_blocks_worth_in_the_pool() -> None:
    """Below the largest block of the window the pool would not fill the next block:
    client transactions are admitted whatever the local bound says (at n = 7 a node's
    fair share of 3 s is below one block here)."""
    b = _saturated_at_800_per_s(7)
    assert b.block_worth(1.0) == 400
    assert b.rate(1.0) == pytest.approx(200.0)
    assert b.room(600, 1.0, 600) == 0, "the local bound, the pool a block and a half deep"
    assert b.room(650, 1.0, 300) == 100, "the pool below a block: up to a block's worth"
    b.check(650, 1.0, 399)
    with pytest.raises(Overloaded):
        b.check(650, 1.0, 400)


def test_the_pool_bound_waits_for_saturation() -> None:
    """While blocks take every ready transaction the measured rate is the load's, not
    the chain's: the room is the unsaturated one whatever the pool holds."""
    b = Backlog(3000, 4, window_s=10.0)
    b.committed(0.0, 400, 100, False)
    b.committed(1.0, 400, 100, False)
    assert not b.saturated
    assert b.room(0, 1.0, 5000) == b.room(0, 1.0, 0) == 1200


def test_accepting_up_to_room_keeps_the_pool_wait_under_the_bound() -> None:
    """Filling the room never makes the pool's expected wait (depth / chain rate)
    exceed the bound in force, unless the floor let the pool reach one block."""
    for local, chain, n, pending, depth in [
        (100, 400, 4, 0, 500),
        (10, 4000, 4, 50, 7000),
        (900, 1000, 7, 100, 1500),
        (0, 300, 16, 0, 10),
    ]:
        b = Backlog(2000, n)
        b.committed(0.0, chain, local, True)
        bound, rate = b.bound_in_force(1.0), b.rates(1.0).chain
        room = b.room(pending, 1.0, depth)
        assert (depth + room) / rate <= bound or depth + room <= b.block_worth(1.0)
        assert (
            room == 0
            or (depth + room + 1) / rate > bound
            or pending + room + 1 > bound * b.rate(1.0)
        )


def test_under_load_while_saturated_or_refusing_and_on() -> None:
    b = Backlog(2000, 4)
    assert not b.bounding(0.0), "no commit seen"
    b.committed(0.0, 10, 2, False)
    assert not b.bounding(0.0), "blocks take everything"
    b.committed(1.0, 10, 2, True)
    assert b.bounding(1.0)
    for k in range(2, 2 + SATURATED_COMMITS):
        b.committed(float(k), 10, 2, False)
    now = float(1 + SATURATED_COMMITS)
    assert not b.bounding(now), "the last commits left nothing ready behind"
    b.refusal(100, now, 100, waits_for=3)
    assert not b.bounding(now), "a gap's refusal says nothing of the load"
    b.refusal(100, now, 100)
    assert b.bounding(now) and b.bounding(now + WINDOW_S), "refusing for the bound"
    assert not b.bounding(now + WINDOW_S + 0.1), "no refusal within the window"
    off = Backlog(0, 4)
    off.committed(0.0, 10, 2, True)
    off.refusal(100, 0.0, 100)
    assert off.saturated and not off.bounding(0.0)


def test_a_refusal_for_a_nonce_gap_names_the_nonce_and_still_says_when() -> None:
    b = Backlog(2000, 4)
    b.committed(0.0, 40, 10, True)  # 40 tx/s, 10 local/s over 1 s
    r = b.refusal(5, 1.0, 20, waits_for=7)
    assert r.waits_for == 7 and r.fields()["waits_for"] == 7
    assert r.retry_after_s == 1, "under the bound: come back after the shortest wait"
    assert r.bound_ms == 2000 and r.backlog_ms == 500
    assert "nonce 7" in str(r)
    assert "waits_for" not in b.refusal(5, 1.0, 20).fields()


def test_a_gap_seen_only_now_is_fresh_and_opens_after_the_grace() -> None:
    """A sender's missing nonce seen missing for the first time may be on its way from
    another validator: open only once it has been missing longer than the grace; a
    new first missing nonce (the gap filled) starts its own clock."""
    gaps = Gaps()
    s = b"s" * 20
    assert not gaps.open(s, 5, 10.0)
    assert not gaps.open(s, 5, 10.0 + GAP_GRACE_S)
    assert gaps.open(s, 5, 10.0 + GAP_GRACE_S + 0.01)
    assert not gaps.open(s, 6, 12.0), "nonce 5 arrived: a new gap"
    assert not gaps.open(b"t" * 20, 5, 12.0), "each sender its own"


def test_a_nonce_refused_here_is_open_until_its_retry_then_fresh_for_the_grace() -> None:
    """Refused here, its client sends it again after `Retry-After`: until then what is
    behind it would wait for it. Then it may be on its way (a retry may go to another
    validator): fresh for the grace, open after it if still missing."""
    gaps = Gaps()
    s = b"s" * 20
    gaps.refused(s, 5, retry_at=3.0)
    assert gaps.open(s, 5, 0.5) and gaps.open(s, 5, 2.9)
    assert not gaps.open(s, 5, 3.0) and not gaps.open(s, 5, 3.0 + GAP_GRACE_S)
    assert gaps.open(s, 5, 3.0 + GAP_GRACE_S + 0.01)
    gaps.refused(s, 7, retry_at=9.0)
    assert not gaps.open(s, 6, 4.0), "nonce 5 arrived; 6 was never refused here"
    assert gaps.kept()[1] == 1, "the refusal of nonce 5 is forgotten once it is pending"
    assert gaps.open(s, 7, 4.0)


def test_gaps_remember_a_bounded_number_of_senders_and_nonces() -> None:
    """What clients send is hostile input: the senders remembered and each one's refused
    nonces are bounded; the lowest refused nonces are kept (the first missing nonce is
    the lowest)."""
    gaps = Gaps(senders=3, per_sender=4)
    for i in range(10):
        sender = bytes([i]) * 20
        assert not gaps.open(sender, 1, 0.0)
        for nonce in range(100, 0, -1):
            gaps.refused(sender, nonce, retry_at=5.0)
    assert gaps.kept() == (3, 3 * 4)
    last = bytes([9]) * 20
    assert [gaps.open(last, n, 1.0) for n in (1, 2, 3, 4)] == [True] * 4
    assert gaps.kept() == (3, 2 * 4 + 1), "its nonces 1..3 are pending now"
    assert not gaps.open(last, 5, 1.0), "nonce 5 was dropped for the lowest four"
    assert not gaps.open(bytes([0]) * 20, 1, 1.0), "sender 0 was forgotten"
