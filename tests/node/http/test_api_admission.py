"""Admission control over HTTP: an overloaded node answers 503 `overloaded` with
`Retry-After` and a problem document, refuses batch items beyond its room undecoded,
accepts again once commits drain the backlog, and loses nothing it accepted."""

from __future__ import annotations

from node.backlog import Backlog
from qchain.codec import encode_value

from ..conftest import PARTNERS, ApiHarness, make_tx
from .test_api import MSGPACK, problem_slug


def _bounded(api: ApiHarness) -> None:
    """A bound of 2 s at a measured 1 committed tx/s: room for 2 pending."""
    api.node.backlog = Backlog(2000, 1, window_s=10.0)
    api.node.now = 0.0
    api.node.backlog.committed(0.0, 1, 1, True)
    api.node.now = 1.0
    assert not api.node.pending


async def test_overloaded_node_answers_503_with_retry_after_then_accepts_again(
    api: ApiHarness,
) -> None:
    _bounded(api)
    key = PARTNERS[2]
    txs = [make_tx(key, 1 + i) for i in range(4)]
    for t in txs[:2]:
        r = await api.request("POST", "/v1/txs", data=t.encode(), headers=MSGPACK)
        assert r.status == 202
    r = await api.request("POST", "/v1/txs", data=txs[2].encode(), headers=MSGPACK)
    assert r.status == 503
    assert r.headers["Retry-After"] == "1"
    assert r.headers["Content-Type"].startswith("application/problem+json")
    doc = r.json()
    assert problem_slug(doc) == "overloaded"
    assert doc["retry_after"] == 1 and doc["bound_ms"] == 2000 and doc["backlog_ms"] == 2000
    assert doc["title"] == "Node overloaded; retry later"
    zh = await api.request(
        "POST",
        "/v1/txs",
        data=txs[2].encode(),
        headers={**MSGPACK, "Accept-Language": "zh-CN"},
    )
    assert zh.status == 503 and zh.json()["title"] == "节点过载，请稍后重试"
    assert txs[2].hash not in api.node.pending, "a refusal keeps nothing"

    # The backlog drains: a commit at t = 2 s (3 committed in 2 s: room for 3).
    api.node.now = 2.0
    first = api.node.commit_pending()
    assert [t.hash for t in first.txs] == [t.hash for t in txs[:2]]
    for t in txs[2:]:
        r = await api.request("POST", "/v1/txs", data=t.encode(), headers=MSGPACK)
        assert r.status == 202, "sent again after Retry-After, accepted"
    api.node.now = 3.0
    second = api.node.commit_pending()
    assert [t.hash for t in second.txs] == [t.hash for t in txs[2:]]
    for t in txs:
        st = await api.request("GET", f"/v1/txs/{t.hash.hex()}")
        assert st.json()["status"] == "committed", "every accepted transaction committed"


async def test_batch_items_beyond_the_room_are_refused_undecoded(api: ApiHarness) -> None:
    _bounded(api)
    key = PARTNERS[2]
    txs = [make_tx(key, 1 + i) for i in range(2)]
    junk = b"\xc1 not a transaction"
    body = encode_value([t.encode() for t in txs] + [junk, junk])
    r = await api.request("POST", "/v1/txs/batch", data=body, headers=MSGPACK)
    assert r.status == 200
    assert r.headers["Retry-After"] == "1"
    results = r.json()["results"]
    assert [x["new"] for x in results[:2]] == [True, True]
    for i, item in enumerate(results[2:], start=2):
        assert item["item"] == i
        assert problem_slug(item["problem"]) == "overloaded", "not decoded, so not malformed"
        assert item["problem"]["status"] == 503 and item["problem"]["retry_after"] == 1
    assert set(api.node.pending) == {t.hash for t in txs}
    assert api.node.preverified == txs, "the items within the room, checked off the loop"


async def test_without_a_bound_no_retry_after_is_sent(api: ApiHarness) -> None:
    t = make_tx(PARTNERS[2], 1)
    r = await api.request("POST", "/v1/txs/batch", data=encode_value([t.encode()]), headers=MSGPACK)
    assert r.status == 200 and "Retry-After" not in r.headers
