"""The node and the simulator carry out the same actions in the same order.

Both drivers run `consensus.driver.plan`; this test gives one list of actions, with every
kind of action in a shuffled order, to the node's `Driver.carry_out` and to the
simulator's `Sim.carry_out`, records what each does (durable writes, messages per peer,
local effects) and checks that both did exactly what the plan says, in its order. The
simulator's seed sweeps therefore check the ordering the node runs.
"""

from __future__ import annotations

from typing import Any

import pytest

from consensus.driver import Phase, plan
from consensus.engine import Engine
from consensus.events import (
    Action,
    Alert,
    BuildBlock,
    CancelTimer,
    Commit,
    DeleteRecord,
    FetchBlock,
    Persist,
    PersistBlock,
    ReplyDone,
    ReplySync,
    Send,
    SetTimer,
    TimerKey,
    ValidateBlock,
)
from consensus.messages import Abort, Block, Done, Message, Record, SyncResp, block_hash
from consensus.params import Params
from consensus.sim import network, world
from consensus.sim.config import SimConfig
from node.driver import Driver, Handlers
from qchain.store import schema
from qchain.store.kv import Batch

P = Params(n=4)
G = b"\x00" * 32
COMMITTED = b"\x11" * 32
BLK = Block(2, COMMITTED, 0, 1, b"body")

Trace = list[tuple[str, Any, Any]]


def _actions() -> list[Action]:
    def abort(level: int) -> Abort:
        return Abort(P.chain_id, 2, level)

    return [
        SetTimer(TimerKey("round", 2), 100),
        Send(2, abort(0)),
        Persist(Record(height=2, anchor=1, parent_hash=COMMITTED)),
        ReplyDone(3, 1),
        BuildBlock(2, 0, COMMITTED),
        Send(3, abort(1)),
        PersistBlock(BLK),
        ValidateBlock(BLK),
        Commit(2, BLK, 1),
        Send(2, abort(2)),
        ReplySync(1, 1, 64),
        DeleteRecord(1),
        FetchBlock(b"\x22" * 32),
        Alert("x", "y"),
        CancelTimer(TimerKey("round", 2)),
        Send(1, abort(3)),
    ]


def _message(to: int, m: Message) -> tuple[str, Any, Any]:
    """A message as both drivers can be compared on: a reply by its kind, a send as it is."""
    if isinstance(m, Done):
        return ("message", to, ("done", m.height, m.value))
    if isinstance(m, SyncResp):
        return ("message", to, "sync-resp")
    return ("message", to, m)


def _expected(acts: list[Action]) -> Trace:
    out: Trace = []
    for phase, a in plan(acts).steps():
        if phase is Phase.DURABLE:
            if isinstance(a, Persist):
                out.append(("durable", "record", a.record.height))
            elif isinstance(a, PersistBlock):
                out.append(("durable", "body", block_hash(a.block)))
            elif isinstance(a, DeleteRecord):
                out.append(("durable", "delete", a.height))
        elif isinstance(a, ReplyDone):
            out.append(("message", a.to, ("done", a.height, COMMITTED)))
        elif isinstance(a, ReplySync):
            out.append(("message", a.to, "sync-resp"))
        elif isinstance(a, Send):
            out.append(("message", a.to, a.msg))
        else:
            out.append(("local", None, a))
    return out


class _Store:
    def __init__(self, log: Trace) -> None:
        self.log = log

    def write(self, batch: Batch, sync: bool = False) -> None:
        assert sync, "the durable batch is synced"
        for key, value in batch.ops():
            if key.startswith(schema.PENDING_BODY):
                self.log.append(("durable", "body", schema.split_pending_key(key)[1]))
            else:
                height = next(h for h in range(4) if schema.consensus_key(h) == key)
                kind = "delete" if value is None else "record"
                self.log.append(("durable", kind, height))


class _Links:
    me = 0

    def __init__(self, log: Trace) -> None:
        self.log = log

    def send_consensus(self, to: int, msg: Message) -> None:
        self.log.append(_message(to, msg))


