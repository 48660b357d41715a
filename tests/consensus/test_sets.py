"""The validator set as a function of the height (CONSENSUS.md §10.1-10.4) in the engine.

A chain whose set never changes keeps §1-§9: the anchor rule of §10.4 reduces to §3.2's.
Across a change every count, leader and broadcast of height h is over `V(h)`: a message of
height h from an id outside `V(h)` is dropped before it touches any state, a node outside
`V(h)` is a learner there (it sends no PROPOSE, VOTE, REPORT, ABORT or DONE and commits
from b(h) members' claims), and the last height of a set is not terminated by deciding
the next one.
"""

from __future__ import annotations

import pytest

from consensus.catchup import LEARN_IDLE_FACTOR, LEARN_TIMER, SERVE_TIMER
from consensus.engine import Engine
from consensus.events import (
    Action,
    Commit,
    MessageIn,
    ReplyDone,
    ReplySync,
    Send,
    SetTimer,
    Start,
    StartHeight,
    Timeout,
)
from consensus.messages import (
    Abort,
    Block,
    Done,
    Propose,
    Record,
    SyncReq,
    SyncResp,
    Vote,
    block_hash,
)
from consensus.params import Params
from consensus.sets import SetHistory, VSet, next_anchor
from consensus.sim.app import SetChange, set_history
from consensus.sim.app import build_block as _build
from qchain.errors import ConfigError

P = Params(n=4)
G = b"\x00" * 32
OLD = VSet((0, 1, 2, 3))
NEW = VSet((0, 1, 2, 3, 4))
CID = P.chain_id


def _sends(out: list[Action]) -> list[Send]:
    return [a for a in out if isinstance(a, Send)]


def test_vset_rejects_bad_sets_and_ranks_members() -> None:
    for bad in ((), (1, 1), (2, 1), (-1, 0), (0, 0x10000)):
        with pytest.raises(ConfigError):
            VSet(bad)
    vs = VSet((2, 5, 9, 11))
    assert (vs.n, vs.f, vs.q, vs.b) == (4, 1, 3, 2)
    assert vs.pos(9) == 2 and vs.leader(9, 0) == 9 and vs.leader(9, 3) == 5
    assert vs.next_of(5) == 9 and vs.next_of(11) == 2 and vs.next_of(6) == 9
    assert vs.at(6) == 9 and vs.at(5) == 5 and vs.at(12) == 2
    assert VSet.genesis(7).ids == tuple(range(7))


@pytest.mark.parametrize("n", [1, 4, 7])
def test_anchor_rule_of_10_4_is_that_of_3_2_without_a_change(n: int) -> None:
    p = Params(n=n, tenure=5)
    vs = VSet.genesis(n)
    for h in range(1, 12):
        for anchor in range(n):
            for proposer in range(n):
                assert next_anchor(h, p.tenure, anchor, proposer, vs, vs) == p.next_anchor(
                    h, anchor, proposer
                )
                for r in range(2 * n):
                    assert vs.leader(anchor, r) == p.leader(anchor, r)


def test_anchor_across_a_change_lands_on_an_unchanged_member() -> None:
    cur, nxt = VSet((0, 1, 2, 3)), VSet((0, 2, 3, 4))  # 1 leaves, 4 joins
    # the proposer left: the next unchanged id above it
    assert next_anchor(5, 64, 1, 1, cur, nxt) == 2
    # the proposer stays
    assert next_anchor(5, 64, 1, 3, cur, nxt) == 3
    # a tenure boundary moves past the anchor to the next unchanged id, never the joiner
    assert next_anchor(63, 64, 3, 3, cur, nxt) == 0
    assert next_anchor(63, 64, 1, 3, cur, nxt) == 2


def test_set_history_knows_each_height_up_to_what_the_driver_told() -> None:
    hist = SetHistory(OLD)
    hist.learn(2, OLD)
    hist.learn(3, NEW)
    assert hist.of(1) == OLD and hist.of(2) == OLD and hist.of(3) == NEW
    assert hist.of(4) is None and hist.of(0) is None
    assert hist.changes_after(2) and not hist.changes_after(1)
    assert hist.all_ids == NEW.members
    again = SetHistory.of_epochs(((1, OLD), (3, NEW)), known=9)
    assert again.of(2) == OLD and again.of(9) == NEW and again.of(10) is None


