"""The explorer's files as the API serves them (no browser): the page and its two assets,
nothing else under /explorer/, and nothing loaded from another origin."""

from __future__ import annotations

import re

import aiohttp

from node import explorer
from node.http.api import make_api_app
from node.http.testing import start_api

from .conftest import FakeNode


async def test_page_and_assets_are_served_and_nothing_else(fake_node: FakeNode) -> None:
    app = make_api_app(fake_node, max_body_bytes=4096, rate_limit_per_s=0)
    runner, port = await start_api(app, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/") as r:
                assert r.status == 200
                assert r.content_type == "text/html"
                assert "default-src 'self'" in r.headers["Content-Security-Policy"]
                page = await r.text()
            for src in re.findall(r'(?:src|href)="(/explorer/[^"]+)"', page):
                async with s.get(f"{base}{src}") as r:
                    assert r.status == 200, src
            async with s.get(f"{base}/explorer/app.js") as r:
                assert r.content_type == "text/javascript"
            async with s.get(f"{base}/explorer/style.css") as r:
                assert r.content_type == "text/css"
            for bad in ("/explorer/__init__.py", "/explorer/..%2Fapi.py", "/explorer/nope.js"):
                async with s.get(f"{base}{bad}") as r:
                    assert r.status == 404, bad
                    assert r.content_type == "application/problem+json"
    finally:
        await runner.cleanup()


def test_no_external_urls_and_no_inline_code() -> None:
    """Everything is served by the node itself (the page's policy allows only 'self')."""
    for name in explorer.ASSETS:
        text = explorer.asset(name).decode()
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), name
    page = explorer.asset("index.html").decode()
    assert "<script>" not in page and "style=" not in page
    assert not re.search(r"\son[a-z]+\s*=", page, re.I)
    assert "style=" not in explorer.asset("app.js").decode()
