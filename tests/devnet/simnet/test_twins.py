"""Twins in the simulator: a second validator with a node's identity, key, SAE identity
and a copy of its store (the fault kit's `byzantine NODE twin`), in the kit's scenario
and in drawn schedules."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from devnet.simnet.run import Spec, simulate
from devnet.simnet.scenarios import load
from devnet.simnet.schedule import Action, draw
from devnet.simnet.world import TWIN_OWNER

ROOT = Path(__file__).resolve().parents[3]
TWIN = TWIN_OWNER + 2


def _events(trace: list[str], kind: str) -> list[list[str]]:
    return [p for p in (line.split() for line in trace) if p[1] == kind]


def _frames_from(trace: list[str], owner: int) -> Counter[str]:
    """Per destination, the frames the owner's connections carried (as the network
    traced them: delivered, delayed or tampered)."""
    return Counter(p[3] for p in (line.split() for line in trace) if p[2] == str(owner))


def test_the_fault_kits_twin_scenario_plays_as_a_fixed_schedule_and_passes() -> None:
    scenario, actions, seconds, skipped = load(
        ROOT / "devnet" / "faults" / "scenarios" / "twin-validator.toml", 4
    )
    assert skipped == []
    assert [(a.t, a.kind, a.args) for a in actions] == [
        (3, "twin", {"node": 2}),
        (15, "untwin", {"node": 2}),
        (15, "heal", {}),
    ]
    spec = Spec(seed=scenario.seed, seconds=seconds, actions=actions, scenario="twin-validator")
    o = simulate(spec, keep_trace=True)
    assert o.ok, o.failures
    # node2 stopped cleanly and came back at once, at the height it had; the twin
    # started from the copy of that height, and stopped at the untwin.
    [stop] = _events(o.trace, "stop")
    [twin] = _events(o.trace, "twin")
    [untwin] = _events(o.trace, "untwin")
    assert stop[2] == twin[2] == "2" and stop[3] == twin[3]
    assert float(twin[0]) == 3.0 and float(untwin[0]) == 15.0
    # The twin dialled every peer with node2's hello and sent them frames.
    assert {p[3] for p in _events(o.trace, "connect") if p[2] == str(TWIN)} == {"0", "1", "3"}
    assert set(_frames_from(o.trace, TWIN)) == {"0", "1", "3"}
    # Nothing of it is left after the untwin.
    assert all(float(p[0]) < 15.0 for p in _events(o.trace, "connect") if p[2] == str(TWIN))
    assert "--scenario twin-validator" in spec.command()
    # The key-reuse check compared every link: the run ends at a virtual time that sums
    # to 19.999999999999996, and the key manager's counters were once stamped before
    # the nodes' (rounded to 20.0), so the check compared none.
    reuse = next(c for c in o.checks if c.name == "no-key-reuse")
    assert "on 6 links" in reuse.summary
    assert len(set(o.heights.values())) == 1


def test_a_twin_of_a_crashed_node_takes_its_place_and_the_original_gets_back_in() -> None:
    """While node2 is down its twin is the only node2 and its connections stay up
    (peers cannot dial it: it hears nothing, but what it sends, votes and keepalives, is
    accepted). When the twin stops and node2 restarts from its own disk, whose lease is
    behind the numbers the twin drew, node2 must get back into consensus at once. Before
    a connection's numbers started at the clock term (`qchain.qkd.frame`), its peers
    refused its frames as stale and node2 stayed at height 6 to the end."""
    actions = (
        Action(1.0, "crash", {"node": 2}),
        Action(1.5, "twin", {"node": 2}),
        Action(7.0, "untwin", {"node": 2}),
        Action(7.5, "restart", {"node": 2}),
        Action(8.0, "heal"),
    )
    o = simulate(Spec(seed=11, seconds=14, actions=actions), keep_trace=True)
    assert o.ok, o.failures
    [twin] = _events(o.trace, "twin")
    assert float(twin[0]) == 1.5
    # One connection to each peer for the twin's whole life, frames on each.
    assert Counter(p[3] for p in _events(o.trace, "connect") if p[2] == str(TWIN)) == {
        "0": 1,
        "1": 1,
        "3": 1,
    }
    assert min(_frames_from(o.trace, TWIN).values()) >= 10
    assert len(set(o.heights.values())) == 1
    restarts = [p for p in _events(o.trace, "start") if p[2] == "2"]
    assert [float(p[0]) for p in restarts] == [0.0, 7.5]


def test_drawn_schedules_twin_the_byzantine_node_in_some_runs() -> None:
    """A twin in about a fifth of the drawn runs, always of the run's one Byzantine
    node, started and stopped inside the fault window; a run without one has the same
    episodes as before twins were drawn (the twin is drawn last)."""
    twinned = 0
    for seed in range(200):
        actions = draw(random.Random(seed), 4, 20.0)
        twins = [a for a in actions if a.kind in ("twin", "untwin")]
        if not twins:
            continue
        twinned += 1
        heal = next(a.t for a in actions if a.kind == "heal")
        assert twins[0].kind == "twin" and all(a.t < heal for a in twins)
        traitors = {a.args["node"] for a in actions if a.kind in ("byzantine", "twin", "untwin")}
        assert len(traitors) == 1
        rng = random.Random(seed)
        rest = draw(rng, 4, 20.0)
        assert [a for a in rest if a.kind not in ("twin", "untwin")] == [
            a for a in actions if a.kind not in ("twin", "untwin")
        ]
    assert 15 <= twinned <= 60
