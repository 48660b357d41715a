"""The fault kit's smoke set against a real local-process devnet (fresh per scenario):
leader crash, partition + heal, key exhaustion + recovery, an equivocating leader, every
hostile-peer scenario and the key-manager scenarios. Every check must hold; on failure the
report (and where to look) is in the assertion."""

from __future__ import annotations

import shutil

import pytest

from devnet.faults.backends import LocalTarget
from devnet.faults.runner import render, run_scenario, stop_network
from devnet.faults.scenario import load_scenario, shipped_scenarios

pytestmark = [
    pytest.mark.slow,
    # devnet.local starts daemons tracked by PID files: their Popen objects are dropped
    # while the processes run, by design.
    pytest.mark.filterwarnings("ignore:subprocess .* is still running:ResourceWarning"),
]

SMOKE = ("leader-crash", "minority-partition", "key-exhaustion-one-link", "equivocating-leader")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", SMOKE)
async def test_smoke_scenario_holds(name: str) -> None:
    scenario = load_scenario(shipped_scenarios()[name])
    result = await run_scenario(scenario, log=lambda _: None)
    report = render(result)
    try:
        assert result.ok, report
        assert result.load["committed"] > 0, report
        assert all(not s["error"] for s in result.step_stats), report
    finally:
        if result.kept_up:
            stop_network(LocalTarget(result.directory))


HOSTILE = (
    "hello-hijack",
    "forged-frames",
    "conn-flood",
    "partner-anchor-flood",
    "vote-flood",
    "future-time-leader",
    "far-height-vote",
    "far-claims",
    "disk-bitflip",
)
"""One scenario per attack of docs/SECURITY.md: each must hold every check on a live
devnet, the chain committing through the attack (the `progress` check) and /readyz
telling the truth (the `readiness` check)."""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", HOSTILE)
async def test_hostile_scenario_holds(name: str) -> None:
    scenario = load_scenario(shipped_scenarios()[name])
    result = await run_scenario(scenario, log=lambda _: None)
    report = render(result)
    try:
        assert result.ok, report
        verdict = {c.name: c.ok for c in result.checks}
        assert any(k.startswith("progress") for k in verdict), report
        assert "readiness" in verdict, report
        assert all(not s["error"] for s in result.step_stats), report
    finally:
        if result.kept_up:
            stop_network(LocalTarget(result.directory))
            shutil.rmtree(result.directory, ignore_errors=True)


KME = ("kme-exhaust-and-refill", "kme-non-spec-errors", "one-site-kme-down")
"""Key managers misbehaving: every link drained and refilled (the chain halts, then
resumes within 5 s), vendor answers to exhaustion (404, 409, partial batches, a low
per-request cap, slow answers) under load, and one site's KME down on a devnet with one
KME per node."""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", KME)
async def test_kme_scenario_holds(name: str) -> None:
    scenario = load_scenario(shipped_scenarios()[name])
    result = await run_scenario(scenario, log=lambda _: None)
    report = render(result)
    try:
        assert result.ok, report
        assert result.load["committed"] > 0, report
        assert all(not s["error"] for s in result.step_stats), report
        verdict = {c.name for c in result.checks}
        if name == "kme-exhaust-and-refill":
            assert {"halt", "resume kme-drain@3s", "no-restart"} <= verdict, report
        else:
            assert "acked-committed" in verdict, report
            assert any(k.startswith("progress") for k in verdict), report
    finally:
        if result.kept_up:
            stop_network(LocalTarget(result.directory))
            shutil.rmtree(result.directory, ignore_errors=True)
