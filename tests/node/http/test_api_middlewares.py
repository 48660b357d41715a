"""The middlewares of the HTTP layer (`node.http.middlewares`), on a small app of their own."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from node.http.context import ADMIN_AUTHORIZATION, BUCKETS, CLOCK, MAX_BODY, METRICS
from node.http.middlewares import bearer_auth, count_requests, problems, rate_limit
from node.http.problems import PROBLEM_BASE
from node.http.testing import start_api
from node.metrics import NodeMetrics
from qchain.errors import NotReady
from qchain.ratelimit import TokenBuckets


async def ok(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"ok": True})


async def broken(request: web.Request) -> web.Response:
    raise ValueError("a bug")


async def not_ready(request: web.Request) -> web.Response:
    raise NotReady(["syncing"])


@dataclass
class Served:
    session: aiohttp.ClientSession
    url: str
    now: list[float]
    metrics: NodeMetrics

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, dict[str, Any], Any]:
        async with self.session.request(method, self.url + path, **kw) as r:
            return r.status, dict(r.headers), await r.json(content_type=None)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    now = [0.0]
    metrics = NodeMetrics("middlewares-test")
    app = web.Application(client_max_size=64, middlewares=[count_requests, problems, rate_limit])
    app[MAX_BODY] = 64
    app[CLOCK] = lambda: now[0]
    app[METRICS] = metrics
    app[BUCKETS] = TokenBuckets[str](2.0, 2.0, app[CLOCK])
    app.router.add_route("*", "/healthz", ok)
    app.router.add_post("/ok", ok)
    app.router.add_get("/broken", broken)
    app.router.add_get("/not-ready", not_ready)
    runner, port = await start_api(app, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            yield Served(session, f"http://127.0.0.1:{port}", now, metrics)
    finally:
        await runner.cleanup()


async def test_an_unexpected_exception_is_a_logged_internal_error(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, "qchain.api"):
        status, headers, doc = await served.call("GET", "/broken")
    assert (status, doc["type"]) == (500, PROBLEM_BASE + "internal-error")
    assert headers["Content-Type"] == "application/problem+json"
    assert "a bug" not in doc["detail"]
    assert any("unexpected error answering GET /broken" in r.message for r in caplog.records)


async def test_a_state_of_the_node_is_answered_without_an_error_log(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, "qchain.api"):
        status, _, doc = await served.call("GET", "/not-ready")
    assert (status, doc["reasons"]) == (503, ["syncing"])
    assert not caplog.records


async def test_aiohttp_refusals_are_problems(served: Served) -> None:
    status, _, doc = await served.call("GET", "/nowhere")
    assert (status, doc["type"]) == (404, PROBLEM_BASE + "not-found")
    status, headers, doc = await served.call("GET", "/ok")
    assert (status, headers["Allow"], doc["allowed"]) == (405, "POST", ["POST"])
    served.now[0] += 10
    status, _, doc = await served.call("POST", "/ok", data=b"x" * 65)
    assert (status, doc["type"], doc["limit"]) == (413, PROBLEM_BASE + "body-too-large", 64)


async def test_the_rate_limit_refuses_per_address_except_probes(served: Served) -> None:
    assert (await served.call("POST", "/ok"))[0] == 200
    assert (await served.call("POST", "/ok"))[0] == 200
    status, headers, doc = await served.call("POST", "/ok")
    assert (status, headers["Retry-After"], doc["retry_after"]) == (429, "1", 1)
    assert (await served.call("GET", "/healthz"))[0] == 200
    served.now[0] += 0.5
    assert (await served.call("POST", "/ok"))[0] == 200
    assert b"qchain_api_rate_limited_total 1.0" in served.metrics.exposition()


async def test_requests_are_counted_by_route_and_status(served: Served) -> None:
    await served.call("POST", "/ok")
    await served.call("GET", "/nowhere")
    text = served.metrics.exposition().decode()
    assert 'qchain_api_requests_total{method="POST",route="/ok",status="200"} 1.0' in text
    assert 'route="unmatched",status="404"} 1.0' in text


async def test_bearer_auth_refuses_without_the_token() -> None:
    app = web.Application(middlewares=[problems, bearer_auth])
    app[MAX_BODY] = 1024
    app[ADMIN_AUTHORIZATION] = b"Bearer s3cret"
    app.router.add_get("/admin/x", ok)
    runner, port = await start_api(app, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}/admin/x"
    try:
        async with aiohttp.ClientSession() as session:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                async with session.get(url, headers=headers) as r:
                    doc = await r.json(content_type=None)
                    assert (r.status, doc["type"]) == (401, PROBLEM_BASE + "unauthorized")
            async with session.get(url, headers={"Authorization": "Bearer s3cret"}) as r:
                assert r.status == 200
    finally:
        await runner.cleanup()
