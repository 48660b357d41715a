"""Four validators in one event loop, over real TCP on 127.0.0.1, with an in-process key
manager: every node commits the same blocks, certificates form, receipts verify."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devnet.network import account_key
from devnet.testing import anchor_tx, inproc_network
from node.runtime import Validator
from node.transport import FaultRules
from qchain.config import NodeConfig
from qchain.qkd.testing import wait_until
from qchain.types import Transaction


@pytest.fixture
async def network(tmp_path: Path) -> AsyncIterator[list[Validator]]:
    async for nodes in _network(tmp_path, heartbeat_ms=200):
        yield nodes


@pytest.fixture
async def idle_network(tmp_path: Path) -> AsyncIterator[list[Validator]]:
    async for nodes in _network(tmp_path, heartbeat_ms=None):
        yield nodes


async def _network(tmp_path: Path, heartbeat_ms: int | None) -> AsyncIterator[list[Validator]]:
    async with inproc_network(tmp_path, heartbeat_ms=heartbeat_ms) as nodes:
        yield nodes


async def test_validators_agree_and_commit_transactions(network: list[Validator]) -> None:
    await wait_until(lambda: all(v.chain.height() >= 2 for v in network), timeout=20)
    key = account_key("partner1", "ed25519")
    chain_id = network[0].chain_id
    hashes = []
    for nonce in range(6):
        tx = anchor_tx(key, chain_id, nonce, bytes([nonce]) * 32, f"doc {nonce}", "report")
        status, new = network[nonce % 4].submit_tx(tx)
        assert new and status.state == "pending"
        hashes.append(tx.hash)
    results = await asyncio.gather(*(network[0].wait_committed(h, timeout_s=20) for h in hashes))
    assert all(r is not None and r.receipt is not None for r in results)
    top = min(v.chain.height() for v in network)
    for h in range(1, top + 1):
        blocks = {v.chain.block(h).hash for v in network}  # type: ignore[union-attr]
        assert len(blocks) == 1, f"height {h} differs"
    await wait_until(
        lambda: all(v.receipt_proof(hashes[-1]) is not None for v in network), timeout=10
    )
    genesis_keys = network[0].validator_keys
    for v in network:
        proof = v.receipt_proof(hashes[-1])
        assert proof is not None
        proof.verify(chain_id, genesis_keys)
        assert proof.receipt.ok, proof.receipt.message


def _anchor_tx(chain_id: str, nonce: int, tag: int = 0) -> Transaction:
    key = account_key("partner2", "ed25519")
    digest = bytes([tag, nonce % 256, nonce // 256]) * 10 + b"\x00\x01"
    return anchor_tx(key, chain_id, nonce, digest, f"doc {nonce}", "report")


async def test_partitioned_node_catches_up_after_heal(network: list[Validator]) -> None:
    await wait_until(lambda: all(v.chain.height() >= 1 for v in network), timeout=20)
    isolated = network[3]
    others = network[:3]
    isolated.set_faults(
        FaultRules(blocked=frozenset({0, 1, 2})), FaultRules(blocked=frozenset({0, 1, 2}))
    )
    for v in others:
        v.set_faults(FaultRules(blocked=frozenset({3})), FaultRules(blocked=frozenset({3})))
    start = max(v.chain.height() for v in others)
    await wait_until(lambda: all(v.chain.height() >= start + 5 for v in others), timeout=30)
    behind = isolated.chain.height()
    assert behind < start + 5
    for v in network:
        v.set_faults(FaultRules(), FaultRules())
    target = max(v.chain.height() for v in others)
    await wait_until(lambda: isolated.chain.height() >= target, timeout=30)
    for h in range(1, target + 1):
        assert isolated.chain.block(h) == others[0].chain.block(h)


async def test_corrupted_and_replayed_frames_are_rejected_and_counted(
    network: list[Validator],
) -> None:
    await wait_until(lambda: all(v.chain.height() >= 1 for v in network), timeout=20)
    network[1].set_faults(FaultRules(corrupt_pct=30.0, duplicate_pct=30.0), FaultRules())
    start = min(v.chain.height() for v in network)
    await wait_until(lambda: all(v.chain.height() >= start + 4 for v in network), timeout=30)

    def rejected_from_1() -> int:
        total = 0
        for v in (network[0], network[2], network[3]):
            link = v.qkd_status()["links"]["SAE-node1"]
            total += sum(link["transport"]["rejected"].values())
        return total

    await wait_until(lambda: rejected_from_1() > 0, timeout=20)
    network[1].set_faults(FaultRules(), FaultRules())
    top = min(v.chain.height() for v in network)
    for h in range(1, top + 1):
        assert len({v.chain.block(h).hash for v in network}) == 1  # type: ignore[union-attr]


async def test_restarted_validator_catches_up_and_keeps_committing(
    tmp_path: Path, network: list[Validator]
) -> None:
    await wait_until(lambda: all(v.chain.height() >= 2 for v in network), timeout=20)
    old = network[2]
    cfg, source = old.cfg, old._key_source
    await old.stop()
    others = [network[0], network[1], network[3]]
    start = max(v.chain.height() for v in others)
    await wait_until(lambda: all(v.chain.height() >= start + 3 for v in others), timeout=30)
    restarted = Validator(cfg, key_source=source)
    network[2] = restarted
    await restarted.start()
    target = max(v.chain.height() for v in others)
    await wait_until(lambda: restarted.chain.height() >= target + 2, timeout=30)
    for h in range(1, target + 1):
        assert restarted.chain.block(h) == others[0].chain.block(h)
    # Blocks it committed while catching up get their certificates from the peers' replies.
    missed = range(start + 1, target - 1)
    await wait_until(
        lambda: all(restarted.chain.certificate(h) is not None for h in missed), timeout=20
    )


def _frames_sent(nodes: list[Validator]) -> int:
    return sum(
        st.frames_sent
        for v in nodes
        if v.transport is not None
        for st in v.transport.stats.values()
    )


SETTLE_S = 0.2
"""No frame sent for this long: what was in flight (handshakes, a commit's DONEs and
signatures) has gone out."""
SILENCE_S = 0.5
"""The window that shows the chain silent: ten sync intervals and five first-round
timeouts of the test profile, so any timer-driven sending would show in it (transport
keepalives, every 30 s, are beyond it on purpose)."""


async def _settled(nodes: list[Validator], timeout: float = 10.0) -> int:
    """The count of frames sent once none went out for SETTLE_S (polled until timeout)."""
    deadline = asyncio.get_running_loop().time() + timeout
    last = _frames_sent(nodes)
    while True:
        await asyncio.sleep(SETTLE_S)
        now = _frames_sent(nodes)
        if now == last:
            return now
        assert asyncio.get_running_loop().time() < deadline, "the network never settled"
        last = now


async def test_idle_chain_without_heartbeat_spends_no_keys_until_a_transaction(
    idle_network: list[Validator],
) -> None:
    nodes = idle_network
    await wait_until(lambda: all(len(v.transport.connected_peers()) == 3 for v in nodes))  # type: ignore[union-attr]
    before = await _settled(nodes)
    await asyncio.sleep(SILENCE_S)
    assert _frames_sent(nodes) == before, "an idle chain with no heartbeat sends nothing"
    assert all(v.chain.height() == 0 for v in nodes)
    tx = _anchor_tx(nodes[0].chain_id, 0, tag=9)
    nodes[2].submit_tx(tx)
    status = await nodes[2].wait_committed(tx.hash, timeout_s=20)
    assert status is not None and status.receipt is not None and status.receipt.ok
    height = status.height
    await wait_until(lambda: all(v.chain.height() >= (height or 0) for v in nodes), timeout=10)
    settled = await _settled(nodes)
    await asyncio.sleep(SILENCE_S)
    assert _frames_sent(nodes) == settled, "after the commit the chain falls silent again"
    assert settled > before, "deciding the transaction's block took frames"


async def test_readiness_says_when_the_chain_stops(
    network: list[Validator], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node whose process answers but whose chain stopped committing is not ready; it is
    ready again once blocks commit."""
    monkeypatch.setattr("node.health.STALL_MIN_S", 1.5)
    await wait_until(lambda: all(v.chain.height() >= 1 for v in network), timeout=20)
    assert all(v.health()[0] for v in network)
    # Half of the links cut both ways (0,1 | 2,3): no quorum, every process still up.
    for v in network:
        cut = frozenset({0, 1} if v.me >= 2 else {2, 3})
        v.set_faults(FaultRules(blocked=cut), FaultRules(blocked=cut))

    def stalled(v: Validator) -> bool:
        ready, reasons = v.health()
        return not ready and any("no block committed" in r for r in reasons)

    await wait_until(lambda: all(stalled(v) for v in network), timeout=20)
    for v in network:
        v.set_faults(FaultRules(), FaultRules())
    await wait_until(lambda: all(v.health()[0] for v in network), timeout=30)