def test_app_activates_a_change_d_heights_after_its_block_and_refuses_bad_ones() -> None:
    import random

    rng = random.Random(1)
    changes = {
        0: SetChange(0, add=(4,)),
        1: SetChange(1, remove=(9,)),  # not a member: refused
        2: SetChange(2, add=(4,)),  # id already used: refused
        3: SetChange(3, remove=(0, 1)),  # would leave 3 members: refused
    }
    parent = G
    chain: list[Block] = []
    for h, txs in enumerate(((), (0,), (1, 2), (3,), ()), start=1):
        blk = _build(rng, h, 0, parent, 0, txs)
        chain.append(blk)
        parent = block_hash(blk)
    sets = set_history(chain, OLD, changes, 2)
    assert len(sets) == len(chain) + 2
    assert [vs.ids for vs in sets[:3]] == [OLD.ids] * 3
    assert all(vs == NEW for vs in sets[3:])
    # the transaction's second inclusion changes nothing
    again = [*chain, _build(rng, 6, 0, parent, 0, (0,))]
    assert set_history(again, OLD, changes, 2)[-1] == NEW


def _member_at_1(me: int = 1) -> Engine:
    e = Engine(P, me)
    e.step(StartHeight(1, G, 0, OLD, NEW))
    return e


def test_message_from_a_non_member_of_its_height_is_dropped_before_any_state() -> None:
    e = _member_at_1()
    before = e.view()
    blk = Block(1, G, 0, 0, b"x")
    v = block_hash(blk)
    # id 4 is a member of V(2) only: its height-1 messages are not counted
    for m in (
        Vote(CID, 1, 0, 4, v),
        Done(CID, 1, v),
        Abort(CID, 1, 5),
        Propose(CID, 1, 0, blk),
    ):
        assert e.step(MessageIn(4, m)) == []
    after = e.view()
    assert after.not_member == 4
    assert after.instances == before.instances
    assert after.peer_heights == before.peer_heights
    # an id no known set holds is not even counted (no link to it)
    assert e.step(MessageIn(7, Done(CID, 1, v))) == []
    assert e.view().not_member == 4
    # its height-2 message is one a member of V(2) may send: buffered, not dropped
    e.step(MessageIn(4, Vote(CID, 2, 0, 1, v)))
    assert e.view().not_member == 4
    assert e.view().footprint.next_buffer_per_sender == 1


def test_a_sync_request_from_a_peer_no_set_holds_is_answered_and_nothing_else() -> None:
    """A validator whose add is approved catches up before any set holds it: its
    SYNC_REQ is answered (10.6 L2, from any linked peer); it notes no height, and its
    SYNC_RESP and consensus messages are not read."""
    e = Engine(P, 1)
    e.step(StartHeight(1, G, 0))
    before = e.view()
    out = e.step(MessageIn(7, SyncReq(CID, 1, 64)))
    assert ReplySync(7, 1, min(64, P.sync_max_count)) in out
    assert e.step(MessageIn(7, SyncReq(CID, 1, 64))) == []  # once per sync interval
    assert e.step(MessageIn(7, SyncResp(CID, 1, (b"\x22" * 32,) * 4))) == []
    assert e.step(MessageIn(7, Done(CID, 1, b"\x22" * 32))) == []
    after = e.view()
    assert after.peer_heights == before.peer_heights
    assert after.instances == before.instances
    assert e.step(MessageIn(7, SyncReq("another-chain", 1, 64))) == []


