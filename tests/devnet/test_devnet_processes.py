"""A real devnet: the key manager and four validator processes on 127.0.0.1, driven only
through their HTTP and admin APIs (the same path as `qchain devnet init` + `up`).

- transactions submitted to different nodes commit with the same blocks and app hashes
  everywhere, and their receipts verify offline against the genesis keys;
- SIGKILL of a non-leader and of the leader at random moments under load: each restarts,
  catches up, no honest node ever saw conflicting votes, and every transaction that was
  acknowledged as committed is on every node exactly once;
- a partition of one node through the admin API, then heal: the other three go on and the
  isolated node catches up;
- corrupted and replayed frames (admin fault rules) are rejected and counted in /v1/qkd.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devnet.local import LocalNetwork, running_network
from devnet.network import account_key, plan_network
from devnet.nodeapi import http_json
from devnet.testing import anchor_tx, run_qchain
from qchain.client import AsyncClient
from qchain.types import Transaction

pytestmark = pytest.mark.slow
SCHEME = "ed25519"
EQUIVOCATION_ALERTS = ("vote-equivocation", "leader-equivocation", "done-equivocation")


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    directory = tmp_path_factory.mktemp("devnet")
    with running_network(
        directory, plan_network(base_port=None, scheme=SCHEME, heartbeat_ms=300)
    ) as net:
        yield net


def admin(net: LocalNetwork, node: str, method: str, path: str, body: object = None) -> Any:
    n = next(x for x in net.plan.nodes if x.name == node)
    token = (net.dir / "nodes" / node / "admin.token").read_text().strip()
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{n.admin_url}{path}", data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


class Writer:
    """Submits anchor transactions from one account with consecutive nonces."""

    def __init__(self, net: LocalNetwork, role: str) -> None:
        self.key = account_key(role, SCHEME)
        self.chain_id = net.plan.chain_id
        self.nonce = 0
        self.tag = random.Random(role).randrange(1 << 30)

    def next_tx(self) -> Transaction:
        digest = (self.tag.to_bytes(4, "big") + self.nonce.to_bytes(4, "big")) * 4
        tx = anchor_tx(self.key, self.chain_id, self.nonce, digest)
        self.nonce += 1
        return tx


async def statuses(net: LocalNetwork) -> dict[str, dict[str, Any]]:
    out = {}
    for n in net.plan.nodes:
        st = net.node_status(n.name)
        if st is not None:
            out[n.name] = st
    return out


async def wait_heights(net: LocalNetwork, height: int, timeout: float = 60.0) -> None:
    await asyncio.to_thread(net.wait_ready, height, timeout)


def assert_same_chain(net: LocalNetwork) -> int:
    """Every node has the same block hash and app hash at every common height."""
    heads = []
    for n in net.plan.nodes:
        heads.append(http_json(f"{n.api_url}/v1/status")["height"])
    top = min(heads)
    for h in range(1, top + 1):
        seen = set()
        for n in net.plan.nodes:
            doc = http_json(f"{n.api_url}/v1/blocks/{h}")
            seen.add((doc["hash"], doc["header"]["app_hash"]))
        assert len(seen) == 1, f"nodes disagree at height {h}: {seen}"
    return top


def assert_no_equivocation(net: LocalNetwork) -> None:
    for n in net.plan.nodes:
        alerts = http_json(f"{n.api_url}/v1/status").get("alerts", {})
        for kind in EQUIVOCATION_ALERTS:
            assert not alerts.get(kind), f"{n.name} saw {kind}: {alerts}"


async def test_transactions_commit_everywhere_and_receipts_verify(devnet: LocalNetwork) -> None:
    writer = Writer(devnet, "partner1")
    txs = []
    for i in range(8):
        node = devnet.plan.nodes[i % 4]
        tx = writer.next_tx()
        async with AsyncClient(node.api_url) as c:
            info = await c.submit(tx)
            assert info.new and info.status == "pending"
        txs.append(tx)
    async with AsyncClient(devnet.plan.nodes[0].api_url) as c:
        for tx in txs:
            # Submitting the same bytes again is safe: node0 waits for the commit.
            done = await c.submit_and_wait(tx, timeout_s=30)
            assert done.status == "committed"
            assert done.receipt is not None and done.receipt.ok
        receipt_file = devnet.dir / "receipt.bin"
        receipt_file.write_bytes(await c.receipt_bytes(txs[-1].hash))
    assert_same_chain(devnet)
    verify = run_qchain(
        "receipt",
        "verify",
        str(receipt_file),
        "--genesis",
        str(devnet.dir / "genesis.json"),
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


async def _load(net: LocalNetwork, writer: Writer, stop: asyncio.Event, acked: list[bytes]) -> None:
    """Keep submitting through live nodes; remember what was acknowledged as committed."""
    rng = random.Random(7)
    while not stop.is_set():
        node = rng.choice(net.plan.nodes)
        tx = writer.next_tx()
        try:
            async with AsyncClient(node.api_url, timeout_s=15) as c:
                info = await c.submit_and_wait(tx, timeout_s=10)
            if info.status == "committed":
                acked.append(tx.hash)
            else:
                writer.nonce -= 1
        except Exception:
            # The node was down or the wait timed out: the same nonce is reused with the
            # same bytes, which is always safe.
            writer.nonce -= 1
            await asyncio.sleep(0.05)


async def test_sigkill_validators_under_load(devnet: LocalNetwork) -> None:
    writer = Writer(devnet, "partner2")
    acked: list[bytes] = []
    stop = asyncio.Event()
    load = asyncio.create_task(_load(devnet, writer, stop, acked))
    rng = random.Random(2026)
    try:
        for round_no in range(4):
            st = await statuses(devnet)
            leader = next(iter(st.values()))["leader"]
            victim = (
                f"node{leader}"
                if round_no % 2 == 1
                else next(n.name for n in devnet.plan.nodes if n.index != leader)
            )
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            devnet.kill(victim)
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            devnet.start(victim)
            await asyncio.to_thread(devnet.wait_ready, 1, 60, [victim])
    finally:
        stop.set()
        await load
    top = max(s["height"] for s in (await statuses(devnet)).values())
    await wait_heights(devnet, top, timeout=60)
    assert len(acked) > 0
    assert_same_chain(devnet)
    assert_no_equivocation(devnet)
    for n in devnet.plan.nodes:
        async with AsyncClient(n.api_url) as c:
            for h in acked:
                info = await c.tx_status(h)
                assert info.status == "committed", f"{n.name} lost {h.hex()}"


async def test_partition_one_node_then_heal(devnet: LocalNetwork) -> None:
    nodes = devnet.plan.nodes
    isolated = nodes[3]
    others = [n for n in nodes if n is not isolated]
    cut = {"blocked": [n.index for n in others]}
    admin(devnet, isolated.name, "PUT", "/admin/faults", {"out": cut, "in": cut})
    for n in others:
        rule = {"blocked": [isolated.index]}
        admin(devnet, n.name, "PUT", "/admin/faults", {"out": rule, "in": rule})
    try:
        start = max(s["height"] for s in (await statuses(devnet)).values())
        await asyncio.to_thread(devnet.wait_ready, start + 3, 60, [n.name for n in others])
    finally:
        for n in nodes:
            admin(devnet, n.name, "DELETE", "/admin/faults")
    top = max(s["height"] for s in (await statuses(devnet)).values())
    await asyncio.to_thread(devnet.wait_ready, top, 60, [isolated.name])
    assert_same_chain(devnet)


async def test_corrupt_and_replayed_frames_are_counted(devnet: LocalNetwork) -> None:
    bad = devnet.plan.nodes[1]
    admin(
        devnet, bad.name, "PUT", "/admin/faults", {"out": {"corrupt_pct": 40, "duplicate_pct": 40}}
    )
    try:
        start = max(s["height"] for s in (await statuses(devnet)).values())
        await wait_heights(devnet, start + 3)
    finally:
        admin(devnet, bad.name, "DELETE", "/admin/faults")
    rejected = 0
    for n in devnet.plan.nodes:
        if n is bad:
            continue
        link = http_json(f"{n.api_url}/v1/qkd")["links"][bad.sae_id]
        rejected += sum(link["transport"]["rejected"].values())
    assert rejected > 0
    assert_same_chain(devnet)


def post_tx(net: LocalNetwork, raw: bytes) -> tuple[int, dict[str, Any]]:
    node = net.plan.nodes[0]
    req = urllib.request.Request(
        f"{node.api_url}/v1/txs",
        data=raw,
        method="POST",
        headers={"Content-Type": "application/msgpack"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        assert e.headers.get("Content-Type", "").startswith("application/problem+json")
        return e.code, json.loads(e.read())


async def test_bad_transactions_get_their_problem_types(devnet: LocalNetwork) -> None:
    writer = Writer(devnet, "auditor")
    good = writer.next_tx()
    status, doc = post_tx(devnet, good.encode())
    assert status == 202 and doc["status"] == "pending"
    status, doc = post_tx(devnet, good.encode())
    assert status == 200, "the same bytes again are not an error"
    async with AsyncClient(devnet.plan.nodes[0].api_url) as c:
        await c.submit_and_wait(good, timeout_s=30)

    def problem(raw: bytes) -> tuple[int, str, dict[str, Any]]:
        code, body = post_tx(devnet, raw)
        return code, body["type"].rsplit("/", 1)[-1], body

    assert problem(good.encode()[:-7])[:2] == (400, "malformed-encoding")
    assert problem(b"\x00" * (70 * 1024))[0] == 413
    sig = bytearray(good.signature)
    sig[0] ^= 1
    forged = dataclasses.replace(writer.next_tx(), signature=bytes(sig))
    writer.nonce -= 1
    assert problem(forged.encode())[:2] == (422, "bad-signature")
    other_chain = Writer(devnet, "auditor")
    other_chain.chain_id = "another-chain"
    other_chain.nonce = writer.nonce
    assert problem(other_chain.next_tx().encode())[:2] == (422, "wrong-chain")
    code, body = post_tx(devnet, good.encode())
    assert code == 200 and body["status"] == "committed", "a replay of a committed tx"
    stale = Writer(devnet, "auditor")
    stale.tag += 1
    code, kind, body = problem(stale.next_tx().encode())
    assert (code, kind) == (422, "nonce-mismatch")
    assert body["expected_nonce"] == 1 and body["nonce"] == 0


def test_schemathesis_finds_no_server_error(devnet: LocalNetwork) -> None:
    node = devnet.plan.nodes[0]
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{node.api_url}/openapi.json",
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,"
            "content_type_conformance",
            "--exclude-path",
            "/v1/events",
            "--max-time",
            "25",
            "--phases",
            "examples,coverage,fuzzing",
            "--workers",
            "1",
            "--seed",
            "20261127",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=devnet.dir,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
