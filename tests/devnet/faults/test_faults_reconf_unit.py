"""The fault kit's validator-set changes without a network: the scenario fields (`after`,
`network.reconfiguration`, the set-change actions, `activate_during`) are checked when a
scenario is loaded, and each set-change checker fails on a history that breaks it (a join
that never activated, a removed key that still signs, a member with another set, a write
missing from a removed validator's chain, an activation outside its window)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from devnet.faults.actions import StepRecord
from devnet.faults.history import BlockView, Op, StatusSample
from devnet.faults.reconf import (
    SetChange,
    SetEvidence,
    check_activation_window,
    check_membership,
    check_set_changes,
    check_signers,
    left_lost_writes,
    members_at,
    quorum,
)
from devnet.faults.scenario import Step, parse_scenario
from devnet.running import BackendError
from qchain.errors import ConfigError

JOIN = SetChange("add", "node4", 4, 50)
LEAVE = SetChange("remove", "node1", 1, 80)


def scenario(steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "duration_s": 10,
        "network": {"reconfiguration": True},
        "step": steps,
    }
    doc.update(extra)
    return doc


def test_set_change_steps_parse_with_after_and_their_parameters() -> None:
    sc = parse_scenario(
        scenario(
            [
                {"at": 2, "action": "add-validator", "operator": "node1", "via": "node0"},
                {"at": 1, "after": 0, "action": "remove-validator", "target": "node1"},
                {"at": 40, "after": 1, "action": "stop", "target": "node3", "duration_s": 8},
                {"at": 3, "action": "propose-rotate", "target": "node2"},
            ],
            checks={"activate_during": "partition"},
        )
    )
    assert [(s.index, s.action, s.after) for s in sc.steps] == [
        (0, "add-validator", None),
        (3, "propose-rotate", None),
        (1, "remove-validator", 0),
        (2, "stop", 1),
    ]
    assert sc.steps[0].param("operator") == "node1" and sc.steps[0].param("via") == "node0"
    assert sc.network.reconfiguration and not sc.docker_ok
    assert sc.checks.activate_during == "partition"


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (
            {"duration_s": 10, "step": [{"at": 1, "action": "add-validator"}]},
            "network.reconfiguration",
        ),
        (scenario([{"at": 1, "action": "kill", "target": "node1", "after": 0}]), "step[0].after"),
        (
            scenario(
                [
                    {"at": 1, "action": "kill", "target": "node1"},
                    {"at": 1, "action": "heal", "after": 1},
                ]
            ),
            "step[1].after",
        ),
        (scenario([{"at": 1, "action": "heal", "after": "0"}]), "step[0].after"),
        (scenario([{"at": 1, "action": "add-validator", "duration_s": 5}]), "step[0].duration_s"),
        (scenario([{"at": 1, "action": "add-validator", "operator": 3}]), "step[0].operator"),
        (scenario([{"at": 1, "action": "add-validator", "target": "node1"}]), "step[0].target"),
        (scenario([], checks={"activate_during": "nap"}), "checks.activate_during"),
        (scenario([], network={"reconfiguration": "yes"}), "network.reconfiguration"),
        (
            scenario([], network={"reconfiguration": True, "kme_per_node": True}),
            "network.reconfiguration",
        ),
    ],
)
def test_bad_set_change_fields_are_refused_by_name(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_scenario(doc)
    assert e.value.field == field


def test_a_chained_step_may_end_after_duration_but_an_absolute_one_may_not() -> None:
    parse_scenario(
        scenario(
            [
                {"at": 1, "action": "heal"},
                {"at": 30, "after": 0, "action": "kill", "target": "node1", "duration_s": 5},
            ]
        )
    )
    with pytest.raises(ConfigError):
        parse_scenario(scenario([{"at": 30, "action": "kill", "target": "node1", "duration_s": 5}]))


def test_the_set_of_a_height_follows_the_changes() -> None:
    genesis = (0, 1, 2, 3)
    assert members_at(genesis, [JOIN, LEAVE], 49) == {0, 1, 2, 3}
    assert members_at(genesis, [JOIN, LEAVE], 50) == {0, 1, 2, 3, 4}
    assert members_at(genesis, [JOIN, LEAVE], 80) == {0, 2, 3, 4}
    assert [quorum(n) for n in (4, 5, 7)] == [3, 4, 5]


def evidence(certs: dict[int, tuple[int, ...]], sets: dict[str, Any] | None = None) -> SetEvidence:
    return SetEvidence(
        genesis=(0, 1, 2, 3),
        sets={"node0": (0, 2, 3, 4)} if sets is None else sets,
        operators={0: "aa", 2: "bb", 3: "cc", 4: "dd"},
        certs={"node0": certs},
    )


GOOD = {40: (0, 1, 2), 55: (0, 1, 2, 4), 90: (0, 2, 4)}


def test_signers_hold_for_quorums_of_each_heights_set() -> None:
    res = check_signers(evidence(GOOD), [JOIN, LEAVE])
    assert res.ok, res
    assert res.data["signed_from_activation"] == {"add 4": 2, "remove 1": 0}


@pytest.mark.parametrize(
    ("certs", "why"),
    [
        ({**GOOD, 90: (0, 1, 2)}, "signed by [1]"),  # the removed key still signs
        ({**GOOD, 45: (0, 2, 4)}, "signed by [4]"),  # the joiner signs before activation
        ({**GOOD, 55: (0, 1, 2)}, "q = 4"),  # three of five
        ({40: (0, 1, 2), 55: (0, 1, 2, 3), 90: (0, 2, 3)}, "id 4 signed none"),  # never counts
        ({40: (0, 1, 2)}, "no certificate at or above 50"),  # nothing read after the change
    ],
)
def test_signers_fail_when_the_change_did_not_take(
    certs: dict[int, tuple[int, ...]], why: str
) -> None:
    res = check_signers(evidence(certs), [JOIN, LEAVE])
    assert not res.ok
    assert any(why in d for d in res.details), res.details


def test_signers_fail_on_a_receipt_a_member_did_not_serve() -> None:
    missing = dataclasses.replace(evidence(GOOD), unread=2)
    res = check_signers(missing, [JOIN, LEAVE])
    assert not res.ok
    assert "2 receipts of committed heights not served" in res.details


def test_signers_count_the_receipts_a_joiner_serves_below_its_activation() -> None:
    ev = evidence(GOOD)
    ev.certs[JOIN.node] = {40: (0, 1, 2), 45: (0, 1, 3), 55: (0, 1, 2, 4)}
    res = check_signers(ev, [JOIN, LEAVE])
    assert res.ok, res
    assert res.data["replayed"] == {JOIN.node: 2}


def test_membership_fails_on_a_member_with_another_set_or_operator() -> None:
    assert check_membership(evidence(GOOD), [JOIN, LEAVE], {4: "dd"}).ok
    # The join never activated on node2 (it still executes the genesis set).
    res = check_membership(
        evidence(GOOD, {"node0": (0, 2, 3, 4), "node2": (0, 1, 2, 3)}), [JOIN, LEAVE], {}
    )
    assert not res.ok and res.details == ("node2: (0, 1, 2, 3)",)
    res = check_membership(evidence(GOOD), [JOIN, LEAVE], {4: "bb"})
    assert not res.ok and "id 4: operator dd, expected bb" in res.details
    assert not check_membership(evidence(GOOD, {}), [JOIN, LEAVE], {}).ok


def record(action: str, index: int, **detail: Any) -> StepRecord:
    rec = StepRecord(Step(at=1, action=action, index=index), applied_at=1.0)
    rec.detail.update(detail)
    return rec


def test_set_changes_fail_on_a_failed_step_or_an_accepted_rotate() -> None:
    chains = {"node0": {5: BlockView(5, "h", "a", ("feed",))}}
    refused = record("propose-rotate", 1, status=422, code="rotation-not-supported", tx="beef")
    ok = check_set_changes([record("add-validator", 0), refused], [JOIN], chains)
    assert ok.ok and ok.data["rotates_refused"] == 1
    failed = record("add-validator", 0)
    failed.error = "add-validator: activation height 50 within 180 s"
    assert not check_set_changes([failed], [], chains).ok
    accepted = record("propose-rotate", 1, status=202, code="accepted", tx="beef")
    assert not check_set_changes([accepted], [], chains).ok
    in_chain = record("propose-rotate", 1, status=422, code="rotation-not-supported", tx="feed")
    res = check_set_changes([in_chain], [], chains)
    assert not res.ok and "is in a chain" in res.details[0]
    never = StepRecord(Step(at=1, action="remove-validator", index=2))
    assert not check_set_changes([never], [], chains).ok


def test_a_removed_validators_chain_is_held_to_writes_up_to_its_last_height() -> None:
    ops = [
        Op(0, "anchor", "admin", 0, "aa", 1.0, height=3),
        Op(1, "anchor", "admin", 1, "bb", 2.0, height=9),
    ]
    good = {"node1": {3: BlockView(3, "h3", "a3", ("aa",))}}
    [res] = left_lost_writes(ops, good)
    assert res.ok and res.name == "no-lost-writes node1 (left at 3)"
    lost = {"node1": {3: BlockView(3, "h3", "a3", ()), 4: BlockView(4, "h4", "a4", ())}}
    [res] = left_lost_writes(ops, lost)
    assert not res.ok and res.data["lost"] == ["aa"]


def test_activation_window_fails_when_the_change_activated_outside_the_step() -> None:
    statuses = [StatusSample(t, "node0", h) for t, h in ((10.0, 40), (20.0, 50), (30.0, 60))]
    partition = StepRecord(Step(at=5, action="partition", index=1), applied_at=5.0)
    heal = StepRecord(Step(at=8, action="heal", index=2), applied_at=25.0)
    res = check_activation_window([JOIN], statuses, [partition, heal], "partition", 40.0)
    assert res.ok, res
    early = StepRecord(Step(at=5, action="heal", index=2), applied_at=15.0)
    res = check_activation_window([JOIN], statuses, [partition, early], "partition", 40.0)
    assert not res.ok and "partition: 5.0s..15.0s" in res.details
    assert not check_activation_window([], statuses, [partition], "partition", 40.0).ok


def test_a_failed_partition_is_not_a_window() -> None:
    statuses = [StatusSample(20.0, "node0", 50)]
    partition = StepRecord(Step(at=5, action="partition", index=1), applied_at=5.0)
    partition.error = "connection refused"
    assert not check_activation_window([JOIN], statuses, [partition], "partition", 40.0).ok


class RulesNet:
    """Node admin APIs as dicts of transport rules; the nodes in `down` do not answer."""

    def __init__(self, names: list[str], down: set[str]) -> None:
        self.names = names
        self.down = down
        self.rules: dict[str, dict[str, Any]] = {n: {"out": {}, "in": {}} for n in names}
        self.plan = self

    @property
    def nodes(self) -> list[Any]:
        from types import SimpleNamespace

        return [SimpleNamespace(name=n, index=i) for i, n in enumerate(self.names)]

    def node_names(self) -> list[str]:
        return list(self.names)

    def admin(self, name: str, method: str, path: str, body: Any = None) -> Any:
        if name in self.down:
            raise OSError(f"{name}: connection refused")
        if method == "PUT":
            self.rules[name] = body
        return self.rules[name]


def test_a_partition_cuts_a_node_that_does_not_answer_from_the_other_side() -> None:
    from devnet.faults import transport

    names = ["node0", "node1", "node2", "node3", "node4"]
    net = RulesNet(names, down={"node4"})
    missed = transport.partition(net, ["node3"], ["node0", "node1", "node2", "node4"])  # type: ignore[arg-type]
    assert missed == ["node4"]
    assert net.rules["node3"]["in"]["blocked"] == [0, 1, 2, 4]
    assert net.rules["node3"]["out"]["blocked"] == [0, 1, 2, 4]
    assert net.rules["node0"]["in"]["blocked"] == [3]
    # Neither end of node3~node4 answers: that link would stay up.
    net = RulesNet(names, down={"node3", "node4"})
    with pytest.raises(BackendError):
        transport.partition(net, ["node3"], ["node0", "node1", "node2", "node4"])  # type: ignore[arg-type]
