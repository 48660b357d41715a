"""Key-aware pacing in a running network: four validators in one event loop whose key
manager makes keys for only a few blocks a second. Under a steady load the leader settles
at the block rate the keys pay for, with no key waits, and blocks grow so that the
transactions still commit; the same load on a fast key manager makes smaller blocks."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from devnet.network import account_key
from devnet.testing import anchor_tx, inproc_network
from node.keypacing import MARGIN
from node.runtime import Validator
from qchain.qkd.testing import wait_until

SLOW_BPS = 6_400
"""25 keys of 256 bits a second per pair: at about 10 keys per height on a pair, some two
blocks a second."""
FAST_BPS = 20_000_000
LOAD_TX_S = 150
SENDERS = ("partner1", "partner2")


@dataclass
class Window:
    blocks: int
    txs: int
    seconds: float
    leader_waits: int

    @property
    def txs_per_block(self) -> float:
        return self.txs / max(1, self.blocks)

    @property
    def blocks_per_s(self) -> float:
        return self.blocks / self.seconds


def _leader_waits(v: Validator) -> int:
    assert v.endpoint is not None
    return sum(p.counters.waits for p in v.endpoint.send_pools.values())


def _committed_txs(v: Validator, low: int, high: int) -> int:
    total = 0
    for h in range(low + 1, high + 1):
        block = v.chain.block(h)
        assert block is not None
        total += len(block.txs)
    return total


async def _load(nodes: list[Validator], stop: asyncio.Event) -> list[bytes]:
    """LOAD_TX_S notary anchors a second, each sender through its own follower (so
    forwarding to the leader is part of the key cost)."""
    chain_id = nodes[0].chain_id
    keys = [account_key(s, "ed25519") for s in SENDERS]
    hashes: list[bytes] = []
    nonce = 0
    started = time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - started) * LOAD_TX_S)
        while nonce < due:
            which = nonce % len(keys)
            tx = anchor_tx(keys[which], chain_id, nonce // len(keys), nonce.to_bytes(32, "big"))
            nodes[1 + which].submit_tx(tx)
            hashes.append(tx.hash)
            nonce += 1
        await asyncio.sleep(0.02)
    return hashes


async def _run(directory: Path, bps: int, settle_s: float, measure_s: float) -> Window:
    async with inproc_network(
        directory, heartbeat_ms=1000, bits_per_second=bps, initial_keys=300
    ) as nodes:
        await wait_until(lambda: all(v.chain.height() >= 2 for v in nodes), timeout=30)
        leader = nodes[0]
        stop = asyncio.Event()
        load = asyncio.create_task(_load(nodes, stop))
        await asyncio.sleep(settle_s)
        h0, w0, t0 = leader.chain.height(), _leader_waits(leader), time.monotonic()
        await asyncio.sleep(measure_s)
        h1, w1, t1 = leader.chain.height(), _leader_waits(leader), time.monotonic()
        stop.set()
        hashes = await load
        committed = await asyncio.gather(
            *(leader.wait_committed(h, timeout_s=20) for h in hashes[-50:])
        )
        assert all(c is not None for c in committed), "the load's last transactions commit"
        return Window(h1 - h0, _committed_txs(leader, h0, h1), t1 - t0, w1 - w0)


async def test_leader_paces_blocks_by_the_key_rate_and_throughput_holds(tmp_path: Path) -> None:
    slow = await _run(tmp_path / "slow", SLOW_BPS, settle_s=8, measure_s=12)
    fast = await _run(tmp_path / "fast", FAST_BPS, settle_s=3, measure_s=6)
    print(
        f"\nslow keys: {slow.blocks_per_s:.2f} blocks/s, {slow.txs_per_block:.0f} txs/block, "
        f"{slow.txs / slow.seconds:.0f} tx/s, leader waits {slow.leader_waits}; fast keys: "
        f"{fast.blocks_per_s:.2f} blocks/s, {fast.txs_per_block:.0f} txs/block, "
        f"{fast.txs / fast.seconds:.0f} tx/s"
    )
    pair_keys_s = SLOW_BPS / 256
    assert slow.leader_waits == 0, "no key waits on the leader once pacing has settled"
    assert slow.blocks_per_s <= MARGIN * pair_keys_s / 8, "a few blocks a second at most"
    assert slow.txs / slow.seconds >= 0.8 * LOAD_TX_S, "throughput holds"
    # On a busy machine the fast network is CPU-bound, hence margins of 1.2 only.
    assert fast.blocks_per_s > 1.2 * slow.blocks_per_s
    assert slow.txs_per_block > 1.2 * fast.txs_per_block, "blocks grow instead"
