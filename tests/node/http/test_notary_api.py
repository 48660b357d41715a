"""`GET /v1/notary/{digest}`: the anchor of a document digest without its transaction hash,
over real HTTP, every answer checked against openapi.yaml (and its examples too)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from contracts.notary import Anchor, anchor_key
from node.http.problems import PROBLEM_BASE
from node.http.state import openapi_spec
from qchain.client import AsyncClient
from qchain.errors import ApiError
from qchain.store.schema import state_key

from ..conftest import PARTNERS, ApiHarness

DIGEST = hashlib.sha256(b"contract 2026-118").digest()
ANCHOR = Anchor(
    DIGEST,
    "sha256",
    "Contract 2026-118, signed copy",
    "contract",
    b"\x01\x02",
    PARTNERS[0].address,
    7,
    1_796_412_345_678,
    bytes(range(32)),
    0,
)


def put_anchor(api: ApiHarness, anchor: Anchor) -> None:
    api.node.store.put(state_key("notary", anchor_key(anchor.digest)), anchor.encode())


def slug(doc: dict[str, Any]) -> str:
    return str(doc["type"]).removeprefix(PROBLEM_BASE)


async def test_lookup_by_digest_answers_the_anchor(api: ApiHarness) -> None:
    put_anchor(api, ANCHOR)
    for text in (DIGEST.hex(), DIGEST.hex().upper(), "0x" + DIGEST.hex()):
        r = await api.request("GET", f"/v1/notary/{text}")
        assert r.status == 200
        assert r.json() == {
            "digest": DIGEST.hex(),
            "algorithm": "sha256",
            "title": "Contract 2026-118, signed copy",
            "category": "contract",
            "metadata": "0102",
            "member": PARTNERS[0].address.hex(),
            "height": 7,
            "time": 1_796_412_345_678,
            "time_utc": "2026-12-04T19:25:45.678Z",
            "tx_hash": bytes(range(32)).hex(),
            "item": 0,
        }


async def test_a_digest_never_anchored_is_a_404_naming_it(api: ApiHarness) -> None:
    r = await api.request("GET", f"/v1/notary/{'ab' * 32}")
    assert r.status == 404
    doc = r.json()
    assert (slug(doc), doc["kind"], doc["key"]) == ("not-found", "anchor", "ab" * 32)


@pytest.mark.parametrize(
    "bad", ["abc", "zz" * 32, "ab" * 33, "ab" * 31, "%20" + "ab" * 32, "-1", "ab" * 32 + ".json"]
)
async def test_a_bad_digest_is_a_400_naming_the_parameter(api: ApiHarness, bad: str) -> None:
    r = await api.request("GET", f"/v1/notary/{bad}")
    assert r.status == 400
    doc = r.json()
    assert (slug(doc), doc["parameter"]) == ("invalid-parameter", "digest")
    assert doc["reason"] == "expected 64 hex digits"


async def test_the_sdk_looks_up_by_digest(api: ApiHarness) -> None:
    put_anchor(api, ANCHOR)
    async with AsyncClient(api.url) as c:
        found = await c.notary_lookup(DIGEST)
        assert found is not None and found["member"] == PARTNERS[0].address.hex()
        assert await c.notary_lookup("cd" * 32) is None
        with pytest.raises(ApiError) as e:
            await c.notary_lookup("not-hex")
        assert e.value.status == 400 and e.value.code == "invalid-parameter"


def test_the_spec_examples_are_valid_answers() -> None:
    spec = openapi_spec()
    registry: Registry[Any] = Registry().with_resource(
        "urn:spec", Resource.from_contents({**spec, "$id": "urn:spec"}, DRAFT202012)
    )
    op = spec["paths"]["/v1/notary/{digest}"]["get"]
    checked = 0
    for status in ("200", "400", "404"):
        (media, content), *_ = op["responses"][status]["content"].items()
        ptr = f"/paths/~1v1~1notary~1{{digest}}/get/responses/{status}/content/"
        ref = "urn:spec#" + ptr + media.replace("/", "~1") + "/schema"
        validator = Draft202012Validator({"$ref": ref}, registry=registry)
        for example in content["examples"].values():
            assert not list(validator.iter_errors(example["value"])), (status, example)
            checked += 1
    assert checked == 3
    for example in op["parameters"][0]["examples"].values():
        assert len(bytes.fromhex(example["value"])) == 32
