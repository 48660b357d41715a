"""The admin API: a separate HTTP listener (loopback by default) guarded by a bearer
token, for operators and the fault-injection kit.

Routes:
- `GET /admin/faults`, `PUT /admin/faults` (body `{"out": {...}, "in": {...}}`, each
  with `drop_pct`, `delay_ms`, `jitter_ms`, `duplicate_pct`, `corrupt_pct`, `blocked`),
  `DELETE /admin/faults` (heal): transport fault rules per direction;
- `GET /admin/dump`: the consensus engine's state and the node's counters;
- `GET /admin/byzantine`, `PUT /admin/byzantine` (body `{"mode": NAME | null}`): test-only
  Byzantine behaviours, refused (403) unless the node was started with the devnet flag;
- `GET /admin/backup`: a backup of the store (`node.backup`'s file format) from a snapshot
  taken when the request arrives, streamed as `application/octet-stream` while the node
  keeps committing; 503 while the store is known to be damaged. A read failure midway
  cuts the stream, which the backup's trailer then shows (`qchain node backup` refuses it).

Errors are problem+json from the same table as the public API's (`node.http.problems`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from aiohttp import web

from node import byzantine
from node.http.context import ADMIN_AUTHORIZATION, MAX_BODY
from node.http.middlewares import bearer_auth, problems
from node.transport import FaultRules
from qchain.errors import (
    ByzantineDisabled,
    InvalidFaultRules,
    InvalidJson,
    InvalidRequest,
    StorageError,
    UnknownByzantineMode,
)
from qchain.jsonform import parse_json

BYZANTINE_MODES = (
    "equivocate",
    "double-vote",
    "withhold",
    "forge-mac",
    "silent",
    *byzantine.MODES,
)
MAX_ADMIN_BODY = 1024**2
"""Request body limit of the admin API."""


class AdminTarget(Protocol):
    """What the admin API acts on: the running validator."""

    def get_faults(self) -> tuple[FaultRules, FaultRules]: ...

    def set_faults(self, out_rules: FaultRules, in_rules: FaultRules) -> None: ...

    def dump(self) -> Mapping[str, Any]: ...

    @property
    def byzantine_allowed(self) -> bool: ...

    @property
    def byzantine_mode(self) -> str | None: ...

    def set_byzantine(self, mode: str | None) -> None: ...


TARGET: web.AppKey[AdminTarget] = web.AppKey("admin_target")
"""The validator the admin API acts on."""
BACKUP: web.AppKey[Callable[[], Iterator[bytes]]] = web.AppKey("admin_backup")
"""A new backup of the validator's store, in pieces (`AdminFacade.backup`)."""

log = logging.getLogger("qchain.admin")


def rules_to_json(r: FaultRules) -> dict[str, Any]:
    return {
        "drop_pct": r.drop_pct,
        "delay_ms": r.delay_ms,
        "jitter_ms": r.jitter_ms,
        "duplicate_pct": r.duplicate_pct,
        "corrupt_pct": r.corrupt_pct,
        "blocked": sorted(r.blocked),
    }


def rules_from_json(doc: object, where: str) -> FaultRules:
    """Fault rules from their JSON form (null: no faults); `where` names them in errors."""
    if doc is None:
        return FaultRules()
    if not isinstance(doc, dict):
        raise InvalidFaultRules(where, "expected an object")
    unknown = set(doc) - set(rules_to_json(FaultRules()))
    if unknown:
        raise InvalidFaultRules(f"{where}.{sorted(unknown)[0]}", "unknown field")

    def pct(name: str) -> float:
        v = doc.get(name, 0)
        if type(v) not in (int, float) or not 0 <= v <= 100:
            raise InvalidFaultRules(f"{where}.{name}", "a percentage in [0, 100]")
        return float(v)

    def ms(name: str) -> int:
        v = doc.get(name, 0)
        if type(v) is not int or not 0 <= v <= 60_000:
            raise InvalidFaultRules(f"{where}.{name}", "milliseconds in [0, 60000]")
        return v

    blocked = doc.get("blocked", [])
    if not isinstance(blocked, list) or not all(type(x) is int and x >= 0 for x in blocked):
        raise InvalidFaultRules(f"{where}.blocked", "a list of validator indexes")
    return FaultRules(
        drop_pct=pct("drop_pct"),
        delay_ms=ms("delay_ms"),
        jitter_ms=ms("jitter_ms"),
        duplicate_pct=pct("duplicate_pct"),
        corrupt_pct=pct("corrupt_pct"),
        blocked=frozenset(blocked),
    )


