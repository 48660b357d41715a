"""The forwards-taken check (`devnet.simnet.forwards`) on constructed histories: a
transaction of an honest peer's batch that its receiver never decided, or refused for
lack of room while a block could take it, fails it; one taken, refused for its own reason,
waiting behind a nonce gap, or still queued passes."""

from __future__ import annotations

from devnet.simnet.forwards import Forwards, Life, check_forwards_taken

A, B, C = b"tx-a", b"tx-b", b"tx-c"


def _life(name: str = "node1") -> Life:
    life = Life(name)
    life.receive([A, B, C], 1.0)
    life.decide(A, 1.1)  # taken into the pool
    life.decide(B, 1.1)  # refused for its own reason (a committed nonce, say)
    return life


def test_a_transaction_received_and_never_decided_fails_the_check() -> None:
    r = check_forwards_taken([_life()], {}, [])
    assert not r.ok
    assert r.data["undecided"] == 1 and r.data["received"] == 3
    assert r.details == (
        "node1: 1 txs of honest peers' batches never decided (the first received at 1.000s)",
    )


def test_every_transaction_decided_or_still_queued_passes() -> None:
    life = _life()
    assert check_forwards_taken([life], {"node1": [C]}, []).ok
    life.decide(C, 1.2)
    r = check_forwards_taken([life], {}, [])
    assert r.ok, r.details
    assert "3 txs of honest peers' batches received" in r.summary


def test_a_refusal_for_lack_of_room_fails_the_check() -> None:
    life = _life()
    life.decide(C, 2.5, room="transaction count limit reached")
    r = check_forwards_taken([life], {}, [])
    assert not r.ok
    assert r.data["refused_for_room"] == 1 and r.data["undecided"] == 0
    assert r.details == ("node1 at 2.500s: transaction count limit reached",)


def test_a_transaction_that_would_wait_behind_a_gap_may_be_refused_for_room() -> None:
    """The pool's rules let such transactions give way; a validator catching up after a
    crash holds many (seed 3 of the sweep: node3, 120 heights behind, refused 282)."""
    life = _life()
    life.decide(C, 2.5, room="transaction count limit reached", ready=False)
    r = check_forwards_taken([life], {}, [])
    assert r.ok, r.details
    assert r.data["waiting_refused"] == 1
    assert "(1 waiting behind a nonce gap refused for room)" in r.summary


def test_each_copy_received_is_decided_once() -> None:
    life = _life()
    life.decide(C, 1.2)
    life.receive([C], 3.0)  # the same transaction again, in another batch
    assert not check_forwards_taken([life], {}, []).ok
    life.decide(C, 3.1)
    assert check_forwards_taken([life], {}, []).ok


def test_a_byzantine_node_and_a_crashed_life_are_not_judged() -> None:
    assert check_forwards_taken([_life("node2")], {}, ["node2"]).ok
    forwards = Forwards()
    forwards.start(0, "node0").receive([A], 1.0)
    forwards.crashed(0)
    assert check_forwards_taken(forwards.lives.values(), {}, []).ok
    forwards.start(0, "node0").receive([A], 2.0)
    assert not check_forwards_taken(forwards.lives.values(), {}, []).ok
