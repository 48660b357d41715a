"""The HTTP API over real HTTP on 127.0.0.1, every answer checked against openapi.yaml."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from typing import Any

import aiohttp
import pytest

from node.http.api import make_api_app
from node.http.problems import PROBLEM_BASE, PROBLEMS
from node.http.state import openapi_spec
from node.service import TxStatus
from qchain.codec import encode_value
from qchain.errors import QChainError, StorageError
from qchain.jsonform import tx_to_json
from qchain.store import schema
from qchain.store.testing import flip_byte
from qchain.types import CommitCertificate, ReceiptProof, Transaction

from ..conftest import (
    CHAIN_ID,
    OUTSIDER,
    PARTNERS,
    VALIDATORS,
    ApiHarness,
    FakeNode,
    SpecChecker,
    make_tx,
    serve,
)

MSGPACK = {"Content-Type": "application/msgpack"}
JSON = {"Content-Type": "application/json"}


def problem_slug(doc: dict[str, object]) -> str:
    t = str(doc["type"])
    assert t.startswith(PROBLEM_BASE)
    return t.removeprefix(PROBLEM_BASE)


# --- submitting ----------------------------------------------------------------------------


async def test_submit_msgpack_then_same_bytes_again(api: ApiHarness) -> None:
    tx = make_tx(PARTNERS[2], 1)
    r = await api.request("POST", "/v1/txs", data=tx.encode(), headers=MSGPACK)
    assert r.status == 202
    assert r.json() == {
        "tx_hash": tx.hash.hex(),
        "status": "pending",
        "height": None,
        "index": None,
        "receipt": None,
    }
    assert r.headers["Location"] == f"/v1/txs/{tx.hash.hex()}"
    again = await api.request("POST", "/v1/txs", data=tx.encode(), headers=MSGPACK)
    assert again.status == 200
    assert again.json()["status"] == "pending"


async def test_submit_json_object_and_hex(api: ApiHarness) -> None:
    tx = make_tx(PARTNERS[2], 1)
    r = await api.request("POST", "/v1/txs", json=tx_to_json(tx))
    assert r.status == 202
    assert r.json()["tx_hash"] == tx.hash.hex()
    tx2 = make_tx(PARTNERS[2], 2)
    r2 = await api.request("POST", "/v1/txs", json=tx2.encode().hex())
    assert r2.status == 202
    assert r2.json()["tx_hash"] == tx2.hash.hex()


async def test_replayed_committed_tx_answers_its_status(api: ApiHarness) -> None:
    block = api.node.chain.block(1)
    assert block is not None
    tx = block.txs[0]
    r = await api.request("POST", "/v1/txs", data=tx.encode(), headers=MSGPACK)
    assert r.status == 200
    doc = r.json()
    assert doc["status"] == "committed"
    assert (doc["height"], doc["index"]) == (1, 0)
    assert doc["receipt"]["ok"] is True


async def test_wait_for_commit(api: ApiHarness) -> None:
    tx = make_tx(PARTNERS[2], 1)
    task = asyncio.create_task(
        api.request("POST", "/v1/txs?wait=commit&timeout=60", data=tx.encode(), headers=MSGPACK)
    )
    await api.node.waiting.wait()
    block = api.node.commit_pending()
    r = await task
    assert r.status == 200
    doc = r.json()
    assert doc["status"] == "committed"
    assert doc["height"] == block.height
    assert doc["receipt"]["tx_hash"] == tx.hash.hex()


async def test_wait_for_commit_times_out_with_504(api: ApiHarness) -> None:
    tx = make_tx(PARTNERS[2], 1)
    r = await api.request(
        "POST", "/v1/txs?wait=commit&timeout=0.05", data=tx.encode(), headers=MSGPACK
    )
    assert r.status == 504
    doc = r.json()
    assert problem_slug(doc) == "commit-timeout"
    assert doc["tx_hash"] == tx.hash.hex()
    assert doc["tx_status"] == "pending"
    assert r.headers["Location"] == f"/v1/txs/{tx.hash.hex()}"
    assert api.node.tx_status(tx.hash) is not None


@pytest.mark.parametrize(
    "query",
    [
        "wait=soon",
        "wait=commit&timeout=abc",
        "wait=commit&timeout=0",
        "wait=commit&timeout=nan",
        "wait=commit&timeout=1000",
    ],
)
async def test_bad_wait_parameters(api: ApiHarness, query: str) -> None:
    tx = make_tx(PARTNERS[2], 1)
    r = await api.request("POST", f"/v1/txs?{query}", data=tx.encode(), headers=MSGPACK)
    assert r.status == 400
    assert problem_slug(r.json()) == "invalid-parameter"


async def test_rejected_transactions_have_their_problem_types(api: ApiHarness) -> None:
    async def post(raw: bytes) -> tuple[int, dict[str, object]]:
        r = await api.request("POST", "/v1/txs", data=raw, headers=MSGPACK)
        return r.status, r.json()

    good = make_tx(PARTNERS[2], 1)

    status, doc = await post(make_tx(PARTNERS[2], 1, args=[b"\x00" * 70_000]).encode())
    assert (status, problem_slug(doc)) == (413, "too-large")
    assert doc["limit"] == 65536

    status, doc = await post(good.encode()[:-7])
    assert (status, problem_slug(doc)) == (400, "malformed-encoding")

    forged = dataclasses.replace(good, signature=bytes(len(good.signature)))
    status, doc = await post(forged.encode())
    assert (status, problem_slug(doc)) == (422, "bad-signature")

    status, doc = await post(make_tx(PARTNERS[2], 1, chain_id="other-chain").encode())
    assert (status, problem_slug(doc)) == (422, "wrong-chain")
    assert doc["expected_chain_id"] == CHAIN_ID
    assert doc["chain_id"] == "other-chain"

    status, doc = await post(make_tx(PARTNERS[0], 0, method="again").encode())
    assert (status, problem_slug(doc)) == (422, "nonce-mismatch")
    assert (doc["expected_nonce"], doc["nonce"]) == (2, 0)

    status, doc = await post(make_tx(OUTSIDER, 0).encode())
    assert (status, problem_slug(doc)) == (422, "not-a-member")
    assert doc["address"] == OUTSIDER.address.hex()

    status, doc = await post(encode_value([1, 2, 3]))
    assert (status, problem_slug(doc)) == (400, "malformed-encoding")
    assert doc["title"] and doc["detail"] and doc["instance"] == "/v1/txs"


async def test_malformed_json_bodies(api: ApiHarness) -> None:
    hdr = {"Content-Type": "application/json"}
    for body in [b"{", b"[1, 2]", b"12.5", b'"zz"', json.dumps({"nonce": 1}).encode(), b"[" * 5000]:
        r = await api.request("POST", "/v1/txs", data=body, headers=hdr)
        assert r.status == 400, body
        assert problem_slug(r.json()) == "malformed-encoding"
    doc = tx_to_json(make_tx(PARTNERS[2], 1))
    doc["nonce"] = 1.5
    r = await api.request("POST", "/v1/txs", json=doc)
    assert r.status == 400


async def test_unsupported_media_type(api: ApiHarness) -> None:
    r = await api.request("POST", "/v1/txs", data=b"hello", headers={"Content-Type": "text/plain"})
    assert r.status == 415
    doc = r.json()
    assert problem_slug(doc) == "unsupported-media-type"
    assert "application/msgpack" in doc["supported"]


async def test_body_limit_is_413(api: ApiHarness) -> None:
    r = await api.request("POST", "/v1/txs", data=b"\x00" * 300_000, headers=MSGPACK)
    assert r.status == 413
    doc = r.json()
    assert problem_slug(doc) == "body-too-large"
    assert doc["limit"] == 256 * 1024


async def test_batch_json_and_msgpack(api: ApiHarness) -> None:
    a = make_tx(PARTNERS[2], 1)
    b = make_tx(PARTNERS[2], 2)
    stale = make_tx(PARTNERS[1], 0, method="x")
    r = await api.request(
        "POST", "/v1/txs/batch", json=[a.encode().hex(), tx_to_json(b), stale.encode().hex(), 7]
    )
    assert r.status == 200
    results = r.json()["results"]
    assert [x["item"] for x in results] == [0, 1, 2, 3]
    assert results[0]["new"] is True and results[0]["tx_hash"] == a.hash.hex()
    assert results[1]["new"] is True
    assert problem_slug(results[2]["problem"]) == "nonce-mismatch"
    assert problem_slug(results[3]["problem"]) == "malformed-encoding"

    c = make_tx(PARTNERS[2], 3)
    r = await api.request(
        "POST", "/v1/txs/batch", data=encode_value([a.encode(), c.encode(), 5]), headers=MSGPACK
    )
    results = r.json()["results"]
    assert results[0]["new"] is False and results[0]["status"] == "pending"
    assert results[1]["new"] is True
    assert problem_slug(results[2]["problem"]) == "malformed-encoding"

    r = await api.request("POST", "/v1/txs/batch", json={"not": "a list"})
    assert r.status == 400
    r = await api.request("POST", "/v1/txs/batch", data=b"\xc1", headers=MSGPACK)
    assert r.status == 400
    r = await api.request("POST", "/v1/txs/batch", json=["00"] * 1001)
    assert r.status == 400


async def test_batch_reports_a_full_mempool_per_item(api: ApiHarness) -> None:
    """The items admitted before the mempool filled stay admitted and say so; the
    refused ones carry a 503 mempool-full problem; the request itself succeeds."""
    api.node.capacity = len(api.node.pending) + 1
    txs = [make_tx(k, api.node.next_nonce(k.address)) for k in PARTNERS]
    r = await api.request(
        "POST", "/v1/txs/batch", data=encode_value([t.encode() for t in txs]), headers=MSGPACK
    )
    assert r.status == 200
    results = r.json()["results"]
    assert results[0]["new"] is True and results[0]["tx_hash"] == txs[0].hash.hex()
    for item in results[1:]:
        assert problem_slug(item["problem"]) == "mempool-full"
        assert item["problem"]["status"] == 503
    assert txs[0].hash in api.node.pending and txs[1].hash not in api.node.pending
    api.node.capacity = None
    r = await api.request(
        "POST", "/v1/txs/batch", data=encode_value([t.encode() for t in txs[1:]]), headers=MSGPACK
    )
    assert [x["new"] for x in r.json()["results"]] == [True, True], "sent again, admitted"


def with_lone_surrogate(doc: object, *path: str | int) -> bytes:
    """doc as JSON text with a lone surrogate escape (`\\ud800`) as the text at path."""
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = "@SURROGATE@"
    return json.dumps(doc).replace('"@SURROGATE@"', '"x\\ud800"').encode()


TEXT_PLACES: list[tuple[str | int, ...]] = [
    ("chain_id",),
    ("sender",),
    ("contract",),
    ("method",),
    ("scheme",),
    ("public_key",),
    ("signature",),
    ("args", 0),
    ("args", 1, 0),
    ("args", 2, "hex"),
    ("memo",),
]


@pytest.mark.parametrize("place", TEXT_PLACES, ids=lambda p: "/".join(map(str, p)))
async def test_a_lone_surrogate_anywhere_in_json_is_a_400(
    api: ApiHarness, place: tuple[str | int, ...]
) -> None:
    """Invalid Unicode is refused with a 400 naming where it is, on its own or as the
    second item of a batch; and the batch's first item is not admitted either."""
    pointer = "/" + "/".join(map(str, place))
    doc = tx_to_json(make_tx(PARTNERS[2], 1, args=["a", ["b"], b"\x01"]))
    r = await api.request("POST", "/v1/txs", data=with_lone_surrogate(doc, *place), headers=JSON)
    assert r.status == 400
    problem = r.json()
    assert problem_slug(problem) == "malformed-encoding"
    assert problem["pointer"] == pointer and "lone surrogate" in problem["detail"]

    first = make_tx(PARTNERS[2], 1)
    batch = [first.encode().hex(), tx_to_json(make_tx(PARTNERS[1], 2, args=["a", ["b"], b""]))]
    body = with_lone_surrogate(batch, 1, *place)
    r = await api.request("POST", "/v1/txs/batch", data=body, headers=JSON)
    assert r.status == 400
    assert r.json()["pointer"] == "/1" + pointer
    assert first.hash not in api.node.pending


