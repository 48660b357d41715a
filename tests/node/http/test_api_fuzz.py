"""Hostile input against every endpoint of the public API and of the admin API.

Every operation in `node/openapi.yaml` and every admin route gets requests built by
hypothesis from the nastiest input we know: text with lone surrogates (as JSON escapes,
as encoded surrogates and as invalid UTF-8 bytes) in bodies, paths and query strings; NUL;
arrays and objects nested up to 100,000 deep; numbers beyond 64 bits (2**64, 2**1000,
1e400, -0, NaN, Infinity); wrong types; huge strings; empty and truncated bodies; wrong
content types. Whatever comes in, the answer is never a 5xx, a 4xx is a problem+json with
a type, a title and a detail, public answers match openapi.yaml, and the node still
admits, commits and serves transactions afterwards (checked when each fuzz run ends).

Hypothesis runs derandomized with a fixed number of examples per endpoint, so a run is
deterministic. `NASTIEST` is a short hand-picked list; `RAW_NASTIEST` puts bytes no HTTP
client sends (invalid UTF-8 in header values) on a raw socket. Both run in-process and,
with a shorter hypothesis run of the public endpoints, against one validator process of
a real devnet (marked slow). What aiohttp's own HTTP parser refuses before the
application runs (`PARSER_REFUSED`) is pinned as a 4xx, in aiohttp's format.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_from_bytes

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from devnet.local import LocalNetwork, running_network
from devnet.network import account_key, plan_network
from node.http.admin import make_admin_app, rules_to_json
from node.http.problems import PROBLEM_BASE
from node.http.state import openapi_spec
from node.http.testing import start_api
from node.transport import FaultRules
from qchain.client import AsyncClient
from qchain.codec import encode_value
from qchain.jsonform import MSGPACK, PROBLEM_JSON, tx_to_json
from qchain.types import new_transaction

from ..conftest import PARTNERS, ApiHarness, SpecChecker, make_tx

TOKEN = "fuzz-admin-token"
SERVICE_STATES = frozenset({"commit-timeout", "mempool-full", "not-ready"})
"""The only problems with a 5xx status the fuzz accepts (documented states of the node)."""
URL_ROOM = 8000
"""Longest path and query sent by the fuzz: aiohttp's request-line limit is 8190 bytes."""
EXAMPLES = 60
"""Hypothesis examples per endpoint; an endpoint that takes a body sends 5 per example."""
REAL_EXAMPLES = 20
"""Hypothesis examples per public endpoint against a real validator."""
FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
"""What every fuzz of the API runs with: the same examples on every run, no deadline, no
example database, and the health checks its large, slow requests trip switched off."""

# --- requests and answers --------------------------------------------------------------


@dataclass(frozen=True)
class FuzzRequest:
    """One request; path and query are sent exactly as given (already percent-encoded).
    Without a Content-Type header none is sent."""

    method: str
    path: str
    query: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    admin: bool = False

    def target(self) -> str:
        return self.path + (f"?{self.query}" if self.query else "")

    def describe(self) -> str:
        body = "" if self.body is None else f" body[{len(self.body)}]={self.body[:160]!r}"
        return f"{self.method} {self.target()[:200]} {dict(self.headers)}{body}"


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes


async def send(
    session: aiohttp.ClientSession, base: str, req: FuzzRequest, token: str = TOKEN
) -> Answer:
    headers = dict(req.headers)
    if req.admin:
        headers.setdefault("Authorization", f"Bearer {token}")
    async with session.request(
        req.method,
        URL(base + req.target(), encoded=True),
        data=req.body,
        headers=headers,
        skip_auto_headers=("Content-Type",),
    ) as r:
        ctype = r.headers.get("Content-Type", "")
        # An event stream that was let in stays open: its headers are the answer.
        body = b"" if ctype.startswith("text/event-stream") else await r.read()
        return Answer(r.status, ctype, body)


def assert_problem(doc: object, status: int, what: str) -> None:
    assert isinstance(doc, dict), f"{what}: problem is not an object: {doc!r}"
    assert doc.get("status") == status, f"{what}: problem status {doc.get('status')} != {status}"
    assert str(doc.get("type", "")).startswith(PROBLEM_BASE), f"{what}: type {doc.get('type')}"
    for member in ("title", "detail"):
        value = doc.get(member)
        assert isinstance(value, str) and value.strip(), f"{what}: no {member} in {doc}"


