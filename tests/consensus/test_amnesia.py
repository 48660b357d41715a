"""The amnesia guard (CONSENSUS.md §3.8): a node that lost its consensus records stays
silent, and does not count itself, at every height it may have voted in before; it settles
that bound from 2f+1 peers and votes again above it."""

from __future__ import annotations

import pytest

from consensus.amnesia import MARGIN, AmnesiaGuard
from consensus.engine import Engine
from consensus.events import BlockValidated, Commit, MessageIn, Send, StartHeight
from consensus.messages import Abort, Block, Done, Propose, Report, SyncResp, Vote, block_hash
from consensus.params import Params
from consensus.sim.runner import replay_command, run_one
from consensus.sim.scenarios import build
from consensus.sim.world import Sim

P4 = Params(n=4)
P7 = Params(n=7)
G = b"\x00" * 32
V = b"\x11" * 32


def _vote(h: int, phase: int = 1, r: int = 0) -> Vote:
    return Vote(P4.chain_id, h, r, phase, V)


def test_unsettled_guard_silences_every_vote_and_lets_catch_up_through() -> None:
    g = AmnesiaGuard(P4, 0)
    assert not g.settled
    for m in (
        _vote(1),
        Propose(P4.chain_id, 5, 0, Block(5, G, 0, 0, b"")),
        Abort(P4.chain_id, 9, 3),
        Report(P4.chain_id, 2, 1, ()),
    ):
        assert not g.allows(m)
    assert g.allows(Done(P4.chain_id, 3, V))
    assert g.allows(SyncResp(P4.chain_id, 1, (V,)))


def test_settles_on_2f_plus_1_distinct_peers_at_max_plus_margin() -> None:
    g = AmnesiaGuard(P7, 3)  # f = 2: five peers needed
    for sender, h in ((0, 40), (1, 41), (2, 41), (4, 39)):
        assert g.observe(sender, Vote(P7.chain_id, h, 0, 1, V), cur=30) is None
    assert g.observe(4, Vote(P7.chain_id, 42, 0, 1, V), cur=30) is None  # same peer again
    assert g.observe(3, Vote(P7.chain_id, 90, 0, 1, V), cur=30) is None  # itself
    assert g.observe(9, Vote(P7.chain_id, 90, 0, 1, V), cur=30) is None  # not a validator
    assert g.observe(5, Done(P7.chain_id, 80, V), cur=30) is None  # a finished height
    assert g.observe(5, SyncResp(P7.chain_id, 1, (V,) * 80), cur=30) is None
    assert g.observe(5, Abort(P7.chain_id, 38, 2), cur=30) == 42 + MARGIN
    assert g.settled and g.through == 44
    assert not g.allows(Vote(P7.chain_id, 44, 0, 1, V))
    assert g.allows(Vote(P7.chain_id, 45, 0, 1, V))
    assert g.observe(6, Vote(P7.chain_id, 500, 0, 1, V), cur=30) is None  # settled for good
    assert g.through == 44


def test_a_height_beyond_the_window_neither_counts_nor_raises_the_bound() -> None:
    g = AmnesiaGuard(P4, 0)
    g.observe(1, _vote(10), cur=10)
    g.observe(2, _vote(11), cur=10)
    huge = 10 + P4.height_window + 1
    assert g.observe(3, _vote(huge), cur=10) is None  # two within the window: not yet
    assert not g.settled
    # The node catches up; the peer's height is now within its window.
    assert g.try_settle(cur=huge - P4.height_window) == huge + MARGIN


def test_a_lying_peer_raises_the_bound_by_the_window_at_most() -> None:
    g = AmnesiaGuard(P4, 0)
    g.observe(1, _vote(10), cur=10)
    g.observe(2, _vote(10), cur=10)
    through = g.observe(3, _vote(10 + P4.height_window), cur=10)
    assert through == 10 + P4.height_window + MARGIN


def test_a_restart_keeps_the_bound_and_forgets_the_peers() -> None:
    g = AmnesiaGuard(P4, 0)
    g.observe(1, _vote(5), cur=1)
    assert g.restarted().shown == {} and not g.restarted().settled
    g.observe(2, _vote(5), cur=1)
    g.observe(3, _vote(6), cur=1)
    assert g.restarted().through == 6 + MARGIN


def _engine_at_height_1(amnesic: bool) -> Engine:
    e = Engine(P4, 1)  # not the leader of height 1, round 0
    if amnesic:
        e.amnesia = AmnesiaGuard(P4, 1)
    e.step(StartHeight(1, G, 0))
    return e


@pytest.mark.parametrize("amnesic", [False, True])
def test_an_amnesic_engine_neither_sends_nor_counts_its_own_votes(amnesic: bool) -> None:
    """With n = 4 (q = 3), the leader and one more peer voting every phase is a quorum
    only if the node counts itself."""
    e = _engine_at_height_1(amnesic)
    blk = Block(1, G, 0, P4.leader(0, 0), b"x")
    v = block_hash(blk)
    out = e.step(MessageIn(0, Propose(P4.chain_id, 1, 0, blk)))
    out += e.step(BlockValidated(v, True))
    for phase in (1, 2, 3, 4):
        for j in (0, 2):
            out += e.step(MessageIn(j, Vote(P4.chain_id, 1, 0, phase, v)))
    sent_votes = [a for a in out if isinstance(a, Send) and isinstance(a.msg, Vote)]
    commits = [a for a in out if isinstance(a, Commit)]
    if amnesic:
        assert sent_votes == [] and commits == []
    else:
        assert sent_votes and commits


@pytest.mark.parametrize("n", [4, 7])
def test_s21_restored_node_held_correct_settles_and_votes_again(n: int) -> None:
    """S21 (rollback or state loss under the guard, plus an equivocating leader) over
    seeds: no violation, and in some run the restored node settles and votes again."""
    voted_again = 0
    for seed in range(40):
        cfg = build("S21", n, seed, heights=8)
        sim = Sim(cfg)
        sim.run()
        assert not sim.monitor.violations, (replay_command("S21", n, seed), sim.monitor.violations)
        node = sim.nodes[cfg.rollbacks[0].node][0]
        guard = node.amnesia
        assert guard is not None
        if guard.through is not None and any(
            src == node.ident and h > guard.through for src, h, _, _ in sim.monitor.sent_votes
        ):
            voted_again += 1
    assert voted_again >= 20


@pytest.mark.parametrize("n", [4, 7])
def test_without_the_guard_the_restored_node_is_caught_equivocating(n: int) -> None:
    for seed in range(30):
        r = run_one("S21-unguarded", n, seed)
        if 4 in {v.invariant for v in r.violations}:
            assert run_one("S21", n, seed).ok, replay_command("S21", n, seed)
            return
    pytest.fail("S21 without the guard: no equivocation found in 30 seeds")
