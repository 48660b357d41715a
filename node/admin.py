"""The admin API: a separate HTTP listener (loopback by default) guarded by a bearer
token, for operators and the fault-injection kit.

Routes:
- `GET /admin/faults`, `PUT /admin/faults` (body `{"out": {...}, "in": {...}}`, each
  with `drop_pct`, `delay_ms`, `jitter_ms`, `duplicate_pct`, `corrupt_pct`, `blocked`),
  `DELETE /admin/faults` (heal): transport fault rules per direction;
- `GET /admin/dump`: the consensus engine's state and the node's counters;
- `GET /admin/byzantine`, `PUT /admin/byzantine` (body `{"mode": NAME | null}`): test-only
  Byzantine behaviours, refused (403) unless the node was started with the devnet flag.

Errors are problem+json like the public API.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from aiohttp import web

from node import byzantine
from node.transport import FaultRules
from qchain.errors import InvalidJson
from qchain.jsonform import parse_json

PROBLEM = "application/problem+json"
BYZANTINE_MODES = (
    "equivocate",
    "double-vote",
    "withhold",
    "forge-mac",
    "silent",
    *byzantine.MODES,
)


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


def problem(status: int, title: str, detail: str, slug: str) -> web.Response:
    body = {
        "type": f"https://qchain.dev/problems/{slug}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM)


def rules_to_json(r: FaultRules) -> dict[str, Any]:
    return {
        "drop_pct": r.drop_pct,
        "delay_ms": r.delay_ms,
        "jitter_ms": r.jitter_ms,
        "duplicate_pct": r.duplicate_pct,
        "corrupt_pct": r.corrupt_pct,
        "blocked": sorted(r.blocked),
    }


class BadRules(ValueError):
    pass


def rules_from_json(doc: object, where: str) -> FaultRules:
    if doc is None:
        return FaultRules()
    if not isinstance(doc, dict):
        raise BadRules(f"{where}: expected an object")
    known = set(rules_to_json(FaultRules()))
    unknown = set(doc) - known
    if unknown:
        raise BadRules(f"{where}.{sorted(unknown)[0]}: unknown field")

    def pct(name: str) -> float:
        v = doc.get(name, 0)
        if type(v) not in (int, float) or not 0 <= v <= 100:
            raise BadRules(f"{where}.{name}: a percentage in [0, 100]")
        return float(v)

    def ms(name: str) -> int:
        v = doc.get(name, 0)
        if type(v) is not int or not 0 <= v <= 60_000:
            raise BadRules(f"{where}.{name}: milliseconds in [0, 60000]")
        return v

    blocked = doc.get("blocked", [])
    if not isinstance(blocked, list) or not all(type(x) is int and x >= 0 for x in blocked):
        raise BadRules(f"{where}.blocked: a list of validator indexes")
    return FaultRules(
        drop_pct=pct("drop_pct"),
        delay_ms=ms("delay_ms"),
        jitter_ms=ms("jitter_ms"),
        duplicate_pct=pct("duplicate_pct"),
        corrupt_pct=pct("corrupt_pct"),
        blocked=frozenset(blocked),
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_admin_app(target: AdminTarget, token: str) -> web.Application:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Header bytes that are not UTF-8 arrive as lone surrogates (surrogateescape).
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, expected):
            return problem(401, "Unauthorized", "a valid bearer token is required", "unauthorized")
        return await handler(request)

    async def read_json(request: web.Request) -> object:
        try:
            return parse_json(await request.read(), "body")
        except InvalidJson as e:
            raise BadRules(e.message) from None

    async def get_faults(request: web.Request) -> web.Response:
        out_rules, in_rules = target.get_faults()
        return web.json_response({"out": rules_to_json(out_rules), "in": rules_to_json(in_rules)})

    async def put_faults(request: web.Request) -> web.Response:
        try:
            doc = await read_json(request)
            if not isinstance(doc, dict) or set(doc) - {"out", "in"}:
                raise BadRules('body: expected {"out": {...}, "in": {...}}')
            out_rules = rules_from_json(doc.get("out"), "out")
            in_rules = rules_from_json(doc.get("in"), "in")
        except BadRules as e:
            return problem(422, "Invalid fault rules", str(e), "invalid-fault-rules")
        target.set_faults(out_rules, in_rules)
        return await get_faults(request)

    async def delete_faults(request: web.Request) -> web.Response:
        target.set_faults(FaultRules(), FaultRules())
        return await get_faults(request)

    async def dump(request: web.Request) -> web.Response:
        return web.json_response(target.dump())

    async def get_byz(request: web.Request) -> web.Response:
        return web.json_response(
            {"allowed": target.byzantine_allowed, "mode": target.byzantine_mode}
        )

    async def put_byz(request: web.Request) -> web.Response:
        if not target.byzantine_allowed:
            return problem(
                403,
                "Byzantine modes disabled",
                "start the node with admin.byzantine = true (devnets only)",
                "byzantine-disabled",
            )
        try:
            doc = await read_json(request)
        except BadRules as e:
            return problem(422, "Invalid request", str(e), "invalid-request")
        mode = doc.get("mode") if isinstance(doc, dict) else "?"
        if mode is not None and mode not in BYZANTINE_MODES:
            return problem(
                422,
                "Unknown Byzantine mode",
                f"mode must be one of {', '.join(BYZANTINE_MODES)} or null",
                "invalid-request",
            )
        target.set_byzantine(mode)
        return await get_byz(request)

    app = web.Application(middlewares=[auth])
    app.router.add_get("/admin/faults", get_faults)
    app.router.add_put("/admin/faults", put_faults)
    app.router.add_delete("/admin/faults", delete_faults)
    app.router.add_get("/admin/dump", dump)
    app.router.add_get("/admin/byzantine", get_byz)
    app.router.add_put("/admin/byzantine", put_byz)
    return app
