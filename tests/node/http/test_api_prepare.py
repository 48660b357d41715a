"""`POST /v1/txs/prepare` over real HTTP, every answer checked against openapi.yaml: a
partner signs what prepare answers with nothing but `cryptography`'s Ed25519, submits the
JSON form, and the transaction is admitted and committed; a signature over anything else
(a tampered field, a changed argument, another chain) is refused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey

from node.http.prepare import prepared_json, unsigned_tx_from_json
from node.http.problems import PROBLEM_BASE
from node.http.state import openapi_spec
from qchain.client import AsyncClient, PreparedTx
from qchain.errors import CodecError
from qchain.jsonform import tx_from_json
from qchain.keys import SigningKey, dev_key
from qchain.types import MAX_TX_SIZE

from ..conftest import CHAIN_ID, PARTNERS, ApiHarness, FakeNode, SpecChecker, serve

VECTORS = Path(__file__).parents[2] / "vectors" / "core" / "transactions.json"


def slug(doc: dict[str, Any]) -> str:
    return str(doc["type"]).removeprefix(PROBLEM_BASE)


def unsigned(key: SigningKey, **fields: Any) -> dict[str, Any]:
    """A partner's JSON form without signature and sender, of the key's next nonce (1)."""
    return {
        "chain_id": CHAIN_ID,
        "nonce": 1,
        "contract": "membership",
        "method": "register",
        "args": ["partner", {"hex": "0102"}, [7, None, True]],
        "scheme": "ed25519",
        "public_key": key.public_key.hex(),
        **fields,
    }


def sign_outside(key: SigningKey, sign_bytes_hex: str) -> str:
    """Ed25519 from `cryptography` alone, over the bytes prepare answered."""
    private = Ed25519PrivateKey.from_private_bytes(key.seed)
    return private.sign(bytes.fromhex(sign_bytes_hex)).hex()


def tx_hash(signed_prefix_hex: str, signature_hex: str) -> str:
    """The hash by docs/TRANSACTIONS.md, section 5, with hashlib alone."""
    sig = bytes.fromhex(signature_hex)
    assert len(sig) == 64
    encoded = bytes.fromhex(signed_prefix_hex) + b"\xc4\x40" + sig
    return hashlib.sha256(b"\x09qchain/tx" + encoded).hexdigest()


async def prepare(api: ApiHarness, doc: object) -> dict[str, Any]:
    r = await api.request("POST", "/v1/txs/prepare", json=doc)
    assert r.status == 200, r.body
    answer: dict[str, Any] = r.json()
    return answer


async def test_prepare_sign_outside_submit_json_and_commit(api: ApiHarness) -> None:
    key = PARTNERS[2]
    prepared = await prepare(api, unsigned(key))
    body = bytes.fromhex(prepared["body"])
    # What a careful partner checks: the node prepared the bytes it was asked for.
    assert hashlib.sha256(b"\x0eqchain/tx-sign" + body).hexdigest() == prepared["sign_bytes"]
    assert prepared["signed_prefix"] == "9a" + prepared["body"][2:]
    assert prepared["sender"] == key.address.hex() == prepared["transaction"]["sender"]
    assert prepared["transaction"]["signature"] == ""

    doc = dict(prepared["transaction"], signature=sign_outside(key, prepared["sign_bytes"]))
    r = await api.request("POST", "/v1/txs", json=doc)
    assert r.status == 202, r.body
    assert r.json()["tx_hash"] == tx_hash(prepared["signed_prefix"], doc["signature"])
    block = api.node.commit_pending()
    status = await api.request("GET", f"/v1/txs/{r.json()['tx_hash']}")
    assert status.json()["status"] == "committed"
    assert status.json()["height"] == block.height
    # The msgpack way gives the same transaction.
    raw = bytes.fromhex(prepared["signed_prefix"]) + b"\xc4\x40" + bytes.fromhex(doc["signature"])
    assert tx_from_json(doc).encode() == raw


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"nonce": 2}, "bad-signature"),
        ({"method": "deregister"}, "bad-signature"),
        ({"expiry_height": 99}, "bad-signature"),
        ({"args": ["partner", {"hex": "0103"}, [7, None, True]]}, "bad-signature"),
        ({"args": ["partner", {"hex": "0102"}, [7, None, False]]}, "bad-signature"),
        ({"args": ["partner", "0102", [7, None, True]]}, "bad-signature"),
        ({"chain_id": "api-test-other"}, "wrong-chain"),
    ],
    ids=["nonce", "method", "expiry", "arg-bytes", "nested-arg", "bytes-as-text", "chain-id"],
)
async def test_a_signature_over_anything_else_is_refused(
    api: ApiHarness, change: dict[str, Any], expected: str
) -> None:
    key = PARTNERS[2]
    prepared = await prepare(api, unsigned(key))
    doc = dict(prepared["transaction"], signature=sign_outside(key, prepared["sign_bytes"]))
    r = await api.request("POST", "/v1/txs", json={**doc, **change})
    assert r.status == 422, r.body
    assert slug(r.json()) == expected
    assert not api.node.pending
    # The untampered one is still good.
    assert (await api.request("POST", "/v1/txs", json=doc)).status == 202


async def test_a_signature_made_for_another_chain_is_refused_on_this_one(
    api: ApiHarness,
) -> None:
    """The chain id is in the signed bytes: sign the body of another chain's transaction,
    submit it with this chain's id."""
    key = PARTNERS[2]
    other = unsigned_tx_from_json(unsigned(key, chain_id="another-chain"))
    signature = sign_outside(key, other.signing_digest().hex())
    prepared = await prepare(api, unsigned(key))
    r = await api.request(
        "POST", "/v1/txs", json=dict(prepared["transaction"], signature=signature)
    )
    assert r.status == 422
    assert slug(r.json()) == "bad-signature"


