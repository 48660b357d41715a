"""Client SDK for a node's HTTP API: `AsyncClient` (aiohttp) and `Client` (blocking).

Both speak the API described in `node/openapi.yaml`. Transactions go up as canonical bytes
(`application/msgpack`); receipts come down as canonical `ReceiptProof` bytes, so what a
client keeps can be checked offline with `ReceiptProof.verify` against the genesis
validator keys, without trusting the node that served it. Every problem+json answer
becomes an `ApiError` carrying the problem's type slug as `code` and its extension
members; a node that cannot be reached is a `NodeUnavailable`.

Submissions honour `Retry-After`: a node at its admission bound (503 `overloaded`) or
a rate limit (429) says when to come back, and the client sends the same bytes again
then (a batch: the refused items only), as long as its waits add up to at most
`retry_wait_s` (the client's timeout by default; 0 never waits). Resending is safe: the
hash is the idempotency key.

The JSON forms of the API's documents are those of `qchain.jsonform`, which the node
writes them with.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
import threading
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self, TypeVar
from urllib.parse import quote

import aiohttp

from qchain.codec import Limits, unpack_canonical
from qchain.errors import ApiError, CodecError, NodeUnavailable, ResponseTooLarge
from qchain.jsonform import (
    MSGPACK,
    block_from_json,
    expect_array,
    expect_member,
    expect_object,
    hex_field,
    receipt_from_json,
    tx_from_json,
)
from qchain.keys import address_of
from qchain.limits import MAX_MESSAGE
from qchain.types import Block, Receipt, ReceiptProof, Transaction

T = TypeVar("T")

# --- results -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainEvent:
    """One server-sent event of `/v1/events` (the client's copy of the node's type)."""

    id: int
    kind: Literal["block", "tx"]
    data: dict[str, Any]


@dataclass(frozen=True)
class TxInfo:
    """A transaction's status as the node reported it."""

    tx_hash: bytes
    status: Literal["pending", "committed"]
    height: int | None = None
    index: int | None = None
    receipt: Receipt | None = None
    new: bool | None = None
    """On submit: True if the node had not seen these bytes before (HTTP 202)."""

    @classmethod
    def from_json(cls, doc: object, new: bool | None = None) -> TxInfo:
        d = expect_object(doc, "tx status")
        status = expect_member(d, "status", "tx status")
        if status not in ("pending", "committed"):
            raise CodecError(f"tx status: unknown status {status!r}")
        receipt = d.get("receipt")
        return cls(
            hex_field(expect_member(d, "tx_hash", "tx status"), "tx_hash"),
            status,
            d.get("height"),
            d.get("index"),
            None if receipt is None else receipt_from_json(receipt),
            new,
        )


@dataclass(frozen=True)
class PreparedTx:
    """What `POST /v1/txs/prepare` answered (docs/TRANSACTIONS.md, section 10), checked
    against the request: `transaction` is the unsigned transaction asked for, `body` its
    body and `sign_bytes` the 32 bytes its key signs."""

    transaction: Transaction
    body: bytes
    sign_bytes: bytes
    signed_prefix: bytes
    """The signed transaction's encoding up to the signature."""

    def signed(self, signature: bytes) -> Transaction:
        """The transaction with a signature over `sign_bytes`, ready to submit."""
        return dataclasses.replace(self.transaction, signature=signature)

    @classmethod
    def from_json(cls, doc: object, request: Mapping[str, Any]) -> PreparedTx:
        """Parse prepare's answer to request; `CodecError` unless it describes exactly
        the transaction of request, with that transaction's bytes."""
        d = expect_object(doc, "prepared")
        tx = tx_from_json(expect_member(d, "transaction", "prepared"))
        asked = dict(request)
        if "sender" not in asked:
            key = hex_field(asked.get("public_key", ""), "public_key")
            asked["sender"] = address_of(str(asked.get("scheme")), key).hex()
        prepared = cls(
            tx,
            hex_field(expect_member(d, "body", "prepared"), "prepared.body"),
            hex_field(expect_member(d, "sign_bytes", "prepared"), "prepared.sign_bytes"),
            hex_field(expect_member(d, "signed_prefix", "prepared"), "prepared.signed_prefix"),
        )
        if (
            tx != tx_from_json(asked)
            or prepared.body != tx.body_bytes()
            or prepared.sign_bytes != tx.signing_digest()
            or prepared.signed_prefix != b"\x9a" + tx.body_bytes()[1:]
        ):
            raise CodecError("prepared: the node's answer is not the transaction asked for")
        return prepared


