"""The fault kit's smoke set against a real local-process devnet (fresh per scenario):
leader crash, partition + heal, key exhaustion + recovery, an equivocating leader, every
hostile-peer scenario and the key-manager scenarios. Every check must hold; on failure the
report (and where to look) is in the assertion.

`make test` runs the four of `SMOKE`, one hostile-peer scenario and one key-manager
scenario (`IN_MAKE_TEST`); the others, about 20-60 s of real time each, are marked
`sweep` and run by `make test-sweeps`."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator

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

SMOKE = ("leader-crash", "minority-partition", "key-exhaustion-one-link", "equivocating-leader")
IN_MAKE_TEST = ("forged-frames", "one-site-kme-down")
"""The hostile-peer and key-manager scenarios `make test` runs; the rest are `sweep`."""


def _split(names: tuple[str, ...]) -> list[object]:
    """`names` as parameters, those outside `IN_MAKE_TEST` marked `sweep`."""
    return [pytest.param(n, marks=() if n in IN_MAKE_TEST else pytest.mark.sweep) for n in names]


@contextlib.asynccontextmanager
async def holds(name: str) -> AsyncIterator[tuple[RunResult, str, set[str]]]:
    """Run a shipped scenario on a fresh devnet; it must hold every check and every step
    must have run. Yields the result, its report and the names of its checks; the devnet
    is stopped afterwards (and deleted when everything held)."""
    result = await run_scenario(load_scenario(shipped_scenarios()[name]), log=lambda _: None)
    try:
        report = render(result)
        assert result.ok, report
        assert all(not s["error"] for s in result.step_stats), report
        yield result, report, {c.name for c in result.checks}
    finally:
        if result.kept_up:
            stop_network(LocalNetwork(result.directory))
            if result.ok:
                shutil.rmtree(result.directory, ignore_errors=True)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", SMOKE)
async def test_smoke_scenario_holds(name: str) -> None:
    async with holds(name) as (result, report, _):
        assert result.load["committed"] > 0, report


HOSTILE = (
    "hello-hijack",
    "forged-frames",
    "conn-flood",
    "partner-anchor-flood",
    "vote-flood",
    "future-time-leader",
    "far-height-vote",
    "far-claims",
    "unknown-batch-leader",
    "disk-bitflip",
)
"""One scenario per attack of docs/SECURITY.md: each must hold every check on a live
devnet, the chain committing through the attack (the `progress` check) and /readyz
telling the truth (the `readiness` check)."""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", _split(HOSTILE))
async def test_hostile_scenario_holds(name: str) -> None:
    async with holds(name) as (_, report, checks):
        assert any(k.startswith("progress") for k in checks), report
        assert "readiness" in checks, report


KME = ("kme-exhaust-and-refill", "kme-non-spec-errors", "one-site-kme-down")
"""Key managers misbehaving: every link drained and refilled (the chain halts, then
resumes within 5 s), vendor answers to exhaustion (404, 409, partial batches, a low
per-request cap, slow answers) under load, and one site's KME down on a devnet with one
KME per node."""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", _split(KME))
async def test_kme_scenario_holds(name: str) -> None:
    async with holds(name) as (result, report, checks):
        assert result.load["committed"] > 0, report
        if name == "kme-exhaust-and-refill":
            assert {"halt", "resume kme-drain@3s", "no-restart"} <= checks, report
        else:
            assert "acked-committed" in checks, report
            assert any(k.startswith("progress") for k in checks), report
