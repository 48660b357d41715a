"""Set chains (docs/CONSENSUS.md §10.5): `GET /v1/setchain?height=H`, the chain that
proves the validator set of height H from genesis on a chain whose set changes
(`node.setchains`), and what the receipt endpoint attaches to a receipt there.

The node serves what it built, never checked by the client on its word: a verifier takes
the canonical bytes (`application/msgpack`, or `set_chain` in the JSON form, their hex)
and checks them from its own genesis (`contracts.setchain.prove_set`, `qchain receipt
verify --genesis`). On a chain whose set never changes there is no set chain
(`not-governed`, 404)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from contracts.setchain import SetChain
from node.http.context import SERVICE, json_response
from node.http.params import parse_uint, wants_msgpack
from node.service import NodeService
from qchain.errors import BadParameter, NotGoverned
from qchain.jsonform import MSGPACK


def set_chain_to_json(height: int, chain: SetChain) -> dict[str, Any]:
    """The JSON form: what the chain holds, for reading, and its canonical bytes."""
    tail = chain.tail
    return {
        "height": height,
        "links": [
            {
                "block": link.header.height,
                "certified_at": link.certificate.height,
            }
            for link in chain.links
        ],
        "tail": None if tail is None else {"from": tail.header.height, "to": height},
        "set_chain": chain.encode().hex(),
    }


def set_chain_of(service: NodeService, height: int) -> SetChain | None:
    """The set chain of height, None on a chain whose set never changes."""
    try:
        return service.set_chain(height)
    except NotGoverned:
        return None


async def get_set_chain(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    text = request.query.get("height")
    if text is None:
        raise BadParameter("height", "required: the committed height whose set to prove")
    height = parse_uint(text, "height", 1)
    chain = service.set_chain(height)
    if wants_msgpack(request):
        return web.Response(body=chain.encode(), headers={"Content-Type": MSGPACK})
    return json_response(set_chain_to_json(height, chain))
