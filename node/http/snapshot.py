"""Handlers that serve the state snapshots this node keeps (`node.snapshots`) to a node
that state-syncs: the list, the offer of one height (header, certificate, manifest), its
block with its receipts, and its chunks, as canonical bytes. Nothing served is trusted by
the fetcher: it checks the certificate against the validator set, the block against the
certified header and every chunk against the manifest, so the transport adds no
integrity (docs/SECURITY.md)."""

from __future__ import annotations

from aiohttp import web

from contracts.snapshot import Manifest
from node import snapshots
from node.http.context import SERVICE, json_response
from node.http.params import parse_uint
from qchain.errors import NotFound
from qchain.jsonform import MSGPACK


async def get_snapshots(request: web.Request) -> web.Response:
    chain = request.app[SERVICE].chain
    out = []
    for h in snapshots.heights(chain.store):
        found = snapshots.offer(chain, h)
        if found is not None:
            m = Manifest.decode(found.manifest)
            out.append({"height": h, "chunks": len(m.chunks), "entries": m.entry_count})
    return json_response({"snapshots": out})


async def get_snapshot(request: web.Request) -> web.Response:
    height = parse_uint(request.match_info["height"], "height")
    found = snapshots.offer(request.app[SERVICE].chain, height)
    if found is None:
        raise NotFound("snapshot", str(height))
    return web.Response(body=found.encode(), headers={"Content-Type": MSGPACK})


async def get_block(request: web.Request) -> web.Response:
    height = parse_uint(request.match_info["height"], "height")
    found = snapshots.block_answer(request.app[SERVICE].chain, height)
    if found is None:
        raise NotFound("snapshot block", str(height))
    return web.Response(body=found.encode(), headers={"Content-Type": MSGPACK})


async def get_chunk(request: web.Request) -> web.Response:
    height = parse_uint(request.match_info["height"], "height")
    index = parse_uint(request.match_info["index"], "index", 0, 2**32 - 1)
    raw = snapshots.chunk(request.app[SERVICE].chain, height, index)
    if raw is None:
        raise NotFound("snapshot chunk", f"{height}/{index}")
    return web.Response(body=raw, headers={"Content-Type": MSGPACK})