@pytest.mark.parametrize(
    ("change", "status", "expected", "names"),
    [
        ({"chain_id": "another-chain"}, 422, "wrong-chain", "another-chain"),
        ({"signature": "00" * 64}, 400, "invalid-parameter", "transaction.signature"),
        ({"sender": "11" * 20}, 400, "invalid-parameter", "transaction.sender"),
        ({"public_key": "11" * 31, "sender": "11" * 20}, 400, "invalid-parameter", "32 bytes"),
        ({"scheme": "rsa"}, 422, "unknown-signature-scheme", "rsa"),
        ({"nonce": "1"}, 400, "malformed-encoding", "transaction.nonce"),
        ({"nonce": 1.0}, 400, "malformed-encoding", "transaction.nonce"),
        ({"args": [{"hex": "0g"}]}, 400, "malformed-encoding", "transaction.args[0]"),
        ({"args": [{"bytes": "00"}]}, 400, "malformed-encoding", "transaction.args[0]"),
        ({"contract": ""}, 400, "malformed-encoding", "transaction.contract"),
        ({"memo": "x"}, 400, "malformed-encoding", "memo"),
        ({"public_key": ""}, 400, "malformed-encoding", "transaction.sender"),
    ],
    ids=[
        "chain",
        "signed",
        "sender",
        "key-length",
        "scheme",
        "nonce-text",
        "nonce-float",
        "bad-hex",
        "other-object",
        "empty-contract",
        "unknown-member",
        "no-sender",
    ],
)
async def test_prepare_refusals_name_the_field(
    api: ApiHarness, change: dict[str, Any], status: int, expected: str, names: str
) -> None:
    r = await api.request("POST", "/v1/txs/prepare", json=unsigned(PARTNERS[2], **change))
    assert r.status == status, r.body
    doc = r.json()
    assert slug(doc) == expected
    assert names.lower() in json.dumps(doc).lower()


async def test_prepare_with_an_empty_public_key_needs_the_sender(api: ApiHarness) -> None:
    key = PARTNERS[2]
    doc = unsigned(key, public_key="", sender=key.address.hex())
    prepared = await prepare(api, doc)
    assert prepared["transaction"]["public_key"] == ""
    signed = dict(prepared["transaction"], signature=sign_outside(key, prepared["sign_bytes"]))
    assert tx_from_json(signed).signing_digest().hex() == prepared["sign_bytes"]