def _problem(status: int, body: bytes, content_type: str) -> ApiError:
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or "type" not in doc:
        text = body.decode("utf-8", "replace")[:200]
        return ApiError(status, "about:blank", f"HTTP {status}", text or content_type, {})
    std = {"type", "title", "status", "detail", "instance"}
    return ApiError(
        status,
        str(doc.get("type")),
        str(doc.get("title", f"HTTP {status}")),
        str(doc.get("detail", "")),
        {k: v for k, v in doc.items() if k not in std},
    )


def _retry_after(result: TxInfo | ApiError) -> float | None:
    return result.retry_after_s if isinstance(result, ApiError) else None


def ssl_context_for(ca_file: str | None = None) -> ssl.SSLContext:
    """A client TLS context trusting ca_file (a node's self-signed certificate or CA)."""
    return ssl.create_default_context(cafile=ca_file)


# --- async client ------------------------------------------------------------------------


class AsyncClient:
    """Talk to one node. Use as `async with AsyncClient(url) as c:` or call `close()`."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        language: str | None = None,
        retry_wait_s: float | None = None,
    ) -> None:
        """language: sent as `Accept-Language`, so problem titles come back in it (the
        node knows `en` and `zh-CN`); None leaves the node's default, English.
        retry_wait_s: how long one submission may wait in all for the `Retry-After`s
        of its refusals (None: timeout_s; 0: raise the first refusal)."""
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.retry_wait_s = timeout_s if retry_wait_s is None else retry_wait_s
        self.language = language
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s),
                headers={"Accept-Language": self.language} if self.language else None,
            )
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        accept: str = "application/json",
        timeout_s: float | None = None,
        max_bytes: int | None = None,
    ) -> tuple[int, str, bytes]:
        """max_bytes: an answer body longer than this is not read past it
        (`ResponseTooLarge`)."""
        headers = {"Accept": accept}
        if content_type is not None:
            headers["Content-Type"] = content_type
        total = self.timeout_s if timeout_s is None else timeout_s
        try:
            async with self._sess().request(
                method,
                self.base_url + path,
                params=params,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=total),
            ) as resp:
                data = await (resp.read() if max_bytes is None else _read_at_most(resp, max_bytes))
                ctype = resp.content_type
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as e:
            raise NodeUnavailable(f"{method} {self.base_url}{path}: {e or type(e).__name__}") from e
        if status >= 400:
            raise _problem(status, data, ctype)
        return status, ctype, data

    async def _json(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        status, ctype, data = await self._request(method, path, **kw)
        try:
            return status, json.loads(data)
        except ValueError as e:
            raise NodeUnavailable(f"{path}: answer is not JSON ({ctype})") from e

    # transactions

    async def _honouring_retry_after(self, send: Callable[[], Awaitable[T]]) -> T:
        """send(), sent again after each `Retry-After` while the waits fit
        `retry_wait_s`."""
        waited = 0.0
        while True:
            try:
                return await send()
            except ApiError as e:
                wait = e.retry_after_s
                if wait is None or waited + wait > self.retry_wait_s:
                    raise
            await asyncio.sleep(wait)
            waited += wait

    async def submit(self, tx: bytes | Transaction) -> TxInfo:
        """Submit a signed transaction; `new` tells whether the node saw it first now."""
        raw = tx.encode() if isinstance(tx, Transaction) else tx

        async def send() -> tuple[int, Any]:
            return await self._json("POST", "/v1/txs", body=raw, content_type=MSGPACK)

        status, doc = await self._honouring_retry_after(send)
        return TxInfo.from_json(doc, new=status == 202)

    async def submit_and_wait(self, tx: bytes | Transaction, timeout_s: float = 30.0) -> TxInfo:
        """Submit and wait until committed; `ApiError` with code `commit-timeout` if not
        committed within timeout_s (the transaction may still commit later)."""
        raw = tx.encode() if isinstance(tx, Transaction) else tx

        async def send() -> tuple[int, Any]:
            return await self._json(
                "POST",
                "/v1/txs",
                params={"wait": "commit", "timeout": repr(float(timeout_s))},
                body=raw,
                content_type=MSGPACK,
                timeout_s=timeout_s + self.timeout_s,
            )

        _, doc = await self._honouring_retry_after(send)
        return TxInfo.from_json(doc, new=None)

    async def prepare(self, unsigned: Mapping[str, Any]) -> PreparedTx:
        """What to sign for a transaction given in its JSON form without signature
        (`POST /v1/txs/prepare`), checked against the request; sign `sign_bytes` and
        submit `signed(signature)`."""
        body = json.dumps(dict(unsigned)).encode()
        _, doc = await self._json(
            "POST", "/v1/txs/prepare", body=body, content_type="application/json"
        )
        return PreparedTx.from_json(doc, unsigned)

    async def submit_batch(self, txs: Sequence[bytes | Transaction]) -> list[TxInfo | ApiError]:
        """Submit many; each item is its status or the problem that refused it. Items
        refused with a `retry_after` are sent again (only they) after the longest of
        them, while the waits fit `retry_wait_s`."""
        raws = [t.encode() if isinstance(t, Transaction) else t for t in txs]
        out: list[TxInfo | ApiError] = list(await self._batch_once(raws))
        waited = 0.0
        while True:
            again = {i: w for i, r in enumerate(out) if (w := _retry_after(r)) is not None}
            if not again or waited + max(again.values()) > self.retry_wait_s:
                return out
            wait = max(again.values())
            await asyncio.sleep(wait)
            waited += wait
            results = await self._batch_once([raws[i] for i in again])
            for i, result in zip(again, results, strict=True):
                out[i] = result

    async def _batch_once(self, raws: Sequence[bytes]) -> list[TxInfo | ApiError]:
        """One batch request: each item's status or problem, in order."""
        _, doc = await self._json(
            "POST",
            "/v1/txs/batch",
            body=json.dumps([r.hex() for r in raws]).encode(),
            content_type="application/json",
        )
        items = expect_member(expect_object(doc, "batch"), "results", "batch")
        if not isinstance(items, list) or len(items) != len(raws):
            raise CodecError("batch: expected one result per item")
        out: list[TxInfo | ApiError] = []
        for item in items:
            if "problem" in item:
                p = item["problem"]
                out.append(_problem(int(p.get("status", 400)), json.dumps(p).encode(), ""))
            else:
                out.append(TxInfo.from_json(item, new=bool(item.get("new"))))
        return out

    async def tx_status(self, tx_hash: bytes | str) -> TxInfo:
        _, doc = await self._json("GET", f"/v1/txs/{_hex(tx_hash)}")
        return TxInfo.from_json(doc)

    async def transaction(self, tx_hash: bytes | str) -> Transaction | None:
        """The transaction itself, if the node still has it."""
        _, doc = await self._json("GET", f"/v1/txs/{_hex(tx_hash)}")
        t = expect_object(doc, "tx status").get("transaction")
        if t is None:
            return None
        item = dict(expect_object(t, "transaction"))
        claimed = item.pop("hash", None)
        tx = tx_from_json(item)
        if claimed is not None and hex_field(claimed, "transaction.hash") != tx.hash:
            raise CodecError("transaction.hash does not match the transaction")
        return tx

    async def receipt_bytes(self, tx_hash: bytes | str) -> bytes:
        """Canonical `ReceiptProof` bytes, as the node serves them; on a chain whose
        validator set changes, a `ChainedReceipt` (the proof and the set chain of its
        height, `contracts.setchain`), which `qchain receipt verify --genesis` takes."""
        _, _, data = await self._request(
            "GET", f"/v1/receipts/{_hex(tx_hash)}", accept=MSGPACK, max_bytes=MAX_MESSAGE
        )
        return data

    async def receipt(self, tx_hash: bytes | str) -> ReceiptProof:
        """The receipt with its proof, header and certificate (not yet verified)."""
        return receipt_proof_of(await self.receipt_bytes(tx_hash))

    async def set_chain_bytes(self, height: int) -> bytes:
        """Canonical set-chain bytes proving the validator set of height from genesis
        (`GET /v1/setchain`; `contracts.setchain.decode_set_chain` reads them)."""
        _, _, data = await self._request(
            "GET", f"/v1/setchain?height={int(height)}", accept=MSGPACK, max_bytes=MAX_MESSAGE
        )
        return data

    async def certificate_bytes(self, height: int, max_bytes: int) -> bytes:
        """Canonical bytes of the commit certificate of height (`GET
        /v1/blocks/{height}/certificate`); the caller checks them."""
        _, _, data = await self._request(
            "GET", f"/v1/blocks/{int(height)}/certificate", accept=MSGPACK, max_bytes=max_bytes
        )
        return data

    # snapshots (state sync); the caller checks every byte against a certificate

    async def snapshot_heights(self, max_bytes: int) -> list[int]:
        _, doc = await self._json("GET", "/v1/snapshots", max_bytes=max_bytes)
        listed = expect_array(expect_object(doc, "snapshots"), "snapshots", "snapshots")
        out = []
        for item in listed:
            height = expect_member(expect_object(item, "snapshot"), "height", "snapshot")
            if type(height) is not int:
                raise CodecError("snapshot.height: expected an integer")
            out.append(height)
        return out

    async def snapshot_offer(self, height: int, max_bytes: int) -> bytes:
        """Canonical bytes of the header, certificate and manifest of a kept snapshot."""
        _, _, data = await self._request(
            "GET", f"/v1/snapshots/{height}", accept=MSGPACK, max_bytes=max_bytes
        )
        return data

    async def snapshot_block(self, height: int, max_bytes: int) -> bytes:
        """Canonical bytes of the block of a kept snapshot's height and its receipts."""
        _, _, data = await self._request(
            "GET", f"/v1/snapshots/{height}/block", accept=MSGPACK, max_bytes=max_bytes
        )
        return data

    async def snapshot_chunk(self, height: int, index: int, max_bytes: int) -> bytes:
        _, _, data = await self._request(
            "GET", f"/v1/snapshots/{height}/chunks/{index}", accept=MSGPACK, max_bytes=max_bytes
        )
        return data

    # chain

    async def block(self, height: int | Literal["latest"] = "latest") -> Block:
        _, doc = await self._json("GET", f"/v1/blocks/{height}")
        return block_from_json(doc)

    async def blocks(self, start: int, limit: int = 20) -> list[Block]:
        _, doc = await self._json(
            "GET", "/v1/blocks", params={"from": str(start), "limit": str(limit)}
        )
        return [
            block_from_json(b)
            for b in expect_member(expect_object(doc, "blocks"), "blocks", "blocks")
        ]

    async def account(self, address: bytes | str) -> dict[str, Any]:
        _, doc = await self._json("GET", f"/v1/accounts/{_hex(address)}")
        return expect_object(doc, "account")

    async def next_nonce(self, address: bytes | str) -> int:
        """The nonce the address's next transaction must carry (pending ones counted);
        0 for an address the node does not know."""
        try:
            acct = await self.account(address)
        except ApiError as e:
            if e.status == 404:
                return 0
            raise
        nonce = acct.get("pending_nonce", acct.get("nonce"))
        if type(nonce) is not int:
            raise NodeUnavailable("account answer has no integer nonce")
        return nonce

    async def query(self, contract: str, method: str, args: Mapping[str, Any] | None = None) -> Any:
        """A read-only contract query; args by name as JSON values (bytes as {"hex": ...}).
        The result is JSON: bytes as {"hex": ...}, result records as objects."""
        params = {k: json.dumps(v) for k, v in (args or {}).items()}
        _, doc = await self._json(
            "GET",
            f"/v1/contracts/{quote(contract, safe='')}/{quote(method, safe='')}",
            params=params,
        )
        return expect_member(expect_object(doc, "query"), "result", "query")

    async def notary_lookup(self, digest: bytes | str) -> dict[str, Any] | None:
        """The anchor of a document's digest (`GET /v1/notary/{digest}`): digest,
        algorithm, title, category, metadata, member, height, time (block time in ms),
        time_utc, tx_hash and item, byte strings as hex; None if it was never anchored."""
        try:
            _, doc = await self._json("GET", f"/v1/notary/{_hex(digest)}")
        except ApiError as e:
            if e.status == 404 and e.code == "not-found":
                return None
            raise
        return expect_object(doc, "anchor")

    async def status(self) -> dict[str, Any]:
        return expect_object((await self._json("GET", "/v1/status"))[1], "status")

    async def qkd(self) -> dict[str, Any]:
        return expect_object((await self._json("GET", "/v1/qkd"))[1], "qkd")

    async def ready(self) -> tuple[bool, list[str]]:
        try:
            await self._json("GET", "/readyz")
        except ApiError as e:
            if e.status == 503:
                reasons = e.extra.get("reasons")
                return False, [str(r) for r in reasons] if isinstance(reasons, list) else []
            raise
        return True, []

    async def events(self, last_event_id: int | None = None) -> AsyncIterator[ChainEvent]:
        """Server-sent events after last_event_id, as long as the node keeps the stream
        open; the caller resumes with the last id it saw."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        try:
            async with self._sess().get(
                self.base_url + "/v1/events",
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
            ) as resp:
                if resp.status >= 400:
                    raise _problem(resp.status, await resp.read(), resp.content_type)
                async for event in _parse_sse(resp.content):
                    yield event
        except (aiohttp.ClientError, TimeoutError) as e:
            raise NodeUnavailable(f"event stream: {e or type(e).__name__}") from e


_CHAINED_LIMITS = Limits(
    max_size=MAX_MESSAGE,
    max_depth=8,
    max_bytes_len=256 * 1024,
    max_str_len=256,
    max_array_len=1024,
)


def receipt_proof_of(raw: bytes) -> ReceiptProof:
    """The receipt proof in what the receipt endpoint serves: a `ReceiptProof`, or a
    `ChainedReceipt` `[proof, set chain]` (whose set chain `contracts.setchain` reads)."""
    try:
        return ReceiptProof.decode(raw)
    except CodecError as plain:
        try:
            pair = unpack_canonical(raw, _CHAINED_LIMITS)
        except CodecError:
            raise plain from None
        if not isinstance(pair, list) or len(pair) != 2:
            raise plain from None
        return ReceiptProof.from_wire(pair[0], "receipt")


async def _read_at_most(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The body of resp, refused (`ResponseTooLarge`) as soon as it exceeds max_bytes."""
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise ResponseTooLarge(f"answer of {resp.content_length} bytes exceeds {max_bytes}")
    data = bytearray()
    async for piece in resp.content.iter_chunked(64 * 1024):
        data += piece
        if len(data) > max_bytes:
            raise ResponseTooLarge(f"answer exceeds {max_bytes} bytes")
    return bytes(data)