def check_answer(req: FuzzRequest, ans: Answer, checker: SpecChecker | None) -> None:
    """Never a 5xx; every 4xx a problem document; batch items never a server error
    (a full mempool aside); public answers as openapi.yaml describes them."""
    what = req.describe()
    media = ans.content_type.split(";")[0].strip()
    if ans.status >= 500 and media == PROBLEM_JSON:
        slug = str(json.loads(ans.body).get("type", "")).removeprefix(PROBLEM_BASE)
        # States of the node, not failures: a valid transaction's `?wait=commit` that
        # timed out (the fuzz's timeouts are tiny), a full mempool, not ready.
        assert slug in SERVICE_STATES, f"{what} -> {ans.status} {ans.body[:400]!r}"
    else:
        assert ans.status < 500, f"{what} -> {ans.status} {ans.body[:400]!r}"
    if ans.status >= 400:
        assert media == PROBLEM_JSON, f"{what} -> {ans.status} {media} {ans.body[:200]!r}"
        assert_problem(json.loads(ans.body), ans.status, what)
    elif media == "application/json":
        doc = json.loads(ans.body)
        if req.path.endswith("/batch"):
            for item in doc["results"]:
                problem = item.get("problem")
                if problem is not None:
                    assert_problem(problem, problem["status"], f"{what} item {item['item']}")
                    assert problem["status"] < 500 or problem["type"].endswith("/mempool-full")
    if checker is not None and not req.admin:
        try:
            checker.route(req.path)
        except AssertionError:
            return  # a path no route of the spec has (e.g. an encoded slash): 404 above
        checker.check(req.method, req.path, ans.status, ans.content_type, ans.body)


# --- the endpoints ---------------------------------------------------------------------


class FakeAdminTarget:
    """What the admin API acts on, in memory."""

    def __init__(self) -> None:
        self.rules = (FaultRules(), FaultRules())
        self.mode: str | None = None

    def get_faults(self) -> tuple[FaultRules, FaultRules]:
        return self.rules

    def set_faults(self, out_rules: FaultRules, in_rules: FaultRules) -> None:
        self.rules = (out_rules, in_rules)

    def dump(self) -> Mapping[str, Any]:
        return {"engine": {"height": 2, "round": 0}, "counters": {"frames": 7}}

    @property
    def byzantine_allowed(self) -> bool:
        return True

    @property
    def byzantine_mode(self) -> str | None:
        return self.mode

    def set_byzantine(self, mode: str | None) -> None:
        self.mode = mode


@dataclass(frozen=True)
class Endpoint:
    method: str
    template: str
    admin: bool = False

    @property
    def name(self) -> str:
        return f"{self.method} {self.template}"

    @property
    def takes_body(self) -> bool:
        return self.method in ("POST", "PUT")


def public_endpoints() -> list[Endpoint]:
    return [Endpoint(m.upper(), p) for p, ops in openapi_spec()["paths"].items() for m in ops]


def admin_endpoints() -> list[Endpoint]:
    app = make_admin_app(FakeAdminTarget(), TOKEN)
    found = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.method != "HEAD"
    }
    return [Endpoint(m, p, admin=True) for m, p in sorted(found)]


ENDPOINTS = public_endpoints() + admin_endpoints()


# --- nasty input -----------------------------------------------------------------------

LONE_SURROGATES = [b'"\\ud800"', b'"\\udfff"', b'"ok\\udc00"', b'"\\ud800\\ud800"', b'"\\uDBFF"']
BAD_UTF8 = [b'"\xff"', b'"\xed\xa0\x80"', b'"\xc3"', b'"a\x80"', b"\xfe\xff", b'"\xf4\x90\x80\x80"']
NULS = [b'"\\u0000"', b'"\x00"', b"\x00", b'"a\\u0000b"']
NUMBERS = [
    b"1e400",
    b"-1e400",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"-0",
    b"-0.0",
    b"0.5",
    b"1E-400",
    str(2**64).encode(),
    str(2**64 - 1).encode(),
    str(-(2**63) - 1).encode(),
    str(2**1000).encode(),
    b"9" * 5000,
    b"1." + b"0" * 5000,
]
OTHERS = [b"true", b"null", b'""', b"[]", b"{}", b'{"hex": "zz"}', b'{"hex": "\\ud800"}', b"[1,]"]
NASTY_SCALARS = LONE_SURROGATES + BAD_UTF8 + NULS + NUMBERS + OTHERS
OPENERS = [(b"[", b"]"), (b'{"a":', b"}"), (b'[{"k":', b"}]")]


def deep(depth: int, opener: bytes = b"[", closer: bytes = b"]", closed: bool = True) -> bytes:
    return opener * depth + (b"1" + closer * depth if closed else b"")


def array(items: list[bytes]) -> bytes:
    return b"[" + b", ".join(items) + b"]"


def obj(pairs: list[tuple[bytes, bytes]]) -> bytes:
    return b"{" + b", ".join(k + b": " + v for k, v in pairs) + b"}"