async def test_prepare_is_bounded_like_submit(
    fake_node: FakeNode, spec_checker: SpecChecker
) -> None:
    now = [100.0]
    harness, runner = await serve(
        fake_node, spec_checker, max_body_bytes=200_000, rate_limit_per_s=3, clock=lambda: now[0]
    )
    try:
        # Too large once signed: the body alone fits in 64 KiB, the signature does not.
        big = unsigned(PARTNERS[2], args=[{"hex": "00" * (MAX_TX_SIZE - 150)}])
        assert len(unsigned_tx_from_json(big).body_bytes()) < MAX_TX_SIZE
        r = await harness.request("POST", "/v1/txs/prepare", json=big)
        assert (r.status, slug(r.json())) == (413, "too-large")
        assert r.json()["limit"] == MAX_TX_SIZE
        r = await harness.request("POST", "/v1/txs/prepare", data=b"x" * 200_001, headers=JSON)
        assert (r.status, slug(r.json())) == (413, "body-too-large")
        r = await harness.request("POST", "/v1/txs/prepare", data=b"{}", headers=TEXT)
        assert (r.status, slug(r.json())) == (415, "unsupported-media-type")
        r = await harness.request("POST", "/v1/txs/prepare", json=unsigned(PARTNERS[2]))
        assert (r.status, slug(r.json())) == (429, "rate-limited")
        now[0] += 1
        assert (
            await harness.request("POST", "/v1/txs/prepare", json=unsigned(PARTNERS[2]))
        ).status == 200
    finally:
        await harness.session.close()
        await runner.cleanup()


JSON = {"Content-Type": "application/json"}
TEXT = {"Content-Type": "text/plain"}


def test_the_openapi_example_is_the_answer_to_its_request() -> None:
    op = openapi_spec()["paths"]["/v1/txs/prepare"]["post"]
    request = op["requestBody"]["content"]["application/json"]["examples"]["ed25519-register"]
    answer = op["responses"]["200"]["content"]["application/json"]["examples"]["ed25519-register"]
    assert prepared_json(unsigned_tx_from_json(request["value"])) == answer["value"]
    vector = next(v for v in json.loads(VECTORS.read_text()) if v["name"] == "ed25519-register")
    assert answer["value"]["sign_bytes"] == vector["signing_digest"]
    assert answer["value"]["transaction"] == dict(vector["json"], signature="")
    assert vector["encoded"].startswith(answer["value"]["signed_prefix"])


def test_the_docs_request_example_is_the_openapi_one() -> None:
    text = (Path(__file__).parents[3] / "docs" / "TRANSACTIONS.md").read_text()
    section = text.split("## 10.", 1)[1]
    shown = json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])
    op = openapi_spec()["paths"]["/v1/txs/prepare"]["post"]
    request = op["requestBody"]["content"]["application/json"]["examples"]["ed25519-register"]
    assert shown == request["value"]


async def test_the_client_prepares_checks_and_submits(api: ApiHarness) -> None:
    key = PARTNERS[2]
    async with AsyncClient(api.url) as client:
        prepared = await client.prepare(unsigned(key))
        assert prepared.transaction.sender == key.address
        info = await client.submit(prepared.signed(key.sign(prepared.sign_bytes)))
    assert info.new
    assert info.tx_hash == prepared.signed(key.sign(prepared.sign_bytes)).hash


@pytest.mark.parametrize(
    "lie",
    [
        {"body": "99"},
        {"sign_bytes": "00" * 32},
        {"signed_prefix": "9a"},
        {"transaction": {"nonce": 2}},
        {"transaction": {"args": []}},
        {"transaction": {"sender": "11" * 20}},
    ],
    ids=["body", "sign-bytes", "prefix", "nonce", "args", "sender"],
)
def test_the_client_refuses_an_answer_for_another_transaction(lie: dict[str, Any]) -> None:
    request = unsigned(PARTNERS[2])
    honest = prepared_json(unsigned_tx_from_json(request))
    assert PreparedTx.from_json(honest, request).body.hex() == honest["body"]
    answer = {**honest, **lie}
    if "transaction" in lie:
        answer["transaction"] = {**honest["transaction"], **lie["transaction"]}
    with pytest.raises(CodecError, match="not the transaction asked for"):
        PreparedTx.from_json(answer, request)


async def test_an_ml_dsa_65_partner_signs_outside_too(api: ApiHarness) -> None:
    """ML-DSA-65 from `cryptography` alone (FIPS 204, empty context) over prepare's bytes."""
    key = dev_key("api-test", "pq-partner", "ml-dsa-65")
    api.node.members.add(key.address)
    api.node.nonces[key.address] = 0
    prepared = await prepare(api, unsigned(key, nonce=0, scheme="ml-dsa-65"))
    private = MLDSA65PrivateKey.from_seed_bytes(key.seed)
    signature = private.sign(bytes.fromhex(prepared["sign_bytes"]))
    doc = dict(prepared["transaction"], signature=signature.hex())
    r = await api.request("POST", "/v1/txs", json=doc)
    assert r.status == 202, r.body
    r = await api.request("POST", "/v1/txs", json={**doc, "nonce": 1})
    assert (r.status, slug(r.json())) == (422, "bad-signature")
