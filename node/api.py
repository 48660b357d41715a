"""The node's public HTTP API (aiohttp), as described in `node/openapi.yaml`.

`make_api_app(service, ...)` builds the application over a `NodeService`; the runtime
serves it (optionally over TLS, see `make_ssl_context` and `start_api`). The API adds no
chain logic of its own: it parses requests strictly, calls the service, and writes
answers in the JSON forms of `qchain.client` (or canonical msgpack where asked).

Errors are RFC 9457 problem+json documents. `PROBLEMS` is the one table that maps the
exception tree (`qchain.errors`, plus the few HTTP-only problems defined here) to a status
code and title; the problem `type` is `PROBLEM_BASE + exc.code`, stable per class, and the
exception's `fields()` become extension members (e.g. `expected_nonce`). Bad input never
gives a 500: anything unexpected is logged and answered with an `internal-error` problem.

Requests are limited in body size (413) and, per client address, by a token bucket
(429 with `Retry-After`); `/healthz`, `/readyz` and `/metrics` are not rate limited.
JSON bodies and JSON query arguments are read with `qchain.jsonform.parse_json` before
any handler looks at them (UTF-8, nesting depth, lone surrogates, number range). A batch
decodes every item before admitting any, and from the first admission on reports every
failure per item, so a request never fails as a whole after admitting something.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from node import explorer
from node.metrics import CONTENT_TYPE_LATEST, NodeMetrics
from node.service import ChainEvent, EventStream, NodeService, TxStatus
from qchain.client import (
    MSGPACK,
    PROBLEM_JSON,
    block_to_json,
    receipt_proof_to_json,
    receipt_to_json,
)
from qchain.codec import Limits, decode_value
from qchain.errors import (
    ArgumentError,
    BadSignature,
    CodecError,
    ContractError,
    Duplicate,
    Expired,
    InsufficientBalance,
    InvalidJson,
    InvalidTransaction,
    JsonSyntaxError,
    MempoolFull,
    NonceMismatch,
    NotAMember,
    NotFound,
    PermissionDenied,
    QChainError,
    RuleViolation,
    StorageCorrupt,
    StorageError,
    TooLarge,
    TxTooLarge,
    UnknownContract,
    UnknownMethod,
    UnknownScheme,
    WrongChain,
)
from qchain.jsonform import parse_json, tx_from_json, tx_to_json, value_from_json
from qchain.ratelimit import TokenBuckets
from qchain.types import MAX_TX_SIZE, Transaction, decode_transaction

log = logging.getLogger("qchain.api")

PROBLEM_BASE = "https://qchain.dev/problems/"
MSGPACK_TYPES = frozenset({MSGPACK, "application/x-msgpack", "application/octet-stream"})
MAX_BATCH = 1000
ADMIT_SLICE = 100
CERTIFICATE_WAIT_S = 3.0
MAX_WAIT_S = 300.0
DEFAULT_WAIT_S = 30.0
MAX_BLOCKS_PAGE = 100
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- problems only the HTTP layer raises -------------------------------------------------


class BadParameter(QChainError):
    """A path, query or header parameter that does not parse or is out of range."""

    code = "invalid-parameter"

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"parameter {name}: {reason}")
        self.name = name
        self.reason = reason

    def fields(self) -> dict[str, object]:
        return {"parameter": self.name, "reason": self.reason}


class UnsupportedMediaType(QChainError):
    code = "unsupported-media-type"

    def __init__(self, content_type: str, supported: list[str]) -> None:
        super().__init__(f"content type {content_type!r} is not one of {', '.join(supported)}")
        self.content_type = content_type
        self.supported = supported

    def fields(self) -> dict[str, object]:
        return {"content_type": self.content_type, "supported": self.supported}


class BodyTooLarge(QChainError):
    code = "body-too-large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds the limit of {limit} bytes")
        self.limit = limit

    def fields(self) -> dict[str, object]:
        return {"limit": self.limit}


class MethodNotAllowed(QChainError):
    code = "method-not-allowed"

    def __init__(self, method: str, allowed: list[str]) -> None:
        super().__init__(f"method {method} is not allowed here; allowed: {', '.join(allowed)}")
        self.method = method
        self.allowed = allowed

    def fields(self) -> dict[str, object]:
        return {"method": self.method, "allowed": self.allowed}


class RateLimited(QChainError):
    code = "rate-limited"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many requests from this address; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s

    def fields(self) -> dict[str, object]:
        return {"retry_after": self.retry_after_s}


class CommitTimeout(QChainError):
    """`?wait=commit` gave up; the transaction is still pending and may commit later."""

    code = "commit-timeout"

    def __init__(self, tx_hash: str, timeout_s: float) -> None:
        super().__init__(f"transaction {tx_hash} not committed within {timeout_s} s")
        self.tx_hash = tx_hash
        self.timeout_s = timeout_s

    def fields(self) -> dict[str, object]:
        return {"tx_hash": self.tx_hash, "tx_status": "pending", "timeout": self.timeout_s}


class NotReady(QChainError):
    code = "not-ready"

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("node is not ready: " + "; ".join(reasons))
        self.reasons = reasons

    def fields(self) -> dict[str, object]:
        return {"reasons": self.reasons}


class InternalError(QChainError):
    code = "internal-error"


# --- the one table -----------------------------------------------------------------------

PROBLEMS: dict[type[QChainError], tuple[int, str]] = {
    CodecError: (400, "Malformed input"),
    BadParameter: (400, "Invalid parameter"),
    PermissionDenied: (403, "Permission denied"),
    NotFound: (404, "Not found"),
    UnknownContract: (404, "Unknown contract"),
    UnknownMethod: (404, "Unknown contract method"),
    MethodNotAllowed: (405, "Method not allowed"),
    Duplicate: (409, "Already exists"),
    TooLarge: (413, "Transaction too large"),
    TxTooLarge: (413, "Transaction larger than a block"),
    BodyTooLarge: (413, "Request body too large"),
    UnsupportedMediaType: (415, "Unsupported media type"),
    InvalidTransaction: (422, "Invalid transaction"),
    BadSignature: (422, "Bad signature"),
    UnknownScheme: (422, "Unknown signature scheme"),
    WrongChain: (422, "Wrong chain"),
    NonceMismatch: (422, "Nonce mismatch"),
    Expired: (422, "Transaction expired"),
    NotAMember: (422, "Sender is not a member"),
    ContractError: (422, "Contract error"),
    ArgumentError: (422, "Invalid argument"),
    RuleViolation: (422, "Contract rule violated"),
    InsufficientBalance: (422, "Insufficient balance"),
    RateLimited: (429, "Too many requests"),
    QChainError: (500, "Internal error"),
    StorageError: (503, "Storage unavailable"),
    StorageCorrupt: (503, "Store corrupt"),
    MempoolFull: (503, "Mempool full"),
    NotReady: (503, "Not ready"),
    CommitTimeout: (504, "Commit timeout"),
}
"""Exception class -> (HTTP status, title). A class not listed takes its nearest listed
base's status and title but keeps its own `code`, hence its own problem type."""


