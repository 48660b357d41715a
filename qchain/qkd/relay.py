"""Trusted-node relaying between simulated KMEs: one key manager per site.

A real QKD network has one KME per site. When the SAE at site A asks its KME for keys
toward the SAE at site B (`enc_keys`), the KMEs move the same key material to site B over
their QKD links and trusted relay nodes; B's SAE then asks its own KME (`dec_keys`). The
material arrives some time later, so a `dec_keys` that overtakes it is answered as a real
KME answers a key id it does not know: 400, "unknown key_ID". The SAE retries.

This module simulates that with several `qchain kms` processes, each configured with a
`[relay]` section:

    [relay]
    local_sae = "SAE-node0"          # the only SAE this KME serves (one of [[sae]])
    host = "127.0.0.1"               # where this KME accepts relayed keys
    port = 27400
    secret_file = "relay.secret"     # or secret = "..." (at least 16 characters)
    delay_ms = 50                    # time from enc_keys here to the key at the slave's KME

    [relay.peers]                    # the relay listener of every other SAE's KME
    "SAE-node1" = "http://127.0.0.1:27401"

Every KME still lists every SAE in `[[sae]]` and models the links (rate, pool, faults)
of its own SAE: the pool of link A~B at A's KME feeds the keys A takes as master, the one
at B's KME those B takes. `RelayKeyManager` is the model, without I/O: it serves only the
local SAE, hands every key its SAE takes as master to a `ship` callback, and keeps the
keys relayed to it until its SAE fetches each of them, once. `Relay` is the transport.
With `delay_ms = 0` the master's `enc_keys` is answered only once the slave's KME holds
the keys (`settled`), so no `dec_keys` can overtake them; with a delay it is answered at
once and the slave's SAE may be told "unknown key_ID" until the relay arrives.

Transport (a simulation of a trusted-node link, not a protocol): `POST
/relay/v1/keys` on the peer's relay listener, plain HTTP meant for loopback, with the JSON
body `{"master_SAE_ID", "slave_SAE_ID", "keys": [{"key_ID", "key"}]}` (key in base64)
and the header `X-Relay-MAC`: hex HMAC-SHA256 of the body under the devnet's shared relay
secret. A wrong MAC is refused with 401. Key material crosses loopback in the clear, as
it does between a simulated KME and an SAE in the insecure dev mode. A shipment that
cannot be delivered after a few tries (about 1.5 s) is dropped and logged: with no delay
the master's `enc_keys` is then answered 503, with a delay its keys are never found at the
slave, as after a relay failure.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from qchain.errors import ConfigError
from qchain.qkd.clock import Clock
from qchain.qkd.errors import KeyBadRequest, KeyUnauthorised, KeyUnavailable
from qchain.qkd.keymanager import KeyFactory, KeyManager, LinkConfig
from qchain.qkd.source import Key, KeyId, LinkStatus, key_id_str, parse_key_id

log = logging.getLogger(__name__)

RELAY_PATH = "/relay/v1/keys"
MAC_HEADER = "X-Relay-MAC"
MAX_BODY = 1024 * 1024
SEND_ATTEMPTS = 5
"""Tries per shipment, 0.1 s apart and doubling (1.5 s of pauses in all)."""
SEND_TIMEOUT_S = 2.0
SEEN_IDS = 1 << 16
"""Relayed key ids remembered, so a shipment sent twice delivers its keys once."""

Ship = Callable[[str, str, list[Key]], asyncio.Task[bool] | None]
"""Called with (master SAE, slave SAE, keys) for every `enc_keys` of the local SAE; may
return the delivery, which `settled` then waits for."""


@dataclass(frozen=True)
class RelayConfig:
    local_sae: str
    secret: str
    peers: Mapping[str, str]
    """Slave SAE id -> the base URL of its KME's relay listener."""
    host: str = "127.0.0.1"
    port: int = 0
    delay: float = 0.0
    """Seconds between `enc_keys` here and the keys' arrival at the slave's KME."""


