"""Handlers for transactions and receipts: submit one (`POST /v1/txs`, optionally waiting
for its commit), submit a batch, a transaction's status, a receipt with its proof (on a
chain whose validator set changes, with the set chain of its height: `node.http.setchain`).

A transaction comes as its canonical bytes (msgpack media types) or as JSON: its JSON form
or the hex of its canonical bytes. A batch decodes every item before admitting any, and
from the first admission on reports every failure per item, so a request never fails as a
whole after admitting something.

Admission control (`node.backlog`) comes first and costs no decoding: a node at its
admission bound answers a single submission 503 `overloaded` with `Retry-After`, and
refuses the items of a batch beyond its room the same way, per item, with the batch's
`Retry-After` the longest of them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from contracts.setchain import ChainedReceipt
from node.chainstore import ChainStore
from node.http.context import SERVICE, json_response
from node.http.params import MSGPACK_TYPES, media_type, parse_hash, parse_seconds, wants_msgpack
from node.http.problems import PROBLEM_BASE, log_server_error, problem_doc
from node.http.setchain import set_chain_of
from node.service import NodeService, TxStatus
from qchain import clock
from qchain.codec import Limits, decode_value
from qchain.errors import (
    BadParameter,
    CodecError,
    CommitTimeout,
    InternalError,
    MempoolFull,
    NotFound,
    NotFoundAboveBase,
    Overloaded,
    QChainError,
    TooLarge,
    UnsupportedMediaType,
)
from qchain.jsonform import (
    MSGPACK,
    parse_json,
    receipt_proof_to_json,
    receipt_to_json,
    tx_from_json,
    tx_to_json,
)
from qchain.types import MAX_TX_SIZE, Transaction, decode_transaction

log = logging.getLogger("qchain.api")

MAX_BATCH = 1000
"""Most transactions one batch request may hold."""
CERTIFICATE_WAIT_S = 3.0
"""How long a receipt request for a committed transaction waits for its certificate."""
MAX_WAIT_S = 300.0
"""Longest `?wait=commit` a client may ask for (`timeout`, seconds)."""
DEFAULT_WAIT_S = 30.0
"""How long `?wait=commit` waits when the client gives no `timeout`."""
_ADMISSIONS_PER_YIELD = 100
"""Batch items admitted between two yields to the event loop: admission checks
signatures, and consensus traffic must run in between."""


def status_json(st: TxStatus) -> dict[str, Any]:
    """A transaction's status document."""
    return {
        "tx_hash": st.tx_hash.hex(),
        "status": st.state,
        "height": st.height,
        "index": st.index,
        "receipt": None if st.receipt is None else receipt_to_json(st.receipt),
    }


def _hex_item(text: str) -> bytes:
    try:
        return bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise CodecError("transaction: not valid hex") from None


def _submit_item(service: NodeService, item: object) -> tuple[TxStatus, bool]:
    """One transaction from JSON: hex of its canonical bytes, or its JSON form."""
    if isinstance(item, str):
        return _submit_raw(service, _hex_item(item))
    if isinstance(item, dict):
        return service.submit_tx(tx_from_json(item))
    raise CodecError("transaction: expected a JSON object or a hex string")


def _submit_raw(service: NodeService, raw: bytes) -> tuple[TxStatus, bool]:
    if len(raw) > MAX_TX_SIZE:
        raise TooLarge(len(raw), MAX_TX_SIZE)
    return service.submit(raw)


def _decode_item(item: object, ctype: str) -> Transaction | QChainError:
    """A batch item as a transaction, or the problem that refuses it."""
    try:
        if isinstance(item, bytes):
            raw = item
        elif ctype in MSGPACK_TYPES:
            raise CodecError("transaction: expected a byte string")
        elif isinstance(item, dict):
            return tx_from_json(item)
        elif isinstance(item, str):
            raw = _hex_item(item)
        else:
            raise CodecError("transaction: expected a JSON object or a hex string")
        if len(raw) > MAX_TX_SIZE:
            raise TooLarge(len(raw), MAX_TX_SIZE)
        return decode_transaction(raw)
    except QChainError as e:
        return e


