"""The fault runner's parts without a live network: one run clock for the observer, the
load and the timeline; the timeline applying and undoing steps through the table of
perturbations (`actions.PERTURBATIONS`) only."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest

from devnet.faults.actions import PERTURBATIONS, StepRecord, TimelineState
from devnet.faults.history import History
from devnet.faults.load import Accounts
from devnet.faults.runner import RunClock, start_run
from devnet.faults.scenario import ACTIONS, UNDOABLE, parse_scenario
from devnet.faults.timeline import Timeline
from devnet.local import create_network
from devnet.network import plan_network


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_run_clock_counts_from_its_own_start_and_cannot_be_rebased() -> None:
    source = FakeClock(1000.0)
    clock = RunClock.start(source)
    assert clock() == 0.0
    source.now = 1002.5
    assert clock() == 2.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        clock.zero = source.now  # type: ignore[misc]


async def test_observer_load_and_timeline_share_the_run_clock(tmp_path: Path) -> None:
    plan = plan_network(base_port=None, scheme="ed25519")
    net = create_network(tmp_path, plan)
    scenario = parse_scenario(
        {"duration_s": 10, "step": [{"at": 1, "action": "kill", "target": "node1"}]}
    )
    source = FakeClock(50.0)
    clock = RunClock.start(source)
    run = start_run(
        net, scenario, random.Random(1), Accounts(plan.scheme, plan.chain_id), "p", clock
    )
    source.now = 53.0
    assert run.observer.clock() == run.load.clock() == run.state.clock() == 3.0
    assert [r.step for r in run.records] == list(scenario.steps)
    await run.observer.close()
    await run.load.close()


def test_every_action_has_a_perturbation() -> None:
    assert set(PERTURBATIONS) == set(ACTIONS)
    assert {a for a, p in PERTURBATIONS.items() if p.self_timed} == {"flap"}
    instant = set(ACTIONS) - UNDOABLE
    assert all(PERTURBATIONS[a].undo is None for a in instant)


class FakeNet:
    """Records node control calls; the rest of `devnet.running.Network` is not needed."""

    def __init__(self) -> None:
        self.plan = plan_network(scheme="ed25519")
        self.calls: list[tuple[str, str]] = []

    def node_names(self) -> list[str]:
        return [n.name for n in self.plan.nodes]

    def __getattr__(self, verb: str) -> Any:
        if not verb.endswith("_node"):
            raise AttributeError(verb)
        return lambda name: self.calls.append((verb, name))


async def test_timeline_applies_and_undoes_through_the_table() -> None:
    scenario = parse_scenario(
        {
            "duration_s": 5,
            "step": [
                {"at": 0, "action": "kill", "target": "node1", "duration_s": 0.05},
                {"at": 0.1, "action": "pause", "target": ["node2", "node3"], "duration_s": 0.05},
                {"at": 0.2, "action": "restart", "target": "node0"},
            ],
        }
    )
    net = FakeNet()
    clock = RunClock.start()
    history = History()
    state = TimelineState(net, random.Random(1), history, clock)  # type: ignore[arg-type]
    records = [StepRecord(s) for s in scenario.steps]
    await Timeline(state, records).run()
    assert net.calls == [
        ("kill_node", "node1"),
        ("start_node", "node1"),
        ("pause_node", "node2"),
        ("pause_node", "node3"),
        ("resume_node", "node2"),
        ("resume_node", "node3"),
        ("restart_node", "node0"),
    ]
    assert all(not r.error and r.applied_at is not None for r in records)
    assert records[0].undone_at is not None and records[2].undone_at is None
    events = [e["action"] for e in history.events]
    assert events == ["kill", "undo kill", "pause", "undo pause", "restart"]


async def test_a_step_after_another_starts_once_that_one_finished() -> None:
    """Step 1 follows step 0 (applied at 0, undone 0.3 s later) and starts 0.05 s after
    its undo, though its `at` on the run's clock would be earlier; a step that follows a
    failed one still runs."""
    scenario = parse_scenario(
        {
            "duration_s": 5,
            "step": [
                {"at": 0, "action": "kill", "target": "node1", "duration_s": 0.3},
                {"at": 0.05, "after": 0, "action": "pause", "target": "node2", "duration_s": 0.05},
                {"at": 0.1, "action": "restart", "target": "nodeX"},
                {"at": 0, "after": 2, "action": "restart", "target": "node3"},
            ],
        }
    )
    net = FakeNet()
    state = TimelineState(net, random.Random(1), History(), RunClock.start())  # type: ignore[arg-type]
    records = {r.step.index: r for r in (StepRecord(s) for s in scenario.steps)}
    await Timeline(state, list(records.values())).run()
    assert net.calls == [
        ("kill_node", "node1"),
        ("restart_node", "node3"),
        ("start_node", "node1"),
        ("pause_node", "node2"),
        ("resume_node", "node2"),
    ]
    kill, pause = records[0], records[1]
    assert kill.undone_at is not None and pause.applied_at is not None
    assert pause.due is not None and pause.due >= kill.undone_at + 0.05
    assert pause.applied_at >= pause.due
    assert "unknown node" in records[2].error and not records[3].error