class _Alarms:
    fatal = None

    def __init__(self, log: Trace) -> None:
        self.log = log

    def alert(self, kind: str, detail: str) -> None:
        self.log.append(("local", None, Alert(kind, detail)))


def _node_trace(acts: list[Action]) -> Trace:
    log: Trace = []
    driver = Driver(
        Engine(P, 0),
        _Store(log),  # type: ignore[arg-type]
        _Links(log),  # type: ignore[arg-type]
        _Alarms(log),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        committed=lambda: 1,
        committed_value=lambda h: COMMITTED if h == 1 else None,
    )

    def local(a: Any) -> None:
        log.append(("local", None, a))

    driver.bind(
        Handlers(
            build=local,
            validate=lambda b: local(ValidateBlock(b)),
            fetch=lambda v: local(FetchBlock(v)),
            commit=local,
            reply_sync=lambda a: log.append(("message", a.to, "sync-resp")),
            serve_blocks=lambda s, r: None,
            blocks=lambda r: None,
            batch=lambda s, b: None,
            batch_req=lambda s, r: None,
            batch_resp=lambda s, r: None,
            propose_refs=lambda s, m: None,
            cert_sig=lambda s, c: None,
            leader_changed=lambda leader: None,
        )
    )
    driver._set_timer = lambda key, ms: local(SetTimer(key, ms))  # type: ignore[method-assign]
    driver._cancel_timer = lambda key: local(CancelTimer(key))  # type: ignore[method-assign]
    driver.carry_out(plan(acts))
    return log


class _Recording(dict[Any, Any]):
    def __init__(self, log: Trace, kind: str) -> None:
        super().__init__()
        self.log, self.kind = log, kind

    def __setitem__(self, key: Any, value: Any) -> None:
        self.log.append(("durable", self.kind, key))
        super().__setitem__(key, value)

    def pop(self, key: Any, *default: Any) -> Any:
        self.log.append(("durable", "delete", key))
        return super().pop(key, *default)


def _sim_trace(acts: list[Action], monkeypatch: pytest.MonkeyPatch) -> Trace:
    log: Trace = []

    def send_frame(
        sim: world.Sim, nd: world.SimNode, to: int, msgs: list[Message], raw: bool = False
    ) -> None:
        log.extend(_message(to, m) for m in msgs)

    monkeypatch.setattr(network, "send_frame", send_frame)
    monkeypatch.setattr(world.Sim, "_perform", lambda sim, nd, a: log.append(("local", None, a)))
    sim = world.Sim(SimConfig(n=4, seed=1, heights=1, params=P))
    nd = sim.nodes[0][0]
    nd.chain = [COMMITTED]
    nd.records = _Recording(log, "record")
    nd.blocks = _Recording(log, "body")
    sim.carry_out(nd, acts)
    return log


def test_node_and_simulator_carry_out_the_same_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    acts = _actions()
    want = _expected(acts)
    assert [k for k, _, _ in want] == ["durable"] * 3 + ["message"] * 6 + ["local"] * 7
    assert _node_trace(acts) == want
    assert _sim_trace(acts, monkeypatch) == want


def test_the_actions_tell_the_old_node_order_from_the_plan() -> None:
    """Before the shared plan the node sent `Send`s after the durable batch but carried
    out the replies among the local effects; the action list above is one on which that
    order differs from the plan's, so the first test would catch it."""
    acts = _actions()
    durable = [a for a in acts if isinstance(a, Persist | PersistBlock | DeleteRecord)]
    sends = [a for a in acts if isinstance(a, Send)]
    rest = [a for a in acts if a not in durable and a not in sends]
    old = [(Phase.DURABLE, a) for a in durable] + [(Phase.MESSAGES, a) for a in sends]
    old += [
        (Phase.MESSAGES if isinstance(a, ReplyDone | ReplySync) else Phase.LOCAL, a) for a in rest
    ]
    assert old != list(plan(acts).steps())