def problem_status(exc: QChainError) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in PROBLEMS:
            return PROBLEMS[cls]
    return PROBLEMS[QChainError]


def problem_doc(exc: QChainError, instance: str | None = None) -> dict[str, Any]:
    status, title = problem_status(exc)
    code = exc.code if status != 500 else InternalError.code
    doc: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "detail": exc.message,
    }
    if instance is not None:
        doc["instance"] = instance
    for k, v in exc.fields().items():
        doc.setdefault(k, jsonable(v))
    return doc


def problem_response(exc: QChainError, request: web.Request) -> web.Response:
    doc = problem_doc(exc, request.path)
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after_s)
    elif isinstance(exc, MethodNotAllowed):
        headers["Allow"] = ", ".join(exc.allowed)
    elif isinstance(exc, CommitTimeout):
        headers["Location"] = f"/v1/txs/{exc.tx_hash}"
    return web.Response(
        status=doc["status"],
        body=json.dumps(doc).encode(),
        headers={"Content-Type": PROBLEM_JSON, **headers},
    )


def result_json(v: object) -> Any:
    """A query result as JSON: byte strings as {"hex": ...} (as in transaction arguments),
    structs (dataclasses) and mappings as objects, sequences as arrays."""
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, bytes):
        return {"hex": v.hex()}
    if isinstance(v, Mapping):
        return {str(k): result_json(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [result_json(x) for x in v]
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: result_json(getattr(v, f.name)) for f in dataclasses.fields(v)}
    return jsonable(v)


def jsonable(v: object) -> Any:
    """A service-provided value as JSON: bytes as hex text, mappings and sequences
    recursively, anything else unknown as its text."""
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, Mapping):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple | set | frozenset):
        return [jsonable(x) for x in v]
    return str(v)


