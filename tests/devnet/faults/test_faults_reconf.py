"""The fault kit's validator-set scenarios against a real local-process devnet whose
genesis enables set changes (fresh per scenario; docs/CONSENSUS.md Revision 1.20): a
join under load, a leave under load, a join while one old member is cut off, and a key
rotation done as the node supports it (a new record added, the old one removed; an
in-place rotate refused). Every check must hold; on failure the report (and where to
look) is in the assertion.

`make test` runs join-under-load, the cheapest; the other three (1-3 minutes each on
the 2-core machine) are marked `sweep` and run by `make test-sweeps`."""

from __future__ import annotations

import shutil

import pytest

from devnet.faults.report import RunResult, render
from devnet.faults.runner import run_scenario, stop_network
from devnet.faults.scenario import load_scenario, shipped_scenarios
from devnet.local import LocalNetwork

pytestmark = [
    pytest.mark.slow,
    # devnet.local starts daemons tracked by PID files: their Popen objects are dropped
    # while the processes run, by design.
    pytest.mark.filterwarnings("ignore:subprocess .* is still running:ResourceWarning"),
]

IN_MAKE_TEST = "join-under-load"
SET_CHECKS = {"set-changes", "membership", "signers", "acked-committed"}


async def holds(name: str) -> tuple[RunResult, str, dict[str, dict[str, object]]]:
    """Run a shipped scenario on a fresh devnet; every check must hold and every step
    must have run. Returns the result, its report and its checks by name (with data);
    the devnet is stopped (and deleted when everything held)."""
    result = await run_scenario(load_scenario(shipped_scenarios()[name]), log=lambda _: None)
    try:
        report = render(result)
        assert result.ok, report
        assert all(not s["error"] for s in result.step_stats), report
        checks = {c.name: c.to_json() for c in result.checks}
        assert set(checks) >= SET_CHECKS, report
        assert any(k.startswith("progress") for k in checks) or name == "join-during-partition"
        return result, report, checks
    finally:
        if result.kept_up:
            stop_network(LocalNetwork(result.directory))
            if result.ok:
                shutil.rmtree(result.directory, ignore_errors=True)


def _param(name: str) -> object:
    return pytest.param(name, marks=() if name == IN_MAKE_TEST else pytest.mark.sweep)


def _changes(checks: dict[str, dict[str, object]]) -> list[tuple[object, ...]]:
    data = checks["set-changes"]["data"]
    assert isinstance(data, dict)
    return [(c["kind"], c["node"], c["vid"]) for c in data["changes"]]


def _set(checks: dict[str, dict[str, object]]) -> object:
    data = checks["membership"]["data"]
    assert isinstance(data, dict)
    return data["set"]


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "name", [_param(n) for n in ("join-under-load", "leave-under-load", "join-during-partition")]
)
async def test_set_change_scenario_holds(name: str) -> None:
    result, report, checks = await holds(name)
    assert result.load["committed"] > 0, report
    signed = checks["signers"]["data"]
    assert isinstance(signed, dict)
    # The joiner's signature is in certificates from its activation on: its votes count.
    assert signed["signed_from_activation"]["add 4"] > 0, report
    # It serves the receipts of heights it replayed before its activation, their
    # certificates asked of its peers (node.certbackfill).
    assert signed["unread"] == 0 and signed["replayed"]["node4"] > 0, report
    if name == "leave-under-load":
        assert _changes(checks) == [("add", "node4", 4), ("remove", "node1", 1)], report
        assert _set(checks) == [0, 2, 3, 4], report
        assert signed["signed_from_activation"]["remove 1"] == 0, report
        assert any(k.startswith("no-lost-writes node1 (left at") for k in checks), report
    else:
        assert _changes(checks) == [("add", "node4", 4)], report
        assert _set(checks) == [0, 1, 2, 3, 4], report
    if name == "join-during-partition":
        assert checks["activation-window"]["ok"], report


@pytest.mark.sweep
@pytest.mark.timeout(600)
async def test_rotate_key_adds_the_new_machine_removes_the_old_and_refuses_in_place() -> None:
    _, report, checks = await holds("rotate-key")
    data = checks["set-changes"]["data"]
    assert isinstance(data, dict)
    # Two in-place rotates (of the old machine's id, then of the new one's) answered 422.
    assert data["rotates_refused"] == 2, report
    assert _changes(checks) == [("add", "node4", 4), ("remove", "node1", 1)], report
    assert _set(checks) == [0, 2, 3, 4], report
    signed = checks["signers"]["data"]
    assert isinstance(signed, dict)
    assert signed["signed_from_activation"]["remove 1"] == 0, report
    assert signed["signed_from_activation"]["add 4"] > 0, report
    # It serves the receipts of heights it replayed before its activation, their
    # certificates asked of its peers (node.certbackfill).
    assert signed["unread"] == 0 and signed["replayed"]["node4"] > 0, report
    assert any(k.startswith("no-lost-writes node1 (left at") for k in checks), report
