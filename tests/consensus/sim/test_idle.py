"""Idle mode (`propose_wait_max_ms=None`, CONSENSUS.md §4) in the simulator.

The driver tells the engine `MempoolNonEmpty` when a transaction arrives in an empty
mempool and after every commit, as the node does (`node/accounts.py`); transactions are
forwarded to every validator. Checked: an idle chain sends no frame at all; every transaction gets a
block, no block is empty (no heartbeat), and the network falls silent right after the last
commit; a stable leader that ignores transactions is suspected and replaced. All §6
invariants (safety, and liveness as "every transaction committed by every correct node")
run on every seed.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from consensus.sim.app import block_txs
from consensus.sim.config import MS
from consensus.sim.runner import replay_command
from consensus.sim.scenarios import build
from consensus.sim.world import Sim

SEEDS = 10


def _run(name: str, n: int, seed: int) -> Sim:
    cfg = replace(build(name, n, seed, 3), run_to_deadline=True)
    sim = Sim(cfg)
    sim.run()
    return sim


def _check(sim: Sim, name: str, n: int, seed: int) -> str:
    where = f"seed {seed}: {replay_command(name, n, seed)}"
    assert not sim.monitor.violations, (where, sim.monitor.violations)
    for nd in sim.correct_nodes():
        assert len(nd.included) == len(sim.cfg.txs_us), where
        empty = [h + 1 for h, b in enumerate(nd.chain_blocks) if not block_txs(b)]
        assert not empty, (where, f"node {nd.ident}: empty blocks at heights {empty}")
    return where


@pytest.mark.parametrize("n", [4, 7])
def test_idle_chain_sends_zero_frames(n: int) -> None:
    for seed in range(3):
        sim = _run("idle-quiet", n, seed)
        where = f"seed {seed}: {replay_command('idle-quiet', n, seed)}"
        assert sim.now >= 9_000 * MS, where
        assert not sim.monitor.violations, (where, sim.monitor.violations)
        assert sum(sim.frames.values()) == 0, (where, sim.frames)
        assert all(not nd.chain for nd in sim.all_nodes()), where


@pytest.mark.parametrize("n", [4, 7])
def test_every_transaction_gets_a_block_then_silence(n: int) -> None:
    for seed in range(SEEDS):
        sim = _run("idle-txs", n, seed)
        where = _check(sim, "idle-txs", n, seed)
        last_commit = max(sim.commit_times.values())
        assert sim.last_frame_us is not None, where
        # No next height follows for the last DONEs to ride (R7): they leave when the
        # retransmit timer of the last height fires, one round-0 timeout after its
        # decision. A node that terminated before its own timer fired answers with the
        # DONE it owes when the asker's DONE arrives, at the latest on the asker's
        # second retransmission.
        retx_us = sim.params.timeout_ms(0) * MS
        assert sim.last_frame_us - last_commit <= 2 * retx_us + 2 * sim.cfg.delay_us[1], where
        # and not before: a DONE that left at once would have ended the traffic sooner
        assert sim.last_frame_us - last_commit >= retx_us - 2 * sim.cfg.delay_us[1], where
        assert sim.now - sim.last_frame_us >= 1_000 * MS, where


@pytest.mark.parametrize("n", [4, 7])
def test_censoring_leader_is_suspected_and_replaced(n: int) -> None:
    for seed in range(SEEDS):
        sim = _run("idle-censor", n, seed)
        where = _check(sim, "idle-censor", n, seed)
        blocks = sim.correct_nodes()[0].chain_blocks
        assert blocks, where
        assert all(b.proposer != 0 for b in blocks), (where, [b.proposer for b in blocks])
        assert sim.monitor.decided_round[1] >= 1, where
        # once replaced, the new leader keeps the anchor: later heights decide in round 0
        assert all(sim.monitor.decided_round[h] == 0 for h in range(2, len(blocks) + 1)), where
