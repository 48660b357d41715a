"""What the handlers and middlewares of an app share: the typed application keys through
which they find the node service and the app's settings, and the JSON answer they write.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from aiohttp import web

from node.metrics import NodeMetrics
from node.service import NodeService
from qchain.ratelimit import TokenBuckets

SERVICE: web.AppKey[NodeService] = web.AppKey("service")
"""The node the public API answers for."""
CLOSING: web.AppKey[asyncio.Event] = web.AppKey("closing")
"""Set when the app shuts down: open event streams end."""
SSE_HEARTBEAT_S: web.AppKey[float] = web.AppKey("sse_heartbeat_s")
"""Seconds between heartbeat comments on an idle event stream."""
MAX_BODY: web.AppKey[int] = web.AppKey("max_body_bytes")
"""The request body limit the app was built with (for the 413 problem)."""
METRICS: web.AppKey[NodeMetrics] = web.AppKey("metrics")
"""The node's metrics; absent when the app observes none."""
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock")
"""Monotonic seconds, for request durations and the rate limit."""
BUCKETS: web.AppKey[TokenBuckets[str]] = web.AppKey("rate_limit_buckets")
"""Token buckets per client address; absent when the app has no rate limit."""
ADMIN_AUTHORIZATION: web.AppKey[bytes] = web.AppKey("admin_authorization")
"""The `Authorization` header value the admin API accepts."""


def json_response(doc: object, status: int = 200, **headers: str) -> web.Response:
    """doc as an `application/json` answer."""
    return web.Response(
        status=status,
        body=json.dumps(doc).encode(),
        headers={"Content-Type": "application/json", **headers},
    )