async def test_a_lone_surrogate_in_a_query_argument_is_a_400(api: ApiHarness) -> None:
    for value in ('"\\ud800"', '{"hex": "\\udfff"}', '["ok", {"\\udc00": 1}]'):
        r = await api.request("GET", "/v1/contracts/membership/member", params={"address": value})
        assert r.status == 400, value
        assert problem_slug(r.json()) == "invalid-parameter"
        assert r.json()["parameter"] == "address"
        assert "lone surrogate" in r.json()["reason"]


async def test_batch_decodes_every_item_before_admitting_any(api: ApiHarness) -> None:
    """A malformed item is that item's problem; an item the node fails to admit, for
    whatever reason (the store, a bug), is also only that item's problem: the items
    before it stay admitted and the answer says exactly which were."""
    txs = [make_tx(PARTNERS[2], 1), make_tx(PARTNERS[2], 2), make_tx(PARTNERS[0], 2)]
    txs.append(make_tx(PARTNERS[1], 2))
    broken = {txs[1].hash: RuntimeError("admission exploded"), txs[2].hash: StorageError("disk")}
    admit = api.node.submit_tx

    def submit_tx(tx: Transaction) -> tuple[TxStatus, bool]:
        if tx.hash in broken:
            raise broken[tx.hash]
        return admit(tx)

    api.node.submit_tx = submit_tx  # type: ignore[method-assign]
    items = [t.encode().hex() for t in txs]
    r = await api.request("POST", "/v1/txs/batch", json=[*items[:2], "zz", *items[2:]])
    assert r.status == 200
    results = r.json()["results"]
    assert [x["item"] for x in results] == [0, 1, 2, 3, 4]
    assert results[0]["new"] is True
    assert (problem_slug(results[1]["problem"]), results[1]["problem"]["status"]) == (
        "internal-error",
        500,
    )
    assert "exploded" not in results[1]["problem"]["detail"]
    assert problem_slug(results[2]["problem"]) == "malformed-encoding"
    assert (problem_slug(results[3]["problem"]), results[3]["problem"]["status"]) == (
        "storage-error",
        503,
    )
    assert results[4]["new"] is True
    assert txs[0].hash in api.node.pending and txs[3].hash in api.node.pending


