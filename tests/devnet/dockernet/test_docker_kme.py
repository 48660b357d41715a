"""The Docker devnet with one KME per node (`init --docker`, its default): four
`kme-nodeI` containers relay keys to each other over the compose network, a transaction
sent to each node commits on every node, and the fault kit's Docker backend reaches every
KME: the other three commit while node3's KME is down, and node3 catches up after."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devnet.dockernet.network import ComposeNetwork
from devnet.dockernet.plan import DockerSettings, plan_docker_network
from devnet.network import account_key
from devnet.testing import anchor_tx
from qchain.client import AsyncClient

from .docker_support import (
    IMAGE,
    build_image,
    compose_devnet,
    docker_lock,
    free_base_port,
    skip_without_docker,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]
PROJECT = "qchain-kmedocker"
SCHEME = "ed25519"


@pytest.fixture
def kme_net(tmp_path: Path) -> Iterator[ComposeNetwork]:
    skip_without_docker("Docker KME-per-node test")
    with docker_lock():
        build_image(IMAGE)
        plan = plan_docker_network(
            scheme=SCHEME, heartbeat_ms=500, kme_mode="per-node", sae_ids="site-{i}"
        )
        settings = DockerSettings(project=PROJECT, base_port=free_base_port(4), image=IMAGE)
        with compose_devnet(tmp_path / "net", plan, settings) as net:
            yield net


@pytest.mark.timeout(300)
async def test_kme_per_node_commits_on_every_node(kme_net: ComposeNetwork) -> None:
    net = kme_net
    assert net.services()[:4] == [f"kme-node{i}" for i in range(4)]
    await asyncio.to_thread(net.wait_ready, 1, 180)
    names = [n.name for n in net.plan.nodes]
    key = account_key("partner1", SCHEME)
    txs = [
        anchor_tx(key, net.plan.chain_id, i, bytes([0xD0 + i]) * 32, f"site doc {i}", "report")
        for i in range(4)
    ]
    for name, tx in zip(names, txs, strict=True):
        async with AsyncClient(net.api_url(name)) as c:
            await c.submit(tx)
    async with AsyncClient(net.api_url(names[0])) as c:
        for tx in txs:
            assert (await c.submit_and_wait(tx, timeout_s=60)).status == "committed"
    deadline = time.monotonic() + 60
    for name in names:
        async with AsyncClient(net.api_url(name)) as c:
            for tx in txs:
                while (await c.tx_status(tx.hash)).status != "committed":
                    assert time.monotonic() < deadline, f"{name} did not commit"
                    await asyncio.sleep(0.2)
    # The fault kit reaches every KME container: their links, and one site's KME down
    # (the other three keep committing) and back (node3 catches up).
    target = ComposeNetwork(net.dir)
    try:
        assert target.kme_names() == [f"kme-node{i}" for i in range(4)]
        for kme in target.kme_names():
            links = await asyncio.to_thread(target.kme_admin, kme, "GET", "/admin/links")
            assert links["links"], kme
        await asyncio.to_thread(target.stop_kme, "kme-node3")
        start = _height(net, "node0")
        deadline = time.monotonic() + 60
        while _height(net, "node0") < start + 5:
            assert time.monotonic() < deadline, "the other three stopped committing"
            await asyncio.sleep(0.2)
        await asyncio.to_thread(target.start_kme, "kme-node3")
        top = _height(net, "node0")
        deadline = time.monotonic() + 60
        while _height(net, "node3") < top:
            assert time.monotonic() < deadline, "node3 did not catch up"
            await asyncio.sleep(0.2)
    finally:
        target.close()


def _height(net: ComposeNetwork, name: str) -> int:
    status = net.node_status(name)
    return 0 if status is None else int(status["height"])