# --- rate limit --------------------------------------------------------------------------


# --- request parsing ---------------------------------------------------------------------

_HEX64 = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
_HEX40 = re.compile(r"^(0x)?[0-9a-fA-F]{40}$")
_UINT = re.compile(r"^[0-9]{1,20}$")


def parse_hash(text: str, name: str = "hash") -> bytes:
    if not _HEX64.match(text):
        raise BadParameter(name, "expected 64 hex digits")
    return bytes.fromhex(text.removeprefix("0x"))


def parse_address(text: str) -> bytes:
    if not _HEX40.match(text):
        raise BadParameter("address", "expected 40 hex digits")
    return bytes.fromhex(text.removeprefix("0x"))


def parse_uint(text: str, name: str, lo: int = 0, hi: int = 2**64 - 1) -> int:
    if not _UINT.match(text):
        raise BadParameter(name, "expected a non-negative integer")
    value = int(text)
    if not lo <= value <= hi:
        raise BadParameter(name, f"must be between {lo} and {hi}")
    return value


def query_arg(v: object, name: str, depth: int = 0) -> object:
    """A query argument from JSON: `{"hex": ...}` becomes bytes (at any depth), other
    objects and arrays are kept with their items converted; floats are refused."""
    if depth > 16:
        raise BadParameter(name, "nested too deeply")
    if isinstance(v, dict):
        if set(v) == {"hex"}:
            try:
                return value_from_json(v, name)
            except CodecError as e:
                raise BadParameter(name, e.message) from None
        return {k: query_arg(x, name, depth + 1) for k, x in v.items()}
    if isinstance(v, list):
        return [query_arg(x, name, depth + 1) for x in v]
    if isinstance(v, float):
        raise BadParameter(name, "floats are not allowed")
    return v


def _hex_item(text: str) -> bytes:
    try:
        return bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise CodecError("transaction: not valid hex") from None


def _log_server_error(e: QChainError, request: web.Request) -> None:
    """Log a problem that is the node's fault; not the expected ones (storage down, not
    ready, a commit wait that timed out)."""
    if problem_status(e)[0] >= 500 and not isinstance(e, StorageError | NotReady | CommitTimeout):
        log.error("error answering %s %s: %s", request.method, request.path, e)


def media_type(request: web.Request) -> str:
    """The request body's media type, lowercase and without parameters. aiohttp parses
    the header with the standard library's email package, which raises assorted
    exceptions on malformed values (HeaderParseError, IndexError, ...): all a 400."""
    try:
        return request.content_type
    except Exception as e:
        raise BadParameter("Content-Type", f"does not parse ({type(e).__name__})") from None


def wants_msgpack(request: web.Request) -> bool:
    for part in request.headers.get("Accept", "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media.lower() in (MSGPACK, "application/x-msgpack") and "q=0" not in params:
            return True
    return False


def status_json(st: TxStatus) -> dict[str, Any]:
    return {
        "tx_hash": st.tx_hash.hex(),
        "status": st.state,
        "height": st.height,
        "index": st.index,
        "receipt": None if st.receipt is None else receipt_to_json(st.receipt),
    }


def event_frame(ev: ChainEvent) -> bytes:
    """The event as server-sent-event bytes; built once per event, however many
    subscribers stream it (kept on the event)."""
    frame: bytes | None = ev.__dict__.get("_frame")
    if frame is None:
        data = json.dumps(jsonable(ev.data), separators=(",", ":"))
        frame = f"id: {ev.id}\nevent: {ev.kind}\ndata: {data}\n\n".encode()
        ev.__dict__["_frame"] = frame
    return frame


def json_response(doc: object, status: int = 200, **headers: str) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(doc).encode(),
        headers={"Content-Type": "application/json", **headers},
    )


@cache
def openapi_spec() -> dict[str, Any]:
    """The API description, parsed from the `openapi.yaml` next to this module."""
    doc = yaml.safe_load(Path(__file__).with_name("openapi.yaml").read_text())
    if not isinstance(doc, dict):
        raise TypeError("openapi.yaml does not hold a mapping")
    return doc


# --- the application ---------------------------------------------------------------------