def splice(doc: object, path: tuple[str | int, ...], fragment: bytes) -> bytes:
    """doc as JSON with the raw fragment at path (an existing or a new member)."""
    doc = json.loads(json.dumps(doc))
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = "@@FRAGMENT@@"
    return json.dumps(doc).encode().replace(b'"@@FRAGMENT@@"', fragment)


def any_text(max_size: int) -> st.SearchStrategy[str]:
    """Text including lone surrogates, NUL and the rest of the code space."""
    return st.text(st.characters(codec=None, exclude_categories=()), max_size=max_size)


json_strings = st.one_of(
    st.text(max_size=30).map(lambda s: json.dumps(s).encode()),
    any_text(20).map(lambda s: json.dumps(s).encode()),
)
deep_values = st.builds(
    lambda depth, oc, closed: deep(depth, *oc, closed),
    st.sampled_from([65, 1_000, 10_000, 100_000]),
    st.sampled_from(OPENERS),
    st.booleans(),
)
huge_strings = st.sampled_from([10_000, 200_000]).map(lambda n: b'"' + b"a" * n + b'"')
# One branch per kind of trouble, so that each kind is drawn often (hypothesis picks the
# branches of one_of about evenly).
scalars = st.one_of(
    st.one_of(st.sampled_from(LONE_SURROGATES), any_text(20).map(lambda s: json.dumps(s).encode())),
    st.sampled_from(BAD_UTF8 + NULS),
    st.one_of(
        st.sampled_from(NUMBERS),
        st.integers(-(2**70), 2**70).map(lambda i: str(i).encode()),
        st.floats().map(lambda f: json.dumps(f).encode()),
    ),
    st.one_of(st.sampled_from(OTHERS), json_strings),
)
keys = st.one_of(json_strings, st.sampled_from([*LONE_SURROGATES, *BAD_UTF8, b'"hex"', b"1"]))
fragments = st.one_of(
    scalars,
    st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4).map(array),
            st.lists(st.tuples(keys, inner), max_size=4).map(obj),
        ),
        max_leaves=12,
    ),
    deep_values,
    huge_strings,
)


