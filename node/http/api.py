"""The node's public HTTP API (aiohttp), as described in `node/openapi.yaml`.

`make_api_app(service, ...)` builds the application over a `NodeService`; the runtime
serves it, over TLS when configured (`make_ssl_context`). The API adds no chain logic of
its own: it parses requests strictly (`node.http.params`), calls the service, and writes
answers in the JSON forms of `qchain.jsonform` (or canonical msgpack where asked).

Errors are RFC 9457 problem+json documents from the one table of `node.http.problems`.
Bad input never gives a 500: anything unexpected is logged and answered with an
`internal-error` problem. Requests are limited in body size (413) and, per client address,
by a token bucket (429 with `Retry-After`); `/healthz`, `/readyz` and `/metrics` are not
rate limited. JSON bodies and JSON query arguments are read with
`qchain.jsonform.parse_json` before any handler looks at them (UTF-8, nesting depth, lone
surrogates, number range).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from node import explorer
from node.http import prepare, setchain, snapshot, state, stream, tx
from node.http.context import (
    BUCKETS,
    CLOCK,
    CLOSING,
    MAX_BODY,
    METRICS,
    SERVICE,
    SSE_HEARTBEAT_S,
)
from node.http.middlewares import count_requests, problems, rate_limit
from node.metrics import NodeMetrics
from node.service import NodeService
from qchain import clock as loop_clock
from qchain.ratelimit import TokenBuckets


async def _close_streams(app: web.Application) -> None:
    app[CLOSING].set()


def make_api_app(
    service: NodeService,
    *,
    max_body_bytes: int,
    rate_limit_per_s: float,
    metrics: NodeMetrics | None = None,
    sse_heartbeat_s: float = 15.0,
    clock: Callable[[], float] = loop_clock.monotonic,
) -> web.Application:
    """The public API over service. rate_limit_per_s 0 disables the limit; the bucket
    holds one second's worth of requests (at least 1). clock is for tests."""
    app = web.Application(
        client_max_size=max_body_bytes, middlewares=[count_requests, problems, rate_limit]
    )
    app[SERVICE] = service
    app[CLOSING] = asyncio.Event()
    app[SSE_HEARTBEAT_S] = sse_heartbeat_s
    app[MAX_BODY] = max_body_bytes
    app[CLOCK] = clock
    if metrics is not None:
        app[METRICS] = metrics
    if rate_limit_per_s > 0:
        app[BUCKETS] = TokenBuckets[str](rate_limit_per_s, max(1.0, rate_limit_per_s), clock)
    app.on_shutdown.append(_close_streams)
    r = app.router
    r.add_post("/v1/txs", tx.post_tx)
    r.add_post("/v1/txs/batch", tx.post_batch)
    r.add_post("/v1/txs/prepare", prepare.post_prepare)
    r.add_get("/v1/txs/{hash}", tx.get_tx, allow_head=False)
    r.add_get("/v1/receipts/{hash}", tx.get_receipt, allow_head=False)
    r.add_get("/v1/setchain", setchain.get_set_chain, allow_head=False)
    r.add_get("/v1/blocks", state.get_blocks, allow_head=False)
    r.add_get("/v1/blocks/latest", state.get_latest_block, allow_head=False)
    r.add_get("/v1/blocks/{height}", state.get_block, allow_head=False)
    r.add_get("/v1/blocks/{height}/certificate", state.get_certificate, allow_head=False)
    r.add_get("/v1/accounts/{address}", state.get_account, allow_head=False)
    r.add_get("/v1/contracts/{name}/{query}", state.get_query, allow_head=False)
    r.add_get("/v1/notary/{digest}", state.get_notary_anchor, allow_head=False)
    r.add_get("/v1/snapshots", snapshot.get_snapshots, allow_head=False)
    r.add_get("/v1/snapshots/{height}", snapshot.get_snapshot, allow_head=False)
    r.add_get("/v1/snapshots/{height}/block", snapshot.get_block, allow_head=False)
    r.add_get("/v1/snapshots/{height}/chunks/{index}", snapshot.get_chunk, allow_head=False)
    r.add_get("/v1/status", state.get_status, allow_head=False)
    r.add_get("/v1/qkd", state.get_qkd, allow_head=False)
    r.add_get("/v1/events", stream.events, allow_head=False)
    r.add_get("/healthz", state.healthz, allow_head=False)
    r.add_get("/readyz", state.readyz, allow_head=False)
    r.add_get("/metrics", state.metrics, allow_head=False)
    r.add_get("/openapi.json", state.openapi, allow_head=False)
    explorer.add_routes(r)
    return app


def make_ssl_context(cert_file: str | Path, key_file: str | Path) -> ssl.SSLContext:
    """Server TLS context from a PEM certificate (chain) and its private key."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx
