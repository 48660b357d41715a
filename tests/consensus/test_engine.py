"""Unit tests of the pure engine: round 0 happy path, persist-before-send, restart repeats."""

from __future__ import annotations

import pytest

from consensus.engine import Engine
from consensus.events import (
    Action,
    BlockBuilt,
    BuildBlock,
    MessageIn,
    Persist,
    PersistBlock,
    Send,
    Start,
    StartHeight,
)
from consensus.messages import (
    Block,
    Propose,
    Record,
    Report,
    Summary,
    Vote,
    block_hash,
    decode_message,
    encode_message,
    load_record,
    report_well_formed,
)
from consensus.params import Params
from consensus.safety import FRESH, RULES, shows_safe, summarize

P = Params(n=4)
G = b"\x00" * 32


def _block(r: int = 0, body: bytes = b"a") -> Block:
    return Block(1, G, r, P.leader(0, r), body)


def test_messages_round_trip() -> None:
    msgs = [
        Propose(P.chain_id, 1, 0, _block()),
        Vote(P.chain_id, 1, 0, 2, b"\x01" * 32),
        Report(P.chain_id, 1, 2, (Summary(1, b"\x02" * 32, 0), Summary(), Summary(), Summary())),
    ]
    for m in msgs:
        assert decode_message(encode_message(m)) == m


def test_malformed_report() -> None:
    bad = Report(P.chain_id, 1, 1, (Summary(1, b"\x02" * 32), Summary(), Summary(), Summary()))
    assert not report_well_formed(bad)


def test_leader_round0_persists_before_votes() -> None:
    e = Engine(P, 0)
    out = e.step(StartHeight(1, G, 0))
    assert any(isinstance(a, BuildBlock) for a in out)
    out = e.step(BlockBuilt(1, 0, _block()))
    kinds = [type(a) for a in out]
    assert kinds.index(Persist) < kinds.index(Send)
    assert PersistBlock in kinds
    sent = [a.msg for a in out if isinstance(a, Send)]
    assert {type(m) for m in sent} == {Propose, Vote}


def _vote(k: int, v: bytes, r: int = 0) -> Vote:
    return Vote(P.chain_id, 1, r, k, v)


def _proposed() -> tuple[Engine, Block, bytes, list[Action]]:
    """Node 1 at height 1, after the leader's round-0 proposal of a valid block: the
    engine, the block, its hash and what the proposal made the engine do."""
    e = Engine(P, 1)
    e.step(StartHeight(1, G, 0))
    blk = _block()
    v = block_hash(blk)
    e.valid[v] = True
    return e, blk, v, e.step(MessageIn(0, Propose(P.chain_id, 1, 0, blk)))


def test_quorum_chain_decides() -> None:
    e, _, v, out = _proposed()
    for k in (1, 2, 3, 4):
        for j in (0, 2):
            out += e.step(MessageIn(j, _vote(k, v)))
    assert e.inst[1].rec.decided == v


def test_restart_repeats_votes_without_recomputing() -> None:
    e, blk, v, _ = _proposed()
    rec = e.inst[1].rec
    assert rec.s[0] == Summary(0, v, None)
    e2 = Engine(P, 1)
    out = e2.step(Start((rec,), (blk,), 0))
    votes = {a.msg for a in out if isinstance(a, Send) and isinstance(a.msg, Vote)}
    assert votes == {_vote(1, v)}
    assert not any(isinstance(a, Persist) and a.record.s != rec.s for a in out)


def test_summarize_matches_engine_rule() -> None:
    a, b = b"\x01" * 32, b"\x02" * 32
    assert summarize([(0, a), (1, b), (2, b)], 3) == Summary(2, b, 0)
    assert summarize([(0, a), (1, b), (2, a)], 3) == Summary(2, a, 1)
    assert summarize([(0, a), (1, b)], 1) == Summary(0, a, None)


def _rep(r: int, s1: Summary, s2: Summary, s3: Summary, s4: Summary) -> Report:
    return Report(P.chain_id, 1, r, (s1, s2, s3, s4))


