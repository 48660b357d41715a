"""A height's DONE rides in the first frame of the next height (CONSENSUS.md R7, §7).

Node 1 (a follower, n = 4, leader 0) decides height 1; its DONE(1) must not leave on its
own, must share the frame of its first height-2 message to each peer, must leave on the
retransmit timer if the chain does not move on, and must answer at once a peer that still
asks about height 1 after this node terminated it. On the receiving side a riding DONE is
an ordinary DONE: one per sender, f + 1 of them to decide.
"""

from __future__ import annotations

from consensus.driver import plan
from consensus.engine import Engine
from consensus.events import Action, Alert, Commit, MessageIn, Send, StartHeight, Timeout
from consensus.instance import retx_timer
from consensus.messages import Abort, Block, Done, Propose, Vote, block_hash
from consensus.params import Params

P = Params(n=4)
G = b"\x00" * 32
PEERS = (0, 2, 3)


def _decided() -> tuple[Engine, bytes, list[Action]]:
    """Node 1 after deciding height 1 in round 0 (VOTE1..4 from nodes 0 and 2): the
    engine, the decided value and every action of the way there."""
    e = Engine(P, 1)
    out = e.step(StartHeight(1, G, 0))
    blk = Block(1, G, 0, 0, b"one")
    v = block_hash(blk)
    e.valid[v] = True
    out += e.step(MessageIn(0, Propose(P.chain_id, 1, 0, blk)))
    for k in (1, 2, 3, 4):
        for j in (0, 2):
            out += e.step(MessageIn(j, Vote(P.chain_id, 1, 0, k, v)))
    assert e.inst[1].rec.decided == v
    return e, v, out


def _dones(out: list[Action]) -> list[tuple[int, Done]]:
    return [(a.to, a.msg) for a in out if isinstance(a, Send) and isinstance(a.msg, Done)]


def _height2(e: Engine, v: bytes) -> tuple[Block, list[Action]]:
    """Commit height 1, start height 2 and receive the leader's height-2 proposal."""
    out = e.step(StartHeight(2, v, 0))
    blk = Block(2, v, 0, 0, b"two")
    e.valid[block_hash(blk)] = True
    return blk, out + e.step(MessageIn(0, Propose(P.chain_id, 2, 0, blk)))


def test_done_waits_for_the_next_height_and_shares_its_first_frame() -> None:
    e, v, out = _decided()
    assert any(isinstance(a, Commit) for a in out)
    assert not _dones(out), "a DONE left on its own frame"
    blk, out = _height2(e, v)
    frames = plan(out).frames
    assert {f.to for f in frames} == set(PEERS)
    for f in frames:
        msgs = [m.msg for m in f.messages if isinstance(m, Send)]
        assert msgs[0] == Done(P.chain_id, 1, v), (f.to, msgs)
        assert msgs[1] == Vote(P.chain_id, 2, 0, 1, block_hash(blk))
    # paid once: the next frames of height 2 carry no DONE
    w = block_hash(blk)
    later: list[Action] = []
    for j in (0, 2):
        later += e.step(MessageIn(j, Vote(P.chain_id, 2, 0, 1, w)))
    assert any(isinstance(a, Send) and isinstance(a.msg, Vote) for a in later)
    assert not _dones(later)
    assert not e.owed


def test_retransmit_timer_sends_the_owed_done_when_the_chain_does_not_move_on() -> None:
    e, v, _ = _decided()
    # node 0's DONE arrived: it decided, but it is still owed ours (for its termination)
    e.step(MessageIn(0, Done(P.chain_id, 1, v)))
    out = e.step(Timeout(retx_timer(1)))
    assert sorted(_dones(out)) == [(j, Done(P.chain_id, 1, v)) for j in PEERS]
    assert not e.owed
    _, out = _height2(e, v)
    assert not _dones(out), "the DONE was already paid by the retransmission"


def test_a_peer_asking_about_a_terminated_height_gets_the_owed_done_at_once() -> None:
    e, v, _ = _decided()
    e.step(MessageIn(0, Done(P.chain_id, 1, v)))
    e.step(MessageIn(2, Done(P.chain_id, 1, v)))
    assert 1 not in e.inst, "q DONEs and the commit emitted: height 1 is dropped"
    # node 3 missed the decision and re-sends its DONE: the debt is paid outside the
    # serve budget (our decision is fresh, so a plain serve would stay silent)
    out = e.step(MessageIn(3, Done(P.chain_id, 1, v)))
    assert _dones(out) == [(3, Done(P.chain_id, 1, v))]
    again = e.step(MessageIn(3, Vote(P.chain_id, 1, 0, 4, v)))
    assert not _dones(again), "paid once; later asks go through the rate-limited serve"


def test_a_riding_done_counts_as_one_done_of_its_sender() -> None:
    """The receiving side is unchanged: a Byzantine sender's DONE in the frame of its
    height-2 vote is one DONE, not a decision, however often it is repeated."""
    e = Engine(P, 1)
    e.step(StartHeight(1, G, 0))
    x = b"\x07" * 32
    nxt = Vote(P.chain_id, 2, 0, 1, b"\x08" * 32)
    for _ in range(3):
        e.step(MessageIn(3, Done(P.chain_id, 1, x)))
        e.step(MessageIn(3, nxt))
    assert e.inst[1].rec.decided is None
    assert e.inst[1].done_of == {3: x}
    out = e.step(MessageIn(3, Done(P.chain_id, 1, b"\x09" * 32)))
    assert [a.kind for a in out if isinstance(a, Alert)] == ["done-equivocation"]
    # a second sender (f + 1 = 2 in all) makes the decision
    e.step(MessageIn(2, Done(P.chain_id, 1, x)))
    assert e.inst[1].rec.decided == x


def test_a_peer_changing_rounds_at_the_decided_height_gets_the_owed_done_at_once() -> None:
    """A node that does not move on needs the DONE now, not with our next height."""
    e, v, _ = _decided()
    late = e.step(MessageIn(3, Vote(P.chain_id, 1, 0, 4, v)))
    assert not _dones(late), "a late VOTE4 is the good case: the DONE still rides"
    out = e.step(MessageIn(3, Abort(P.chain_id, 1, 0)))
    assert _dones(out) == [(3, Done(P.chain_id, 1, v))]
    assert set(e.owed) == {0, 2}
    again = e.step(MessageIn(3, Abort(P.chain_id, 1, 1)))
    assert not _dones(again), "paid once"