# --- reading ---------------------------------------------------------------------------------


async def test_get_tx_pending_committed_and_missing(api: ApiHarness) -> None:
    block = api.node.chain.block(2)
    assert block is not None
    failed = block.txs[0]
    r = await api.request("GET", f"/v1/txs/{failed.hash.hex()}")
    doc = r.json()
    assert doc["status"] == "committed"
    assert doc["receipt"]["ok"] is False
    assert doc["receipt"]["code"] == "rule-violation"
    assert doc["transaction"]["hash"] == failed.hash.hex()
    assert doc["transaction"]["method"] == "fail"

    tx = make_tx(PARTNERS[2], 1)
    api.node.submit(tx.encode())
    r = await api.request("GET", f"/v1/txs/0x{tx.hash.hex()}")
    assert r.json()["status"] == "pending"
    assert r.json()["transaction"]["nonce"] == 1

    r = await api.request("GET", f"/v1/txs/{'ab' * 32}")
    assert r.status == 404
    assert problem_slug(r.json()) == "not-found"
    assert r.json()["kind"] == "transaction"
    r = await api.request("GET", "/v1/txs/xyz")
    assert r.status == 400
    assert r.json()["parameter"] == "hash"


async def test_receipt_json_and_msgpack_verify(api: ApiHarness) -> None:
    block = api.node.chain.block(1)
    assert block is not None
    tx = block.txs[2]
    r = await api.request("GET", f"/v1/receipts/{tx.hash.hex()}")
    doc = r.json()
    assert doc["receipt"]["index"] == 2
    assert doc["header"]["hash"] == block.hash.hex()
    assert len(doc["certificate"]["signatures"]) == 3
    assert doc["proof"]["size"] == 3

    r = await api.request(
        "GET", f"/v1/receipts/{tx.hash.hex()}", headers={"Accept": "application/msgpack"}
    )
    assert r.content_type == "application/msgpack"
    proof = ReceiptProof.decode(r.body)
    proof.verify(CHAIN_ID, VALIDATORS)
    assert proof.receipt.tx_hash == tx.hash

    pending = make_tx(PARTNERS[2], 1)
    api.node.submit(pending.encode())
    r = await api.request("GET", f"/v1/receipts/{pending.hash.hex()}")
    assert r.status == 404
    assert r.json()["kind"] == "receipt"