async def _parse_sse(stream: aiohttp.StreamReader) -> AsyncIterator[ChainEvent]:
    fields: dict[str, str] = {}
    data: list[str] = []
    while True:
        line_b = await stream.readline()
        if not line_b:
            return
        line = line_b.decode("utf-8").rstrip("\r\n")
        if line.startswith(":"):
            continue
        if line:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            else:
                fields[name] = value
            continue
        if data and "id" in fields and fields.get("event") in ("block", "tx"):
            try:
                ev_id = int(fields["id"])
                payload = json.loads("\n".join(data))
            except ValueError as e:
                raise NodeUnavailable("malformed server-sent event") from e
            kind: Literal["block", "tx"] = "block" if fields["event"] == "block" else "tx"
            yield ChainEvent(ev_id, kind, payload)
        fields, data = {}, []


def _hex(b: bytes | str) -> str:
    return b.hex() if isinstance(b, bytes) else b.removeprefix("0x").lower()


# --- blocking client ---------------------------------------------------------------------


class Client:
    """Blocking client: runs an `AsyncClient` on a private event loop in its own thread,
    so it also works when called from code that has an event loop of its own (not from
    that loop's thread while the node under test runs on it). Call `close()` or use
    `with Client(url) as c:`."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        language: str | None = None,
        retry_wait_s: float | None = None,
    ) -> None:
        self._async = AsyncClient(
            base_url,
            timeout_s=timeout_s,
            ssl_context=ssl_context,
            language=language,
            retry_wait_s=retry_wait_s,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="qchain-client", daemon=True
        )
        self._thread.start()
        self._closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._run(self._async.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def base_url(self) -> str:
        return self._async.base_url

    def submit(self, tx: bytes | Transaction) -> TxInfo:
        return self._run(self._async.submit(tx))

    def submit_and_wait(self, tx: bytes | Transaction, timeout_s: float = 30.0) -> TxInfo:
        return self._run(self._async.submit_and_wait(tx, timeout_s))

    def submit_batch(self, txs: Sequence[bytes | Transaction]) -> list[TxInfo | ApiError]:
        return self._run(self._async.submit_batch(txs))

    def prepare(self, unsigned: Mapping[str, Any]) -> PreparedTx:
        return self._run(self._async.prepare(unsigned))

    def tx_status(self, tx_hash: bytes | str) -> TxInfo:
        return self._run(self._async.tx_status(tx_hash))

    def transaction(self, tx_hash: bytes | str) -> Transaction | None:
        return self._run(self._async.transaction(tx_hash))

    def receipt_bytes(self, tx_hash: bytes | str) -> bytes:
        return self._run(self._async.receipt_bytes(tx_hash))

    def receipt(self, tx_hash: bytes | str) -> ReceiptProof:
        return self._run(self._async.receipt(tx_hash))

    def set_chain_bytes(self, height: int) -> bytes:
        return self._run(self._async.set_chain_bytes(height))

    def block(self, height: int | Literal["latest"] = "latest") -> Block:
        return self._run(self._async.block(height))

    def blocks(self, start: int, limit: int = 20) -> list[Block]:
        return self._run(self._async.blocks(start, limit))

    def account(self, address: bytes | str) -> dict[str, Any]:
        return self._run(self._async.account(address))

    def next_nonce(self, address: bytes | str) -> int:
        return self._run(self._async.next_nonce(address))

    def query(self, contract: str, method: str, args: Mapping[str, Any] | None = None) -> Any:
        return self._run(self._async.query(contract, method, args))

    def notary_lookup(self, digest: bytes | str) -> dict[str, Any] | None:
        return self._run(self._async.notary_lookup(digest))

    def status(self) -> dict[str, Any]:
        return self._run(self._async.status())

    def qkd(self) -> dict[str, Any]:
        return self._run(self._async.qkd())

    def ready(self) -> tuple[bool, list[str]]:
        return self._run(self._async.ready())

    def events(self, last_event_id: int | None = None) -> Iterator[ChainEvent]:
        """Blocking iterator over server-sent events; close it (or break) to stop."""
        agen = self._async.events(last_event_id)
        try:
            while True:
                try:
                    yield self._run(_anext(agen))
                except StopAsyncIteration:
                    return
        finally:
            self._run(_aclose(agen))


async def _anext(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()


async def _aclose(agen: AsyncIterator[Any]) -> None:
    close = getattr(agen, "aclose", None)
    if close is not None:
        result: Awaitable[None] = close()
        await result
