"""Handlers for the chain's and the node's state: blocks, accounts, contract queries
(and the notary lookup by digest), status, QKD links, health and readiness probes,
metrics, and the API description.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from contracts import notary
from node.chainstore import ChainStore
from node.http.context import SERVICE, json_response
from node.http.params import parse_address, parse_hash, parse_uint, query_arg
from node.metrics import CONTENT_TYPE_LATEST
from qchain.errors import BadParameter, BelowBase, NotFound, NotReady
from qchain.jsonform import MSGPACK, block_to_json, fields_to_json, value_to_json

MAX_BLOCKS_PAGE = 100
"""Most blocks one `GET /v1/blocks` answer holds."""


@cache
def openapi_spec() -> dict[str, Any]:
    """The API description, parsed from `node/openapi.yaml`."""
    doc = yaml.safe_load(Path(__file__).parent.with_name("openapi.yaml").read_text())
    if not isinstance(doc, dict):
        raise TypeError("openapi.yaml does not hold a mapping")
    return doc


def _check_held(chain: ChainStore, height: int) -> None:
    """Raise `BelowBase` for a height a state-synced store holds no block of."""
    base = chain.base_height()
    if 1 <= height < base:
        raise BelowBase(height, base)


async def get_latest_block(request: web.Request) -> web.Response:
    chain = request.app[SERVICE].chain
    _check_held(chain, chain.height())
    block = chain.block(chain.height())
    if block is None:
        raise NotFound("block", "latest")
    return json_response(block_to_json(block))


async def get_block(request: web.Request) -> web.Response:
    height = parse_uint(request.match_info["height"], "height")
    chain = request.app[SERVICE].chain
    _check_held(chain, height)
    block = chain.block(height)
    if block is None:
        raise NotFound("block", str(height))
    return json_response(block_to_json(block))


async def get_certificate(request: web.Request) -> web.Response:
    """Canonical bytes of the commit certificate of a height (a node that holds a block
    without it asks its peers for it, `node.certbackfill`)."""
    height = parse_uint(request.match_info["height"], "height")
    chain = request.app[SERVICE].chain
    _check_held(chain, height)
    cert = chain.certificate(height) if 1 <= height <= chain.height() else None
    if cert is None:
        raise NotFound("certificate", str(height))
    return web.Response(body=cert.encode(), headers={"Content-Type": MSGPACK})


async def get_blocks(request: web.Request) -> web.Response:
    q = request.query
    start = parse_uint(q.get("from", "1"), "from")
    limit = parse_uint(q.get("limit", "20"), "limit", 1, MAX_BLOCKS_PAGE)
    chain = request.app[SERVICE].chain
    _check_held(chain, start)
    blocks = list(chain.blocks(start, limit))
    nxt = None
    if len(blocks) == limit and blocks[-1].height < chain.height():
        nxt = blocks[-1].height + 1
    return json_response({"blocks": [block_to_json(b) for b in blocks], "next": nxt})


async def get_account(request: web.Request) -> web.Response:
    address = parse_address(request.match_info["address"])
    acct = request.app[SERVICE].account(address)
    if acct is None:
        raise NotFound("account", address.hex())
    return json_response({**fields_to_json(acct), "address": address.hex()})


async def get_query(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    contract = request.match_info["name"]
    method = request.match_info["query"]
    args: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        if len(values) != 1:
            raise BadParameter(key, "given more than once")
        args[key] = query_arg(values[0], key)
    result = service.query(contract, method, args)
    return json_response(
        {
            "contract": contract,
            "method": method,
            "height": service.chain.height(),
            "result": value_to_json(result),
        }
    )


async def get_notary_anchor(request: web.Request) -> web.Response:
    """The notary contract's `get` query with the digest in the path as plain hex, and
    the anchor's byte fields as plain hex."""
    digest = parse_hash(request.match_info["digest"], "digest")
    anchor = request.app[SERVICE].query(notary.NAME, "get", {"digest": digest})
    if not isinstance(anchor, notary.Anchor):
        raise TypeError("notary.get answered something else than an Anchor")
    doc = fields_to_json({f.name: getattr(anchor, f.name) for f in dataclasses.fields(anchor)})
    doc["time_utc"] = (
        datetime.fromtimestamp(anchor.time / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
    return json_response(doc)


async def get_status(request: web.Request) -> web.Response:
    return json_response(fields_to_json(request.app[SERVICE].status()))


async def get_qkd(request: web.Request) -> web.Response:
    return json_response(fields_to_json(request.app[SERVICE].qkd_status()))


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ready, reasons = request.app[SERVICE].health()
    if not ready:
        raise NotReady(list(reasons) or ["not ready"])
    return json_response({"ready": True, "reasons": []})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[SERVICE].metrics_text(), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_spec())
