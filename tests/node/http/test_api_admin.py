"""The admin API (`node.http.admin`): fault rules, Byzantine modes, and its problems."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from node.http.admin import make_admin_app, rules_from_json, rules_to_json
from node.http.problems import PROBLEM_BASE
from node.http.testing import start_api
from node.transport import FaultRules
from qchain.errors import InvalidFaultRules

TOKEN = "admin-test-token"


@dataclass
class Target:
    out_rules: FaultRules = field(default_factory=FaultRules)
    in_rules: FaultRules = field(default_factory=FaultRules)
    byzantine_allowed: bool = False
    byzantine_mode: str | None = None

    def get_faults(self) -> tuple[FaultRules, FaultRules]:
        return self.out_rules, self.in_rules

    def set_faults(self, out_rules: FaultRules, in_rules: FaultRules) -> None:
        self.out_rules, self.in_rules = out_rules, in_rules

    def dump(self) -> Mapping[str, Any]:
        return {"height": 7}

    def set_byzantine(self, mode: str | None) -> None:
        self.byzantine_mode = mode


def test_rules_round_trip_and_absent_rules_are_no_faults() -> None:
    rules = FaultRules(drop_pct=12.5, delay_ms=40, blocked=frozenset({2, 0}))
    assert rules_from_json(rules_to_json(rules), "out") == rules
    assert rules_to_json(rules)["blocked"] == [0, 2]
    assert rules_from_json(None, "in") == FaultRules()


@pytest.mark.parametrize(
    ("doc", "field_name"),
    [
        ([], "out"),
        ({"drop": 1}, "out.drop"),
        ({"drop_pct": 101}, "out.drop_pct"),
        ({"drop_pct": True}, "out.drop_pct"),
        ({"delay_ms": 1.5}, "out.delay_ms"),
        ({"blocked": [-1]}, "out.blocked"),
    ],
)
def test_bad_rules_name_the_field(doc: object, field_name: str) -> None:
    with pytest.raises(InvalidFaultRules) as e:
        rules_from_json(doc, "out")
    assert e.value.field == field_name


@dataclass
class Admin:
    target: Target
    session: aiohttp.ClientSession
    url: str

    async def call(
        self, method: str, path: str, body: bytes | None = None, token: str = TOKEN
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"}
        async with self.session.request(method, self.url + path, data=body, headers=headers) as r:
            return r.status, await r.json(content_type=None)


@pytest.fixture
async def admin() -> AsyncIterator[Admin]:
    target = Target()
    runner, port = await start_api(make_admin_app(target, TOKEN), "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            yield Admin(target, session, f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


async def test_faults_are_set_read_and_healed(admin: Admin) -> None:
    status, doc = await admin.call("PUT", "/admin/faults", b'{"out": {"drop_pct": 50}}')
    assert (status, doc["out"]["drop_pct"], doc["in"]["drop_pct"]) == (200, 50.0, 0.0)
    assert admin.target.out_rules.drop_pct == 50.0
    status, doc = await admin.call("DELETE", "/admin/faults")
    assert (status, admin.target.out_rules) == (200, FaultRules())
    assert (await admin.call("GET", "/admin/dump")) == (200, {"height": 7})


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"out": {"delay_ms": -1}}', "out.delay_ms: milliseconds in [0, 60000]"),
        (b'{"sideways": {}}', 'body: expected {"out": {...}, "in": {...}}'),
        (b"{", "body: not JSON"),
        (b'{"out": {"drop_pct": NaN}}', "body at /out/drop_pct: NaN is not a JSON number"),
    ],
)
async def test_bad_fault_rules_are_422_problems(admin: Admin, body: bytes, detail: str) -> None:
    status, doc = await admin.call("PUT", "/admin/faults", body)
    assert (status, doc["type"]) == (422, PROBLEM_BASE + "invalid-fault-rules")
    assert doc["detail"].startswith(detail)
    assert admin.target.out_rules == FaultRules()


async def test_byzantine_modes_need_the_devnet_flag_and_a_known_mode(admin: Admin) -> None:
    status, doc = await admin.call("PUT", "/admin/byzantine", b'{"mode": "silent"}')
    assert (status, doc["type"]) == (403, PROBLEM_BASE + "byzantine-disabled")
    admin.target.byzantine_allowed = True
    status, doc = await admin.call("PUT", "/admin/byzantine", b'{"mode": "loud"}')
    assert (status, doc["type"]) == (422, PROBLEM_BASE + "invalid-request")
    assert "mode must be one of" in doc["detail"]
    status, doc = await admin.call("PUT", "/admin/byzantine", b"[")
    assert (status, doc["type"]) == (422, PROBLEM_BASE + "invalid-request")
    status, doc = await admin.call("PUT", "/admin/byzantine", b'{"mode": "silent"}')
    assert (status, doc) == (200, {"allowed": True, "mode": "silent"})


async def test_every_refusal_is_a_problem_document(admin: Admin) -> None:
    status, doc = await admin.call("GET", "/admin/faults", token="wrong")
    assert (status, doc["type"]) == (401, PROBLEM_BASE + "unauthorized")
    status, doc = await admin.call("GET", "/admin/elsewhere")
    assert (status, doc["type"]) == (404, PROBLEM_BASE + "not-found")
    status, doc = await admin.call("POST", "/admin/faults")
    assert (status, doc["type"]) == (405, PROBLEM_BASE + "method-not-allowed")