async def test_readiness_counts_a_peer_both_disconnected_and_starved_once(
    network: list[Validator], monkeypatch: pytest.MonkeyPatch
) -> None:
    await wait_until(lambda: all(v.chain.height() >= 1 for v in network), timeout=20)
    v = network[0]
    assert v.transport is not None
    monkeypatch.setattr(v.transport, "connected_peers", lambda: [1, 2])
    monkeypatch.setattr(v.health_checks, "starved_links", lambda: {3: "SAE-node3 degraded for 9s"})
    ready, reasons = v.health()
    assert ready, reasons  # peers 1 and 2 and this node: a quorum of 3
    monkeypatch.setattr(v.health_checks, "starved_links", lambda: {2: "SAE-node2 degraded for 9s"})
    ready, reasons = v.health()
    assert not ready and any("no keys from the key manager" in r for r in reasons)


async def test_verify_workers_check_forwarded_transactions_and_stop_with_the_node(
    tmp_path: Path,
) -> None:
    """With one verify worker per validator, forwarded transactions are checked in the
    workers, every one commits, and stopping a validator leaves no worker behind."""

    def one_worker(cfg: NodeConfig) -> NodeConfig:
        return dataclasses.replace(cfg, node=dataclasses.replace(cfg.node, verify_workers=1))

    async with inproc_network(tmp_path, configure=one_worker) as nodes:
        await wait_until(lambda: all(v.chain.height() >= 2 for v in nodes), timeout=20)
        key = account_key("partner1", "ed25519")
        chain_id = nodes[0].chain_id
        txs = [
            anchor_tx(key, chain_id, n, bytes([n]) * 32, f"doc {n}", "report") for n in range(40)
        ]
        leader = nodes[0].current_leader()
        followers = [v for i, v in enumerate(nodes) if i != leader]
        for i, tx in enumerate(txs):  # a follower admits it and forwards it to the leader
            followers[i % len(followers)].submit_tx(tx)
        done = await asyncio.gather(*(nodes[0].wait_committed(t.hash, 30) for t in txs))
        assert all(d is not None for d in done)
        pools = [v.forwarder.verify_pool for v in nodes]
        assert sum(p.verified for p in pools) > 0, "the workers checked forwarded ones"
        pids = [pid for p in pools for pid in p.worker_pids()]
        assert pids
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
