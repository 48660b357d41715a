"""A running chain changes its validator set (docs/CONSENSUS.md §10), with real processes
on 127.0.0.1: the simulated KMS and four validators whose genesis enables set changes,
then a fifth site, all driven through the HTTP APIs and the KMS's admin API.

1. under a steady load of transactions, a fifth site is made (`devnet.joining`), the KMS
   gets its SAE pairs at run time, node0's operator proposes its add and the operators
   of three of the four members approve it (more than 2/3); the fifth node starts from
   an empty store and catches up by replaying blocks; its readiness is sent, and the
   add activates D heights later. The KMS never gets the pair node3~node4: node3 reports
   the link that gets no keys in `/v1/qkd`, and the chain goes on with the others;
2. after the activation the fifth validator's votes count: with node3 stopped the chain
   still commits, which needs q(5) = 4 of the five, and with node3 and node4 stopped it
   commits nothing (three of five; the genesis set would have let it go on);
3. then validator 1 is removed with `qchain devnet remove-validator` (proposal, more
   than 2/3 of the five operators approve, activation, linger, node1 stopped and its SAE
   pairs dropped at the KMS); the chain commits with node4 stopped too (q(4) = 3 of 0,
   2, 3, 4; the five would need four), and every node has closed its link to node1;
4. every transaction acknowledged as committed is on every running node, and every node
   has the same block and app hash at every height;
5. the receipt of a transaction committed after the remove, fetched over HTTP with
   `qchain receipt get` (a real process), verifies with `qchain receipt verify --genesis
   genesis.json` alone through the set chain the node serves with it (links at both
   scheduling blocks); the same receipt with a set chain missing the remove's link, or
   with the set chain of the height below, fails.
"""

from __future__ import annotations

import asyncio
import random
import re
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from contracts import setchain
from contracts.setchain import ChainedReceipt
from devnet.joining import Governance, add_site, kms_links, link_sae
from devnet.local import LocalNetwork, running_network
from devnet.network import account_key, load_plan, plan_network
from devnet.nodeapi import http_json
from devnet.testing import anchor_tx, run_qchain
from node.genesis_file import load_genesis
from node.setlinks import LINGER_HEIGHTS
from qchain.client import AsyncClient
from qchain.types import Transaction

pytestmark = pytest.mark.slow
SCHEME = "ed25519"


class Writer:
    def __init__(self, net: LocalNetwork) -> None:
        self.key = account_key("partner1", SCHEME)
        self.chain_id = net.plan.chain_id
        self.nonce = 0

    def next_tx(self) -> Transaction:
        digest = (b"reconf!!" + self.nonce.to_bytes(8, "big")) * 2
        tx = anchor_tx(self.key, self.chain_id, self.nonce, digest)
        self.nonce += 1
        return tx


async def load(
    net: LocalNetwork, names: list[str], stop: asyncio.Event, acked: list[bytes]
) -> None:
    """Keep submitting through the running nodes among `names`; remember what was
    acknowledged as committed."""
    writer, rng = Writer(net), random.Random(21)
    while not stop.is_set():
        name = rng.choice([n for n in names if net.node_alive(n)])
        tx = writer.next_tx()
        try:
            async with AsyncClient(net.api_url(name), timeout_s=15) as c:
                info = await c.submit_and_wait(tx, timeout_s=10)
            if info.status == "committed":
                acked.append(tx.hash)
            else:
                writer.nonce -= 1
        except Exception:
            # A node stopping, or a wait that timed out: the same nonce and bytes again.
            writer.nonce -= 1
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)


def height(net: LocalNetwork, name: str) -> int:
    st = net.node_status(name)
    return -1 if st is None else int(st["height"])


