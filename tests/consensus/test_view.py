"""`Engine.view()`: a frozen snapshot with what outsiders read, taken without side effects."""

from __future__ import annotations

import dataclasses

import pytest

from consensus.engine import Engine
from consensus.events import Action, Event, MessageIn, StartHeight
from consensus.messages import Block, Propose, Vote, block_hash
from consensus.params import Params

P = Params(n=4)
G = b"\x00" * 32


def test_view_before_any_height() -> None:
    v = Engine(P, 1).view()
    assert (v.height, v.committed, v.round, v.leader, v.decided) == (0, 0, None, None, None)
    assert v.instances == () and dict(v.peer_heights) == {}
    assert not v.idle_mode


def test_view_of_a_started_height() -> None:
    e = Engine(P, 1)
    e.step(StartHeight(1, G, 2))
    v = e.view()
    assert (v.height, v.committed, v.round, v.leader) == (1, 0, 0, 2)
    inst = v.instance(1)
    assert inst is not None and inst.anchor == 2 and inst.round == 0 and not inst.terminated
    assert v.instance(2) is None


def test_view_follows_rounds_decisions_and_peers() -> None:
    e = Engine(P, 1)
    e.step(StartHeight(1, G, 0))
    blk = Block(1, G, 0, 0, b"a")
    v = block_hash(blk)
    e.valid[v] = True
    e.step(MessageIn(0, Propose(P.chain_id, 1, 0, blk)))
    for k in (1, 2, 3, 4):
        for j in (0, 2):
            e.step(MessageIn(j, Vote(P.chain_id, 1, 0, k, v)))
    view = e.view()
    assert view.decided == v
    assert view.peer_heights == {0: 1, 2: 1}
    inst = view.instance(1)
    assert inst is not None and inst.decided == v and inst.proposals == 1
    assert inst.summaries[3].last_value == v


def test_view_is_a_frozen_snapshot() -> None:
    e = Engine(P, 1)
    e.step(StartHeight(1, G, 0))
    before = e.view()
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.height = 5  # type: ignore[misc]
    e.step(MessageIn(3, Vote(P.chain_id, 40, 0, 1, b"\x01" * 32)))
    assert dict(before.peer_heights) == {}
    assert e.view().peer_heights == {3: 40}


def test_idle_mode_is_visible() -> None:
    assert Engine(Params(n=4, propose_wait_max_ms=None), 0).view().idle_mode


def test_taking_views_changes_nothing() -> None:
    blk = Block(1, G, 0, 0, b"a")
    evs: list[Event] = [
        StartHeight(1, G, 0),
        MessageIn(0, Propose(P.chain_id, 1, 0, blk)),
        MessageIn(3, Vote(P.chain_id, 90, 0, 1, b"\x02" * 32)),
    ]
    plain, watched = Engine(P, 1), Engine(P, 1)
    out_plain: list[Action] = []
    out_watched: list[Action] = []
    for ev in evs:
        out_plain += plain.step(ev)
        watched.view()
        out_watched += watched.step(ev)
        watched.view()
    assert out_plain == out_watched
    assert plain.view() == watched.view()