def truncations(docs: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.builds(lambda d, cut: d[: cut % len(d)], st.sampled_from(docs), st.integers(0, 9999))


TX = make_tx(PARTNERS[2], 1, args=["a", ["b"], b"\x01"])
TX_DOC = tx_to_json(TX)
TX_PLACES: list[tuple[str | int, ...]] = [
    *((name,) for name in TX_DOC),
    ("args", 0),
    ("args", 1),
    ("args", 1, 0),
    ("args", 2, "hex"),
    ("memo",),
]


@st.composite
def tx_json(draw: st.DrawFn) -> bytes:
    """A transaction's JSON form with one member replaced, added or removed."""
    place = draw(st.sampled_from(TX_PLACES))
    if draw(st.integers(0, 9)) == 0 and len(place) == 1 and place[0] in TX_DOC:
        return json.dumps({k: v for k, v in TX_DOC.items() if k != place[0]}).encode()
    return splice(TX_DOC, place, draw(fragments))


VALID_TX_BODIES = [json.dumps(TX_DOC).encode(), json.dumps(TX.encode().hex()).encode()]
UNSIGNED_DOC = {k: v for k, v in TX_DOC.items() if k not in ("sender", "signature")}
"""What `POST /v1/txs/prepare` takes: the JSON form without signature (and sender)."""
VALID_BATCH = array([json.dumps(TX_DOC).encode(), json.dumps(TX.encode().hex()).encode()])
msgpack_bodies = st.one_of(
    st.binary(max_size=300),
    truncations([TX.encode(), encode_value([TX.encode(), TX.encode()])]),
    st.sampled_from(
        [
            b"\x91" * 10_000 + b"\xc0",
            b"\xdd\xff\xff\xff\xff",
            b"\xc6\xff\xff\xff\xff",
            b"\x99\xa3\xed\xa0\x80" + b"\xc0" * 8,
            b"\x91\xa1\xff",
            b"\xcf" + b"\xff" * 8,
        ]
    ),
)
common_bodies = st.one_of(
    fragments,
    st.binary(max_size=200),
    st.sampled_from([b"", b" ", b"\x00", b"\xef\xbb\xbf", b"\xff\xfe[\x001\x00]\x00"]),
    truncations([*VALID_TX_BODIES, VALID_BATCH]),
)
batch_items = st.one_of(st.sampled_from(VALID_TX_BODIES), tx_json(), tx_json(), fragments)
FAULTS_DOC = {"out": {"drop_pct": 1, "delay_ms": 5, "blocked": [1]}, "in": {"corrupt_pct": 2.5}}
FAULT_PLACES: list[tuple[str | int, ...]] = [
    ("out",),
    ("in",),
    ("extra",),
    *(("out", f) for f in ("drop_pct", "delay_ms", "jitter_ms", "duplicate_pct", "blocked")),
    ("out", "blocked", 0),
    ("in", "corrupt_pct"),
    ("in", "unknown"),
]

BODIES: dict[str, st.SearchStrategy[bytes]] = {
    "POST /v1/txs": st.one_of(tx_json(), tx_json(), common_bodies, msgpack_bodies),
    "POST /v1/txs/batch": st.one_of(
        st.lists(batch_items, min_size=1, max_size=5).map(array),
        st.lists(batch_items, min_size=1, max_size=5).map(array),
        st.just(array([b'"00"'] * 1001)),
        common_bodies,
        msgpack_bodies,
    ),
    "POST /v1/txs/prepare": st.one_of(
        st.builds(splice, st.just(UNSIGNED_DOC), st.sampled_from(TX_PLACES), fragments),
        st.builds(splice, st.just(UNSIGNED_DOC), st.sampled_from(TX_PLACES), fragments),
        st.just(json.dumps(UNSIGNED_DOC).encode()),
        tx_json(),
        common_bodies,
    ),
    "PUT /admin/faults": st.one_of(
        st.builds(splice, st.just(FAULTS_DOC), st.sampled_from(FAULT_PLACES), fragments),
        st.builds(splice, st.just(FAULTS_DOC), st.sampled_from(FAULT_PLACES), fragments),
        common_bodies,
    ),
    "PUT /admin/byzantine": st.one_of(
        st.builds(splice, st.just({"mode": None}), st.just(("mode",)), fragments),
        st.builds(splice, st.just({"mode": None}), st.just(("x",)), fragments),
        common_bodies,
    ),
}
CONTENT_TYPES = [
    "application/json; charset=utf-8",
    "application/json; charset=utf-16",
    "application/json; charset=nonsense",
    "application/x-msgpack",
    "application/octet-stream",
    "text/plain",
    "multipart/form-data; boundary=zz",
    "application/x-www-form-urlencoded",
    "APPLICATION/JSON",
    "application/",
    ";;;",
]
printable = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
content_types = st.one_of(
    st.just("application/json"),
    st.just(MSGPACK),
    st.none(),
    st.sampled_from(CONTENT_TYPES),
    printable,
)

SEGMENTS = [
    b"",
    b"\x00",
    b"\xff",
    b"\xed\xa0\x80",
    b"%",
    b"..",
    b"latest",
    b"0",
    b"1",
    b"-1",
    b"-0",
    b"1e400",
    b"NaN",
    str(2**64).encode(),
    str(2**1000).encode(),
    TX.hash.hex().encode(),
    b"0x" + TX.hash.hex().encode(),
    PARTNERS[0].address.hex().encode(),
    b"membership",
    b"member",
    b"members_by_role",
    b"notary",
    b"get",
    b"voucher",
    b"balance",
    b"history",
    b"index.html",
    b"app.js",
    b"\\ud800",
    b'"\\ud800"',
    b"a" * 3000,
]
RAW_SEGMENTS = ["%zz", "%", "%e", "%ED%A0%80", "%00", "%FF", "%2F", "a%2F..%2F..", "%C0%AF"]
segments = st.one_of(
    st.sampled_from(SEGMENTS).map(lambda b: quote_from_bytes(b, safe="")),
    st.binary(max_size=40).map(lambda b: quote_from_bytes(b, safe="")),
    any_text(20).map(lambda s: quote_from_bytes(s.encode("utf-8", "surrogatepass"), safe="")),
    st.sampled_from(RAW_SEGMENTS),
)
query_values = st.one_of(
    st.sampled_from([*NASTY_SCALARS, b"", b"0", b"20", b"1", b"x"]),
    st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3).map(array)
            | st.lists(st.tuples(keys, inner), max_size=3).map(obj)
        ),
        max_leaves=6,
    ),
    st.sampled_from([deep(1000), deep(2000, closed=False), deep(300, b'{"a":', b"}")]),
    st.binary(max_size=40),
)


def query_params(endpoint: Endpoint) -> list[str]:
    if endpoint.admin:
        return []
    op = openapi_spec()["paths"][endpoint.template][endpoint.method.lower()]
    return [p["name"] for p in op.get("parameters", []) if p.get("in") == "query"]