def test_counts_and_broadcasts_of_a_height_are_over_its_own_set() -> None:
    e = Engine(P, 1)
    out = e.step(StartHeight(1, G, 0, OLD, NEW))
    # height 1 is of V(1): nothing goes to 4 (a joiner of height 2)
    assert {s.to for s in _sends(out)} <= {0, 2, 3}
    blk = Block(1, G, 0, 0, b"one")
    v = block_hash(blk)
    e.valid[v] = True
    out = e.step(MessageIn(0, Propose(CID, 1, 0, blk)))
    assert {s.to for s in _sends(out)} == {0, 2, 3}
    for k in (1, 2, 3, 4):
        for j in (0, 2):
            out = e.step(MessageIn(j, Vote(CID, 1, 0, k, v)))
    assert e.inst[1].rec.decided == v
    commit = next(a for a in out if isinstance(a, Commit))
    assert commit.next_anchor == 0
    # the DONE of height 1 is owed to the joiner too (it learns height 1 from it)
    assert set(e.owed) == {0, 2, 3, 4}


def _decide(e: Engine, h: int, parent: bytes, voters: tuple[int, ...]) -> bytes:
    """Decide height h in round 0: a proposal by 0 on `parent`, all four phases' votes
    of `voters`. Returns the block's value."""
    blk = Block(h, parent, 0, 0, b"block %d" % h)
    v = block_hash(blk)
    e.valid[v] = True
    e.step(MessageIn(0, Propose(CID, h, 0, blk)))
    for k in (1, 2, 3, 4):
        for j in voters:
            e.step(MessageIn(j, Vote(CID, h, 0, k, v)))
    return v


def _decide_1_then_start_2(e: Engine, members: VSet = NEW) -> bytes:
    """Decide height 1 (votes of 0 and 2), then start height 2 under `members`
    (V(2) = V(3))."""
    v = _decide(e, 1, G, (0, 2))
    e.step(StartHeight(2, v, 0, members, members))
    return v


def test_the_last_height_of_a_set_ends_only_on_its_own_dones() -> None:
    """§10.3: with V(2) != V(1), deciding height 2 does not terminate height 1, nor does
    starting height 3; q(1) DONEs of height 1 from members of V(1) do."""
    e = _member_at_1()
    v = _decide_1_then_start_2(e)
    v2 = _decide(e, 2, v, (0, 2, 3))
    assert e.inst[2].rec.decided == v2
    e.step(StartHeight(3, v2, 0, NEW, NEW))
    assert 1 in e.inst and not e.inst[1].terminated
    e.step(MessageIn(4, Done(CID, 1, v)))  # the joiner is no member of V(1)
    e.step(MessageIn(0, Done(CID, 1, v)))
    assert not e.inst[1].terminated
    e.step(MessageIn(2, Done(CID, 1, v)))
    assert 1 not in e.inst  # q(1) = 3 with its own: terminated and dropped


def test_without_a_change_deciding_the_next_height_still_ends_the_last() -> None:
    e = Engine(P, 1)
    e.step(StartHeight(1, G, 0, OLD, OLD))
    v = _decide_1_then_start_2(e, OLD)
    _decide(e, 2, v, (0, 2))
    assert 1 not in e.inst


def test_a_learner_speaks_no_consensus_and_commits_from_b_member_claims() -> None:
    """§10.3 Learners: id 4 outside V(1) starts height 1 as a learner: no proposal, vote,
    abort or DONE, however its timers fire; b(1) = 2 matching DONEs of members decide
    it, one from a non-member does not count; it then commits and asks for more."""
    e = Engine(P, 4)
    out = e.step(StartHeight(1, G, 0, OLD, NEW))
    assert out == [SetTimer(LEARN_TIMER, P.sync_interval_ms)]
    out += e.step(Timeout(LEARN_TIMER))
    asks = [s for s in _sends(out) if isinstance(s.msg, SyncReq)]
    assert sorted(s.to for s in asks) == [0, 1, 2, 3]
    idle = LEARN_IDLE_FACTOR * P.sync_interval_ms
    assert SetTimer(LEARN_TIMER, idle) in out
    speaks = (Propose, Vote, Abort, Done)
    assert not [s for s in _sends(out) if isinstance(s.msg, speaks)]
    blk = Block(1, G, 0, 0, b"one")
    v = block_hash(blk)
    e.blocks[v] = blk
    out = e.step(MessageIn(0, Done(CID, 1, v)))
    assert e.inst[1].rec.decided is None
    out += e.step(MessageIn(1, Done(CID, 1, v)))
    commits = [a for a in out if isinstance(a, Commit)]
    assert [c.height for c in commits] == [1]
    assert not [s for s in _sends(out) if isinstance(s.msg, speaks)]
    # its height-2 instance (it is a member of V(2)) votes as any member
    out = e.step(StartHeight(2, v, 0, NEW, NEW))
    assert e.view().instance(2) is not None and e.view().instance(2).member  # type: ignore[union-attr]


