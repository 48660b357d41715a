"""A devnet whose accounts sign with SM2, on real processes (the key manager and four
validators on 127.0.0.1): SM2-signed notary anchors, sent as canonical bytes and as the
JSON form to different nodes, commit with the same blocks everywhere; the API shows the
scheme; the receipts verify offline; an SM2 signature of other bytes is refused at the
door with problem+json."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devnet.local import LocalNetwork, running_network
from devnet.network import account_key, plan_network
from devnet.nodeapi import http_call, http_json
from devnet.testing import anchor_tx, run_qchain
from qchain.client import AsyncClient
from qchain.jsonform import tx_to_json
from qchain.keys import SigningKey

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    directory = tmp_path_factory.mktemp("devnet-sm2")
    with running_network(
        directory, plan_network(base_port=None, scheme="sm2", heartbeat_ms=300)
    ) as net:
        yield net


async def test_sm2_anchors_commit_everywhere(devnet: LocalNetwork) -> None:
    genesis = json.loads((devnet.dir / "genesis.json").read_text())
    assert {m["scheme"] for m in genesis["members"]} == {"sm2"}
    chain_id = devnet.plan.chain_id
    nodes = devnet.plan.nodes
    keys = [account_key(role, "sm2") for role in ("partner1", "partner2")]
    txs = [
        anchor_tx(key, chain_id, nonce, bytes([i, nonce]) * 16)
        for i, key in enumerate(keys)
        for nonce in range(3)
    ]
    assert all(len(tx.signature) == 64 and len(tx.public_key) == 65 for tx in txs)
    # Bytes to one node, the JSON form to another.
    for i, tx in enumerate(txs):
        node = nodes[i % len(nodes)]
        if i % 2:
            doc = http_call(f"{node.api_url}/v1/txs", "POST", tx_to_json(tx))
            assert doc["tx_hash"] == tx.hash.hex()
        else:
            async with AsyncClient(node.api_url) as c:
                assert (await c.submit(tx)).tx_hash == tx.hash
    async with AsyncClient(nodes[3].api_url) as c:
        for tx in txs:
            done = await c.submit_and_wait(tx, timeout_s=30)
            assert done.status == "committed" and done.receipt is not None and done.receipt.ok
        (devnet.dir / "receipt-sm2.bin").write_bytes(await c.receipt_bytes(txs[-1].hash))
        account = await c.account(keys[0].address)
        assert account["scheme"] == "sm2" and account["nonce"] == 3
        shown = await c.transaction(txs[0].hash)
        assert shown == txs[0]
    for n in nodes:
        doc = http_json(f"{n.api_url}/v1/txs/{txs[-1].hash.hex()}")
        assert doc["status"] == "committed"
    verify = run_qchain(
        "receipt",
        "verify",
        str(devnet.dir / "receipt-sm2.bin"),
        "--genesis",
        str(devnet.dir / "genesis.json"),
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_bad_sm2_signature_is_refused_with_problem_json(devnet: LocalNetwork) -> None:
    key = account_key("auditor", "sm2")
    tx = anchor_tx(key, devnet.plan.chain_id, 0, b"\x09" * 32)
    doc = tx_to_json(tx)
    sig = bytearray(tx.signature)
    sig[40] ^= 1
    doc["signature"] = sig.hex()
    req = urllib.request.Request(
        f"{devnet.plan.nodes[1].api_url}/v1/txs",
        data=json.dumps(doc).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 422
    problem = json.loads(e.value.read())
    assert problem["type"].endswith("/bad-signature"), problem


def test_devnet_init_writes_sm2_accounts(tmp_path: Path) -> None:
    d = tmp_path / "net"
    done = subprocess.run(
        [sys.executable, "-m", "qchain.cli", "devnet", "init", "--dir", str(d), "--scheme", "sm2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    key = SigningKey.load(d / "accounts" / "partner1.json")
    assert key.scheme.value == "sm2" and key == account_key("partner1", "sm2")
    genesis = json.loads((d / "genesis.json").read_text())
    assert {m["scheme"] for m in genesis["members"]} == {"sm2"}