def test_two_values_rule_s17_state() -> None:
    """The round-3 REPORTs of S17: the fresh value passes only with the two-values rule."""
    w, x, y, junk = (bytes([i]) * 32 for i in (1, 2, 3, 4))
    z = b"\x09" * 32
    e = Summary()
    reps = {
        0: _rep(3, Summary(2, w, 1), Summary(2, w, 1), Summary(0, w), Summary(0, w)),
        3: _rep(3, Summary(1, x, 0), Summary(0, w), Summary(0, w), e),
        2: _rep(3, Summary(2, w), e, e, e),
        1: _rep(3, e, Summary(2, y, 1), e, Summary(2, junk)),
    }
    assert shows_safe(reps, FRESH, 3, 3, 2, P.q, P.b)
    assert shows_safe(reps, z, 3, 4, 1, P.q, P.b)
    from consensus.sim.mutants import NoTwoValues

    assert not NoTwoValues().shows_safe(reps, z, 3, 4, 1, P.q, P.b)


def test_claim_check_refuses_single_liar() -> None:
    """S3's round-3 check: one correct claim for A and one lie for B do not make B safe."""
    a, b = b"\x01" * 32, b"\x02" * 32
    e = Summary()
    reps = {
        0: _rep(3, Summary(0, a), Summary(0, a), Summary(0, a), Summary(0, a)),
        1: _rep(3, Summary(1, a), Summary(0, a), Summary(0, a), Summary(0, a)),
        2: _rep(3, Summary(0, a), Summary(0, a), Summary(0, a), Summary(0, a)),
        3: _rep(3, Summary(1, b), e, e, e),
    }
    assert not RULES.shows_safe(reps, b, 3, 4, 1, P.q, P.b)
    assert RULES.shows_safe(reps, a, 3, 4, 1, P.q, P.b)


def test_stored_block_height_reads_the_height_without_the_body() -> None:
    from consensus.messages import Block as CBlock
    from consensus.messages import block_hash, stored_block_height
    from qchain.errors import CodecError

    for height, body in ((0, b""), (7, b"x" * 10), (2**40, b"\x01" * 70_000)):
        blk = CBlock(height, b"\x02" * 32, 3, 1, body)
        assert stored_block_height(blk.encode()) == height
        assert block_hash(blk) == block_hash(CBlock.decode(blk.encode()))
    for bad in (b"", b"\x90", b"\x95\xa1x", b"\x01", b"\x95\xff"):
        with pytest.raises(CodecError):
            stored_block_height(bad)


def test_unknown_event_is_a_type_error() -> None:
    """Anything but the eight event types is refused, not taken for `MempoolNonEmpty`."""
    e = Engine(P, 1)
    e.step(StartHeight(1, G, 0))
    with pytest.raises(TypeError, match="not a consensus event: Block"):
        e.step(_block())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a consensus event: Persist"):
        e.step(Persist(e.inst[1].rec))  # type: ignore[arg-type]


def test_record_as_the_node_stores_it_loads_back() -> None:
    e = Engine(P, 0)
    e.step(StartHeight(1, G, 0))
    out = e.step(BlockBuilt(1, 0, _block()))
    rec = next(a.record for a in out if isinstance(a, Persist))
    assert load_record(rec.encode()) == rec


def _own_round1_record(decided: bool) -> tuple[Block, bytes, Record]:
    """Node 1's record of height 1 as the round-1 leader that proposed and voted VOTE1 for
    its own block (persisted before sending, §2.6), decided or not."""
    blk = _block(r=1)
    v = block_hash(blk)
    s = (Summary(1, v, None), Summary(), Summary(), Summary())
    rec = Record(
        height=1,
        anchor=0,
        parent_hash=G,
        round=1,
        s=s,
        proposal_round=1,
        proposal_value=v,
        decided=v if decided else None,
    )
    return blk, v, rec


@pytest.mark.parametrize("decided", [False, True])
def test_restart_repeats_its_own_vote1_only_with_its_propose(decided: bool) -> None:
    """A restarted leader re-sends its PROPOSE and its VOTE1 together; without the body
    (the height committed, and the boot keeps the record for its DONE) neither leaves.
    Before, the VOTE1 left alone: `qchain sim run --scenario S8 --seeds 871..871` broke
    invariant 7 ("VOTE1 without the leader's PROPOSE")."""
    assert P.leader(0, 1) == 1
    blk, v, rec = _own_round1_record(decided)
    sent = [a.msg for a in Engine(P, 1).step(Start((rec,), (blk,), 0)) if isinstance(a, Send)]
    assert Propose(P.chain_id, 1, 1, blk) in sent
    assert Vote(P.chain_id, 1, 1, 1, v) in sent
    committed = 1 if decided else 0
    sent = [a.msg for a in Engine(P, 1).step(Start((rec,), (), committed)) if isinstance(a, Send)]
    assert not any(isinstance(m, Propose) for m in sent)
    assert Vote(P.chain_id, 1, 1, 1, v) not in sent