async def wait_height(net: LocalNetwork, names: list[str], h: int, timeout: float = 40.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        heights = {n: height(net, n) for n in names}
        if all(x >= h for x in heights.values()):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not at height {h} in {timeout} s: {heights}")
        await asyncio.sleep(0.3)


def same_chain(net: LocalNetwork, names: list[str]) -> int:
    top = min(height(net, n) for n in names)
    for h in range(1, top + 1):
        seen = {
            (doc["hash"], doc["header"]["app_hash"])
            for doc in (http_json(f"{net.api_url(n)}/v1/blocks/{h}") for n in names)
        }
        assert len(seen) == 1, f"nodes disagree at height {h}: {seen}"
    return top


async def until_links(
    net: LocalNetwork, name: str, ok: Callable[[dict[str, Any]], bool], timeout: float = 10.0
) -> dict[str, Any]:
    """The node's QKD links (`/v1/qkd`) once `ok` holds of them."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        links: dict[str, Any] = http_json(f"{net.api_url(name)}/v1/qkd")["links"]
        if ok(links):
            return links
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{name}'s links in {timeout} s: {sorted(links)}")
        await asyncio.sleep(0.3)


def unkeyed(links: dict[str, Any], sae: str) -> bool:
    """Whether the link to `sae` exists and its send pool reports a key manager error."""
    return sae in links and links[sae]["send"]["health"]["state"] != "ok"


async def stalls(net: LocalNetwork, names: list[str], seconds: float = 4.0) -> None:
    """No height commits on `names` (at most the one that may have been in flight)."""
    before = max(height(net, n) for n in names)
    await asyncio.sleep(seconds)
    after = max(height(net, n) for n in names)
    assert after <= before + 1, f"{names} committed {before} -> {after} without a quorum"


async def verify_from_genesis(
    net: LocalNetwork, directory: Path, running: list[str], tx_hash: bytes, e1: int, e2: int
) -> None:
    """`qchain receipt get` of tx_hash from a running node (over HTTP, a real process),
    then `qchain receipt verify --genesis genesis.json` on the saved file: it passes, with
    the set chain's links at the two scheduling blocks; the same receipt with a set chain
    missing the remove's link, or proving the set of another height, fails."""
    genesis = str(net.dir / "genesis.json")
    saved = directory / "late-receipt.bin"
    problems = []
    for name in running:  # a node that holds the certificates the links need
        got = await asyncio.to_thread(
            run_qchain,
            "receipt",
            "get",
            tx_hash.hex(),
            "--node",
            net.api_url(name),
            "--out",
            str(saved),
            timeout=60,
        )
        if got.returncode == 0:
            break
        problems.append((name, got.stderr))
    assert got.returncode == 0, problems
    assert "with the set chain of its height" in got.stdout, got.stdout
    ok = await asyncio.to_thread(
        run_qchain, "receipt", "verify", str(saved), "--genesis", genesis, timeout=60
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "verified: transaction" in ok.stdout and "of 4 validators signed" in ok.stdout
    chained = setchain.decode_chained_receipt(saved.read_bytes())
    links = [x.header.height for x in chained.set_chain.links]
    delay = load_genesis(net.dir / "genesis.json").consensus.reconfig_delay
    assert links == [e1 - delay, e2 - delay], (links, e1, e2)
    forged_chains = [
        replace(chained.set_chain, links=chained.set_chain.links[:1]),
        setchain.decode_set_chain(
            http_bytes(f"{net.api_url(name)}/v1/setchain?height={chained.proof.header.height - 1}")
        ),
    ]
    for i, forged in enumerate(forged_chains):
        path = directory / f"forged-{i}.bin"
        path.write_bytes(ChainedReceipt(chained.proof, forged).encode())
        bad = await asyncio.to_thread(
            run_qchain, "receipt", "verify", str(path), "--genesis", genesis, timeout=60
        )
        assert bad.returncode != 0, (i, bad.stdout)
        assert "verified" not in bad.stdout


def http_bytes(url: str) -> bytes:
    req = urllib.request.Request(url, headers={"Accept": "application/msgpack"})
    with urllib.request.urlopen(req, timeout=30) as r:
        body: bytes = r.read()
    return body


def change_of(doc: dict[str, Any]) -> dict[str, Any]:
    ch: dict[str, Any] = doc["change"]
    return ch


@pytest.mark.timeout(600)  # two changes with their linger, then four CLI processes
async def test_a_fifth_validator_joins_and_counts_then_one_of_the_first_four_leaves(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    directory = tmp_path_factory.mktemp("reconf")
    plan = plan_network(base_port=None, scheme=SCHEME, heartbeat_ms=300, reconfiguration=True)
    with running_network(directory, plan) as net:
        first = ["node0", "node1", "node2", "node3"]
        stop, acked = asyncio.Event(), []
        loader = asyncio.create_task(load(net, first, stop, acked))
        try:
            # 1. the add: a new site, its SAE pairs, proposal, approvals, catch-up, ready
            # (the KMS never gets the pair node3~node4: that link has no keys; node3 is
            # the one stopped below, so the missing link costs no more than that crash)
            node = add_site(net.dir)
            link_sae(net.dir, node, skip={"SAE-node3"})
            net.plan = load_plan(net.dir)
            gov = Governance(net.plan, net.api_url("node0"))
            cid = await gov.propose_add(node)
            status = await gov.approve(cid, [0, 1, 2])
            assert change_of(status)["status"] == "approved", status
            assert change_of(status)["id"] == 4
            net.start_node("node4")
            # node3 opened its link to the joiner, reports that it gets no keys for it
            # (/v1/qkd), and the chain goes on with the links it has
            links = await until_links(net, "node3", lambda x: unkeyed(x, "SAE-node4"))
            assert links["SAE-node4"]["send"]["health"]["http_status"] == 401
            top = height(net, "node0")
            await wait_height(net, ["node4"], top)
            joiner = http_json(f"{net.api_url('node4')}/v1/status")
            assert (joiner["member"], joiner["validators"]) == (False, 4), joiner
            status = await gov.ready(cid, node)
            change = change_of(status)
            assert change["status"] == "scheduled", status
            e1 = int(change["activation_height"])
            await wait_height(net, [*first, "node4"], e1 + 3)
            async with AsyncClient(net.api_url("node4")) as c:
                now = await c.query("validators", "set", {"height": e1})
            assert [r["id"] for r in now["records"]] == [0, 1, 2, 3, 4]
            joiner = http_json(f"{net.api_url('node4')}/v1/status")
            assert (joiner["member"], joiner["validators"]) == (True, 5), joiner

            # 2. its votes count: without node3, q(5) = 4 needs node4; without node3 and
            # node4 no height commits (three of five), where the genesis set would
            net.stop_node("node3")
            h = max(height(net, n) for n in ["node0", "node1", "node2", "node4"])
            await wait_height(net, ["node0", "node1", "node2", "node4"], h + 3)
            net.stop_node("node4")
            await stalls(net, ["node0", "node1", "node2"])
            net.start_node("node4")
            net.start_node("node3")
            h = max(height(net, n) for n in first)
            await wait_height(net, [*first, "node4"], h + 2)

            # 3. the remove of validator 1
            loader_names = ["node0", "node2", "node3", "node4"]
            stop.set()
            await loader
            stop = asyncio.Event()
            loader = asyncio.create_task(load(net, loader_names, stop, acked))
            # through the CLI: proposal, approvals, activation, linger, then node1 is
            # stopped and its SAE pairs dropped at the KMS
            done = await asyncio.to_thread(
                run_qchain,
                "devnet",
                "remove-validator",
                "node1",
                "--dir",
                str(net.dir),
                timeout=180,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            found = re.search(r"not a member from height (\d+)", done.stdout)
            assert found, done.stdout
            e2 = int(found.group(1))
            assert not net.node_alive("node1")
            assert http_json(f"{net.api_url('node0')}/v1/status")["validators"] == 4
            assert height(net, "node0") >= e2 + LINGER_HEIGHTS
            # without node1 and node4, 0, 2 and 3 are q(4) = 3 of V(e2); V(e1) needs 4
            net.stop_node("node4")
            h = max(height(net, n) for n in ["node0", "node2", "node3"])
            await wait_height(net, ["node0", "node2", "node3"], h + 3)
            net.start_node("node4")
            h = max(height(net, n) for n in loader_names)
            await wait_height(net, loader_names, h + 3)
            for name in loader_names:
                # Links follow the set once a second (`node.runtime.SET_LINKS_S`).
                qkd = await until_links(net, name, lambda links: "SAE-node1" not in links)
                assert "SAE-node4" in qkd or name == "node4"
            for name in loader_names:  # the metrics of a node whose peer left
                with urllib.request.urlopen(f"{net.api_url(name)}/metrics", timeout=5) as r:
                    assert r.status == 200 and b"qchain_" in r.read()
            kms = kms_links(net)
            assert kms and not [k for k in kms if "SAE-node1" in k.split("~")]
        finally:
            stop.set()
            await loader

        # 4. nothing acknowledged is lost, one chain everywhere
        running = ["node0", "node2", "node3", "node4"]
        await wait_height(net, running, max(height(net, n) for n in running))
        assert len(acked) > 10
        heights: dict[bytes, int] = {}
        for name in running:
            async with AsyncClient(net.api_url(name)) as c:
                for tx_hash in acked:
                    info = await c.tx_status(tx_hash)
                    assert info.status == "committed", (name, tx_hash.hex())
                    heights[tx_hash] = info.height or 0
        assert same_chain(net, running) > e2

        # 5. a receipt from after both changes verifies offline from the genesis alone,
        # through the set chain the node serves with it; with a forged one it does not
        late = max(acked, key=lambda x: heights[x])
        assert heights[late] > e2, (heights[late], e2)
        await verify_from_genesis(net, directory, running, late, e1, e2)
        for name in running:
            alerts = http_json(f"{net.api_url(name)}/v1/status").get("alerts", {})
            assert not alerts.get("fatal"), (name, alerts)