def parse_relay_config(table: object, base: Path, saes: Collection[str]) -> RelayConfig | None:
    """The `[relay]` section of a KMS config (None when there is none)."""
    if table is None:
        return None
    if not isinstance(table, Mapping):
        raise ConfigError("relay", "must be a table")
    known = {"local_sae", "host", "port", "secret", "secret_file", "delay_ms", "peers"}
    for key in table:
        if key not in known:
            raise ConfigError(f"relay.{key}", "unknown field")
    local = table.get("local_sae")
    if not isinstance(local, str) or local not in saes:
        raise ConfigError("relay.local_sae", "must be one of the [[sae]] ids")
    secret = table.get("secret", "")
    secret_file = table.get("secret_file")
    if secret_file is not None:
        if not isinstance(secret_file, str):
            raise ConfigError("relay.secret_file", "must be a path")
        try:
            secret = (base / secret_file).read_text().strip()
        except OSError as e:
            raise ConfigError("relay.secret_file", f"cannot read: {e.strerror}") from e
    if not isinstance(secret, str) or len(secret) < 16:
        raise ConfigError("relay.secret", "at least 16 characters")
    host = table.get("host", "127.0.0.1")
    if not isinstance(host, str):
        raise ConfigError("relay.host", "must be a string")
    port = table.get("port", 0)
    if type(port) is not int or not 0 <= port < 65536:
        raise ConfigError("relay.port", "must be a port number")
    delay_ms = table.get("delay_ms", 0)
    if type(delay_ms) is not int or delay_ms < 0:
        raise ConfigError("relay.delay_ms", "must be a non-negative integer")
    peers = table.get("peers", {})
    if not isinstance(peers, Mapping):
        raise ConfigError("relay.peers", "must be a table of SAE id = relay URL")
    for sae, url in peers.items():
        if sae not in saes or sae == local:
            raise ConfigError(f"relay.peers.{sae}", "must be another of the [[sae]] ids")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"relay.peers.{sae}", "must be an http:// URL")
    missing = sorted(set(saes) - set(peers) - {local})
    if missing:
        raise ConfigError(f"relay.peers.{missing[0]}", "missing: every other SAE needs its KME")
    return RelayConfig(
        local_sae=local,
        secret=secret,
        peers={str(k): str(v) for k, v in peers.items()},
        host=host,
        port=port,
        delay=delay_ms / 1000,
    )


class RelayKeyManager(KeyManager):
    """The key manager of one site: it serves only `local_sae`, ships the keys its SAE
    takes as master, and holds the keys relayed to its SAE until fetched, once each."""

    def __init__(
        self,
        links: Iterable[LinkConfig],
        clock: Clock,
        *,
        local_sae: str,
        ship: Ship,
        kme_ids: dict[str, str] | None = None,
        factory: KeyFactory | None = None,
    ) -> None:
        super().__init__(links, clock, kme_ids=kme_ids, factory=factory)
        self.local_sae = local_sae
        self._ship = ship
        self._inbound: dict[str, OrderedDict[KeyId, bytearray]] = {}
        """Master SAE -> the keys relayed to the local SAE, oldest first."""
        self._seen: OrderedDict[KeyId, None] = OrderedDict()
        self.last_shipment: asyncio.Task[bool] | None = None
        """The delivery of the latest `enc_keys`, when the master's answer waits for it."""

    def _serves(self, caller: str) -> None:
        if caller != self.local_sae:
            raise KeyUnauthorised(f"this KME serves SAE {self.local_sae!r} only, not {caller!r}")

    def status(self, caller: str, slave: str) -> LinkStatus:
        self._serves(caller)
        return super().status(caller, slave)

    def enc_keys(self, caller: str, slave: str, number: int, size: int | None) -> list[Key]:
        self._serves(caller)
        keys = super().enc_keys(caller, slave, number, size)
        # The slave's copies leave this KME: taken from the model as if delivered here.
        copies = super().dec_keys(slave, caller, [k.key_id for k in keys])
        self.last_shipment = self._ship(caller, slave, copies)
        return keys

    def dec_keys(self, caller: str, master: str, key_ids: Sequence[KeyId]) -> list[Key]:
        self._serves(caller)
        self.status(caller, master)  # authorises the pair; a link outage answers 503 here too
        cfg = self.link_config(caller, master)
        if not 1 <= len(key_ids) <= cfg.max_key_per_request:
            raise KeyBadRequest(
                "key_IDs must list between 1 and max_key_per_request ids",
                ({"count": len(key_ids), "max_key_per_request": cfg.max_key_per_request},),
            )
        inbound = self._inbound.get(master, OrderedDict())
        unknown = [k for k in key_ids if k not in inbound]
        if unknown or len(set(key_ids)) != len(key_ids):
            raise KeyBadRequest(
                "unknown key_ID: not relayed here yet, already delivered, or repeated",
                tuple({"key_ID": key_id_str(k)} for k in unknown[:16]),
            )
        return [Key(k, inbound.pop(k)) for k in key_ids]

    def accept(self, master: str, slave: str, keys: Sequence[tuple[KeyId, bytes]]) -> int:
        """Keys relayed from the master's KME; returns how many were new."""
        if slave != self.local_sae:
            raise KeyBadRequest(f"this KME serves SAE {self.local_sae!r}, not {slave!r}")
        try:
            cap = self.link_config(master, slave).max_key_count
        except KeyError:
            raise KeyBadRequest(f"no link from {master!r} to {slave!r} at this KME") from None
        inbound = self._inbound.setdefault(master, OrderedDict())
        new = 0
        for key_id, material in keys:
            if key_id in self._seen:
                continue
            self._seen[key_id] = None
            inbound[key_id] = bytearray(material)
            new += 1
        while len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)
        while len(inbound) > cap:
            _, dropped = inbound.popitem(last=False)
            dropped[:] = bytes(len(dropped))
        return new

    def awaiting(self) -> int:
        """Relayed keys not fetched yet."""
        return sum(len(p) for p in self._inbound.values())


