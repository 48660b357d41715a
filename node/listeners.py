"""The HTTP listeners of a validator (public API and admin API), and the admin token.

The admin token is read from `admin.token_file`, or made up and written there (mode 0600)
on first start; without a file it is random per run, which leaves the admin API usable
only to code in the same process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import ssl
from collections.abc import Awaitable
from pathlib import Path

from aiohttp import web

from qchain.config import split_address

log = logging.getLogger("qchain.node")


def admin_token(path: Path | None) -> str:
    if path is None:
        return secrets.token_hex(16)
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_hex(16)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


class Listeners:
    """The running HTTP servers of one node."""

    def __init__(self) -> None:
        self.runners: list[web.AppRunner] = []

    async def serve(
        self, app: web.Application, listen: str, ssl_ctx: ssl.SSLContext | None
    ) -> None:
        """Serve app on listen ("host:port")."""
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        host, port = split_address(listen)
        site = web.TCPSite(runner, host, port, ssl_context=ssl_ctx, reuse_address=True)
        await site.start()
        self.runners.append(runner)


STOP_STEP_TIMEOUT_S = 5.0


async def bounded(step: Awaitable[None], what: str) -> None:
    """Await one shutdown step, giving up (with a log line) after a few seconds."""
    try:
        await asyncio.wait_for(step, STOP_STEP_TIMEOUT_S)
    except TimeoutError:
        log.warning("closing the %s took over %.0fs; going on", what, STOP_STEP_TIMEOUT_S)
