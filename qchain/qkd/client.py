"""The ETSI GS QKD 014 client: a `KeySource` that talks to a key manager (KME) over HTTPS.

`ETSIClient(base_url, sae_id, tls=TLSConfig(...))` calls, for its SAE:

- `status(slave)`: `GET {base}/api/v1/keys/{slave}/status`;
- `enc_keys(slave, number, size)`: `POST .../{slave}/enc_keys` with `{"number", "size"}`
  (or `GET` with query parameters when `method="GET"`);
- `dec_keys(master, ids)`: `POST .../{master}/dec_keys` with
  `{"key_IDs": [{"key_ID": ...}]}` (or `GET` with `key_ID` query parameters).

Mutual TLS: the client presents its certificate and trusts only the given CA. In the
key manager's insecure dev mode, `insecure_sae_header=True` names the SAE in a header
over plain HTTP instead.

Every call has a total timeout. A 503 or a connection error/timeout is retried with
exponential backoff (`retries` times), then raised as `KeyUnavailable` (or
`KeyExhausted` when the key manager says so); 400 is `KeyBadRequest`, 401
`KeyUnauthorised`; a response that breaks the standard's format is `KeySourceError`.
Answers are checked: the right number of keys, UUID ids, key sizes, the ids asked for.
Logs carry ids and counts, never key bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import aiohttp

from qchain.qkd.clock import Clock, SystemClock
from qchain.qkd.errors import (
    KeyBadRequest,
    KeyExhausted,
    KeySourceError,
    KeyUnauthorised,
    KeyUnavailable,
)
from qchain.qkd.kms import SAE_HEADER
from qchain.qkd.source import Key, KeyId, KeySource, LinkStatus, key_id_str, parse_key_id

log = logging.getLogger(__name__)

MAX_RESPONSE = 4 * 1024 * 1024


@dataclass(frozen=True)
class TLSConfig:
    """Files for mutual TLS: the CA that signed the KME's certificate, and this SAE's
    certificate and key."""

    ca_cert: Path
    cert: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_cert))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx


class ETSIClient(KeySource):
    def __init__(
        self,
        base_url: str,
        sae_id: str,
        *,
        tls: TLSConfig | None = None,
        insecure_sae_header: bool = False,
        method: Literal["GET", "POST"] = "POST",
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.05,
        backoff_max: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        if tls is None and not insecure_sae_header:
            raise ValueError("give TLS files, or insecure_sae_header=True for a dev key manager")
        self.base_url = base_url.rstrip("/")
        self.sae_id = sae_id
        self.method = method
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.clock: Clock = clock or SystemClock()
        self.calls = 0
        self._tls = tls
        self._headers = {SAE_HEADER: sae_id} if insecure_sae_header else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            ssl_ctx: ssl.SSLContext | bool = self._tls.context() if self._tls else False
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ssl_ctx, limit=8),
                timeout=self._timeout,
                headers=self._headers,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self,
        method: str,
        sae: str,
        endpoint: str,
        *,
        params: Sequence[tuple[str, str]] | None = None,
        body: Mapping[str, object] | None = None,
    ) -> Mapping[str, object]:
        url = f"{self.base_url}/api/v1/keys/{sae}/{endpoint}"
        delay = self.backoff
        attempt = 0
        while True:
            attempt += 1
            self.calls += 1
            try:
                return await self._once(method, url, params, body)
            except KeyUnavailable as e:
                err: KeySourceError = e
            except (TimeoutError, aiohttp.ClientConnectionError) as e:
                err = KeyUnavailable(f"key manager unreachable: {type(e).__name__}: {e}")
            if attempt > self.retries:
                raise err
            log.info("%s %s: %s; retry %d in %.2fs", method, url, err.message, attempt, delay)
            await self.clock.sleep(delay)
            delay = min(self.backoff_max, delay * 2)

    async def _once(
        self,
        method: str,
        url: str,
        params: Sequence[tuple[str, str]] | None,
        body: Mapping[str, object] | None,
    ) -> Mapping[str, object]:
        session = self._get_session()
        async with session.request(method, url, params=params, json=body) as resp:
            raw = bytearray()
            async for chunk in resp.content.iter_chunked(64 * 1024):
                raw += chunk
                if len(raw) > MAX_RESPONSE:
                    raise KeySourceError(f"answer from {url} larger than {MAX_RESPONSE} bytes")
            try:
                doc = json.loads(raw) if raw else None
            except (ValueError, UnicodeDecodeError):
                doc = None
            if resp.status == 200:
                if not isinstance(doc, dict):
                    raise KeySourceError(f"answer from {url} is not a JSON object")
                return doc
            message = f"HTTP {resp.status}"
            details: tuple[dict[str, object], ...] = ()
            if isinstance(doc, dict):
                message = str(doc.get("message", message))
                raw_details = doc.get("details")
                if isinstance(raw_details, list):
                    details = tuple(d for d in raw_details if isinstance(d, dict))
            if resp.status == 503:
                for d in details:
                    if d.get("reason") == "exhausted":
                        stored, requested = d.get("stored_key_count"), d.get("requested")
                        if type(stored) is int and type(requested) is int:
                            raise KeyExhausted(stored, requested)
                raise KeyUnavailable(message, details)
            if resp.status == 400:
                raise KeyBadRequest(message, details)
            if resp.status == 401:
                raise KeyUnauthorised(message, details)
            raise KeySourceError(f"{message} from {url}", details)

    @staticmethod
    def _parse_keys(doc: Mapping[str, object], size: int | None) -> list[Key]:
        items = doc.get("keys")
        if not isinstance(items, list):
            raise KeySourceError("answer has no keys list")
        keys: list[Key] = []
        try:
            for item in items:
                keys.append(_parse_key(item, size))
        except KeySourceError:
            for k in keys:
                k.wipe()
            raise
        return keys

    async def status(self, slave_sae_id: str) -> LinkStatus:
        doc = await self._call("GET", slave_sae_id, "status")
        try:
            return LinkStatus.from_json(doc)
        except KeyBadRequest as e:
            raise KeySourceError(f"malformed status: {e.message}") from e

    async def enc_keys(self, slave_sae_id: str, number: int, size: int | None = None) -> list[Key]:
        if self.method == "POST":
            body: dict[str, object] = {"number": number}
            if size is not None:
                body["size"] = size
            doc = await self._call("POST", slave_sae_id, "enc_keys", body=body)
        else:
            params = [("number", str(number))]
            if size is not None:
                params.append(("size", str(size)))
            doc = await self._call("GET", slave_sae_id, "enc_keys", params=params)
        keys = self._parse_keys(doc, size)
        if len(keys) != number:
            for k in keys:
                k.wipe()
            raise KeySourceError(f"asked for {number} keys, got {len(keys)}")
        log.debug("enc_keys to %s: %d keys", slave_sae_id, number)
        return keys

    async def dec_keys(self, master_sae_id: str, key_ids: Sequence[KeyId]) -> list[Key]:
        texts = [key_id_str(k) for k in key_ids]
        if self.method == "POST":
            body = {"key_IDs": [{"key_ID": t} for t in texts]}
            doc = await self._call("POST", master_sae_id, "dec_keys", body=body)
        else:
            params = [("key_ID", t) for t in texts]
            doc = await self._call("GET", master_sae_id, "dec_keys", params=params)
        keys = self._parse_keys(doc, None)
        by_id = {k.key_id: k for k in keys}
        if len(by_id) != len(keys) or set(by_id) != set(key_ids):
            for k in keys:
                k.wipe()
            raise KeySourceError("the key manager answered other key ids than asked for")
        log.debug("dec_keys from %s: %d keys", master_sae_id, len(keys))
        return [by_id[k] for k in key_ids]


def _parse_key(item: object, size: int | None) -> Key:
    """One entry of a Key container; `KeySourceError` if it breaks the format."""
    if not isinstance(item, dict) or not isinstance(item.get("key"), str):
        raise KeySourceError("a keys entry lacks key_ID or key")
    try:
        key_id = parse_key_id(item.get("key_ID"))
        material = bytearray(base64.b64decode(item["key"], validate=True))
    except (KeyBadRequest, binascii.Error) as e:
        raise KeySourceError(f"malformed key entry: {e}") from None
    if not material or (size is not None and len(material) * 8 != size):
        material[:] = bytes(len(material))
        raise KeySourceError(f"key {key_id_str(key_id)} has the wrong size")
    return Key(key_id, material)