async def test_block_certificate(api: ApiHarness) -> None:
    for h in (1, 2):
        r = await api.request("GET", f"/v1/blocks/{h}/certificate")
        assert r.status == 200 and r.content_type == "application/msgpack"
        assert CommitCertificate.decode(r.body) == api.node.chain.certificate(h)
    for missing in (0, 3):
        r = await api.request("GET", f"/v1/blocks/{missing}/certificate")
        assert r.status == 404
        assert r.json()["kind"] == "certificate"
    r = await api.request("GET", "/v1/blocks/abc/certificate")
    assert r.status == 400


async def test_blocks(api: ApiHarness) -> None:
    r = await api.request("GET", "/v1/blocks/latest")
    assert r.json()["height"] == 2
    assert len(r.json()["txs"]) == 2
    r = await api.request("GET", "/v1/blocks/1")
    doc = r.json()
    assert doc["height"] == 1
    assert doc["header"]["parent"] == "00" * 32
    assert [t["hash"] for t in doc["txs"]] == [
        t.hash.hex()
        for t in api.node.chain.block(1).txs  # type: ignore[union-attr]
    ]
    r = await api.request("GET", "/v1/blocks/3")
    assert r.status == 404
    for bad in ("abc", "-1", "99999999999999999999999"):
        r = await api.request("GET", f"/v1/blocks/{bad}")
        assert r.status == 400

    r = await api.request("GET", "/v1/blocks?from=1&limit=1")
    page = r.json()
    assert [b["height"] for b in page["blocks"]] == [1]
    assert page["next"] == 2
    r = await api.request("GET", "/v1/blocks?from=2&limit=1")
    assert r.json()["next"] is None
    r = await api.request("GET", "/v1/blocks")
    assert [b["height"] for b in r.json()["blocks"]] == [1, 2]
    r = await api.request("GET", "/v1/blocks?from=9")
    assert r.json() == {"blocks": [], "next": None}
    r = await api.request("GET", "/v1/blocks?limit=0")
    assert r.status == 400
    r = await api.request("GET", "/v1/blocks?limit=101")
    assert r.status == 400