async def settled(manager: KeyManager) -> None:
    """Called by the ETSI handler right after `enc_keys`, before it answers: with no relay
    delay the master's answer waits until the slave's KME holds the keys (a KME that
    synchronises before it answers), so the slave never asks too early. With a delay the
    answer goes at once and the slave may overtake the relay, as on a slow trusted node.
    Keys that could not be relayed are not handed to the master: `KeyUnavailable` (503)."""
    if isinstance(manager, RelayKeyManager) and manager.last_shipment is not None:
        shipment, manager.last_shipment = manager.last_shipment, None
        if not await asyncio.shield(shipment):
            raise KeyUnavailable(
                "the slave's KME could not be reached to relay the keys",
                ({"reason": "relay"},),
            )


def mac(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def encode_shipment(master: str, slave: str, keys: Sequence[Key]) -> bytes:
    return json.dumps(
        {
            "master_SAE_ID": master,
            "slave_SAE_ID": slave,
            "keys": [
                {"key_ID": key_id_str(k.key_id), "key": base64.b64encode(k.material).decode()}
                for k in keys
            ],
        }
    ).encode()


def decode_shipment(body: bytes) -> tuple[str, str, list[tuple[KeyId, bytes]]]:
    try:
        doc = json.loads(body)
        master, slave, items = doc["master_SAE_ID"], doc["slave_SAE_ID"], doc["keys"]
        if not isinstance(master, str) or not isinstance(slave, str):
            raise TypeError("SAE ids are strings")
        keys = [
            (parse_key_id(i["key_ID"]), base64.b64decode(i["key"], validate=True)) for i in items
        ]
    except (ValueError, TypeError, KeyError) as e:
        raise KeyBadRequest(f"malformed relay shipment: {e}") from None
    return master, slave, keys


class Relay:
    """One KME's relay: the listener that accepts keys for its SAE and the sender that
    ships the keys its SAE takes as master, each after the configured delay."""

    def __init__(self, config: RelayConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.manager: RelayKeyManager | None = None
        self._tasks: set[asyncio.Task[bool]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    def make_manager(
        self,
        links: Iterable[LinkConfig],
        *,
        kme_ids: dict[str, str] | None = None,
        factory: KeyFactory | None = None,
    ) -> RelayKeyManager:
        self.manager = RelayKeyManager(
            links,
            self.clock,
            local_sae=self.config.local_sae,
            ship=self.ship,
            kme_ids=kme_ids,
            factory=factory,
        )
        return self.manager

    def ship(self, master: str, slave: str, keys: list[Key]) -> asyncio.Task[bool] | None:
        """Send the keys after the delay; with no delay, the delivery for `settled`."""
        task = asyncio.get_running_loop().create_task(self._send(master, slave, keys))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task if self.config.delay == 0 else None

    async def _send(self, master: str, slave: str, keys: list[Key]) -> bool:
        """Deliver one shipment; False (logged) if the slave's KME did not take it."""
        body = encode_shipment(master, slave, keys)
        for k in keys:
            k.wipe()
        await self.clock.sleep(self.config.delay)
        url = self.config.peers[slave].rstrip("/") + RELAY_PATH
        headers = {MAC_HEADER: mac(self.config.secret, body), "Content-Type": "application/json"}
        pause = 0.1
        problem = "no attempt"
        for attempt in range(SEND_ATTEMPTS):
            try:
                assert self._session is not None, "the relay is not started"
                async with self._session.post(url, data=body, headers=headers) as resp:
                    if resp.status == 200:
                        return True
                    problem = f"HTTP {resp.status}"
                    if resp.status < 500:
                        break
            except (aiohttp.ClientError, TimeoutError) as e:
                problem = type(e).__name__
            if attempt + 1 < SEND_ATTEMPTS:
                await asyncio.sleep(pause)
                pause *= 2
        log.warning("relay %s -> %s: %d keys dropped (%s)", master, slave, len(keys), problem)
        return False

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app[_RELAY] = self
        app.router.add_post(RELAY_PATH, _handle_shipment)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        self.port = int(self._runner.addresses[-1][1])
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT_S))
        log.info("relay for %s on %s:%d", self.config.local_sae, self.config.host, self.port)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()


_RELAY: web.AppKey[Relay] = web.AppKey("relay")


async def _handle_shipment(request: web.Request) -> web.Response:
    relay = request.app[_RELAY]
    body = await request.read()
    given = request.headers.get(MAC_HEADER, "")
    if not hmac.compare_digest(given.encode(), mac(relay.config.secret, body).encode()):
        return web.json_response({"message": "relay MAC missing or wrong"}, status=401)
    manager = relay.manager
    if manager is None:
        return web.json_response({"message": "no key manager"}, status=503)
    try:
        master, slave, keys = decode_shipment(body)
        new = manager.accept(master, slave, keys)
    except KeyBadRequest as e:
        return web.json_response({"message": e.message}, status=400)
    return web.json_response({"accepted": new})