def test_a_learner_counts_sync_claims_of_members_only() -> None:
    e = Engine(P, 4)
    e.step(StartHeight(1, G, 0, OLD, NEW))
    blk = Block(1, G, 0, 0, b"one")
    v = block_hash(blk)
    e.blocks[v] = blk
    # a claim from a non-member of V(1) (there is none with a link but a joiner) and
    # one from a member: not enough
    e.catchup.pending = True
    e.step(MessageIn(0, SyncResp(CID, 1, (v,))))
    assert e.inst[1].rec.decided is None
    out = e.step(MessageIn(2, SyncResp(CID, 1, (v,))))
    assert [a.height for a in out if isinstance(a, Commit)] == [1]


def test_restart_restores_each_record_with_its_own_set() -> None:
    """§10.2: `Start` carries the set history; a record of the last height of a set that
    was committed is kept live (decided) until its own DONEs end it, and a record whose
    next set is unknown at boot (block x-1 not executed again yet, pipelined heights)
    learns it from `StartHeight(x)`."""
    v1 = b"\x01" * 32
    rec1 = Record(height=1, anchor=0, parent_hash=G, decided=v1)
    rec2 = Record(height=2, anchor=0, parent_hash=v1, round=0)
    e = Engine(P, 1)
    e.step(Start((rec1, rec2), (), 1, ((1, OLD), (2, NEW))))
    assert e.inst[1].vs == OLD and e.inst[1].next_vs == NEW
    assert not e.inst[1].terminated and e.inst[1].commit_emitted
    assert e.inst[2].vs == NEW
    # the history reaches V(3) only through the committed height + 2
    e2 = Engine(P, 1)
    rec3 = Record(height=3, anchor=0, parent_hash=v1, round=0)
    e2.step(Start((rec1, rec3), (), 1, ((1, OLD),)))
    assert e2.sets.of(4) is None and e2.inst[3].next_vs == OLD
    e2.step(StartHeight(3, v1, 0, OLD, NEW))
    assert e2.inst[3].next_vs == NEW


def test_a_dones_debt_of_a_sets_last_height_is_paid_not_dropped() -> None:
    """Catching up fast, a node decides the last height of a set and the next one in a
    row: its DONE of the last old height, owed to each peer, leaves at once instead of
    being replaced by the later height's (which would leave the peers' instance of that
    height, which ends only on its own DONEs, waiting, §10.3)."""
    e = _member_at_1()
    v = _decide_1_then_start_2(e)
    assert {j: d.height for j, d in e.owed.items()} == {0: 1, 2: 1, 3: 1, 4: 1}
    blk2 = Block(2, v, 0, 0, b"two")
    v2 = block_hash(blk2)
    e.blocks[v2] = blk2
    out: list[Action] = []
    for j in (0, 2):  # b(2) = 2 claims decide height 2
        out += e.step(MessageIn(j, Done(CID, 2, v2)))
    assert e.inst[2].rec.decided == v2
    paid = {s.to for s in _sends(out) if s.msg == Done(CID, 1, v)}
    assert paid == {0, 2, 3, 4}
    assert {d.height for d in e.owed.values()} == {2}


