"""The simulated key manager: an aiohttp server speaking ETSI GS QKD 014 for every SAE.

Routes (ETSI GS QKD 014 V1.1.1, section 5; every answer is `application/json`):

| method | path | request | answer |
|---|---|---|---|
| GET | `/api/v1/keys/{slave_SAE_ID}/status` | | Status |
| GET | `/api/v1/keys/{slave_SAE_ID}/enc_keys` | query `number`, `size` | Key container |
| POST | `/api/v1/keys/{slave_SAE_ID}/enc_keys` | Key request | Key container |
| GET | `/api/v1/keys/{master_SAE_ID}/dec_keys` | query `key_ID` | Key container |
| POST | `/api/v1/keys/{master_SAE_ID}/dec_keys` | Key IDs | Key container |

Errors are 400 (malformed request, limits, unknown SAE or key id), 401 (caller not
identified or not on that link) and 503 (outage, eavesdropper alarm, not enough keys),
with the standard Error body `{"message": ..., "details": [...]}`. The caller is named by
the common name of its client certificate (mutual TLS); only in an explicit insecure dev
mode is it named by the `X-SAE-ID` header over plain HTTP. Multiple slave SAEs
(`additional_slave_SAE_IDs`) are not supported (`max_SAE_ID_count` is 0) and a request
with `extension_mandatory` entries is refused, as the standard asks of a KME that does not
support them.

The admin endpoint listens on its own loopback port and wants `Authorization: Bearer
<token>`:

| method | path | body |
|---|---|---|
| GET | `/admin/links` | | every link's state and counters |
| GET | `/admin/links/{a}/{b}` | | one link |
| POST | `/admin/links/{a}/{b}/rate` | `{"bits_per_second": n}` or `{"profile": "metro"}` |
| POST | `/admin/links/{a}/{b}/outage` | `{"active": true}` |
| POST | `/admin/links/{a}/{b}/eavesdropper` | `{"active": true}` (flush, stop) / false |

Key material is never logged.
"""

from __future__ import annotations

import base64
import hmac
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

from qchain.errors import InvalidJson
from qchain.jsonform import parse_json
from qchain.qkd.clock import Clock, SystemClock
from qchain.qkd.errors import KeyBadRequest, KeySourceError, KeyUnauthorised
from qchain.qkd.keymanager import PROFILES, KeyFactory, KeyManager
from qchain.qkd.kms_config import KMSConfig
from qchain.qkd.relay import Relay, settled
from qchain.qkd.source import Key, key_id_str, parse_key_id

log = logging.getLogger(__name__)

