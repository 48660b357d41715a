"""Devnets whose validators take keys from KMEs other than the one shared simulated KMS,
as processes on 127.0.0.1, driven through the real API with the SDK:

- `--external-kme`: a simulated KMS that the test starts itself (`qchain kms --config`),
  naming its SAEs with integers and identifying them by the serial number of their client
  certificates (mutual TLS), as some vendor KMEs do; the devnet starts no key manager and
  every node commits;
- `--kme-per-node`: one simulated KME process per validator, relaying keys to each other,
  without delay and with one (then a slave's `dec_keys` can come before the key: its KME
  answers 400 and the node's client retries); every node commits under light load.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devnet.kme import load_kme_map
from devnet.local import LocalNetwork, running_network
from devnet.network import account_key, free_ports, plan_network
from devnet.nodeapi import http_json
from devnet.testing import anchor_tx
from qchain.client import AsyncClient
from qchain.qkd.certs import write_kms_certs
from qchain.types import Transaction

pytestmark = pytest.mark.slow
SCHEME = "ed25519"
SAE_IDS = ("1001", "1002", "1003", "1004")


def anchors(net: LocalNetwork, role: str, count: int) -> list[Transaction]:
    key = account_key(role, SCHEME)
    return [
        anchor_tx(key, net.plan.chain_id, nonce, bytes([nonce + 1]) * 32) for nonce in range(count)
    ]


async def commit_everywhere(net: LocalNetwork, txs: list[Transaction]) -> None:
    """Submit round-robin to the nodes, then see each transaction committed on every
    node at the same height."""
    nodes = net.plan.nodes
    for i, tx in enumerate(txs):
        async with AsyncClient(nodes[i % len(nodes)].api_url) as c:
            assert (await c.submit(tx)).status == "pending"
    async with AsyncClient(nodes[0].api_url) as c:
        heights = [(await c.submit_and_wait(tx, timeout_s=30)).height for tx in txs]
    deadline = time.monotonic() + 30
    for n in nodes:
        async with AsyncClient(n.api_url) as c:
            for tx, height in zip(txs, heights, strict=True):
                while (info := await c.tx_status(tx.hash)).status != "committed":
                    assert time.monotonic() < deadline, f"{n.name} did not commit {tx.hash.hex()}"
                    await asyncio.sleep(0.1)
                assert info.height == height, n.name


@pytest.fixture
def external_kms(tmp_path: Path) -> Iterator[Path]:
    """A simulated KMS with integer SAE ids, started as its own process; yields the
    external-KME map that points every node at it."""
    kdir = tmp_path / "site-kms"
    write_kms_certs(kdir / "tls", list(SAE_IDS), ("127.0.0.1", "localhost"), serial_from_id=True)
    port, admin_port = free_ports(2)
    token = "external-kms-admin-token"
    saes = "".join(f"[[sae]]\nid = {s}\n" for s in SAE_IDS)
    (kdir / "kms.toml").write_text(
        f"""full_mesh = true
[server]
port = {port}
[tls]
ca_cert = "tls/ca.pem"
cert = "tls/kms.pem"
key = "tls/kms.key"
[admin]
port = {admin_port}
token = "{token}"
[behaviour]
sae_identity = "serial"
[defaults]
profile = "lab"
max_key_count = 20000
initial_key_count = 2048
{saes}"""
    )
    nodes = {
        f"node{i}": {
            "kme_url": f"https://127.0.0.1:{port}",
            "sae_id": int(sae),
            "client_cert": f"tls/sae-{sae}.pem",
            "client_key": f"tls/sae-{sae}.key",
            "ca_cert": "tls/ca.pem",
        }
        for i, sae in enumerate(SAE_IDS)
    }
    kme_map = kdir / "kmes.json"
    kme_map.write_text(json.dumps({"nodes": nodes}))
    with open(kdir / "kms.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "qchain.cli", "kms", "--config", str(kdir / "kms.toml")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    http_json(f"http://127.0.0.1:{admin_port}/admin/links", 1.0, token)
                    break
                except OSError:
                    assert proc.poll() is None, (kdir / "kms.log").read_text()
                    assert time.monotonic() < deadline, "the external KMS did not start"
                    time.sleep(0.05)
            yield kme_map
        finally:
            proc.terminate()
            proc.wait(timeout=10)


@pytest.mark.timeout(60)
async def test_external_kme_with_integer_sae_ids_commits_on_every_node(
    tmp_path: Path, external_kms: Path
) -> None:
    names = [f"node{i}" for i in range(4)]
    plan = plan_network(
        base_port=None,
        scheme=SCHEME,
        heartbeat_ms=300,
        external_kmes=load_kme_map(external_kms, names),
    )
    assert [n.sae_id for n in plan.nodes] == list(SAE_IDS)
    with running_network(tmp_path / "net", plan) as net:
        assert [s.name for s in net.services()] == names
        assert not (net.dir / "kms").exists()
        await commit_everywhere(net, anchors(net, "partner1", 6))
        qkd = http_json(f"{plan.nodes[0].api_url}/v1/qkd")
        assert qkd["sae_id"] == "1001" and set(qkd["links"]) == {"1002", "1003", "1004"}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("relay_delay_ms", [0, 200])
async def test_kme_per_node_commits_on_every_node_under_light_load(
    tmp_path: Path, relay_delay_ms: int
) -> None:
    plan = plan_network(
        base_port=None,
        scheme=SCHEME,
        heartbeat_ms=300,
        kme_mode="per-node",
        sae_ids="site-{i}",
        relay_delay_ms=relay_delay_ms,
    )
    with running_network(tmp_path / "net", plan) as net:
        kmes = [f"kme-node{i}" for i in range(4)]
        assert [s.name for s in net.services()] == [*kmes, *(n.name for n in plan.nodes)]
        await asyncio.gather(
            commit_everywhere(net, anchors(net, "partner1", 6)),
            commit_everywhere(net, anchors(net, "partner2", 6)),
        )
        token = (net.dir / "kms" / "admin.token").read_text().strip()
        for name, admin in net.kms_services().items():
            links = http_json(f"{admin}/admin/links", 2.0, token)["links"]
            taken = sum(lk["counters"]["keys_to_master"] for lk in links)
            assert taken > 0, f"{name} handed out no keys"
        if relay_delay_ms == 0:
            for n in plan.nodes:
                # No relay delay: a slave never asks its KME before the key is there.
                assert "not resolved" not in net.log_file(n.name).read_text(), n.name
