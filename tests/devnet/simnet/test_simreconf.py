"""The whole-network simulator on a chain whose validator set changes (`--reconf`).

A spare site joins (its key manager pairs added at run time, the node started from an
empty disk as a learner, readiness, activation) and then a member of the genesis is
removed and stopped, beside the seeded faults; every check passes, the joiner's and the
removed node's chains agree with the others', and the node's sets are the chain's. A node
that counts a change one height early (`--mutant early-activation`) is caught. A run
replays to the same event trace."""

from __future__ import annotations

import pytest

from devnet.simnet.reconf import Changes
from devnet.simnet.reconfcheck import check_certificate_signers, check_sets_followed
from devnet.simnet.run import Outcome, Spec, simulate
from devnet.simnet.schedule import Action

SMOKE_SECONDS = 14.0


def _check(o: Outcome, name: str) -> object:
    return next(c for c in o.checks if c.name == name)


@pytest.fixture(scope="module")
def faulty() -> Outcome:
    return simulate(Spec(seed=2, seconds=SMOKE_SECONDS, reconf=True))


@pytest.mark.timeout(900)
def test_a_validator_joins_and_one_leaves_under_faults_and_every_check_passes(
    faulty: Outcome,
) -> None:
    assert faulty.ok, faulty.failures
    flow = _check(faulty, "reconf-flow")
    e_add, e_remove = flow.data["e_add"], flow.data["e_remove"]  # type: ignore[attr-defined]
    assert 1 < e_add < e_remove
    # the joiner and the three members left run to the end; the removed one stopped
    assert set(faulty.heights) == {"node0", "node1", "node2", "node3", "node4"}
    ended = sorted(h for h in faulty.heights.values())
    assert ended[0] >= e_remove
    names = {c.name for c in faulty.checks}
    assert {"sets-followed", "certificates-by-set", "agreement", "liveness"} <= names


@pytest.mark.timeout(900)
def test_the_same_seed_replays_to_the_same_trace() -> None:
    """Past the readiness transaction (about 3.3 s at this seed): its ML-DSA-65 signature
    is the fixed one (`READY_SIGNATURES`), so every later block hash is the seed's."""
    spec = Spec(seed=2, seconds=5, reconf=True)
    first, again = simulate(spec, keep_trace=True), simulate(spec)
    assert any(" reconf add scheduled " in line for line in first.trace)
    assert not any("ready-signed-afresh" in line for line in first.trace)
    assert (again.digest, again.events) == (first.digest, first.events)


@pytest.mark.timeout(900)
def test_a_node_that_activates_a_change_one_height_early_is_caught() -> None:
    o = simulate(Spec(seed=1, seconds=5, faults=False, reconf=True, mutant="early-activation"))
    assert not o.ok
    assert not _check(o, "sets-followed").ok  # type: ignore[attr-defined]


def test_the_set_checks_judge_by_the_chains_sets() -> None:
    truth = {1: (0, 1, 2, 3), 2: (0, 1, 2, 3), 3: (0, 1, 2, 3, 4), 4: (0, 1, 2, 3, 4)}
    ch = Changes()
    ch.starts = {0: {1: {((0, 1, 2, 3), (0, 1, 2, 3))}, 2: {((0, 1, 2, 3), (0, 1, 2, 3, 4))}}}
    assert check_sets_followed(ch.starts, truth, ["node0"]).ok
    ch.starts[1] = {2: {((0, 1, 2, 3, 4), (0, 1, 2, 3, 4))}}
    bad = check_sets_followed(ch.starts, truth, ["node0", "node1"])
    assert not bad.ok and "node1 started height 2" in bad.details[0]
    # the joiner's signature before its activation; a certificate short of q(h)
    assert check_certificate_signers({"node0": {2: (0, 1, 2), 3: (0, 1, 2, 4)}}, truth).ok
    early = check_certificate_signers({"node0": {2: (0, 1, 4)}}, truth)
    assert not early.ok and "[4]" in early.details[0]
    short = check_certificate_signers({"node0": {3: (0, 1, 2)}}, truth)
    assert not short.ok and "q(h) is 4" in short.details[0]


@pytest.mark.timeout(900)
def test_a_joiner_restarted_before_it_replays_block_1_catches_up() -> None:
    """The joiner (node 4, started at 1.14 s by seed 6's changes) crashes at 1.826 s,
    still at height 0, and restarts at once. It used to be refused block 1 for good
    ("app hash differs from the header's": its genesis app hash was computed over a
    store where genesis was applied already), found by a drawn twin of the joiner."""
    actions = (
        Action(1.826, "crash", {"node": 4}),
        Action(1.827, "restart", {"node": 4}),
        Action(3.0, "heal"),
    )
    o = simulate(Spec(seed=6, seconds=12, reconf=True, actions=actions), keep_trace=True)
    assert o.ok, o.failures
    crashes = [line.split() for line in o.trace if line.split()[1] == "crash"]
    [crash] = [c for c in crashes if c[2] == "4"]
    assert crash[0] == "1.826000" and crash[3:5] == ["timed", "0"]  # at height 0
    assert o.heights["node4"] >= max(o.heights.values()) - 2