SAE_HEADER = "X-SAE-ID"
MAX_REQUEST = 64 * 1024
_MANAGER = web.AppKey("manager", KeyManager)
_INSECURE = web.AppKey("insecure", bool)
_TOKEN = web.AppKey("token", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(
    status: int, message: str, details: Iterable[Mapping[str, object]] = ()
) -> web.Response:
    return web.json_response({"message": message, "details": list(details)}, status=status)


def _caller(request: web.Request) -> str:
    if request.app[_INSECURE]:
        sae = request.headers.get(SAE_HEADER)
        if not sae:
            raise KeyUnauthorised(f"insecure dev mode: name the calling SAE in {SAE_HEADER}")
        return sae
    cert = request.transport.get_extra_info("peercert") if request.transport else None
    if not cert:
        raise KeyUnauthorised("no client certificate")
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    raise KeyUnauthorised("the client certificate has no common name")


def _keys_json(keys: list[Key]) -> dict[str, object]:
    doc: dict[str, object] = {
        "keys": [
            {"key_ID": key_id_str(k.key_id), "key": base64.b64encode(k.material).decode()}
            for k in keys
        ]
    }
    for k in keys:
        k.wipe()
    return doc


async def _json_body(request: web.Request) -> Mapping[str, Any]:
    try:
        doc = parse_json(await request.read(), "the request body")
    except InvalidJson as e:
        raise KeyBadRequest(e.message) from None
    if not isinstance(doc, dict):
        raise KeyBadRequest("the request body is not a JSON object")
    return doc


def _count(value: object, name: str) -> int:
    if isinstance(value, str):
        if not value.isdigit() or len(value) > 9:
            raise KeyBadRequest(f"{name} is not a positive integer")
        return int(value)
    if type(value) is not int or value < 0:
        raise KeyBadRequest(f"{name} is not a positive integer")
    return value


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except KeySourceError as e:
        log.info("%s %s -> %d %s", request.method, request.path, e.status, e.message)
        return error_response(e.status, e.message, e.details)
    except web.HTTPRequestEntityTooLarge:
        return error_response(400, "request body too large")


async def _latency(request: web.Request, caller: str, other: str) -> None:
    manager = request.app[_MANAGER]
    delay = manager.latency(caller, other)
    if delay:
        await manager.clock.sleep(delay)


async def handle_status(request: web.Request) -> web.Response:
    caller = _caller(request)
    slave = request.match_info["sae"]
    await _latency(request, caller, slave)
    return web.json_response(request.app[_MANAGER].status(caller, slave).to_json())


async def handle_enc_keys(request: web.Request) -> web.Response:
    caller = _caller(request)
    slave = request.match_info["sae"]
    if request.method == "POST":
        doc = await _json_body(request)
        if doc.get("additional_slave_SAE_IDs"):
            raise KeyBadRequest("additional_slave_SAE_IDs is not supported (max_SAE_ID_count 0)")
        if doc.get("extension_mandatory"):
            raise KeyBadRequest(
                "unsupported mandatory extension",
                tuple({"extension_mandatory": k} for k in doc["extension_mandatory"]),
            )
        number = _count(doc.get("number", 1), "number")
        size = None if doc.get("size") is None else _count(doc["size"], "size")
    else:
        number = _count(request.query.get("number", "1"), "number")
        size = None if "size" not in request.query else _count(request.query["size"], "size")
    await _latency(request, caller, slave)
    keys = request.app[_MANAGER].enc_keys(caller, slave, number, size)
    await settled(request.app[_MANAGER])  # one KME per site: qchain.qkd.relay
    log.debug("enc_keys %s -> %s: %d keys", caller, slave, len(keys))
    return web.json_response(_keys_json(keys))


async def handle_dec_keys(request: web.Request) -> web.Response:
    caller = _caller(request)
    master = request.match_info["sae"]
    if request.method == "POST":
        doc = await _json_body(request)
        items = doc.get("key_IDs")
        if not isinstance(items, list) or not items:
            raise KeyBadRequest("key_IDs must be a non-empty list")
        ids = []
        for item in items:
            if not isinstance(item, dict):
                raise KeyBadRequest("each key_IDs entry is an object with key_ID")
            ids.append(parse_key_id(item.get("key_ID")))
    else:
        if "key_ID" not in request.query:
            raise KeyBadRequest("query parameter key_ID is required")
        ids = [parse_key_id(v) for v in request.query.getall("key_ID")]
    await _latency(request, caller, master)
    keys = request.app[_MANAGER].dec_keys(caller, master, ids)
    log.debug("dec_keys %s <- %s: %d keys", caller, master, len(keys))
    return web.json_response(_keys_json(keys))


def build_kms_app(manager: KeyManager, *, insecure: bool = False) -> web.Application:
    """The ETSI GS QKD 014 application over a key manager."""
    app = web.Application(middlewares=[_errors], client_max_size=MAX_REQUEST)
    app[_MANAGER] = manager
    app[_INSECURE] = insecure
    app.router.add_get("/api/v1/keys/{sae}/status", handle_status)
    app.router.add_route("GET", "/api/v1/keys/{sae}/enc_keys", handle_enc_keys)
    app.router.add_route("POST", "/api/v1/keys/{sae}/enc_keys", handle_enc_keys)
    app.router.add_route("GET", "/api/v1/keys/{sae}/dec_keys", handle_dec_keys)
    app.router.add_route("POST", "/api/v1/keys/{sae}/dec_keys", handle_dec_keys)
    return app


# --- admin -------------------------------------------------------------------------------


@web.middleware
async def _admin_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get("Authorization", "")
    expected = f"Bearer {request.app[_TOKEN]}"
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return error_response(401, "admin token missing or wrong")
    try:
        return await handler(request)
    except KeyError:
        return error_response(404, "no such link")
    except (ValueError, KeyBadRequest) as e:
        return error_response(400, str(e))


def _pair(request: web.Request) -> tuple[str, str]:
    return request.match_info["a"], request.match_info["b"]


async def _admin_body(request: web.Request) -> Mapping[str, Any]:
    return await _json_body(request)


async def admin_links(request: web.Request) -> web.Response:
    m = request.app[_MANAGER]
    return web.json_response(
        {"links": [m.link_report(*name.split("~", 1)) for name in m.link_names()]}
    )


async def admin_link(request: web.Request) -> web.Response:
    return web.json_response(request.app[_MANAGER].link_report(*_pair(request)))


async def admin_rate(request: web.Request) -> web.Response:
    doc = await _admin_body(request)
    given = doc.get("bits_per_second")
    if "profile" in doc:
        if doc["profile"] not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}")
        rate = PROFILES[doc["profile"]]
    elif type(given) is int:
        rate = given
    else:
        raise ValueError("give bits_per_second (an integer) or profile")
    request.app[_MANAGER].set_rate(*_pair(request), rate)
    return await admin_link(request)


