"""`/metrics` of a live node in a 4-process devnet: every documented metric family is
exposed with a help text, and the counters move when transactions flow. The Grafana
dashboard and the monitoring README name the same metrics."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devnet.local import LocalNetwork, running_network
from devnet.network import NodePlan, account_key, plan_network
from node.metrics import DOCUMENTED
from qchain.types import Transaction, new_transaction

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    directory = tmp_path_factory.mktemp("metrics-devnet")
    with running_network(
        directory, plan_network(base_port=None, scheme="ed25519", heartbeat_ms=500)
    ) as net:
        yield net


def scrape(node: NodePlan) -> tuple[dict[str, str], Samples]:
    """(help text by family name, value by (sample name, sorted labels))."""
    with urllib.request.urlopen(f"{node.api_url}/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    helps: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        helps[family.name] = family.documentation
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return helps, samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples called name whose labels include labels."""
    return sum(
        v
        for (n, ls), v in samples.items()
        if n == name and all(dict(ls).get(k) == x for k, x in labels.items())
    )


def post(node: NodePlan, path: str, body: object) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"{node.api_url}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=35) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def anchor(chain_id: str, nonce: int) -> Transaction:
    return new_transaction(
        account_key("partner2", "ed25519"),
        chain_id=chain_id,
        nonce=nonce,
        contract="notary",
        method="anchor",
        args=[bytes([0xA0, nonce]) * 16, "sha256", f"metrics test {nonce}", "test", b""],
    )


def test_documented_metrics_exist_with_help(devnet: LocalNetwork) -> None:
    helps, _ = scrape(devnet.plan.nodes[0])
    for name in DOCUMENTED:
        family = name.removesuffix("_total")
        assert family in helps, f"{name} is not exposed"
        assert len(helps[family]) > 10, f"{name} has no help text"


def test_counters_move_when_transactions_flow(devnet: LocalNetwork) -> None:
    node = devnet.plan.nodes[0]
    links = [f"{node.sae_id}->{n.sae_id}" for n in devnet.plan.nodes if n is not node]
    peers = [n.sae_id for n in devnet.plan.nodes if n is not node]
    _, before = scrape(node)

    txs = [anchor(devnet.plan.chain_id, i) for i in range(6)]
    for tx in txs[:-1]:
        status, doc = post(node, "/v1/txs", tx.encoded.hex())
        assert status == 202, doc
    status, doc = post(node, "/v1/txs?wait=commit&timeout=30", txs[-1].encoded.hex())
    assert status == 200 and doc["status"] == "committed", doc
    wrong_chain = new_transaction(
        account_key("partner2", "ed25519"),
        chain_id="another-chain",
        nonce=0,
        contract="notary",
        method="anchor",
        args=[bytes(32), "sha256", "refused", "test", b""],
    )
    status, doc = post(node, "/v1/txs", wrong_chain.encoded.hex())
    assert status == 422, doc

    # Commits and key use are counted as they happen; poll until the scrape shows them.
    deadline = time.monotonic() + 10
    while True:
        _, after = scrape(node)
        moved = total(after, "qchain_consensus_decided_txs_total") - total(
            before, "qchain_consensus_decided_txs_total"
        )
        if moved >= len(txs) or time.monotonic() > deadline:
            break
        time.sleep(0.1)

    def grew(name: str, **labels: str) -> bool:
        return total(after, name, **labels) > total(before, name, **labels)

    assert moved >= len(txs)
    assert total(after, "qchain_consensus_height") > total(before, "qchain_consensus_height")
    assert grew("qchain_consensus_block_interval_seconds_count")
    assert grew("qchain_execution_block_duration_seconds_count")
    assert grew("qchain_commit_write_duration_seconds_count")
    assert grew("qchain_api_requests_total", route="/v1/txs", method="POST", status="202")
    assert grew("qchain_api_requests_total", route="/v1/txs", method="POST", status="200")
    assert grew("qchain_api_requests_total", route="/v1/txs", method="POST", status="422")
    assert grew("qchain_mempool_rejections_total", reason="wrong-chain")
    for peer in peers:
        assert grew("qchain_transport_frames_total", peer=peer, direction="out"), peer
        assert grew("qchain_transport_frames_total", peer=peer, direction="in"), peer
        assert grew("qchain_transport_bytes_total", peer=peer, direction="out"), peer
    for link in links:
        assert grew("qchain_qkd_keys_consumed_total", link=link), link
        assert total(after, "qchain_qkd_pool_keys", link=link) > 0, link
        assert total(after, "qchain_qkd_key_manager_latency_seconds_count", link=link) > 0, link
    # The six transactions committed and the refused one never entered: nothing pends.
    assert total(after, "qchain_mempool_txs") == 0


def test_dashboard_and_readme_name_only_documented_metrics() -> None:
    """The Grafana dashboard queries, and the monitoring README lists, exactly the metric
    families of `node/metrics.py` (a renamed metric must be renamed there too)."""
    monitoring = Path(__file__).resolve().parents[2] / "devnet" / "monitoring"
    dashboard = json.loads((monitoring / "grafana" / "dashboards" / "qchain.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {
        re.sub(r"_(bucket|count|sum)$", "", name)
        for e in exprs
        for name in re.findall(r"\bqchain_[a-z_]+", e)
    }
    assert used <= set(DOCUMENTED), used - set(DOCUMENTED)
    readme = (monitoring / "README.md").read_text()
    listed = set(re.findall(r"^\| `(qchain_[a-z_]+)` \|", readme, re.MULTILINE))
    assert listed == set(DOCUMENTED)