class _Api:
    """The handlers, sharing the service and the shutdown signal."""

    def __init__(self, service: NodeService, sse_heartbeat_s: float) -> None:
        self.service = service
        self.heartbeat_s = sse_heartbeat_s
        self.closing = asyncio.Event()

    async def on_shutdown(self, app: web.Application) -> None:
        self.closing.set()

    # transactions

    def _submit_item(self, item: object) -> tuple[TxStatus, bool]:
        """One transaction from JSON: hex of its canonical bytes, or its JSON form."""
        if isinstance(item, str):
            return self._submit_raw(_hex_item(item))
        if isinstance(item, dict):
            return self.service.submit_tx(tx_from_json(item))
        raise CodecError("transaction: expected a JSON object or a hex string")

    def _submit_raw(self, raw: bytes) -> tuple[TxStatus, bool]:
        if len(raw) > MAX_TX_SIZE:
            raise TooLarge(len(raw), MAX_TX_SIZE)
        return self.service.submit(raw)

    @staticmethod
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

    async def post_tx(self, request: web.Request) -> web.Response:
        wait = request.query.get("wait")
        if wait not in (None, "commit"):
            raise BadParameter("wait", "the only value is 'commit'")
        timeout_s = DEFAULT_WAIT_S
        if "timeout" in request.query:
            try:
                timeout_s = float(request.query["timeout"])
            except ValueError:
                raise BadParameter("timeout", "expected a number of seconds") from None
            if not (math.isfinite(timeout_s) and 0 < timeout_s <= MAX_WAIT_S):
                raise BadParameter("timeout", f"must be above 0 and at most {MAX_WAIT_S}")
        ctype = media_type(request)
        if ctype not in MSGPACK_TYPES and ctype != "application/json":
            raise UnsupportedMediaType(ctype, [MSGPACK, "application/json"])
        raw = await request.read()
        if ctype == "application/json":
            st, new = self._submit_item(parse_json(raw, "body"))
        else:
            st, new = self._submit_raw(raw)
        location = f"/v1/txs/{st.tx_hash.hex()}"
        if wait == "commit" and st.state != "committed":
            done = await self.service.wait_committed(st.tx_hash, timeout_s)
            if done is None:
                raise CommitTimeout(st.tx_hash.hex(), timeout_s)
            return json_response(status_json(done), 200, Location=location)
        return json_response(status_json(st), 202 if new else 200, Location=location)

    async def post_batch(self, request: web.Request) -> web.Response:
        ctype = media_type(request)
        raw = await request.read()
        items: list[object]
        if ctype == "application/json":
            doc = parse_json(raw, "body")
            if not isinstance(doc, list):
                raise CodecError("batch: expected a JSON array")
            items = doc
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
        # Every item is decoded and checked before any is admitted; from the first
        # admission on, whatever goes wrong with an item (a full mempool, the store, a bug)
        # is that item's problem, so that the client knows exactly what was admitted.
        txs = [self._decode_item(item, ctype) for item in items]
        results: list[dict[str, Any]] = []
        for i, tx in enumerate(txs):
            if i and i % ADMIT_SLICE == 0:
                # Admission checks signatures: let consensus traffic run between slices.
                await asyncio.sleep(0)
            if isinstance(tx, QChainError):
                results.append({"item": i, "problem": problem_doc(tx)})
                continue
            try:
                st, new = self.service.submit_tx(tx)
            except QChainError as e:
                if not isinstance(e, MempoolFull):
                    _log_server_error(e, request)
                results.append({"item": i, "problem": problem_doc(e)})
                continue
            except Exception:
                log.exception("unexpected error admitting item %d of a batch", i)
                problem = InternalError("unexpected error; the node's log has the details")
                results.append({"item": i, "problem": problem_doc(problem)})
                continue
            results.append({"item": i, "new": new, **status_json(st)})
        return json_response({"results": results})

    async def get_tx(self, request: web.Request) -> web.Response:
        h = parse_hash(request.match_info["hash"])
        st = self.service.tx_status(h)
        if st is None:
            raise NotFound("transaction", h.hex())
        tx = self.service.transaction(h)
        doc = status_json(st)
        doc["transaction"] = None if tx is None else {"hash": tx.hash.hex(), **tx_to_json(tx)}
        return json_response(doc)

    async def get_receipt(self, request: web.Request) -> web.Response:
        h = parse_hash(request.match_info["hash"])
        rp = self.service.receipt_proof(h)
        st = self.service.tx_status(h) if rp is None else None
        if st is not None and st.state == "committed":
            # Committed, but the certificate's signatures travel with the validators'
            # DONE messages and may still be arriving: wait for them a moment.
            deadline = time.monotonic() + CERTIFICATE_WAIT_S
            while rp is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
                rp = self.service.receipt_proof(h)
        if rp is None:
            raise NotFound("receipt", h.hex())
        if wants_msgpack(request):
            return web.Response(body=rp.encode(), headers={"Content-Type": MSGPACK})
        return json_response(receipt_proof_to_json(rp))

    # chain

    async def get_latest_block(self, request: web.Request) -> web.Response:
        height = self.service.chain.height()
        block = self.service.chain.block(height)
        if block is None:
            raise NotFound("block", "latest")
        return json_response(block_to_json(block))

    async def get_block(self, request: web.Request) -> web.Response:
        height = parse_uint(request.match_info["height"], "height")
        block = self.service.chain.block(height)
        if block is None:
            raise NotFound("block", str(height))
        return json_response(block_to_json(block))

    async def get_blocks(self, request: web.Request) -> web.Response:
        q = request.query
        start = parse_uint(q.get("from", "1"), "from")
        limit = parse_uint(q.get("limit", "20"), "limit", 1, MAX_BLOCKS_PAGE)
        chain = self.service.chain
        blocks = list(chain.blocks(start, limit))
        nxt = None
        if len(blocks) == limit and blocks[-1].height < chain.height():
            nxt = blocks[-1].height + 1
        return json_response({"blocks": [block_to_json(b) for b in blocks], "next": nxt})

    async def get_account(self, request: web.Request) -> web.Response:
        address = parse_address(request.match_info["address"])
        acct = self.service.account(address)
        if acct is None:
            raise NotFound("account", address.hex())
        return json_response({**jsonable(acct), "address": address.hex()})

    async def get_query(self, request: web.Request) -> web.Response:
        contract = request.match_info["name"]
        method = request.match_info["query"]
        args: dict[str, Any] = {}
        for key in request.query:
            values = request.query.getall(key)
            if len(values) != 1:
                raise BadParameter(key, "given more than once")
            try:
                value = parse_json(values[0], key)
            except JsonSyntaxError:
                value = values[0]
            except InvalidJson as e:
                at = f" (at {e.pointer})" if e.pointer else ""
                raise BadParameter(key, e.reason + at) from None
            args[key] = query_arg(value, key)
        result = self.service.query(contract, method, args)
        return json_response(
            {
                "contract": contract,
                "method": method,
                "height": self.service.chain.height(),
                "result": result_json(result),
            }
        )

    # node

    async def get_status(self, request: web.Request) -> web.Response:
        return json_response(jsonable(self.service.status()))

    async def get_qkd(self, request: web.Request) -> web.Response:
        return json_response(jsonable(self.service.qkd_status()))

    async def healthz(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        ready, reasons = self.service.health()
        if not ready:
            raise NotReady(list(reasons) or ["not ready"])
        return json_response({"ready": True, "reasons": []})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.service.metrics_text(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def openapi(self, request: web.Request) -> web.Response:
        return json_response(openapi_spec())

    async def events(self, request: web.Request) -> web.StreamResponse:
        raw_id = request.headers.get("Last-Event-ID", request.query.get("last_event_id"))
        last_id = None if raw_id in (None, "") else parse_uint(str(raw_id), "Last-Event-ID")
        stream = self.service.events(last_id)
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        closing: asyncio.Future[Any] = asyncio.ensure_future(self.closing.wait())
        nxt: asyncio.Future[Any] | None = None
        try:
            await resp.prepare(request)
            await resp.write(b"retry: 2000\n\n")
            while not self.closing.is_set():
                if nxt is None:
                    nxt = asyncio.ensure_future(_next_event(stream))
                done, _ = await asyncio.wait(
                    {nxt, closing}, timeout=self.heartbeat_s, return_when=asyncio.FIRST_COMPLETED
                )
                if nxt in done:
                    try:
                        event: ChainEvent = nxt.result()
                    except StopAsyncIteration:
                        break
                    nxt = None
                    # A commit publishes a block's events at once: write them together.
                    batch = [event, *stream.ready()]
                    await resp.write(b"".join(event_frame(e) for e in batch))
                elif closing not in done:
                    await resp.write(b": heartbeat\n\n")
            with contextlib.suppress(ConnectionError):
                await resp.write_eof()
        except ConnectionError:
            pass
        finally:
            closing.cancel()
            if nxt is not None:
                nxt.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await nxt
            await stream.aclose()
        return resp


async def _next_event(stream: EventStream) -> ChainEvent:
    return await stream.__anext__()


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return "unmatched" if resource is None else resource.canonical


def make_api_app(
    service: NodeService,
    *,
    max_body_bytes: int,
    rate_limit_per_s: float,
    metrics: NodeMetrics | None = None,
    sse_heartbeat_s: float = 15.0,
    clock: Callable[[], float] = time.monotonic,
) -> web.Application:
    """The public API over service. rate_limit_per_s 0 disables the limit; the bucket
    holds one second's worth of requests (at least 1). clock is for tests."""
    api = _Api(service, sse_heartbeat_s)
    buckets = (
        TokenBuckets[str](rate_limit_per_s, max(1.0, rate_limit_per_s), clock)
        if rate_limit_per_s > 0
        else None
    )

    @web.middleware
    async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = clock()
        resp = await handler(request)
        if metrics is not None:
            metrics.observe_api_request(
                _route_name(request), request.method, resp.status, clock() - start
            )
        return resp

    @web.middleware
    async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except QChainError as e:
            _log_server_error(e, request)
            return problem_response(e, request)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            return problem_response(_http_problem(e, request, max_body_bytes), request)
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception:
            log.exception("unexpected error answering %s %s", request.method, request.path)
            return problem_response(
                InternalError("unexpected error; the node's log has the details"), request
            )

    @web.middleware
    async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if buckets is not None and request.path not in UNLIMITED_PATHS:
            client = request.remote or "unknown"
            if not buckets.take(client):
                wait_s = buckets.wait_s(client)
                if metrics is not None:
                    metrics.api_rate_limited.inc()
                raise RateLimited(max(1, math.ceil(wait_s)))
        return await handler(request)

    app = web.Application(
        client_max_size=max_body_bytes, middlewares=[count_requests, problems, rate_limit]
    )
    app.on_shutdown.append(api.on_shutdown)
    r = app.router
    r.add_post("/v1/txs", api.post_tx)
    r.add_post("/v1/txs/batch", api.post_batch)
    r.add_get("/v1/txs/{hash}", api.get_tx, allow_head=False)
    r.add_get("/v1/receipts/{hash}", api.get_receipt, allow_head=False)
    r.add_get("/v1/blocks", api.get_blocks, allow_head=False)
    r.add_get("/v1/blocks/latest", api.get_latest_block, allow_head=False)
    r.add_get("/v1/blocks/{height}", api.get_block, allow_head=False)
    r.add_get("/v1/accounts/{address}", api.get_account, allow_head=False)
    r.add_get("/v1/contracts/{name}/{query}", api.get_query, allow_head=False)
    r.add_get("/v1/status", api.get_status, allow_head=False)
    r.add_get("/v1/qkd", api.get_qkd, allow_head=False)
    r.add_get("/v1/events", api.events, allow_head=False)
    r.add_get("/healthz", api.healthz, allow_head=False)
    r.add_get("/readyz", api.readyz, allow_head=False)
    r.add_get("/metrics", api.metrics, allow_head=False)
    r.add_get("/openapi.json", api.openapi, allow_head=False)
    explorer.add_routes(r)
    return app


def _http_problem(e: web.HTTPException, request: web.Request, limit: int) -> QChainError:
    """aiohttp's own refusals (unknown route, wrong method, body limit) as problems."""
    if e.status == 404:
        return NotFound("route", request.path)
    if e.status == 405:
        allowed = sorted(getattr(e, "allowed_methods", ()) or ())
        return MethodNotAllowed(request.method, allowed)
    if e.status == 413:
        return BodyTooLarge(limit)
    if e.status < 500:
        return BadParameter("request", e.reason)
    return InternalError(e.reason)


# --- serving -----------------------------------------------------------------------------


def make_ssl_context(cert_file: str | Path, key_file: str | Path) -> ssl.SSLContext:
    """Server TLS context from a PEM certificate (chain) and its private key."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


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
