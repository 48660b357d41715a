"""Test helpers for the HTTP layer: serve an app on a free local port."""

from __future__ import annotations

import ssl

from aiohttp import web


async def start_api(
    app: web.Application,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    shutdown_timeout_s: float = 5.0,
) -> tuple[web.AppRunner, int]:
    """Serve app on host:port (0: any free port); returns the runner, whose `cleanup()`
    closes event streams and stops the server, and the port actually bound."""
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout_s, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    addresses = runner.addresses
    return runner, int(addresses[0][1]) if addresses else port