async def test_latest_block_of_an_empty_chain_is_404(spec_checker: SpecChecker) -> None:
    harness, runner = await serve(FakeNode(), spec_checker)
    try:
        r = await harness.request("GET", "/v1/blocks/latest")
        assert r.status == 404
    finally:
        await harness.session.close()
        await runner.cleanup()


async def test_accounts(api: ApiHarness) -> None:
    addr = PARTNERS[0].address.hex()
    r = await api.request("GET", f"/v1/accounts/{addr}")
    assert r.json() == {
        "address": addr,
        "nonce": 2,
        "pending_nonce": 2,
        "roles": ["member"],
        "public_key": None,
    }
    r = await api.request("GET", f"/v1/accounts/{OUTSIDER.address.hex()}")
    assert r.status == 404
    r = await api.request("GET", "/v1/accounts/1234")
    assert r.status == 400


async def test_contract_queries(api: ApiHarness) -> None:
    addr = PARTNERS[1].address
    r = await api.request(
        "GET",
        "/v1/contracts/membership/member",
        params={"address": json.dumps({"hex": addr.hex()})},
    )
    doc = r.json()
    assert doc["result"] == [{"hex": addr.hex()}, 2, ["member"]]
    assert doc["height"] == 2
    r = await api.request("GET", f"/v1/contracts/membership/member?address={addr.hex()}")
    assert r.json()["result"][1] == 2
    r = await api.request("GET", "/v1/contracts/membership/member?address=[1.5]")
    assert r.status == 400
    r = await api.request("GET", "/v1/contracts/nope/member")
    assert r.status == 404
    assert problem_slug(r.json()) == "unknown-contract"
    r = await api.request("GET", "/v1/contracts/membership/nope")
    assert problem_slug(r.json()) == "unknown-method"
    r = await api.request("GET", "/v1/contracts/membership/member?address=abcd")
    assert r.status == 422
    assert problem_slug(r.json()) == "invalid-argument"
    assert r.json()["field"] == "address"
    r = await api.request("GET", "/v1/contracts/membership/member?address=1.5")
    assert r.status == 400
    r = await api.request("GET", "/v1/contracts/membership/member?a=1&a=2")
    assert r.status == 400


