"""The load generator sends refused transactions again: a partner's client would, since
its sender's later nonces cannot commit without them."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from aiohttp import web

from devnet.bench import load
from devnet.bench.load import RETRY_AFTER_MAX_S, Spec, generate, parse_retry_after

Handler = Callable[[web.Request], Awaitable[web.Response]]


async def _generate(
    tmp_path: Path, batch: Handler, stream: list[bytes], rate: float, seconds: float
) -> dict[str, Any]:
    """Run the load generator against a fake `POST /v1/txs/batch` on 127.0.0.1."""
    app = web.Application()
    app.router.add_post("/v1/txs/batch", batch)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    path = tmp_path / "stream.msgpack"
    path.write_bytes(msgpack.packb(stream, use_bin_type=True))
    try:
        spec = Spec([f"http://127.0.0.1:{port}"], [str(path)], rate, seconds, drain_s=15.0)
        return await generate(spec)
    finally:
        await runner.cleanup()


async def test_refused_transactions_are_sent_again_until_accepted(tmp_path: Path) -> None:
    seen: dict[bytes, int] = {}
    refused_once: set[bytes] = set()
    requests = 0

    async def batch(request: web.Request) -> web.Response:
        nonlocal requests
        requests += 1
        txs = msgpack.unpackb(await request.read())
        if requests == 2:
            refused_once.update(txs)
            return web.json_response({"type": "mempool-full"}, status=503)
        results: list[dict[str, object]] = []
        for i, tx in enumerate(txs):
            seen[tx] = seen.get(tx, 0) + 1
            if seen[tx] == 1 and i % 3 == 1:
                refused_once.add(tx)
                problem = {"type": "https://qchain.dev/problems/mempool-full", "status": 503}
                results.append({"item": i, "problem": problem})
            elif tx.endswith(b"bad"):
                problem = {"type": "https://qchain.dev/problems/bad-signature", "status": 400}
                results.append({"item": i, "problem": problem})
            else:
                results.append({"item": i, "new": seen[tx] == 1})
        return web.json_response({"results": results})

    stream = [f"tx-{i}".encode() for i in range(60)] + [b"tx-bad"]
    result = await _generate(tmp_path, batch, stream, 200.0, 0.4)
    chunks = result["chunks"]
    offered = sum(c["count"] for c in chunks)
    accepted = sum(c["accepted"] for c in chunks)
    refused: dict[str, int] = {}
    for c in chunks:
        for code, k in c["refused"].items():
            refused[code] = refused.get(code, 0) + k
    assert offered == result["offered"] == 61
    assert accepted == 60, "every transaction refused for want of room got in"
    assert refused == {"bad-signature": 1}, "a real rejection is not sent again"
    assert len(refused_once) >= 10
    assert sum(c["resent"] for c in chunks) >= len(refused_once - {b"tx-bad"})
    assert all(seen[tx] >= 1 for tx in stream)


async def test_a_refused_transaction_holds_back_its_senders_later_ones(tmp_path: Path) -> None:
    """Later nonces of a sender wait until its refused transaction is accepted, so the
    node never sees them behind a gap; other senders go on."""
    accepted: dict[bytes, list[int]] = {}
    refused: set[bytes] = set()

    async def batch(request: web.Request) -> web.Response:
        results: list[dict[str, object]] = []
        full = False
        for i, raw in enumerate(msgpack.unpackb(await request.read())):
            _, sender, nonce = msgpack.unpackb(raw)
            # Like a node's pool: once full, it refuses the rest of the request too.
            if full or (nonce % 5 == 1 and raw not in refused):
                full = True
                refused.add(raw)
                problem = {"type": "https://qchain.dev/problems/mempool-full", "status": 503}
                results.append({"item": i, "problem": problem})
                continue
            accepted.setdefault(sender, []).append(nonce)
            results.append({"item": i, "new": True})
        return web.json_response({"results": results})

    senders = [b"A" * 20, b"B" * 20, b"C" * 20]
    stream = [msgpack.packb(["chain", s, n], use_bin_type=True) for n in range(12) for s in senders]
    result = await _generate(tmp_path, batch, stream, 300.0, 0.3)
    assert {s: sorted(v) for s, v in accepted.items()} == {s: list(range(12)) for s in senders}
    for s in senders:
        assert accepted[s] == sorted(accepted[s]), "no nonce got in ahead of a refused one"
    assert sum(c["accepted"] for c in result["chunks"]) == len(stream)
    assert sum(c["resent"] for c in result["chunks"]) >= len(refused)


async def test_retry_after_is_honoured_and_late_acceptance_recorded(tmp_path: Path) -> None:
    """An `overloaded` item is sent again no sooner than its `retry_after`, not after the
    0.2 s back-off; the chunk records when it was accepted."""
    first_refusal: dict[bytes, float] = {}
    resent_after: dict[bytes, float] = {}

    async def batch(request: web.Request) -> web.Response:
        results: list[dict[str, object]] = []
        now = time.monotonic()
        for i, raw in enumerate(msgpack.unpackb(await request.read())):
            if raw == b"tx-1" and raw not in first_refusal:
                first_refusal[raw] = now
                problem = {
                    "type": "https://qchain.dev/problems/overloaded",
                    "status": 503,
                    "retry_after": 1,
                }
                results.append({"item": i, "problem": problem})
                continue
            if raw in first_refusal:
                resent_after[raw] = now - first_refusal[raw]
            results.append({"item": i, "new": True})
        return web.json_response({"results": results}, headers={"Retry-After": "1"})

    stream = [f"tx-{i}".encode() for i in range(4)]
    result = await _generate(tmp_path, batch, stream, 100.0, 0.1)
    assert sum(c["accepted"] for c in result["chunks"]) == 4
    assert resent_after[b"tx-1"] >= 0.95, "waited the Retry-After, not the back-off"
    late = {c["offset"]: c for c in result["chunks"] if c["accepted_at"]}
    assert sorted(late) == [0], "tx-2 and tx-3 are from other senders: not held"
    assert late[0]["resent"] == 1 and list(late[0]["accepted_at"]) == ["1"], "tx-1, resent"
    for c in late.values():
        for at in c["accepted_at"].values():
            assert at - late[0]["posted"] >= 0.95


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after("3600") == RETRY_AFTER_MAX_S
    for bad in (None, "", "soon", "-1", "nan", "inf", "Wed, 21 Oct 2015 07:28:00 GMT"):
        assert parse_retry_after(bad) is None


async def test_no_nonce_is_sent_before_an_earlier_refused_one_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small requests, so that what is due again goes in a request of its own before the
    new transactions: a sender refused there (or in any earlier request) has none of its
    later nonces sent until the refused one is accepted; a node never sees a nonce whose
    predecessor it has not accepted, unless that predecessor came first in the same
    request."""
    monkeypatch.setattr(load, "MAX_BATCH_TXS", 3)
    expected: dict[bytes, int] = {}
    refused: set[bytes] = set()
    ahead: list[tuple[bytes, int, int]] = []

    async def batch(request: web.Request) -> web.Response:
        results: list[dict[str, object]] = []
        full = False
        going = dict(expected)
        for i, raw in enumerate(msgpack.unpackb(await request.read())):
            _, sender, nonce = msgpack.unpackb(raw)
            if nonce > going.get(sender, 0):
                ahead.append((sender, nonce, going.get(sender, 0)))
            going[sender] = max(going.get(sender, 0), nonce + 1)
            # Nonces 1 and 3 of every sender are refused the first time; once refused,
            # the rest of the request is too (a node's room is gone).
            if full or (nonce in (1, 3) and raw not in refused):
                full = True
                refused.add(raw)
                problem = {"type": "https://qchain.dev/problems/overloaded", "status": 503}
                results.append({"item": i, "problem": problem})
                continue
            if nonce == expected.get(sender, 0):
                expected[sender] = nonce + 1
            results.append({"item": i, "new": True})
        return web.json_response({"results": results})

    senders = [b"A" * 20, b"B" * 20]
    stream = [msgpack.packb(["chain", s, n], use_bin_type=True) for n in range(10) for s in senders]
    result = await _generate(tmp_path, batch, stream, 200.0, 0.1)
    assert ahead == [], "a nonce was sent ahead of an earlier one not yet accepted"
    assert expected == dict.fromkeys(senders, 10)
    assert sum(c["accepted"] for c in result["chunks"]) == len(stream)
