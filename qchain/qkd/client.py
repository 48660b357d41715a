"""The ETSI GS QKD 014 client: a `KeySource` that talks to a key manager (KME) over HTTPS.

`ETSIClient(base_url, sae_id, tls=TLSConfig(...))` calls, for its SAE:

- `status(slave)`: `GET {base}/api/v1/keys/{slave}/status`;
- `enc_keys(slave, number, size)`: `POST .../{slave}/enc_keys` with `{"number", "size"}`
  (or `GET` with query parameters when `method="GET"`);
- `dec_keys(master, ids)`: `POST .../{master}/dec_keys` with
  `{"key_IDs": [{"key_ID": ...}]}`; with `method="GET"`, a single id goes as one `key_ID`
  query parameter and two or more still by `POST`, as the standard reserves several
  key IDs for `POST`.

Mutual TLS: the client presents its certificate and trusts only the given CA. In the
key manager's insecure dev mode, `insecure_sae_header=True` names the SAE in a header
over plain HTTP instead.

Every failed call raises the typed error that `HTTP_ERRORS` names for its answer, so the
retry policy (`qchain.qkd.errors.classify`) sees one error tree whatever went wrong:
401 and 403, TLS and certificate failures are `KeyConfigError`s; 400 is `KeyBadRequest`;
every other status (404, 409, 429, 5xx, ...), a timeout or a connection error is
`KeyUnavailable`; an answer that breaks the standard's format is `KeySourceError`.
Nothing depends on the `message` or `details` of an error answer: they are only
logged. A transient error is retried here `retries` times with jittered backoff before
it is raised. Answers are checked: UUID ids, key sizes, only ids asked for, never more
keys than asked for. A short answer (fewer keys than asked for) is returned as it is:
the keys that came are good, and the caller asks again for the rest.
Logs carry ids and counts, never key bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import random
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import aiohttp

from qchain.qkd.clock import Clock, SystemClock
from qchain.qkd.errors import (
    KeyBadRequest,
    KeyConfigError,
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


HTTP_ERRORS: dict[int, type[KeySourceError]] = {
    400: KeyBadRequest,
    401: KeyUnauthorised,
    403: KeyUnauthorised,
}
"""The error for each HTTP status that is not 200; any status not listed (404, 409, 429,
5xx, ...) is `KeyUnavailable`."""


def http_error(
    http_status: int, message: str, details: tuple[dict[str, object], ...] = ()
) -> KeySourceError:
    """The typed error for a key manager's non-200 answer."""
    cls = HTTP_ERRORS.get(http_status, KeyUnavailable)
    return cls(message, details, http_status=http_status)


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
        rng: random.Random | None = None,
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
        self.rng = rng or random.Random()
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
            except KeyConfigError:
                raise
            except KeySourceError as e:
                err: KeySourceError = e
            except aiohttp.ClientSSLError as e:
                raise KeyConfigError(f"TLS with the key manager failed: {e}") from None
            except (TimeoutError, aiohttp.ClientConnectionError) as e:
                err = KeyUnavailable(f"key manager unreachable: {type(e).__name__}: {e}")
            if attempt > self.retries:
                raise err
            log.info("%s %s: %s; retry %d in %.2fs", method, url, err.message, attempt, delay)
            await self.clock.sleep(delay * (0.5 + self.rng.random() / 2))
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
                    raise KeySourceError(
                        f"answer from {url} larger than {MAX_RESPONSE} bytes",
                        http_status=resp.status,
                    )
            try:
                doc = json.loads(raw) if raw else None
            except (ValueError, UnicodeDecodeError):
                doc = None
            if resp.status == 200:
                if not isinstance(doc, dict):
                    raise KeySourceError(f"answer from {url} is not a JSON object", http_status=200)
                return doc
            message = f"HTTP {resp.status}"
            details: tuple[dict[str, object], ...] = ()
            if isinstance(doc, dict):
                message = f"HTTP {resp.status}: {str(doc.get('message', ''))[:200]}"
                raw_details = doc.get("details")
                if isinstance(raw_details, list):
                    details = tuple(d for d in raw_details if isinstance(d, dict))
            raise http_error(resp.status, message, details)

    @staticmethod
    def _parse_keys(doc: Mapping[str, object], size: int | None) -> list[Key]:
        items = doc.get("keys")
        if not isinstance(items, list):
            raise KeySourceError("answer has no keys list", http_status=200)
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
            raise KeySourceError(f"malformed status: {e.message}", http_status=200) from e

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
        if len(keys) > number or len({k.key_id for k in keys}) != len(keys):
            for k in keys:
                k.wipe()
            raise KeySourceError(
                f"asked for {number} keys, got {len(keys)} or repeated ids", http_status=200
            )
        log.debug("enc_keys to %s: %d of %d keys", slave_sae_id, len(keys), number)
        return keys

    async def dec_keys(self, master_sae_id: str, key_ids: Sequence[KeyId]) -> list[Key]:
        texts = [key_id_str(k) for k in key_ids]
        if self.method == "GET" and len(texts) == 1:
            doc = await self._call("GET", master_sae_id, "dec_keys", params=[("key_ID", texts[0])])
        else:
            body = {"key_IDs": [{"key_ID": t} for t in texts]}
            doc = await self._call("POST", master_sae_id, "dec_keys", body=body)
        keys = self._parse_keys(doc, None)
        by_id = {k.key_id: k for k in keys}
        if len(by_id) != len(keys) or not set(by_id) <= set(key_ids):
            for k in keys:
                k.wipe()
            raise KeySourceError(
                "the key manager answered other key ids than asked for", http_status=200
            )
        log.debug("dec_keys from %s: %d of %d keys", master_sae_id, len(keys), len(key_ids))
        return [by_id[k] for k in key_ids if k in by_id]


def _parse_key(item: object, size: int | None) -> Key:
    """One entry of a Key container; `KeySourceError` if it breaks the format."""
    if not isinstance(item, dict) or not isinstance(item.get("key"), str):
        raise KeySourceError("a keys entry lacks key_ID or key", http_status=200)
    try:
        key_id = parse_key_id(item.get("key_ID"))
        material = bytearray(base64.b64decode(item["key"], validate=True))
    except (KeyBadRequest, binascii.Error) as e:
        raise KeySourceError(f"malformed key entry: {e}", http_status=200) from None
    if not material:
        raise KeySourceError(f"key {key_id_str(key_id)} is empty", http_status=200)
    if size is not None and len(material) * 8 != size:
        got = len(material) * 8
        material[:] = bytes(len(material))
        raise KeyConfigError(
            f"key manager gave a {got}-bit key for a {size}-bit request", http_status=200
        )
    return Key(key_id, material)
