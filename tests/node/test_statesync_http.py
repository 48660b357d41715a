"""State sync over real HTTP on 127.0.0.1 (`node.statesync_run.ApiSource` and the
client's bounded reads): a hostile server that corrupts chunks, sends oversized answers
or lists made-up heights, beside an honest one serving the validator's real API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from contracts.snapshot import MAX_CHUNK_BYTES
from node import snapshots
from node.http.api import make_api_app
from node.http.testing import start_api
from node.runtime import Validator
from node.statesync import StateSync, Trust
from node.statesync_run import ApiSource
from qchain.client import AsyncClient
from qchain.errors import ResponseTooLarge
from qchain.store import MemoryStore, schema
from qchain.store.testing import flip_byte

from .test_statesync import _serving_validator


def _hostile_app(v: Validator, oversized: set[int]) -> web.Application:
    async def listing(request: web.Request) -> web.Response:
        heights = [*snapshots.heights(v.store), 4 * 10**12]
        return web.json_response({"snapshots": [{"height": h} for h in heights]})

    async def offer(request: web.Request) -> web.Response:
        # For the made-up height, the real offer of another height.
        found = snapshots.offer(v.chain, min(4, int(request.match_info["height"])))
        assert found is not None
        return web.Response(body=found.encode(), content_type="application/msgpack")

    async def block(request: web.Request) -> web.Response:
        found = snapshots.block_answer(v.chain, int(request.match_info["height"]))
        assert found is not None
        return web.Response(body=found.encode(), content_type="application/msgpack")

    async def chunk(request: web.Request) -> web.Response:
        h, i = int(request.match_info["height"]), int(request.match_info["index"])
        raw = snapshots.chunk(v.chain, h, i)
        assert raw is not None
        body = bytes(MAX_CHUNK_BYTES + 1) if i in oversized else flip_byte(raw, i % len(raw))
        return web.Response(body=body, content_type="application/msgpack")

    app = web.Application()
    app.router.add_get("/v1/snapshots", listing)
    app.router.add_get("/v1/snapshots/{height}", offer)
    app.router.add_get("/v1/snapshots/{height}/block", block)
    app.router.add_get("/v1/snapshots/{height}/chunks/{index}", chunk)
    return app


class Service:
    """Just enough of `NodeService` for the snapshot routes."""

    def __init__(self, v: Validator) -> None:
        self.chain = v.chain


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Validator:
    return _serving_validator(tmp_path_factory.mktemp("net"))


@pytest.fixture
async def servers(serving: Validator) -> AsyncIterator[tuple[str, str]]:
    hostile, port = await start_api(_hostile_app(serving, oversized={1, 3}), "127.0.0.1", 0)
    app = make_api_app(
        Service(serving),  # type: ignore[arg-type]
        max_body_bytes=1024,
        rate_limit_per_s=0,
    )
    honest, honest_port = await start_api(app, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}", f"http://127.0.0.1:{honest_port}"
    finally:
        await hostile.cleanup()
        await honest.cleanup()


async def test_over_http_a_hostile_server_is_refused_and_the_honest_one_used(
    serving: Validator, servers: tuple[str, str], tmp_path: Path
) -> None:
    hostile_url, honest_url = servers
    sources = [
        ApiSource("hostile", AsyncClient(hostile_url)),
        ApiSource("honest", AsyncClient(honest_url)),
    ]
    try:
        trust = Trust.of_genesis(serving.genesis)
        store = MemoryStore()
        done = await StateSync(trust, sources, parallel=4).run(store)
    finally:
        for s in sources:
            await s.client.close()
    assert done.height == 4
    # Every chunk the hostile server sent was refused (flipped: a hash mismatch;
    # oversized: not read past the bound) and fetched from the honest server.
    assert done.rejected_chunks + done.failed_fetches >= 1
    assert done.rejected_offers == 1  # the made-up height's offer: another height's
    assert list(store.iterate(schema.STATE)) == list(serving.store.iterate(schema.STATE))


async def test_the_client_reads_no_more_than_its_bound(
    serving: Validator, servers: tuple[str, str]
) -> None:
    hostile_url, honest_url = servers
    async with AsyncClient(hostile_url) as c:
        with pytest.raises(ResponseTooLarge):
            await c.snapshot_chunk(4, 1, MAX_CHUNK_BYTES)
        with pytest.raises(ResponseTooLarge):
            await c.snapshot_heights(10)
    async with AsyncClient(honest_url) as c:
        assert await c.snapshot_heights(64 * 1024) == [4]
        with pytest.raises(ResponseTooLarge):
            await c.snapshot_offer(4, 1000)
        assert len(await c.snapshot_chunk(4, 0, MAX_CHUNK_BYTES)) > 1000