@st.composite
def queries(draw: st.DrawFn, endpoint: Endpoint) -> str:
    names = [*query_params(endpoint), "address", "role", "digest", "x", "", "\x00", "\udcff"]
    if endpoint.template == "/v1/contracts/{name}/{query}":
        names += ["programme", "start", "limit"]
    pairs: list[tuple[str, bytes]] = [
        (name, draw(query_values))
        for name in draw(st.lists(st.sampled_from(names), max_size=3))
        if name not in ("wait", "timeout")
    ]
    if endpoint.template == "/v1/txs" and draw(st.booleans()):
        # wait=commit always with a timeout that is short or refused: never a long wait.
        pairs.append(("wait", draw(st.sampled_from([b"commit", b"soon", b"\xff", b""]))))
        timeouts = [b"0.01", b"0", b"-1", b"nan", b"inf", b"1e400", b"300.5", b"abc", b"\x00"]
        pairs.append(("timeout", draw(st.sampled_from(timeouts))))
    text = "&".join(
        quote_from_bytes(k.encode("utf-8", "surrogatepass"), safe="")
        + "="
        + quote_from_bytes(v, safe="")
        for k, v in pairs
    )
    return text[:URL_ROOM]  # a cut escape at the end is fine input


@st.composite
def requests_for(draw: st.DrawFn, endpoint: Endpoint) -> FuzzRequest:
    path = endpoint.template
    while "{" in path:
        start, end = path.index("{"), path.index("}")
        path = path[:start] + draw(segments) + path[end + 1 :]
    headers: list[tuple[str, str]] = []
    body: bytes | None = None
    if endpoint.takes_body:
        body = draw(BODIES[endpoint.name])
        ctype = "application/json" if draw(st.integers(0, 4)) < 3 else draw(content_types)
        if ctype is not None:
            headers.append(("Content-Type", ctype))
    elif draw(st.integers(0, 9)) == 0:
        body = draw(common_bodies)
    if endpoint.template == "/v1/events" and draw(st.booleans()):
        headers.append(("Last-Event-ID", draw(printable)))
    if endpoint.template == "/v1/receipts/{hash}" and draw(st.booleans()):
        headers.append(("Accept", draw(st.one_of(st.just(MSGPACK), printable))))
    if endpoint.admin and draw(st.integers(0, 9)) == 0:
        headers.append(("Authorization", draw(printable)))
    # aiohttp's HTTP parser refuses a request line above 8190 bytes before the API sees
    # the request (test_what_the_http_parser_refuses_is_a_4xx): stay below it here.
    query = draw(queries(endpoint))[: max(0, URL_ROOM - len(path))]
    return FuzzRequest(endpoint.method, path, query, tuple(headers), body, endpoint.admin)


# --- the targets -------------------------------------------------------------------------


@dataclass
class Targets:
    """The public API over a FakeNode and an admin API over a fake target."""

    api: ApiHarness
    admin_url: str
    admin: FakeAdminTarget

    def base(self, req: FuzzRequest) -> str:
        return self.admin_url if req.admin else self.api.url

    async def send(self, req: FuzzRequest) -> Answer:
        return await send(self.api.session, self.base(req), req)


async def assert_still_works(t: Targets) -> None:
    """Admits, commits and serves a transaction; the admin API answers."""
    node = t.api.node
    key = PARTNERS[0]
    tx = make_tx(key, node.next_nonce(key.address), method="after-fuzz")
    r = await t.api.request("POST", "/v1/txs", data=tx.encode(), headers={"Content-Type": MSGPACK})
    assert r.status == 202, r.body
    r = await t.api.request("POST", "/v1/txs", json=tx_to_json(tx))
    assert (r.status, r.json()["status"]) == (200, "pending")
    block = node.commit_pending()
    r = await t.api.request("GET", f"/v1/txs/{tx.hash.hex()}")
    assert (r.json()["status"], r.json()["height"]) == ("committed", block.height)
    assert (await t.api.request("GET", "/v1/blocks/latest")).json()["height"] == block.height
    assert (await t.api.request("GET", "/v1/status")).status == 200
    r = await t.api.request("GET", f"/v1/receipts/{tx.hash.hex()}")
    assert r.json()["receipt"]["tx_hash"] == tx.hash.hex()
    a = await t.send(FuzzRequest("GET", "/admin/faults", admin=True))
    assert a.status == 200 and "out" in json.loads(a.body)


@pytest.fixture
async def targets(api: ApiHarness) -> AsyncIterator[Targets]:
    admin = FakeAdminTarget()
    runner, port = await start_api(make_admin_app(admin, TOKEN), "127.0.0.1", 0)
    try:
        t = Targets(api, f"http://127.0.0.1:{port}", admin)
        yield t
        await assert_still_works(t)
    finally:
        await runner.cleanup()


# --- the tests ---------------------------------------------------------------------------


