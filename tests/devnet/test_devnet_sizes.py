"""The finding, replayed on a real devnet (four validator processes and the key manager):
one partner account sends 64 `notary.anchor_many` transactions of 64 KiB each, the
largest there are, to every node at once, the first nonce last, so that all of them become
ready together. The
chain must go on committing, and every one of them must commit, within a deadline.

Before the size chain (`qchain.limits`) the leader reaped 4 MiB of transactions into a
block whose body no longer fitted the consensus codec, and forwarded batches no longer
fitted a frame: rounds climbed and nothing committed until the nodes were restarted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts.testing import sized_anchor_many
from devnet.local import LocalNetwork, running_network
from devnet.network import account_key, plan_network
from devnet.nodeapi import http_json
from qchain.client import AsyncClient
from qchain.types import MAX_TX_SIZE

pytestmark = pytest.mark.slow
SCHEME = "ed25519"
COUNT = 64
DEADLINE_S = 25.0


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[LocalNetwork]:
    plan = plan_network(base_port=None, scheme=SCHEME)
    # Past the first heights, so that the flood meets a chain in its steady state.
    with running_network(tmp_path, plan, min_height=3) as net:
        yield net


async def test_the_largest_transactions_all_at_once_commit(devnet: LocalNetwork) -> None:
    key = account_key("partner1", SCHEME)
    chain_id = devnet.plan.chain_id
    txs = [sized_anchor_many(key, chain_id=chain_id, nonce=n, label="flood") for n in range(COUNT)]
    assert {len(tx.encoded) for tx in txs} == {MAX_TX_SIZE}
    nodes = devnet.plan.nodes
    start = min(http_json(f"{n.api_url}/v1/status")["height"] for n in nodes)
    clients = [AsyncClient(n.api_url, timeout_s=DEADLINE_S) for n in nodes]
    try:
        # Nonce 0 last: until it comes the others wait behind the gap, then all are ready.
        held = await asyncio.gather(*(c.submit(tx) for c in clients for tx in txs[1:]))
        assert {info.status for info in held} == {"pending"}
        first = await asyncio.gather(*(c.submit(txs[0]) for c in clients))
        assert {info.status for info in first} <= {"pending", "committed"}
        deadline = time.monotonic() + DEADLINE_S
        done = await asyncio.gather(
            *(clients[i % len(clients)].submit_and_wait(tx, DEADLINE_S) for i, tx in enumerate(txs))
        )
        assert time.monotonic() < deadline + 1
        assert all(info.status == "committed" and info.receipt is not None for info in done)
        assert all(info.receipt.ok for info in done if info.receipt is not None)
        heights = {info.height for info in done}
        for c in clients:
            for tx in txs:
                assert (await c.tx_status(tx.hash)).status == "committed"
        top = max(heights)
        await asyncio.to_thread(devnet.wait_ready, top + 2, DEADLINE_S)
    finally:
        for c in clients:
            await c.close()
    assert min(heights) > start
    for n in nodes:
        status = http_json(f"{n.api_url}/v1/status")
        assert not status.get("alerts", {}).get("build-failed"), f"{n.name}: {status['alerts']}"
