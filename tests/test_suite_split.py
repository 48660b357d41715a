"""`make test` and `make test-sweeps` split the suite without losing a test (README,
Testing): a plain `pytest` leaves out exactly the tests marked `sweep`, `pytest -m sweep`
runs exactly those, and the smokes stay in `make test`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPLIT = (
    "tests/devnet/faults/test_faults_smoke.py",
    "tests/devnet/faults/test_faults_docker.py",
    "tests/devnet/faults/test_faults_reconf.py",
    "tests/consensus/sim/test_scenarios.py",
)
SMOKES = (
    "tests/devnet/faults/test_faults_smoke.py::test_smoke_scenario_holds[leader-crash]",
    "tests/devnet/faults/test_faults_smoke.py::test_hostile_scenario_holds[forged-frames]",
    "tests/devnet/faults/test_faults_smoke.py::test_kme_scenario_holds[one-site-kme-down]",
    "tests/devnet/faults/test_faults_reconf.py::test_set_change_scenario_holds[join-under-load]",
    "tests/devnet/faults/test_faults_docker.py::"
    "test_scenario_holds_through_the_docker_backend[leader-crash]",
    "tests/consensus/sim/test_scenarios.py::test_scenario_has_no_violation[S1-4-smoke]",
)


SWEEP = (
    "tests/devnet/faults/test_faults_smoke.py::test_hostile_scenario_holds[disk-bitflip]",
    "tests/devnet/faults/test_faults_smoke.py::test_kme_scenario_holds[kme-exhaust-and-refill]",
    "tests/devnet/faults/test_faults_reconf.py::test_set_change_scenario_holds[leave-under-load]",
    "tests/devnet/faults/test_faults_reconf.py::"
    "test_set_change_scenario_holds[join-during-partition]",
    "tests/devnet/faults/test_faults_reconf.py::"
    "test_rotate_key_adds_the_new_machine_removes_the_old_and_refuses_in_place",
    "tests/devnet/faults/test_faults_docker.py::"
    "test_scenario_holds_through_the_docker_backend[minority-partition]",
    "tests/consensus/sim/test_scenarios.py::test_scenario_has_no_violation[S1-4-sweep]",
)
LEFT_OUT = 9 + 2 + 1 + 3 + 22 * 2
"""Nine hostile-peer and two key-manager scenarios, one through Docker, three
validator-set scenarios (leave-under-load, join-during-partition, rotate-key), and the
seeds 8..27 of S1-S22 at two sizes."""


def test_make_test_leaves_out_the_sweep_tests_and_only_those() -> None:
    """A plain `pytest` (what `make test` runs) on the split files: the smokes are
    collected, and exactly the `sweep` tests are deselected (`-m 'not sweep'` in
    pyproject's addopts; `make test-sweeps` runs `pytest -m sweep`)."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *SPLIT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    collected = {line for line in done.stdout.splitlines() if "::" in line}
    assert set(SMOKES) <= collected, sorted(set(SMOKES) - collected)
    assert collected.isdisjoint(SWEEP), sorted(collected & set(SWEEP))
    assert not [t for t in collected if t.endswith("-sweep]")]
    summary = re.search(r"(\d+)/(\d+) tests collected \((\d+) deselected\)", done.stdout)
    assert summary is not None, done.stdout[-1000:]
    got, total, deselected = map(int, summary.groups())
    assert (got, deselected) == (len(collected), LEFT_OUT)
    assert got + deselected == total
