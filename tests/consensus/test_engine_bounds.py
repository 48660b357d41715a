"""Hostile input to the pure engine: far-future heights, answers to requests never made,
and fresh proposals whose time the driver found untimely (CONSENSUS.md §3.4, §3.5, §3.7)."""

from __future__ import annotations

from consensus.engine import Engine
from consensus.events import (
    BlockValidated,
    MessageIn,
    Send,
    StartHeight,
    ValidateBlock,
)
from consensus.messages import (
    Abort,
    Block,
    Done,
    Propose,
    Report,
    Summary,
    SyncResp,
    Vote,
    block_hash,
)
from consensus.params import Params

P = Params(n=4)
G = b"\x00" * 32
FAR = 2**64 - 1


def _engine(me: int = 1) -> Engine:
    e = Engine(P, me)
    e.step(StartHeight(1, G, 0))
    return e


def test_far_height_claim_is_clamped_to_the_window() -> None:
    e = _engine()
    e.step(MessageIn(3, Vote(P.chain_id, FAR, 7, 1, b"\x01" * 32)))
    view = e.view()
    assert view.peer_heights[3] == view.height + P.height_window
    assert view.footprint.next_buffer_per_sender == 0
    assert [i.height for i in view.instances] == [1]


def test_vote_flood_at_far_heights_keeps_one_slot_per_sender() -> None:
    e = _engine()
    for r in range(2000):
        out = e.step(MessageIn(3, Vote(P.chain_id, FAR - r, r, 1 + r % 4, bytes([r % 256]) * 32)))
        # At most one sync request per sync interval, whatever the flood.
        assert len([a for a in out if isinstance(a, Send)]) <= P.n - 1
    view = e.view()
    assert view.peer_heights == {3: 1 + P.height_window}
    assert [i.height for i in view.instances] == [1]
    assert view.footprint.next_buffer_per_sender == 0 and view.footprint.claims == 0


def test_sync_response_from_above_our_height_is_dropped() -> None:
    e = _engine()
    e.step(MessageIn(2, SyncResp(P.chain_id, FAR - 10, (b"\x05" * 32,) * 5)))
    assert 2 not in e.view().peer_heights
    assert e.view().footprint.claims == 0
    # An answer to our request (from our height) is taken, its claims within the window.
    e.step(MessageIn(2, SyncResp(P.chain_id, 1, (b"\x05" * 32,) * 3)))
    assert e.view().peer_heights[2] == 3
    assert set(e.catchup.claims) == {2, 3}


def _propose(e: Engine, blk: Block, r: int) -> list[object]:
    return list(e.step(MessageIn(P.leader(0, r), Propose(P.chain_id, 1, r, blk))))


def test_untimely_fresh_proposal_gets_no_vote() -> None:
    e = _engine()
    blk = Block(1, G, 0, P.leader(0, 0), b"future")
    v = block_hash(blk)
    out = _propose(e, blk, 0)
    assert any(isinstance(a, ValidateBlock) for a in out)
    out = list(e.step(BlockValidated(v, True, timely=False)))
    assert not [a for a in out if isinstance(a, Send) and isinstance(a.msg, Vote)]
    assert e.inst[1].rec.s[0].last_round is None


def test_timely_fresh_proposal_gets_a_vote() -> None:
    e = _engine()
    blk = Block(1, G, 0, P.leader(0, 0), b"now")
    v = block_hash(blk)
    _propose(e, blk, 0)
    out = list(e.step(BlockValidated(v, True, timely=True)))
    votes = [a.msg for a in out if isinstance(a, Send) and isinstance(a.msg, Vote)]
    assert votes and all(m.value == v and m.phase == 1 for m in votes)


def test_reproposal_is_not_judged_by_the_clock() -> None:
    """A block built in round 0 and re-proposed in round 1 is voted for although its time
    has passed: a quorum may have locked it."""
    e = _engine(me=2)
    blk = Block(1, G, 0, P.leader(0, 0), b"old")
    v = block_hash(blk)
    _propose(e, blk, 0)
    e.step(BlockValidated(v, True, timely=False))
    # Everyone moves to round 1 (ABORTs from a quorum) and reports no votes: any value is
    # safe, so the round-1 leader re-proposes the round-0 block.
    for j in (0, 1, 3):
        e.step(MessageIn(j, Abort(P.chain_id, 1, 0)))
    assert e.inst[1].rec.round == 1
    empty = (Summary(), Summary(), Summary(), Summary())
    for j in (0, 1, 3):
        e.step(MessageIn(j, Report(P.chain_id, 1, 1, empty)))
    leader1 = P.leader(0, 1)
    out = list(e.step(MessageIn(leader1, Propose(P.chain_id, 1, 1, blk))))
    if any(isinstance(a, ValidateBlock) for a in out):
        # The body cache was collected with round 0; the driver checks it again and its
        # clock still says the time has passed.
        out = list(e.step(BlockValidated(v, True, timely=False)))
    votes = [a.msg for a in out if isinstance(a, Send) and isinstance(a.msg, Vote)]
    assert votes and votes[0].value == v and votes[0].round == 1


def test_done_for_far_height_touches_nothing() -> None:
    e = _engine()
    e.step(MessageIn(3, Done(P.chain_id, FAR, b"\x07" * 32)))
    view = e.view()
    assert view.peer_heights[3] == 1 + P.height_window
    assert view.footprint.claims == 0 and [i.height for i in view.instances] == [1]