def test_a_terminated_last_height_answers_a_done_once_per_period() -> None:
    """§10.3's DONE rule: after the last height of a set terminated, a DONE of it from a
    member whose DONE was counted is answered (that member may lack ours), and not again
    within the serve period (two terminated nodes do not answer each other for ever)."""
    e = _member_at_1()
    v = _decide_1_then_start_2(e)
    for j in (0, 2):
        e.step(MessageIn(j, Done(CID, 1, v)))
    assert 1 not in e.inst
    # our DONE of height 1 is still owed to 0: its DONE is answered with it at once
    assert _sends(e.step(MessageIn(0, Done(CID, 1, v)))) == [Send(0, Done(CID, 1, v))]
    assert 0 not in e.owed
    # two serve periods later (the height is no longer fresh), a DONE is answered once
    for _ in range(2):
        e.step(Timeout(SERVE_TIMER))
    # (the instance is gone: the driver fills the DONE in from its chain store)
    assert ReplyDone(0, 1) in e.step(MessageIn(0, Done(CID, 1, v)))
    assert e.step(MessageIn(0, Done(CID, 1, v))) == []
    for _ in range(2):
        e.step(Timeout(SERVE_TIMER))
    assert ReplyDone(0, 1) in e.step(MessageIn(0, Done(CID, 1, v)))
    # without a change after height 1 a counted peer's DONE is never answered
    f = Engine(P, 1)
    f.step(StartHeight(1, G, 0, OLD, OLD))
    w = _decide_1_then_start_2(f, OLD)
    for j in (0, 2, 3):
        f.step(MessageIn(j, Done(CID, 1, w)))
    f.owed.clear()  # as if our DONE had ridden to every peer
    for _ in range(2):
        f.step(Timeout(SERVE_TIMER))
    assert f.step(MessageIn(0, Done(CID, 1, w))) == []


def test_a_restored_height_whose_next_set_is_unknown_waits_for_it_to_commit() -> None:
    """Pipelined heights at boot (§3.3 with §10.2): committed 1; heights 2 and 3 decided
    in records, block 2 not executed again yet, so `V(4)` (which block 2 may change) is
    unknown. Height 2 commits at once; height 3 only once `StartHeight(3)` (after block
    2) tells `V(4)`, and with it the anchor of height 4 (§10.4)."""
    v1 = b"\x01" * 32
    b2 = Block(2, v1, 0, 0, b"two")
    v2 = block_hash(b2)
    b3 = Block(3, v2, 0, 3, b"three")
    v3 = block_hash(b3)
    recs = (
        Record(height=2, anchor=0, parent_hash=v1, decided=v2),
        Record(height=3, anchor=0, parent_hash=v2, decided=v3),
    )
    e = Engine(P, 1)
    out = e.step(Start(recs, (b2, b3), 1, ((1, OLD),)))
    assert [c.height for c in out if isinstance(c, Commit)] == [2]
    rotated = VSet((0, 1, 2, 4))  # block 2 rotated 3 away at height 4
    out = e.step(StartHeight(3, v2, 0, OLD, rotated))
    (commit,) = [c for c in out if isinstance(c, Commit)]
    assert commit.height == 3
    # proposer 3 leaves: the anchor of height 4 is the next unchanged id, wrapping to 0
    assert commit.next_anchor == 0


def test_our_done_of_a_leaving_members_last_height_leaves_alone() -> None:
    """10.6 L4: a member that leaves at h+1 gets no frame of h+1 for our DONE of h to
    ride in; it leaves at once (the leaving member ends h only on q(h) DONEs), while the
    members that stay and the joiners are owed it as usual."""
    e = Engine(P, 1)
    e.step(StartHeight(1, G, 0, OLD, VSet((0, 1, 2, 4))))
    blk = Block(1, G, 0, 0, b"one")
    v = block_hash(blk)
    e.valid[v] = True
    out = e.step(MessageIn(0, Propose(CID, 1, 0, blk)))
    for k in (1, 2, 3, 4):
        for j in (0, 2):
            out += e.step(MessageIn(j, Vote(CID, 1, 0, k, v)))
    assert [s.to for s in _sends(out) if isinstance(s.msg, Done)] == [3]
    assert set(e.owed) == {0, 2, 4}