def test_every_endpoint_is_fuzzed() -> None:
    """The fuzz covers the spec's operations and the admin routes, and knows a body
    strategy for each endpoint that takes one (a new route must be added here)."""
    spec = {(m.upper(), p) for p, ops in openapi_spec()["paths"].items() for m in ops}
    assert {(e.method, e.template) for e in ENDPOINTS if not e.admin} == spec
    admin = {e.name for e in ENDPOINTS if e.admin}
    assert {"PUT /admin/faults", "PUT /admin/byzantine", "GET /admin/dump"} <= admin
    assert {e.name for e in ENDPOINTS if e.takes_body} == set(BODIES)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
@settings(
    FUZZ,
    max_examples=EXAMPLES,
    suppress_health_check=[*FUZZ.suppress_health_check, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
async def test_fuzz_endpoint(
    targets: Targets, spec_checker: SpecChecker, endpoint: Endpoint, data: st.DataObject
) -> None:
    for _ in range(5 if endpoint.takes_body else 1):
        req = data.draw(requests_for(endpoint))
        check_answer(req, await targets.send(req), spec_checker)


def _tx_with(place: tuple[str | int, ...], fragment: bytes) -> FuzzRequest:
    return FuzzRequest(
        "POST",
        "/v1/txs",
        body=splice(TX_DOC, place, fragment),
        headers=(("Content-Type", "application/json"),),
    )


def _json(method: str, path: str, body: bytes, admin: bool = False) -> FuzzRequest:
    return FuzzRequest(method, path, "", (("Content-Type", "application/json"),), body, admin)


def _query(contract: str, method: str, **args: bytes) -> FuzzRequest:
    query = "&".join(f"{k}={quote_from_bytes(v, safe='')}" for k, v in args.items())
    return FuzzRequest("GET", f"/v1/contracts/{contract}/{method}", query)


NASTIEST: list[FuzzRequest] = [
    _tx_with(("chain_id",), b'"\\ud800"'),
    _tx_with(("method",), b'"x\\udfff"'),
    _tx_with(("args", 0), b'"\\ud800"'),
    _tx_with(("args", 1), deep(10_000)),
    _tx_with(("nonce",), str(2**1000).encode()),
    _tx_with(("nonce",), b"1e400"),
    _tx_with(("expiry_height",), b"NaN"),
    _tx_with(("args", 0), str(2**64).encode()),
    _tx_with(("args",), b"-Infinity"),
    _tx_with(("contract",), b'"\xff\xfe"'),
    _tx_with(("memo",), b'"\x00"'),
    _json("POST", "/v1/txs", deep(10_000)),
    _json("POST", "/v1/txs", deep(10_000, b'{"a":', b"}")),
    _json("POST", "/v1/txs", b""),
    _json("POST", "/v1/txs", VALID_TX_BODIES[0][:-9]),
    FuzzRequest("POST", "/v1/txs", body=VALID_TX_BODIES[0]),
    FuzzRequest("POST", "/v1/txs", headers=(("Content-Type", "text/plain"),), body=b"\xff"),
    _json(
        "POST",
        "/v1/txs/batch",
        array([VALID_TX_BODIES[1], splice(TX_DOC, ("method",), b'"\\ud800"')]),
    ),
    _json("POST", "/v1/txs/batch", deep(10_000)),
    _json("POST", "/v1/txs/prepare", splice(UNSIGNED_DOC, ("public_key",), b'"\\ud800"')),
    _json("POST", "/v1/txs/prepare", splice(UNSIGNED_DOC, ("scheme",), b'"\\udfff"')),
    _json("POST", "/v1/txs/prepare", splice(UNSIGNED_DOC, ("args", 1), deep(10_000))),
    _json("POST", "/v1/txs/prepare", splice(UNSIGNED_DOC, ("nonce",), b"1e400")),
    _json("POST", "/v1/txs/prepare", json.dumps(UNSIGNED_DOC).encode()),
    _json("POST", "/v1/txs/batch", array([deep(5_000)] * 3)),
    _json("POST", "/v1/txs/batch", array([b'"' + b"ab" * 100_000 + b'"'])),
    FuzzRequest(
        "POST",
        "/v1/txs/batch",
        headers=(("Content-Type", MSGPACK),),
        body=b"\x91" * 10_000 + b"\xc0",
    ),
    _query("membership", "member", address=b'"\\ud800"'),
    _query("membership", "member", address=deep(1_000)),
    _query("membership", "member", address=str(2**1000).encode()),
    _query("membership", "member", address=b"NaN"),
    _query("membership", "members_by_role", role=b'"\\udfff"'),
    _query("membership", "members_by_role", role=b"\xed\xa0\x80"),
    _query("notary", "get", digest=b'{"hex": "\\ud800"}'),
    _query("voucher", "history", address=b"00" * 20, start=b"-0", limit=b"1e400"),
    FuzzRequest("GET", "/v1/contracts/%ED%A0%80/%00"),
    FuzzRequest("GET", "/v1/txs/%ED%A0%80"),
    FuzzRequest("GET", "/v1/blocks/" + str(2**1000)),
    FuzzRequest("GET", "/v1/blocks", f"from={2**64}&limit=NaN"),
    FuzzRequest("GET", "/v1/accounts/%00"),
    FuzzRequest("GET", "/v1/events", "last_event_id=%ED%A0%80"),
    FuzzRequest("GET", "/v1/events", headers=(("Last-Event-ID", "-0"),)),
    _json("PUT", "/admin/faults", deep(10_000), admin=True),
    _json("PUT", "/admin/faults", b'{"out": {"drop_pct": NaN}}', admin=True),
    _json("PUT", "/admin/faults", b'{"out": {"blocked": [1e400]}}', admin=True),
    _json(
        "PUT", "/admin/faults", b'{"out": {"delay_ms": ' + str(2**1000).encode() + b"}}", admin=True
    ),
    _json("PUT", "/admin/faults", b'{"out": {"\\ud800": 1}}', admin=True),
    _json("PUT", "/admin/faults", b'{"in": "\xff"}', admin=True),
    _json("PUT", "/admin/byzantine", b'{"mode": "\\ud800"}', admin=True),
    _json("PUT", "/admin/byzantine", deep(10_000, b'{"mode":', b"}"), admin=True),
    _json("PUT", "/admin/byzantine", b"", admin=True),
]


@pytest.mark.parametrize("req", NASTIEST, ids=lambda r: r.describe()[:60])
async def test_nastiest(targets: Targets, spec_checker: SpecChecker, req: FuzzRequest) -> None:
    ans = await targets.send(req)
    check_answer(req, ans, spec_checker)
    assert ans.status < 500


# --- bytes no HTTP client sends ---------------------------------------------------------


async def raw_request(url: str, request: bytes) -> Answer:
    """Send request bytes as they are (the request asks the server to close) and read the
    whole answer."""
    u = URL(url)
    assert u.host is not None and u.port is not None
    reader, writer = await asyncio.open_connection(u.host, u.port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(b":") for x in lines[1:])}
    if b"content-length" in fields:
        body = body[: int(fields[b"content-length"])]
    ctype = fields.get(b"content-type", b"").decode("latin-1")
    return Answer(int(lines[0].split()[1]), ctype, body)


@dataclass(frozen=True)
class RawRequest:
    """A request line and header lines as raw bytes (invalid UTF-8 included)."""

    line: bytes
    headers: tuple[bytes, ...] = ()
    body: bytes = b""
    admin: bool = False

    def encode(self, token: str = TOKEN) -> bytes:
        head = [self.line + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
        if self.admin and not any(h.lower().startswith(b"authorization:") for h in self.headers):
            head.append(f"Authorization: Bearer {token}".encode())
        head += [*self.headers, b"Content-Length: %d" % len(self.body)]
        return b"\r\n".join(head) + b"\r\n\r\n" + self.body

    def describe(self) -> str:
        return f"{self.line[:80]!r} {self.headers} {self.body[:80]!r}"


JSON_CT = b"Content-Type: application/json"
RAW_NASTIEST: list[RawRequest] = [
    RawRequest(b"GET /v1/events", (b"Last-Event-ID: \xff\xfe",)),
    RawRequest(b"GET /v1/receipts/" + b"ab" * 32, (b"Accept: application/\xff",)),
    RawRequest(b"POST /v1/txs", (b"Content-Type: application/json\xff",), b'{"a": 1}'),
    RawRequest(b"POST /v1/txs", (b"Content-Type: \xed\xa0\x80/json",), b"[]"),
    RawRequest(b"POST /v1/txs/batch", (JSON_CT,), b'["\xff", "\xed\xa0\x80"]'),
    RawRequest(b"POST /v1/txs/batch", (b"Content-Type: ;0*",), b"[]"),
    RawRequest(b"GET /admin/faults", (b"Authorization: Bearer \xff\xfe",), admin=True),
    RawRequest(b"GET /admin/dump", (b"Authorization: \xed\xa0\x80",), admin=True),
    RawRequest(b"PUT /admin/faults", (JSON_CT,), b'{"out": "\xff"}', admin=True),
    RawRequest(b"PUT /admin/byzantine", (b"Content-Type: \xff",), b'{"mode": "\xff"}', admin=True),
]
"""Raw bytes in header values and bodies, which aiohttp's HTTP parser lets through."""

PARSER_REFUSED: list[RawRequest] = [
    RawRequest(b"GET /v1/txs/\xff\xfe"),
    RawRequest(b"GET /v1/accounts/\xed\xa0\x80"),
    RawRequest(b"GET /v1/contracts/membership/member?address=\xed\xa0\x80&\xff=1"),
    RawRequest(b"POST /v1/txs?wait=\xff&timeout=\xff", (JSON_CT,), b'"00"'),
    RawRequest(b"GET /v1/txs/\x00"),
    RawRequest(b"GET /v1/blocks?from=" + b"1" * 9000),
    RawRequest(b"GET /v1/status", (b"X-Long: " + b"a" * 9000,)),
    RawRequest(b"GET /v1/status", (b"X-Nul: a\x00b",)),
    RawRequest(b"\xff\xfe /v1/status"),
]
"""Requests that aiohttp's HTTP parser refuses before any application code runs (bytes
outside ASCII or NUL in the request line, a line above 8190 bytes, NUL in a header): a
400 in aiohttp's own format (text/plain), which the API cannot turn into a problem."""


def check_raw_answer(req: RawRequest, ans: Answer) -> None:
    what = req.describe()
    assert ans.status < 500, f"{what} -> {ans.status} {ans.body[:300]!r}"
    if ans.status >= 400:
        media = ans.content_type.split(";")[0].strip()
        assert media == PROBLEM_JSON, f"{what} -> {ans.status} {ans.content_type}"
        assert_problem(json.loads(ans.body), ans.status, what)


@pytest.mark.parametrize("req", RAW_NASTIEST, ids=lambda r: r.describe()[:60])
async def test_raw_bytes_in_request_line_and_headers(targets: Targets, req: RawRequest) -> None:
    url = targets.admin_url if req.admin else targets.api.url
    check_raw_answer(req, await raw_request(url, req.encode()))


@pytest.mark.parametrize("req", PARSER_REFUSED, ids=lambda r: r.describe()[:60])
async def test_what_the_http_parser_refuses_is_a_4xx(targets: Targets, req: RawRequest) -> None:
    ans = await raw_request(targets.api.url, req.encode())
    assert 400 <= ans.status < 500, f"{req.describe()} -> {ans.status} {ans.body[:200]!r}"


# --- one real validator ------------------------------------------------------------------


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    directory = tmp_path_factory.mktemp("fuzz-devnet")
    plan = plan_network(base_port=None, scheme="ed25519", heartbeat_ms=300)
    with running_network(directory, plan) as net:
        yield net


@pytest.mark.slow
async def test_nastiest_against_a_real_validator(
    devnet: LocalNetwork, spec_checker: SpecChecker
) -> None:
    """The hand-picked requests against node0 of a devnet, over HTTP and raw sockets;
    then node0 still commits a transaction and its admin API answers."""
    node = devnet.plan.nodes[0]
    token = (devnet.dir / "nodes" / node.name / "admin.token").read_text().strip()
    async with aiohttp.ClientSession() as session:
        for req in NASTIEST:
            base = node.admin_url if req.admin else node.api_url
            check_answer(req, await send(session, base, req, token), spec_checker)
        for raw in RAW_NASTIEST:
            url = node.admin_url if raw.admin else node.api_url
            check_raw_answer(raw, await raw_request(url, raw.encode(token)))
        for raw in PARSER_REFUSED:
            ans = await raw_request(node.api_url, raw.encode(token))
            assert 400 <= ans.status < 500, raw.describe()
        faults = await send(
            session, node.admin_url, FuzzRequest("GET", "/admin/faults", admin=True), token
        )
        assert faults.status == 200
        assert json.loads(faults.body)["out"] == rules_to_json(FaultRules()), "no rule was set"

    key = account_key("partner1", "ed25519")
    async with AsyncClient(node.api_url) as client:
        tx = new_transaction(
            key,
            chain_id=devnet.plan.chain_id,
            nonce=await client.next_nonce(key.address),
            contract="notary",
            method="anchor",
            args=[bytes(range(32)), "sha256", "after the fuzz", "test", b""],
        )
        done = await client.submit_and_wait(tx, timeout_s=30)
        assert done.status == "committed" and done.receipt is not None and done.receipt.ok
        assert (await client.status())["height"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", public_endpoints(), ids=lambda e: e.name)
@settings(FUZZ, max_examples=REAL_EXAMPLES)
@given(data=st.data())
async def test_fuzz_a_real_validator(
    devnet: LocalNetwork, spec_checker: SpecChecker, endpoint: Endpoint, data: st.DataObject
) -> None:
    """A shorter fuzz of node0's public API: real contracts, mempool and store behind it.
    (The admin API's valid requests would perturb the devnet; NASTIEST covers it.)"""
    async with aiohttp.ClientSession() as session:
        req = data.draw(requests_for(endpoint))
        check_answer(req, await send(session, devnet.plan.nodes[0].api_url, req), spec_checker)
