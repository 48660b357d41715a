"""The block explorer every node serves at `/`: static files in this package, no build step.

`index.html`, `app.js` and `style.css` are hand-written and load nothing from elsewhere;
the page reads the node's own public API (`/v1/...`) and its event stream. Every word on
the page comes from one of two message catalogues, `messages.en.json` (English) and
`messages.zh-CN.json` (Simplified Chinese), which hold the same keys. The files are
read once and kept in memory; `/explorer/{name}` serves only the names in `ASSETS`, so
no path from a request ever reaches the file system.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from aiohttp import web

HERE = Path(__file__).parent

ASSETS: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "messages.en.json": "application/json; charset=utf-8",
    "messages.zh-CN.json": "application/json; charset=utf-8",
}
"""The files served, with their content types."""

_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'"
    ),
}


@cache
def asset(name: str) -> bytes:
    """The bytes of one packaged file (KeyError if it is not one of `ASSETS`)."""
    if name not in ASSETS:
        raise KeyError(name)
    return (HERE / name).read_bytes()


def _response(name: str) -> web.Response:
    return web.Response(body=asset(name), headers={"Content-Type": ASSETS[name], **_HEADERS})


async def index(request: web.Request) -> web.Response:
    return _response("index.html")


async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    return _response(name)


def add_routes(router: web.UrlDispatcher) -> None:
    """`GET /` (the page) and `GET /explorer/{name}` (its script, style sheet and message
    catalogues)."""
    router.add_get("/", index, allow_head=False)
    router.add_get("/explorer/{name}", static_file, allow_head=False)
