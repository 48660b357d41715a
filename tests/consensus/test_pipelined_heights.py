"""The engine under pipelined heights (CONSENSUS.md §3.3, §3.6, Revision 1.13): a restart
with a commit lost in flight, commits in height order, and records deleted only once their
block is durable; and the driver's commit barrier (`waits_for_commit`)."""

from __future__ import annotations

from consensus.driver import waits_for_commit
from consensus.engine import Engine
from consensus.events import (
    Action,
    BlockFetched,
    Commit,
    DeleteRecord,
    FetchBlock,
    Persist,
    PersistBlock,
    Send,
    Start,
    StartHeight,
)
from consensus.messages import EMPTY_SUMMARIES, Block, Record, Summary, Vote, block_hash
from consensus.params import Params

P = Params(n=4)
G = b"\x00" * 32


def _chain(heights: int) -> list[Block]:
    out: list[Block] = []
    parent = G
    for h in range(1, heights + 1):
        blk = Block(h, parent, 0, 0, bytes([h]) * 8)
        out.append(blk)
        parent = block_hash(blk)
    return out


def _decided(blk: Block) -> Record:
    return Record(height=blk.height, anchor=0, parent_hash=blk.parent, decided=block_hash(blk))


def _commits(out: list[Action]) -> list[int]:
    return [a.height for a in out if isinstance(a, Commit)]


def test_restart_with_two_decided_heights_commits_them_in_order_after_the_fetch() -> None:
    """Block 2's commit was lost in flight and its body is not held (2 was learned from
    DONEs); after a first restart, 3 decided while 2's body was still being fetched, and
    the node crashed again. Record 2 is not dropped, and 3 is not committed on top of 1."""
    _, b2, b3 = _chain(3)
    e = Engine(P, 1)
    out = e.step(Start((_decided(b2), _decided(b3)), (b3,), 1))
    assert DeleteRecord(2) not in out
    assert FetchBlock(block_hash(b2)) in out
    assert _commits(out) == []
    out = e.step(BlockFetched(b2))
    assert _commits(out) == [2, 3]


def test_restart_with_the_commit_in_flight_lost_commits_it_again_and_keeps_the_next_votes() -> None:
    """Block 2 executed, height 3 voted, the batch of 2 lost: the restart commits 2 from
    its decided record and body, and repeats its VOTE1 of height 3 unchanged."""
    _, b2, b3 = _chain(3)
    v3 = block_hash(b3)
    s = (Summary(0, v3), *EMPTY_SUMMARIES[1:])
    rec3 = Record(height=3, anchor=0, parent_hash=block_hash(b2), s=s)
    e = Engine(P, 1)
    out = e.step(Start((_decided(b2), rec3), (b2, b3), 1))
    assert _commits(out) == [2]
    assert DeleteRecord(2) not in out and DeleteRecord(3) not in out
    votes = {
        (a.msg.height, a.msg.phase, a.msg.value)
        for a in out
        if isinstance(a, Send) and isinstance(a.msg, Vote)
    }
    assert (3, 1, v3) in votes
    # The commit's StartHeight finds height 3 already running: no fresh round 0 record.
    assert e.step(StartHeight(3, block_hash(b2), 0)) == []


def test_record_is_deleted_only_once_the_block_above_it_is_executed() -> None:
    """After StartHeight(h+1) block h may still be in flight: record h stays until
    StartHeight(h+2), when block h is durable (commits are written one after another)."""
    b1, b2 = _chain(2)
    e = Engine(P, 1)
    e.step(StartHeight(1, G, 0))
    e.inst[1].rec = _decided(b1)
    e.step(StartHeight(2, block_hash(b1), 0))
    out = e._terminate(e.inst[1])
    e._finish_step(out)
    assert DeleteRecord(1) not in out and 1 in e.undeleted
    out = e.step(StartHeight(3, block_hash(b2), 0))
    assert DeleteRecord(1) in out


def test_barrier_only_for_a_decision() -> None:
    b1, _ = _chain(2)
    undecided = Record(height=2, anchor=0, parent_hash=block_hash(b1))
    assert not waits_for_commit([Persist(undecided), PersistBlock(b1), DeleteRecord(1)])
    assert waits_for_commit([PersistBlock(b1), Persist(_decided(b1))])
