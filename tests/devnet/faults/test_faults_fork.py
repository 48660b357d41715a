"""Proof that the checkers can fail on a real chain: two separately-run chains from the
SAME genesis (the history an unsafe quorum would produce: two sides deciding on their
own) are fed to the checkers as one network; agreement must report the fork and the
lost-write checker the writes one side acknowledged that the other never saw.

A lowered-quorum node build would need hooks in `node/`; two runs of one genesis give the
checkers the same evidence without touching the node."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from devnet.faults.checkers import check_agreement, check_app_hash, check_lost_writes
from devnet.faults.history import ChainViews, History, Op
from devnet.faults.load import Accounts
from devnet.faults.observer import Observer
from devnet.kms import write_kms_files
from devnet.local import LocalNetwork
from devnet.network import plan_network, write_network
from qchain.client import AsyncClient

pytestmark = pytest.mark.slow


async def one_run(net: LocalNetwork, tag: str) -> tuple[ChainViews, list[Op]]:
    try:
        net.start_all(min_height=2, timeout=60)
        accounts = Accounts(net.plan.scheme, net.plan.chain_id)
        ops = []
        async with AsyncClient(net.plan.nodes[0].api_url) as c:
            await accounts.sync(c)
            for i in range(3):
                digest = hashlib.sha256(f"{tag}/{i}".encode()).digest()
                tx = accounts.tx("admin", "notary", "anchor", [digest, "sha256", tag, "fork", b""])
                info = await c.submit_and_wait(tx, timeout_s=30)
                ops.append(
                    Op(
                        i,
                        "anchor",
                        "admin",
                        tx.nonce,
                        tx.hash.hex(),
                        0.0,
                        "node0",
                        0.0,
                        0.0,
                        info.height,
                    )
                )
        top = max(o.height or 0 for o in ops)
        net.wait_ready(min_height=top, timeout=60)
        observer = Observer(net, History(), lambda: 0.0)
        try:
            chains = await observer.chains()
        finally:
            await observer.close()
        return {
            n: {h: b for h, b in blocks.items() if h <= top} for n, blocks in chains.items()
        }, ops
    finally:
        net.stop()


def wipe(directory: Path, net: LocalNetwork) -> None:
    for n in net.plan.nodes:
        data = directory / "nodes" / n.name / "data"
        shutil.rmtree(data)
        data.mkdir()


@pytest.mark.timeout(240)
async def test_two_chains_from_one_genesis_fail_agreement_and_lost_writes(tmp_path: Path) -> None:
    plan = plan_network(base_port=None, scheme="ed25519", heartbeat_ms=300)
    write_network(tmp_path, plan)
    write_kms_files(tmp_path, plan)
    net = LocalNetwork(tmp_path)
    chains_a, ops_a = await one_run(net, "side-a")
    wipe(tmp_path, net)
    chains_b, _ = await one_run(net, "side-b")

    # Each run on its own is a healthy chain.
    assert check_agreement(chains_a).ok and check_agreement(chains_b).ok
    assert check_lost_writes(ops_a, chains_a).ok

    merged: ChainViews = {f"a-{n}": c for n, c in chains_a.items()}
    merged |= {f"b-{n}": c for n, c in chains_b.items()}
    agreement = check_agreement(merged)
    assert not agreement.ok and "height 1:" in agreement.details[0]
    assert not check_app_hash(merged).ok or not agreement.ok
    lost = check_lost_writes(ops_a, merged)
    # Side a's writes are missing from side b's nodes; the ones side b's shorter chains
    # cannot show yet count as not checkable, not as lost.
    lost_set = set(lost.data["lost"])
    assert not lost.ok and lost_set and lost_set <= {o.tx_hash for o in ops_a}