async def test_status_qkd_health_metrics_openapi(api: ApiHarness) -> None:
    r = await api.request("GET", "/v1/status")
    assert r.json()["height"] == 2
    assert r.json()["chain_id"] == CHAIN_ID
    r = await api.request("GET", "/v1/qkd")
    assert r.json()["links"]["sae-1"]["consumed"] == 4
    r = await api.request("GET", "/healthz")
    assert r.json() == {"status": "ok"}
    r = await api.request("GET", "/readyz")
    assert r.json() == {"ready": True, "reasons": []}
    api.node.ready = False
    api.node.reasons = ["catching up", "1 of 3 peers connected"]
    r = await api.request("GET", "/readyz")
    assert r.status == 503
    assert problem_slug(r.json()) == "not-ready"
    assert r.json()["reasons"] == ["catching up", "1 of 3 peers connected"]
    r = await api.request("GET", "/metrics")
    text = r.body.decode()
    assert "qchain_consensus_height 2.0" in text
    assert 'qchain_api_requests_total{method="GET",route="/v1/status",status="200"} 1.0' in text
    assert 'route="/readyz",status="503"' in text
    r = await api.request("GET", "/openapi.json")
    assert r.json() == openapi_spec()


async def test_unknown_route_and_wrong_method_are_problems(api: ApiHarness) -> None:
    r = await api.request("GET", "/v2/nothing", check=False)
    assert r.status == 404
    assert problem_slug(r.json()) == "not-found"
    assert r.json()["kind"] == "route"
    r = await api.request("DELETE", "/v1/txs", check=False)
    assert r.status == 405
    assert problem_slug(r.json()) == "method-not-allowed"
    assert r.headers["Allow"] == "POST"
    r = await api.request("GET", "/v1/txs", check=False)
    assert r.status == 405


async def test_unexpected_exception_is_a_logged_500_problem(
    api: ApiHarness, caplog: pytest.LogCaptureFixture
) -> None:
    api.node.fail_status = True
    with caplog.at_level(logging.ERROR, logger="qchain.api"):
        r = await api.request("GET", "/v1/status")
    assert r.status == 500
    doc = r.json()
    assert problem_slug(doc) == "internal-error"
    assert "exploded" not in doc["detail"]
    assert any("status exploded" in (rec.exc_text or "") for rec in caplog.records)


async def test_rate_limit_429_with_retry_after(
    fake_node: FakeNode, spec_checker: SpecChecker
) -> None:
    now = [100.0]
    harness, runner = await serve(fake_node, spec_checker, rate_limit_per_s=2, clock=lambda: now[0])
    try:
        assert (await harness.request("GET", "/v1/status")).status == 200
        assert (await harness.request("GET", "/v1/status")).status == 200
        r = await harness.request("GET", "/v1/status")
        assert r.status == 429
        assert problem_slug(r.json()) == "rate-limited"
        assert int(r.headers["Retry-After"]) >= 1
        assert (await harness.request("GET", "/healthz")).status == 200
        assert (await harness.request("GET", "/metrics")).status == 200
        now[0] += 0.5
        assert (await harness.request("GET", "/v1/status")).status == 200
        assert (await harness.request("GET", "/v1/status")).status == 429
        text = fake_node.metrics_text().decode()
        assert "qchain_api_rate_limited_total 2.0" in text
    finally:
        await harness.session.close()
        await runner.cleanup()


