"""The middlewares of the public and admin APIs.

A middleware finds what it needs on the application (`request.app[KEY]`, the keys of
`node.http.context`), so the same functions serve every app: `count_requests` observes
each request's route, status and duration in the node's metrics; `problems` answers every
error as problem+json (and never lets bad input become a bare 500); `rate_limit` takes a
token per request from the client address's bucket (429 with `Retry-After`), except on
`UNLIMITED_PATHS`; `bearer_auth` refuses admin requests without the admin token (401).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
from collections.abc import Awaitable, Callable

from aiohttp import web

from node.http.context import ADMIN_AUTHORIZATION, BUCKETS, CLOCK, MAX_BODY, METRICS
from node.http.problems import http_problem, log_server_error, problem_response
from qchain.errors import InternalError, QChainError, RateLimited, Unauthorized

log = logging.getLogger("qchain.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Paths of probes and scrapes, which the rate limit never refuses."""


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return "unmatched" if resource is None else resource.canonical


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    clock = request.app[CLOCK]
    start = clock()
    resp = await handler(request)
    metrics = request.app.get(METRICS)
    if metrics is not None:
        metrics.observe_api_request(
            _route_name(request), request.method, resp.status, clock() - start
        )
    return resp


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except QChainError as e:
        log_server_error(e, request)
        return problem_response(e, request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return problem_response(http_problem(e, request, request.app[MAX_BODY]), request)
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return problem_response(
            InternalError("unexpected error; the node's log has the details"), request
        )


@web.middleware
async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    buckets = request.app.get(BUCKETS)
    if buckets is not None and request.path not in UNLIMITED_PATHS:
        client = request.remote or "unknown"
        if not buckets.take(client):
            wait_s = buckets.wait_s(client)
            metrics = request.app.get(METRICS)
            if metrics is not None:
                metrics.api_rate_limited.inc()
            raise RateLimited(max(1, math.ceil(wait_s)))
    return await handler(request)


@web.middleware
async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Header bytes that are not UTF-8 arrive as lone surrogates (surrogateescape).
    given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, request.app[ADMIN_AUTHORIZATION]):
        raise Unauthorized()
    return await handler(request)
