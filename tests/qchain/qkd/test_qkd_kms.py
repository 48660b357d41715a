"""Conformance of the simulated key manager with ETSI GS QKD 014 (V1.1.1, section 5), and
its link model and admin endpoint. The key manager runs on a virtual clock, so the rate
model is checked without sleeping."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from qchain.qkd.clock import VirtualClock
from qchain.qkd.keymanager import PROFILES, LinkConfig
from qchain.qkd.probe import STATUS_FIELDS
from qchain.qkd.testing import KMSClient, kms_test_config, running_kms

RATE = 25_600  # 100 keys of 256 bits per second
LINKS = [
    LinkConfig(
        saes=("a", "b"),
        bits_per_second=RATE,
        max_key_count=1000,
        max_key_per_request=10,
        initial_key_count=200,
    ),
    LinkConfig(saes=("a", "c"), bits_per_second=RATE, max_key_count=500),
]


@pytest.fixture
async def kms() -> AsyncIterator[KMSClient]:
    clock = VirtualClock()
    async with (
        running_kms(kms_test_config(LINKS), clock) as server,
        aiohttp.ClientSession() as http,
    ):
        yield KMSClient(server, clock, http)


def assert_error(status: int, body: Any, expected: int) -> None:
    assert status == expected, body
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["details"], list)
    assert all(isinstance(d, dict) for d in body["details"])


def check_keys(body: Any, number: int, size_bits: int) -> list[tuple[str, bytes]]:
    assert set(body) == {"keys"}
    out = []
    for k in body["keys"]:
        assert set(k) == {"key_ID", "key"}
        assert str(uuid.UUID(k["key_ID"])) == k["key_ID"]
        material = base64.b64decode(k["key"], validate=True)
        assert len(material) * 8 == size_bits
        out.append((k["key_ID"], material))
    assert len(out) == number and len({i for i, _ in out}) == number
    return out


async def test_status_fields(kms: KMSClient) -> None:
    status, body = await kms.call("a", "GET", "b/status")
    assert status == 200
    for name, kind in STATUS_FIELDS.items():
        assert isinstance(body[name], kind), name
    assert body["source_KME_ID"] == "KME-a" and body["target_KME_ID"] == "KME-b"
    assert body["master_SAE_ID"] == "a" and body["slave_SAE_ID"] == "b"
    assert (body["key_size"], body["min_key_size"], body["max_key_size"]) == (256, 64, 1024)
    assert body["stored_key_count"] == 200 and body["max_key_count"] == 1000
    assert body["max_key_per_request"] == 10 and body["max_SAE_ID_count"] == 0
    assert body["status_extension"] == {"qchain_bits_per_second": RATE}
    # either end of a link can be master
    status, body = await kms.call("b", "GET", "a/status")
    assert status == 200 and body["master_SAE_ID"] == "b"


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_get_key_and_get_key_with_ids(kms: KMSClient, method: str) -> None:
    if method == "GET":
        status, body = await kms.call("a", "GET", "b/enc_keys", params={"number": 3, "size": 512})
    else:
        status, body = await kms.call("a", "POST", "b/enc_keys", json={"number": 3, "size": 512})
    assert status == 200
    keys = check_keys(body, 3, 512)
    if method == "GET":
        status, body = await kms.call(
            "b", "GET", "a/dec_keys", params=[("key_ID", keys[0][0]), ("key_ID", keys[1][0])]
        )
        assert status == 200 and check_keys(body, 2, 512) == keys[:2]
        status, body = await kms.call("b", "GET", "a/dec_keys", params={"key_ID": keys[2][0]})
        assert status == 200 and check_keys(body, 1, 512) == keys[2:]
    else:
        ids = {"key_IDs": [{"key_ID": i} for i, _ in keys]}
        status, body = await kms.call("b", "POST", "a/dec_keys", json=ids)
        assert status == 200 and check_keys(body, 3, 512) == keys
    _, st = await kms.call("a", "GET", "b/status")
    assert st["stored_key_count"] == 200 - 6  # 3 keys of two key_size units each


async def test_defaults_number_one_and_key_size(kms: KMSClient) -> None:
    status, body = await kms.call("a", "POST", "b/enc_keys", json={})
    assert status == 200 and len(check_keys(body, 1, 256)) == 1
    status, body = await kms.call("a", "GET", "b/enc_keys")
    assert status == 200 and len(check_keys(body, 1, 256)) == 1


async def test_one_shot_delivery(kms: KMSClient) -> None:
    _, body = await kms.call("a", "POST", "b/enc_keys", json={"number": 2})
    ids = [k["key_ID"] for k in body["keys"]]
    req = {"key_IDs": [{"key_ID": ids[0]}]}
    assert (await kms.call("b", "POST", "a/dec_keys", json=req))[0] == 200
    status, body = await kms.call("b", "POST", "a/dec_keys", json=req)
    assert_error(status, body, 400)
    assert body["details"] == [{"key_ID": ids[0]}]
    # only the slave of that direction gets the key: not the master, not a third SAE
    req = {"key_IDs": [{"key_ID": ids[1]}]}
    assert_error(*(await kms.call("a", "POST", "b/dec_keys", json=req)), 400)
    assert_error(*(await kms.call("c", "POST", "a/dec_keys", json=req)), 400)
    assert (await kms.call("b", "POST", "a/dec_keys", json=req))[0] == 200


@pytest.mark.parametrize(
    ("body", "params"),
    [
        ({"number": 11}, {"number": "11"}),
        ({"number": 0}, {"number": "0"}),
        ({"size": 260}, {"size": "260"}),
        ({"size": 32}, {"size": "32"}),
        ({"size": 2048}, {"size": "2048"}),
        ({"number": "x"}, {"number": "x"}),
        ({"number": -1}, {"number": "-1"}),
    ],
)
async def test_enc_keys_limits_are_400(kms: KMSClient, body: Any, params: Any) -> None:
    assert_error(*(await kms.call("a", "POST", "b/enc_keys", json=body)), 400)
    assert_error(*(await kms.call("a", "GET", "b/enc_keys", params=params)), 400)


async def test_malformed_requests_are_400(kms: KMSClient) -> None:
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "b/enc_keys", {"json": {"additional_slave_SAE_IDs": ["c"]}}),
        ("POST", "b/enc_keys", {"json": {"extension_mandatory": [{"x": 1}]}}),
        ("POST", "b/enc_keys", {"data": b"{not json"}),
        ("POST", "b/enc_keys", {"json": [1, 2]}),
        ("POST", "b/dec_keys", {"json": {"key_IDs": []}}),
        ("POST", "b/dec_keys", {"json": {"key_IDs": [{"key_ID": "not-a-uuid"}]}}),
        ("POST", "b/dec_keys", {"json": {"key_IDs": ["plain"]}}),
        ("GET", "b/dec_keys", {}),
        ("GET", "zed/status", {}),
        ("POST", "b/dec_keys", {"data": b"x" * 70_000}),
        ("POST", "b/enc_keys", {"data": b"[" * 10_000 + b"]" * 10_000}),
        ("POST", "b/enc_keys", {"data": b'{"number": NaN}'}),
        ("POST", "b/enc_keys", {"data": b'{"number": "\\ud800"}'}),
        ("POST", "b/dec_keys", {"data": b'{"key_IDs": ["\xff"]}'}),
    ]
    for method, path, kw in cases:
        assert_error(*(await kms.call("a", method, path, **kw)), 400)
    many = {"key_IDs": [{"key_ID": str(uuid.uuid4())} for _ in range(11)]}
    assert_error(*(await kms.call("a", "POST", "b/dec_keys", json=many)), 400)
    # optional extensions are ignored
    status, _ = await kms.call("a", "POST", "b/enc_keys", json={"extension_optional": [{"x": 1}]})
    assert status == 200


async def test_unauthorised_is_401(kms: KMSClient) -> None:
    assert_error(*(await kms.call(None, "GET", "b/status")), 401)
    assert_error(*(await kms.call("mallory", "GET", "b/status")), 401)
    assert_error(*(await kms.call("b", "GET", "c/status")), 401)  # no b~c link
    assert_error(*(await kms.call("b", "POST", "c/enc_keys", json={})), 401)


async def test_not_enough_keys_is_503(kms: KMSClient) -> None:
    for _ in range(20):
        assert (await kms.call("a", "POST", "b/enc_keys", json={"number": 10}))[0] == 200
    status, body = await kms.call("a", "POST", "b/enc_keys", json={"number": 1})
    assert_error(status, body, 503)
    assert "not enough keys" in body["message"]
    assert body["details"] == [{"reason": "exhausted", "stored_key_count": 0, "requested": 1}]
    kms.clock.advance(0.25)  # 25 keys
    assert (await kms.call("a", "POST", "b/enc_keys", json={"number": 10}))[0] == 200


async def test_pool_cap(kms: KMSClient) -> None:
    kms.clock.advance(3600)
    _, body = await kms.call("a", "GET", "b/status")
    assert body["stored_key_count"] == body["max_key_count"] == 1000
    _, report = await kms.admin("GET", "links/a/b")
    assert report["counters"]["generated_bits"] == 800 * 256


@pytest.mark.parametrize("seconds", [0.5, 1.0, 2.5, 4.0])
async def test_rate_model(kms: KMSClient, seconds: float) -> None:
    _, before = await kms.call("a", "GET", "c/status")
    assert before["stored_key_count"] == 0
    kms.clock.advance(seconds)
    _, after = await kms.call("a", "GET", "c/status")
    expected = RATE * seconds / 256
    assert abs(after["stored_key_count"] - expected) <= 0.1 * expected


async def test_admin_rate_outage_eavesdropper(kms: KMSClient) -> None:
    assert (await kms.admin("GET", "links", token="wrong"))[0] == 401
    status, body = await kms.admin("POST", "links/a/c/rate", {"profile": "lab"})
    assert status == 200 and body["bits_per_second"] == PROFILES["lab"]
    status, body = await kms.admin("POST", "links/a/c/rate", {"bits_per_second": 2560})
    assert body["bits_per_second"] == 2560
    kms.clock.advance(1.0)
    assert (await kms.call("a", "GET", "c/status"))[1]["stored_key_count"] == 10
    assert (await kms.admin("POST", "links/a/zed/rate", {"bits_per_second": 1}))[0] == 404
    assert (await kms.admin("POST", "links/a/c/rate", {"bits_per_second": "fast"}))[0] == 400

    await kms.admin("POST", "links/a/b/outage", {"active": True})
    status, body = await kms.call("a", "POST", "b/enc_keys", json={})
    assert_error(status, body, 503)
    assert "outage" in body["message"]
    assert_error(*(await kms.call("b", "GET", "a/status")), 503)
    await kms.admin("POST", "links/a/b/outage", {"active": False})
    assert (await kms.call("a", "POST", "b/enc_keys", json={}))[0] == 200

    status, body = await kms.admin("POST", "links/a/b/eavesdropper", {"active": True})
    assert body["stored_key_count"] == 0 and body["eavesdropper"] is True
    status, body = await kms.call("a", "POST", "b/enc_keys", json={})
    assert_error(status, body, 503)
    assert "eavesdropping" in body["message"]
    kms.clock.advance(10)
    assert (await kms.call("a", "GET", "b/status"))[1]["stored_key_count"] == 0
    await kms.admin("POST", "links/a/b/eavesdropper", {"active": False})
    kms.clock.advance(1)
    assert (await kms.call("a", "GET", "b/status"))[1]["stored_key_count"] == 100

    status, body = await kms.admin("GET", "links")
    assert status == 200 and [lk["link"] for lk in body["links"]] == ["a~b", "a~c"]
    counters = body["links"][0]["counters"]
    assert counters["unavailable"] == 3 and counters["keys_to_master"] == 1
    assert counters["flushed_bits"] == (200 + 100 - 1) * 256  # initial + 1 s - 1 taken


async def test_admin_adds_and_drops_sae_pairs_at_run_time(kms: KMSClient) -> None:
    """A validator joins: its SAE's links are added; it leaves: they are dropped with
    their keys, and the SAE is then unknown (CONSENSUS.md §10.6)."""
    assert_error(*(await kms.call("d", "GET", "a/status")), 401)
    status, body = await kms.admin("PUT", "links/a/d", {"bits_per_second": 2560})
    assert status == 200 and body["link"] == "a~d" and body["bits_per_second"] == 2560
    assert body["max_key_count"] == 1000  # copied from a's first link, a~b, with its 200 keys
    kms.clock.advance(1.0)
    assert (await kms.call("d", "GET", "a/status"))[1]["stored_key_count"] == 210
    keys = check_keys((await kms.call("a", "POST", "d/enc_keys", json={"number": 2}))[1], 2, 256)
    got = await kms.call("d", "POST", "a/dec_keys", json={"key_IDs": [{"key_ID": keys[0][0]}]})
    assert check_keys(got[1], 1, 256) == keys[:1]
    assert_error(*(await kms.call("d", "GET", "b/status")), 401)  # no b~d link
    assert (await kms.admin("PUT", "links/d/a", {}))[0] == 400  # exists
    assert (await kms.admin("PUT", "links/d/d", {}))[0] == 400  # an SAE to itself
    assert (await kms.admin("PUT", "links/a/bad%20id", {}))[0] == 400
    assert (await kms.admin("PUT", "links/a/" + "x" * 65, {}))[0] == 400
    assert (await kms.admin("PUT", "links/a/e", {"bits_per_second": -1}))[0] == 400
    assert (await kms.admin("PUT", "links/a/e", {"bits_per_second": "fast"}))[0] == 400
    assert (await kms.admin("PUT", "links/a/e", {}, token="wrong"))[0] == 401

    status, body = await kms.admin("DELETE", "links/d/a")
    assert status == 200 and body == {"dropped": "a~d"}
    # the key still waiting for d is gone with the link, and d is unknown again
    assert_error(
        *(await kms.call("d", "POST", "a/dec_keys", json={"key_IDs": [{"key_ID": keys[1][0]}]})),
        401,
    )
    assert_error(*(await kms.call("d", "GET", "a/status")), 401)
    assert (await kms.admin("DELETE", "links/d/a"))[0] == 404
    _, listed = await kms.admin("GET", "links")
    assert [lk["link"] for lk in listed["links"]] == ["a~b", "a~c"]
