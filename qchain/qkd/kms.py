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
the common name of its client certificate (mutual TLS), or by its serial number in
decimal (`sae_identity = "serial"`); only in an explicit insecure dev mode is it named by
the `X-SAE-ID` header over plain HTTP. Multiple slave SAEs
(`additional_slave_SAE_IDs`) are not supported (`max_SAE_ID_count` is 0) and a request
with `extension_mandatory` entries is refused, as the standard asks of a KME that does not
support them.

Behaviour switches (`Behaviour` in `kms_config`, the `[behaviour]` table, replaced at run
time with `PUT /admin/behaviour`) reproduce what vendor KMEs do instead: another status
on exhaustion (404, 409), partial batches, a lower `max_key_per_request`, slow answers,
SAEs named by certificate serial number. With the defaults every answer is as above.

The admin endpoint listens on its own loopback port and wants `Authorization: Bearer
<token>`:

| method | path | body |
|---|---|---|
| GET | `/admin/links` | | every link's state and counters |
| GET | `/admin/links/{a}/{b}` | | one link |
| POST | `/admin/links/{a}/{b}/rate` | `{"bits_per_second": n}` or `{"profile": "metro"}` |
| POST | `/admin/links/{a}/{b}/outage` | `{"active": true}` |
| POST | `/admin/links/{a}/{b}/eavesdropper` | `{"active": true}` (flush, stop) / false |
| POST | `/admin/links/{a}/{b}/stored` | `{"stored_key_count": n}` (0 drains, n refills) |
| PUT | `/admin/links/{a}/{b}` | `{}`, `{"bits_per_second": n}` or `{"profile": "lab"}`: new link |
| DELETE | `/admin/links/{a}/{b}` | | drops the link and its keys |

A validator that joins a running chain needs a link to every member, and one that left
needs none (CONSENSUS.md §10.6): `PUT` adds the pair with the parameters of an existing
link of either SAE (the rate as given), `DELETE` drops it with every key it holds.
| GET | `/admin/behaviour` | | the behaviour set in force |
| PUT | `/admin/behaviour` | a whole behaviour set; fields left out take their defaults |