def test_problem_table_covers_the_tree_with_unique_slugs() -> None:
    slugs = [cls.code for cls in PROBLEMS]
    assert len(slugs) == len(set(slugs))
    for cls, (status, title, title_zh) in PROBLEMS.items():
        assert issubclass(cls, QChainError)
        assert 400 <= status <= 599 and title and title_zh


# --- server-sent events ------------------------------------------------------------------------


async def read_events(
    resp: aiohttp.ClientResponse, count: int
) -> list[tuple[int, str, dict[str, object]]]:
    out: list[tuple[int, str, dict[str, object]]] = []
    fields: dict[str, str] = {}
    while len(out) < count:
        line = (await resp.content.readline()).decode().rstrip("\n")
        if line.startswith(":") or line.startswith("retry:"):
            continue
        if line:
            name, _, value = line.partition(": ")
            fields[name] = value
            continue
        if fields:
            out.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
            fields = {}
    return out


async def test_events_stream_and_resume(api: ApiHarness) -> None:
    api.node.submit(make_tx(PARTNERS[2], 1).encode())
    async with api.session.get(api.url + "/v1/events") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        block = api.node.commit_pending()
        events = await read_events(resp, 2)
    (bid, bkind, bdata), (tid, tkind, tdata) = events
    assert (bkind, bdata["height"], bdata["hash"]) == ("block", 3, block.hash.hex())
    assert (tkind, tid) == ("tx", bid + 1)
    assert tdata["tx_hash"] == block.txs[0].hash.hex()

    async with api.session.get(
        api.url + "/v1/events", headers={"Last-Event-ID": str(bid - 3)}
    ) as resp:
        replay = await read_events(resp, 4)
    assert [e[0] for e in replay] == [bid - 2, bid - 1, bid, bid + 1]
    assert [e[1] for e in replay] == ["tx", "tx", "block", "tx"]

    r = await api.request("GET", "/v1/events?last_event_id=x")
    assert r.status == 400


async def test_events_heartbeat_and_clean_shutdown(
    fake_node: FakeNode, spec_checker: SpecChecker
) -> None:
    harness, runner = await serve(fake_node, spec_checker, sse_heartbeat_s=0.01)
    try:
        async with harness.session.get(harness.url + "/v1/events") as resp:
            lines = []
            while b": heartbeat\n" not in lines:
                lines.append(await resp.content.readline())
            await runner.cleanup()
            rest = await resp.content.read()
            assert b"id:" not in rest
            assert resp.content.at_eof()
    finally:
        await harness.session.close()
        await runner.cleanup()
    assert fake_node.bus.subscriber_count == 0


# --- the spec ------------------------------------------------------------------------------


def test_every_route_is_in_the_spec_and_vice_versa(fake_node: FakeNode) -> None:
    app = make_api_app(fake_node, max_body_bytes=1024, rate_limit_per_s=0)
    routes = {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None
    }
    spec = openapi_spec()
    documented = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert routes == documented


async def test_damaged_block_and_receipt_are_store_corrupt_503s(api: ApiHarness) -> None:
    """Data that fails its hash check is answered with a `store-corrupt` problem, never
    served."""
    block = api.node.chain.block(1)
    assert block is not None
    store = api.node.store
    for key in (schema.block_key(1), schema.receipt_key(1, 2)):
        raw = store.get(key)
        assert raw is not None
        store.put(key, flip_byte(raw, -1))
    for path in (
        f"/v1/receipts/{block.txs[2].hash.hex()}",
        "/v1/blocks/1",
        "/v1/blocks?from=1",
        f"/v1/txs/{block.txs[2].hash.hex()}",
    ):
        r = await api.request("GET", path)
        assert r.status == 503, path
        doc = r.json()
        assert problem_slug(doc) == "store-corrupt"
        assert doc["key"] in (schema.block_key(1).hex(), schema.receipts_prefix(1).hex())
    r = await api.request("GET", "/v1/blocks/2")
    assert r.status == 200