async def post_tx(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    wait = request.query.get("wait")
    if wait not in (None, "commit"):
        raise BadParameter("wait", "the only value is 'commit'")
    timeout_s = DEFAULT_WAIT_S
    if "timeout" in request.query:
        timeout_s = parse_seconds(request.query["timeout"], "timeout", MAX_WAIT_S)
    ctype = media_type(request)
    if ctype not in MSGPACK_TYPES and ctype != "application/json":
        raise UnsupportedMediaType(ctype, [MSGPACK, "application/json"])
    raw = await request.read()
    if service.admission_room() <= 0:
        raise service.overloaded()
    if ctype == "application/json":
        st, new = _submit_item(service, parse_json(raw, "body"))
    else:
        st, new = _submit_raw(service, raw)
    location = f"/v1/txs/{st.tx_hash.hex()}"
    if wait == "commit" and st.state != "committed":
        done = await service.wait_committed(st.tx_hash, timeout_s)
        if done is None:
            raise CommitTimeout(st.tx_hash.hex(), timeout_s)
        return json_response(status_json(done), 200, Location=location)
    return json_response(status_json(st), 202 if new else 200, Location=location)


def _batch_items(raw: bytes, ctype: str) -> list[object]:
    """The items of a batch body: a JSON array, or a msgpack array of byte strings."""
    if ctype == "application/json":
        doc = parse_json(raw, "body")
        if not isinstance(doc, list):
            raise CodecError("batch: expected a JSON array")
        items: list[object] = doc
    elif ctype in MSGPACK_TYPES:
        limits = Limits(
            max_size=len(raw) + 1,
            max_depth=1,
            max_bytes_len=len(raw) + 1,
            max_array_len=MAX_BATCH,
        )
        decoded = decode_value(raw, limits)
        if not isinstance(decoded, list):
            raise CodecError("batch: expected an array of transaction byte strings")
        items = list(decoded)
    else:
        raise UnsupportedMediaType(ctype, [MSGPACK, "application/json"])
    if len(items) > MAX_BATCH:
        raise BadParameter("body", f"a batch holds at most {MAX_BATCH} transactions")
    return items


def _admit(
    service: NodeService, i: int, tx: Transaction | QChainError, request: web.Request
) -> dict[str, Any]:
    """The result of admitting batch item i: its status, or the problem that refused it.
    Nothing raised here fails the batch as a whole."""
    if isinstance(tx, QChainError):
        return {"item": i, "problem": problem_doc(tx)}
    try:
        st, new = service.submit_tx(tx)
    except QChainError as e:
        if not isinstance(e, MempoolFull):
            log_server_error(e, request)
        return {"item": i, "problem": problem_doc(e)}
    except Exception:
        log.exception("unexpected error admitting item %d of a batch", i)
        problem = InternalError("unexpected error; the node's log has the details")
        return {"item": i, "problem": problem_doc(problem)}
    return {"item": i, "new": new, **status_json(st)}


async def post_batch(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    ctype = media_type(request)
    items = _batch_items(await request.read(), ctype)
    # Items beyond the admission bound's room are refused before they are decoded.
    room = min(len(items), max(0, service.admission_room()))
    overloaded = service.overloaded() if room < len(items) else None
    # Every item within the room is decoded and checked before any is admitted; from
    # the first admission on, whatever goes wrong with an item (a full mempool, the
    # store, a bug) is that item's problem, so that the client knows exactly what was
    # admitted.
    txs = [_decode_item(item, ctype) for item in items[:room]]
    await service.preverify([tx for tx in txs if isinstance(tx, Transaction)])
    results: list[dict[str, Any]] = []
    for i, tx in enumerate(txs):
        if i and i % _ADMISSIONS_PER_YIELD == 0:
            await asyncio.sleep(0)
        results.append(_admit(service, i, tx, request))
    if overloaded is not None:
        refusal = problem_doc(overloaded)
        results.extend({"item": i, "problem": refusal} for i in range(room, len(items)))
    # Some items refused for the bound: the batch says when to send them again.
    waits = [
        r["problem"]["retry_after"]
        for r in results
        if "problem" in r and r["problem"]["type"] == PROBLEM_BASE + Overloaded.code
    ]
    headers = {"Retry-After": str(max(waits))} if waits else {}
    return json_response({"results": results}, 200, **headers)


def _not_found(chain: ChainStore, kind: str, h: bytes) -> NotFound:
    """Not found; on a state-synced node, with the base height below which it may be."""
    base = chain.base_height()
    return NotFound(kind, h.hex()) if base == 0 else NotFoundAboveBase(kind, h.hex(), base)


async def get_tx(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    h = parse_hash(request.match_info["hash"])
    st = service.tx_status(h)
    if st is None:
        raise _not_found(service.chain, "transaction", h)
    tx = service.transaction(h)
    doc = status_json(st)
    doc["transaction"] = None if tx is None else {"hash": tx.hash.hex(), **tx_to_json(tx)}
    return json_response(doc)


async def get_receipt(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    h = parse_hash(request.match_info["hash"])
    rp = service.receipt_proof(h)
    st = service.tx_status(h) if rp is None else None
    if st is not None and st.state == "committed":
        # Committed, but the certificate's signatures travel with the validators'
        # DONE messages, in the first frame of the next height or alone after one
        # round-0 timeout (CONSENSUS.md §7), and may still be arriving: wait a moment.
        deadline = clock.monotonic() + CERTIFICATE_WAIT_S
        while rp is None and clock.monotonic() < deadline:
            await asyncio.sleep(0.02)
            rp = service.receipt_proof(h)
    if rp is None:
        raise _not_found(service.chain, "receipt", h)
    # On a chain whose set changes, the set chain of the receipt's height comes with it
    # (a `ChainedReceipt`), or the problem that keeps the node from building it.
    chain = set_chain_of(service, rp.header.height)
    if wants_msgpack(request):
        body = rp.encode() if chain is None else ChainedReceipt(rp, chain).encode()
        return web.Response(body=body, headers={"Content-Type": MSGPACK})
    doc = receipt_proof_to_json(rp)
    if chain is not None:
        doc["set_chain"] = chain.encode().hex()
    return json_response(doc)