Key material is never logged.
"""

from __future__ import annotations

import base64
import hmac
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

from qchain.errors import ConfigError, InvalidJson
from qchain.jsonform import parse_json
from qchain.qkd.clock import Clock, SystemClock
from qchain.qkd.errors import KeyBadRequest, KeyExhausted, KeySourceError, KeyUnauthorised
from qchain.qkd.keymanager import PROFILES, KeyFactory, KeyManager, link_name
from qchain.qkd.kms_config import Behaviour, KMSConfig, parse_behaviour
from qchain.qkd.relay import Relay, settled
from qchain.qkd.source import Key, key_id_str, parse_key_id

log = logging.getLogger(__name__)

SAE_HEADER = "X-SAE-ID"
MAX_REQUEST = 64 * 1024


class Switches:
    """The behaviour set in force, shared by the ETSI app and the admin app."""

    def __init__(self, behaviour: Behaviour, *, tls: bool, rng: random.Random | None = None):
        self.behaviour = behaviour
        self.tls = tls
        self._rng = rng or random.Random()

    def replace(self, doc: Mapping[str, object]) -> Behaviour:
        """Put a whole new set in force (`ConfigError` for a bad one)."""
        self.behaviour = parse_behaviour(doc, tls=self.tls)
        return self.behaviour

    def delay(self) -> float:
        """Seconds to hold the next answer."""
        b = self.behaviour
        jitter = self._rng.uniform(0, b.delay_jitter_ms) if b.delay_jitter_ms else 0.0
        return (b.delay_ms + jitter) / 1000

    def cap(self, manager: KeyManager, a: str, b: str) -> int | None:
        """The `max_key_per_request` in force on the link a~b (None: no such link)."""
        try:
            own = manager.link_config(a, b).max_key_per_request
        except KeyError:
            return None
        limit = self.behaviour.max_key_per_request
        return min(own, limit) if limit else own


_MANAGER = web.AppKey("manager", KeyManager)
_SWITCHES = web.AppKey("switches", Switches)
_TOKEN = web.AppKey("token", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(
    status: int, message: str, details: Iterable[Mapping[str, object]] = ()
) -> web.Response:
    return web.json_response({"message": message, "details": list(details)}, status=status)


def _caller(request: web.Request) -> str:
    identity = request.app[_SWITCHES].behaviour.sae_identity
    if identity == "header":
        sae = request.headers.get(SAE_HEADER)
        if not sae:
            raise KeyUnauthorised(f"insecure dev mode: name the calling SAE in {SAE_HEADER}")
        return sae
    cert = request.transport.get_extra_info("peercert") if request.transport else None
    if not cert:
        raise KeyUnauthorised("no client certificate")
    if identity == "serial":
        serial = cert.get("serialNumber")
        if not isinstance(serial, str):
            raise KeyUnauthorised("the client certificate has no serial number")
        return str(int(serial, 16))
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
    switches = request.app[_SWITCHES]
    delay = switches.delay()
    if delay:
        await request.app[_MANAGER].clock.sleep(delay)
    try:
        return await handler(request)
    except KeyExhausted as e:
        status = switches.behaviour.exhausted_status
        log.info("%s %s -> %d %s", request.method, request.path, status, e.message)
        return error_response(status, e.message, e.details)
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
    manager = request.app[_MANAGER]
    doc = manager.status(caller, slave).to_json()
    cap = request.app[_SWITCHES].cap(manager, caller, slave)
    if cap is not None:
        doc["max_key_per_request"] = cap
    return web.json_response(doc)


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
    manager = request.app[_MANAGER]
    behaviour = request.app[_SWITCHES].behaviour
    cap = request.app[_SWITCHES].cap(manager, caller, slave)
    if cap is not None and number > cap:
        if behaviour.partial_batches:
            number = cap
        elif behaviour.max_key_per_request:
            raise KeyBadRequest(
                "number or size outside the link's limits",
                ({"number": number, "max_key_per_request": cap},),
            )
    try:
        keys = manager.enc_keys(caller, slave, number, size)
    except KeyExhausted as e:
        if not (behaviour.partial_batches and e.stored > 0):
            raise
        keys = manager.enc_keys(caller, slave, e.stored, size)
    await settled(manager)  # one KME per site: qchain.qkd.relay
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
    manager = request.app[_MANAGER]
    cap = request.app[_SWITCHES].cap(manager, caller, master)
    if cap is not None and len(ids) > cap:
        raise KeyBadRequest(
            "key_IDs must list between 1 and max_key_per_request ids",
            ({"count": len(ids), "max_key_per_request": cap},),
        )
    keys = manager.dec_keys(caller, master, ids)
    log.debug("dec_keys %s <- %s: %d keys", caller, master, len(keys))
    return web.json_response(_keys_json(keys))


def build_kms_app(manager: KeyManager, switches: Switches) -> web.Application:
    """The ETSI GS QKD 014 application over a key manager."""
    app = web.Application(middlewares=[_errors], client_max_size=MAX_REQUEST)
    app[_MANAGER] = manager
    app[_SWITCHES] = switches
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
    except (ValueError, KeyBadRequest, ConfigError) as e:
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


async def admin_add_link(request: web.Request) -> web.Response:
    """A new SAE pair at run time: its parameters are those of an existing link of
    either SAE (else of the first link), its rate the one given, if any
    (`KeyManager.add_link_like`)."""
    doc = await _admin_body(request)
    a, b = _pair(request)
    m: KeyManager = request.app[_MANAGER]
    rate: int | None = None
    if "profile" in doc:
        if doc["profile"] not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}")
        rate = PROFILES[doc["profile"]]
    elif "bits_per_second" in doc:
        if type(doc["bits_per_second"]) is not int:
            raise ValueError("bits_per_second must be an integer")
        rate = doc["bits_per_second"]
    m.add_link_like(a, b, rate)
    log.info("link %s~%s added", a, b)
    return await admin_link(request)


async def admin_drop_link(request: web.Request) -> web.Response:
    a, b = _pair(request)
    request.app[_MANAGER].drop_link(a, b)
    log.info("link %s~%s dropped", a, b)
    return web.json_response({"dropped": link_name(a, b)})


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


def set_stored(manager: KeyManager, a: str, b: str, count: int) -> None:
    """Set the keys stored on the link a~b (of its `key_size`) from now on: 0 drains it,
    more refills it. Generation goes on at the link's rate; set the rate to 0 first for a
    pool that stays empty. Taken keys count as flushed, added ones as generated."""
    link = manager._get(a, b)
    cap = link.config.max_key_count
    if not 0 <= count <= cap:
        raise ValueError(f"stored_key_count must be between 0 and max_key_count ({cap})")
    manager._advance(link)
    bits = count * link.config.key_size
    if bits < link.stored_bits:
        link.counters.flushed_bits += link.stored_bits - bits
    else:
        link.counters.generated_bits += bits - link.stored_bits
    link.stored_bits = bits
    link.credit = 0.0


async def admin_stored(request: web.Request) -> web.Response:
    count = (await _admin_body(request)).get("stored_key_count")
    if type(count) is not int:
        raise ValueError("give stored_key_count (an integer)")
    set_stored(request.app[_MANAGER], *_pair(request), count)
    return await admin_link(request)


async def admin_get_behaviour(request: web.Request) -> web.Response:
    return web.json_response(request.app[_SWITCHES].behaviour.to_json())


async def admin_put_behaviour(request: web.Request) -> web.Response:
    behaviour = request.app[_SWITCHES].replace(await _admin_body(request))
    log.info("behaviour now %s", behaviour.to_json())
    return web.json_response(behaviour.to_json())


def build_admin_app(manager: KeyManager, switches: Switches, token: str) -> web.Application:
    app = web.Application(middlewares=[_admin_auth], client_max_size=MAX_REQUEST)
    app[_MANAGER] = manager
    app[_SWITCHES] = switches
    app[_TOKEN] = token
    app.router.add_get("/admin/links", admin_links)
    app.router.add_get("/admin/links/{a}/{b}", admin_link)
    app.router.add_put("/admin/links/{a}/{b}", admin_add_link)
    app.router.add_delete("/admin/links/{a}/{b}", admin_drop_link)
    app.router.add_post("/admin/links/{a}/{b}/rate", admin_rate)
    app.router.add_post("/admin/links/{a}/{b}/outage", admin_outage)
    app.router.add_post("/admin/links/{a}/{b}/eavesdropper", admin_eavesdropper)
    app.router.add_post("/admin/links/{a}/{b}/stored", admin_stored)
    app.router.add_get("/admin/behaviour", admin_get_behaviour)
    app.router.add_put("/admin/behaviour", admin_put_behaviour)
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
        self.switches = Switches(config.resolved_behaviour, tls=config.tls is not None)
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
        self.port = await self._serve(
            build_kms_app(self.manager, self.switches),
            cfg.host,
            cfg.port,
            server_ssl_context(cfg),
        )
        self.admin_port = await self._serve(
            build_admin_app(self.manager, self.switches, cfg.admin_token),
            cfg.admin_host,
            cfg.admin_port,
            None,
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
