"""The driver plan: durable batch first, then one frame per peer with the replies, then
local effects, each in engine order; and the simulator carries out exactly that plan."""

from __future__ import annotations

from typing import Any

import pytest

from consensus.driver import Frame, Phase, plan
from consensus.engine import Engine
from consensus.events import (
    Action,
    Alert,
    BlockBuilt,
    BuildBlock,
    CancelTimer,
    Commit,
    DeleteRecord,
    Persist,
    PersistBlock,
    ReplyDone,
    ReplySync,
    Send,
    SetTimer,
    StartHeight,
    TimerKey,
)
from consensus.messages import Abort, Block, BlockReq, BlockResp, Record
from consensus.params import Params
from consensus.sim import network, world
from consensus.sim.config import SimConfig

P = Params(n=4)
G = b"\x00" * 32
REC = Record(height=1, anchor=0, parent_hash=G)
BLK = Block(1, G, 0, 0, b"a")


def _abort(level: int) -> Abort:
    return Abort(P.chain_id, 1, level)


def test_phases_and_order() -> None:
    acts: list[Action] = [
        SetTimer(TimerKey("round", 1), 100),
        Send(2, _abort(0)),
        Persist(REC),
        ReplyDone(3, 1),
        Send(3, _abort(1)),
        PersistBlock(BLK),
        Commit(1, BLK, 0),
        Send(2, _abort(2)),
        ReplySync(2, 1, 64),
        DeleteRecord(1),
        Alert("x", "y"),
    ]
    p = plan(acts)
    assert p.durable == (Persist(REC), PersistBlock(BLK), DeleteRecord(1))
    assert p.frames == (
        Frame(2, (Send(2, _abort(0)), Send(2, _abort(2)), ReplySync(2, 1, 64))),
        Frame(3, (ReplyDone(3, 1), Send(3, _abort(1)))),
    )
    assert p.local == (SetTimer(TimerKey("round", 1), 100), Commit(1, BLK, 0), Alert("x", "y"))
    phases = [ph for ph, _ in p.steps()]
    assert phases == [Phase.DURABLE] * 3 + [Phase.MESSAGES] * 5 + [Phase.LOCAL] * 3
    assert sorted(map(repr, (a for _, a in p.steps()))) == sorted(map(repr, acts))


def test_replies_are_messages_not_local_effects() -> None:
    p = plan([CancelTimer(TimerKey("serve")), ReplyDone(1, 5), ReplySync(2, 3, 8)])
    assert [ph for ph, _ in p.steps()] == [Phase.MESSAGES, Phase.MESSAGES, Phase.LOCAL]
    assert list(p.messages()) == [ReplyDone(1, 5), ReplySync(2, 3, 8)]


def test_a_batch_of_steps_writes_every_record_before_any_message() -> None:
    leader = Engine(P, 0)
    acts = leader.step(StartHeight(1, G, 0))
    build = next(a for a in acts if isinstance(a, BuildBlock))
    acts += leader.step(BlockBuilt(1, 0, Block(1, G, build.round, 0, b"a")))
    p = plan(acts)
    kinds = [type(a) for _, a in p.steps()]
    last_durable = max(i for i, k in enumerate(kinds) if k in (Persist, PersistBlock))
    first_send = kinds.index(Send)
    assert last_durable < first_send
    assert {type(m.msg) for m in p.messages() if isinstance(m, Send)} >= {
        type(a.msg) for a in acts if isinstance(a, Send)
    }


def test_plan_of_nothing_is_empty() -> None:
    p = plan([])
    assert not p.durable and not p.frames and not p.local and not list(p.steps())


def test_simulator_carries_out_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every step of a good-case run: the frames leave in the plan's peer order, then the
    local effects happen exactly in the plan's order (body requests may be sent among
    them: a FetchBlock sends one)."""
    log: list[tuple[str, Any]] = []
    real_plan, real_send, real_perform = world.plan, network.send_frame, world.Sim._perform

    def spy_plan(acts: list[Action]) -> Any:
        p = real_plan(acts)
        log.append(("plan", p))
        return p

    def spy_send(
        sim: world.Sim, nd: world.SimNode, to: int, msgs: list[Any], raw: bool = False
    ) -> None:
        if not any(isinstance(m, BlockReq | BlockResp) for m in msgs):
            log.append(("send", (to, tuple(msgs))))
        real_send(sim, nd, to, msgs, raw)

    def spy_perform(sim: world.Sim, nd: world.SimNode, a: Action) -> None:
        log.append(("local", a))
        real_perform(sim, nd, a)

    monkeypatch.setattr(world, "plan", spy_plan)
    monkeypatch.setattr(network, "send_frame", spy_send)
    monkeypatch.setattr(world.Sim, "_perform", spy_perform)
    sim = world.Sim(SimConfig(n=4, seed=3, heights=3))
    sim.run()
    assert not sim.monitor.violations
    plans = [i for i, (kind, _) in enumerate(log) if kind == "plan"]
    assert len(plans) > 100
    for start, end in zip(plans, [*plans[1:], len(log)], strict=True):
        p = log[start][1]
        seg = log[start + 1 : end]
        sends = [x for kind, x in seg if kind == "send"]
        local = [x for kind, x in seg if kind == "local"]
        assert [kind for kind, _ in seg] == ["send"] * len(sends) + ["local"] * len(local)
        assert [to for to, _ in sends] == [f.to for f in p.frames]
        for (_, msgs), frame in zip(sends, p.frames, strict=True):
            want = [m.msg for m in frame.messages if isinstance(m, Send)]
            assert [m for m in msgs if m in want] == want
            assert len(msgs) <= len(frame.messages)
        assert tuple(local) == p.local