def _faults_json(target: AdminTarget) -> web.Response:
    out_rules, in_rules = target.get_faults()
    return web.json_response({"out": rules_to_json(out_rules), "in": rules_to_json(in_rules)})


async def get_faults(request: web.Request) -> web.Response:
    return _faults_json(request.app[TARGET])


async def put_faults(request: web.Request) -> web.Response:
    try:
        doc = parse_json(await request.read(), "body")
    except InvalidJson as e:
        at = f" at {e.pointer}" if e.pointer else ""
        raise InvalidFaultRules(e.where + at, e.reason) from None
    if not isinstance(doc, dict) or set(doc) - {"out", "in"}:
        raise InvalidFaultRules("body", 'expected {"out": {...}, "in": {...}}')
    out_rules = rules_from_json(doc.get("out"), "out")
    in_rules = rules_from_json(doc.get("in"), "in")
    target = request.app[TARGET]
    target.set_faults(out_rules, in_rules)
    return _faults_json(target)


async def delete_faults(request: web.Request) -> web.Response:
    target = request.app[TARGET]
    target.set_faults(FaultRules(), FaultRules())
    return _faults_json(target)


async def dump(request: web.Request) -> web.Response:
    return web.json_response(request.app[TARGET].dump())


def _byzantine_json(target: AdminTarget) -> web.Response:
    return web.json_response({"allowed": target.byzantine_allowed, "mode": target.byzantine_mode})


async def get_byzantine(request: web.Request) -> web.Response:
    return _byzantine_json(request.app[TARGET])


async def put_byzantine(request: web.Request) -> web.Response:
    target = request.app[TARGET]
    if not target.byzantine_allowed:
        raise ByzantineDisabled()
    try:
        doc = parse_json(await request.read(), "body")
    except InvalidJson as e:
        raise InvalidRequest(e.message) from None
    mode = doc.get("mode") if isinstance(doc, dict) else "?"
    if mode is not None and mode not in BYZANTINE_MODES:
        raise UnknownByzantineMode(mode, BYZANTINE_MODES)
    target.set_byzantine(mode)
    return _byzantine_json(target)


async def get_backup(request: web.Request) -> web.StreamResponse:
    chunks = request.app[BACKUP]()
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    try:
        await resp.prepare(request)
        for chunk in chunks:
            await resp.write(chunk)
            await asyncio.sleep(0)  # each piece is read synchronously: let the node run
    except StorageError as e:
        log.error("backup stream cut: %s", e.message)
        if request.transport is not None:
            request.transport.close()
        return resp
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    await resp.write_eof()
    return resp


def make_admin_app(
    target: AdminTarget, token: str, backup: Callable[[], Iterator[bytes]] | None = None
) -> web.Application:
    """The admin API over target, for requests bearing `token`; `GET /admin/backup` when
    a backup source is given."""
    app = web.Application(client_max_size=MAX_ADMIN_BODY, middlewares=[problems, bearer_auth])
    app[TARGET] = target
    app[ADMIN_AUTHORIZATION] = f"Bearer {token}".encode()
    app[MAX_BODY] = MAX_ADMIN_BODY
    app.router.add_get("/admin/faults", get_faults)
    app.router.add_put("/admin/faults", put_faults)
    app.router.add_delete("/admin/faults", delete_faults)
    app.router.add_get("/admin/dump", dump)
    app.router.add_get("/admin/byzantine", get_byzantine)
    app.router.add_put("/admin/byzantine", put_byzantine)
    if backup is not None:
        app[BACKUP] = backup
        app.router.add_get("/admin/backup", get_backup)
    return app
