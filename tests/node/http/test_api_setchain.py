"""`GET /v1/setchain` and receipts with their set chain, over real HTTP on 127.0.0.1, on
a governed chain's store (an add, then a remove) as the node commits it; every answer is
checked against openapi.yaml. What is served verifies from the genesis alone
(`qchain receipt get`, then `qchain receipt verify --genesis`), a forged set chain does
not, and the bounds answer clear problems."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from contracts import setchain, validators
from contracts.setchain import ChainedReceipt
from node.genesis_file import save_genesis
from node.notary_evidence import GovernedEvidence, load_evidence
from qchain.cli import main as cli_main
from qchain.client import receipt_proof_of
from qchain.store import schema
from qchain.store.kv import Batch
from tests.contracts.setchain_chain import (
    CertifiedChain,
    add_then_remove,
    certified_chain,
)

from ..conftest import ApiHarness, FakeNode, SpecChecker, serve
from ..setchain_store import node_store

MSGPACK = {"Accept": "application/msgpack"}
DOCUMENT = b"anchored after an add and a remove\n"


@pytest.fixture(scope="module")
def cc() -> CertifiedChain:
    cc = certified_chain(4, delay=2)
    add_then_remove(cc)
    anchor = [hashlib.sha256(DOCUMENT).digest(), "sha256", "contract", "legal", b""]
    cc.block(
        [
            cc.chain.tx("op2", validators.NAME, "update_endpoint", [2, "v2", "", ""]),
            cc.chain.tx("op3", "notary", "anchor", anchor),
        ]
    )
    return cc


@pytest.fixture
async def governed(cc: CertifiedChain, spec_checker: SpecChecker) -> AsyncIterator[ApiHarness]:
    node = FakeNode()
    node.store, node._chain, node.set_chains = node_store(cc)
    harness, runner = await serve(node, spec_checker)
    try:
        yield harness
    finally:
        await harness.session.close()
        await runner.cleanup()


def _prove(cc: CertifiedChain, raw: bytes, height: int) -> list[int]:
    chain = setchain.decode_set_chain(raw)
    proven = setchain.prove_set(
        chain, chain_id=cc.chain_id, start=cc.start(), delay=cc.delay, height=height
    )
    return [r.id for r in proven.records]


async def test_the_set_chain_of_every_height_is_served(
    governed: ApiHarness, cc: CertifiedChain
) -> None:
    top = cc.chain.height
    for h in range(1, top + 1):
        r = await governed.request("GET", f"/v1/setchain?height={h}", headers=MSGPACK)
        assert r.status == 200 and r.content_type == "application/msgpack"
        assert _prove(cc, r.body, h) == [x.id for x in cc.set_at(h)]
    doc = (await governed.request("GET", f"/v1/setchain?height={top}")).json()
    assert [x["block"] for x in doc["links"]] == cc.scheduling
    assert doc["tail"] == {"from": top - cc.delay, "to": top}
    assert _prove(cc, bytes.fromhex(doc["set_chain"]), top) == [0, 2, 3, 4]
    assert (await governed.request("GET", "/v1/setchain?height=1")).json()["tail"] is None


async def test_setchain_bounds(governed: ApiHarness, api: ApiHarness, cc: CertifiedChain) -> None:
    top = cc.chain.height
    for query in ("", "?height=0", "?height=-1", "?height=x", "?height=18446744073709551616"):
        r = await governed.request("GET", f"/v1/setchain{query}")
        assert r.status == 400, query
        assert r.json()["type"].endswith("/invalid-parameter")
    r = await governed.request("GET", f"/v1/setchain?height={top + 1}")
    assert r.status == 404 and r.json()["type"].endswith("/not-found")
    # a chain whose set never changes has no set chain, and its receipts come alone
    r = await api.request("GET", "/v1/setchain?height=1")
    assert r.status == 404 and r.json()["type"].endswith("/not-governed")
    assert "never changes" in r.json()["detail"]
    # more scheduling blocks below the height than a set chain carries links
    b = Batch()
    for h in range(1, setchain.MAX_LINKS + 2):
        b.put(schema.scheduling_key(h), b"")
    governed.node.store.write(b)
    for path in (f"/v1/setchain?height={top}", f"/v1/receipts/{_tx_hash(cc).hex()}"):
        r = await governed.request("GET", path)
        assert r.status == 409, path
        problem = r.json()
        assert problem["type"].endswith("/set-chain-unavailable")
        assert (problem["reason"], problem["height"]) == ("too-many-changes", top)
        assert f"at most {setchain.MAX_LINKS} links" in problem["detail"]


def _tx_hash(cc: CertifiedChain) -> bytes:
    return cc.txs[cc.chain.height][0].hash


async def test_a_receipt_comes_with_its_set_chain_and_verifies_from_genesis(
    governed: ApiHarness, cc: CertifiedChain, tmp_path: Path
) -> None:
    top = cc.chain.height
    tx_hash = _tx_hash(cc)
    r = await governed.request("GET", f"/v1/receipts/{tx_hash.hex()}", headers=MSGPACK)
    chained = setchain.decode_chained_receipt(r.body)
    assert chained.proof.header.height == top
    assert receipt_proof_of(r.body) == chained.proof
    records = setchain.verify_receipt(
        chained.proof, chained.set_chain, chain_id=cc.chain_id, start=cc.start(), delay=cc.delay
    )
    assert [x.id for x in records] == [0, 2, 3, 4]
    doc = (await governed.request("GET", f"/v1/receipts/{tx_hash.hex()}")).json()
    assert bytes.fromhex(doc["set_chain"]) == chained.set_chain.encode()

    genesis = tmp_path / "genesis.json"
    save_genesis(cc.chain.genesis, genesis)
    saved = tmp_path / "receipt.bin"
    got = await asyncio.to_thread(
        cli_main, ["receipt", "get", tx_hash.hex(), "--node", governed.url, "--out", str(saved)]
    )
    assert got == 0 and saved.read_bytes() == r.body
    as_json = tmp_path / "receipt.json"
    as_json.write_text(json.dumps(doc))
    for f in (saved, as_json):
        assert cli_main(["receipt", "verify", str(f), "--genesis", str(genesis)]) == 0
    # the same receipt with a forged set chain: the remove's link left out
    chain = chained.set_chain
    forged = tmp_path / "forged.bin"
    forged.write_bytes(
        ChainedReceipt(chained.proof, setchain.SetChain(chain.links[:1], chain.tail)).encode()
    )
    assert cli_main(["receipt", "verify", str(forged), "--genesis", str(genesis)]) != 0


async def test_notary_evidence_carries_the_set_chain_and_verifies_from_genesis(
    governed: ApiHarness, cc: CertifiedChain, tmp_path: Path
) -> None:
    """`qchain notary evidence` from the node, then `qchain notary verify --genesis`
    offline: the evidence of an anchor after an add and a remove holds the set chain the
    node serves with the receipt."""
    tx_hash = cc.txs[cc.chain.height][1].hash
    genesis, doc, out = tmp_path / "genesis.json", tmp_path / "doc.txt", tmp_path / "ev.bin"
    save_genesis(cc.chain.genesis, genesis)
    doc.write_bytes(DOCUMENT)
    got = await asyncio.to_thread(
        cli_main, ["notary", "evidence", tx_hash.hex(), "--node", governed.url, "--out", str(out)]
    )
    assert got == 0
    served = await governed.request("GET", f"/v1/receipts/{tx_hash.hex()}", headers=MSGPACK)
    evidence = load_evidence(out)
    assert isinstance(evidence, GovernedEvidence)
    assert evidence.set_chain == setchain.decode_chained_receipt(served.body).set_chain
    verify = ["notary", "verify", str(doc), "--receipt", str(out), "--genesis", str(genesis)]
    assert cli_main(verify) == 0
    doc.write_bytes(DOCUMENT + b"changed")
    assert cli_main(verify) != 0