def _active(doc: Mapping[str, Any]) -> bool:
    active = doc.get("active")
    if type(active) is not bool:
        raise ValueError("give active: true or false")
    return active


async def admin_outage(request: web.Request) -> web.Response:
    request.app[_MANAGER].set_outage(*_pair(request), _active(await _admin_body(request)))
    return await admin_link(request)


async def admin_eavesdropper(request: web.Request) -> web.Response:
    request.app[_MANAGER].set_eavesdropper(*_pair(request), _active(await _admin_body(request)))
    return await admin_link(request)


def build_admin_app(manager: KeyManager, token: str) -> web.Application:
    app = web.Application(middlewares=[_admin_auth], client_max_size=MAX_REQUEST)
    app[_MANAGER] = manager
    app[_TOKEN] = token
    app.router.add_get("/admin/links", admin_links)
    app.router.add_get("/admin/links/{a}/{b}", admin_link)
    app.router.add_post("/admin/links/{a}/{b}/rate", admin_rate)
    app.router.add_post("/admin/links/{a}/{b}/outage", admin_outage)
    app.router.add_post("/admin/links/{a}/{b}/eavesdropper", admin_eavesdropper)
    return app


# --- running -----------------------------------------------------------------------------


def server_ssl_context(config: KMSConfig) -> ssl.SSLContext | None:
    """TLS that requires a client certificate signed by the configured CA."""
    if config.tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(config.tls.ca_cert))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(config.tls.cert), str(config.tls.key))
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class KMSServer:
    """The key manager and its admin endpoint, started and stopped together."""

    def __init__(
        self,
        config: KMSConfig,
        *,
        clock: Clock | None = None,
        factory: KeyFactory | None = None,
    ) -> None:
        self.config = config
        clock = clock or SystemClock()
        # One KME per site (qchain.qkd.relay): the relay's manager serves the local SAE.
        self.relay = None if config.relay is None else Relay(config.relay, clock)
        self.manager = (
            KeyManager(config.links, clock, kme_ids=dict(config.kme_ids), factory=factory)
            if self.relay is None
            else self.relay.make_manager(
                config.links, kme_ids=dict(config.kme_ids), factory=factory
            )
        )
        self._runners: list[web.AppRunner] = []
        self.port = 0
        self.admin_port = 0

    @property
    def url(self) -> str:
        scheme = "http" if self.config.tls is None else "https"
        return f"{scheme}://{self.config.host}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.config.admin_host}:{self.admin_port}"

    async def _serve(
        self, app: web.Application, host: str, port: int, ctx: ssl.SSLContext | None
    ) -> int:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, host, port, ssl_context=ctx)
        await site.start()
        return int(runner.addresses[-1][1])

    async def start(self) -> None:
        """Bind both ports (0 picks a free one; see `port` and `admin_port`)."""
        cfg = self.config
        insecure = cfg.insecure_dev_mode and cfg.tls is None
        self.port = await self._serve(
            build_kms_app(self.manager, insecure=insecure),
            cfg.host,
            cfg.port,
            server_ssl_context(cfg),
        )
        self.admin_port = await self._serve(
            build_admin_app(self.manager, cfg.admin_token), cfg.admin_host, cfg.admin_port, None
        )
        if self.relay is not None:
            await self.relay.start()
        log.info("key manager on %s, admin on %s", self.url, self.admin_url)

    async def stop(self) -> None:
        if self.relay is not None:
            await self.relay.stop()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
