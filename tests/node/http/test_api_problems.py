"""The one table from the exception tree to problem+json (`node.http.problems`)."""

from __future__ import annotations

import json

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from node.http.problems import (
    PROBLEM_BASE,
    PROBLEMS,
    http_problem,
    problem_doc,
    problem_response,
    problem_status,
)
from qchain.errors import (
    BodyTooLarge,
    CommitTimeout,
    ConfigError,
    Duplicate,
    InsufficientBalance,
    InternalError,
    InvalidFaultRules,
    InvalidRequest,
    MethodNotAllowed,
    NonceInUse,
    NonceMismatch,
    NotFound,
    QChainError,
    RateLimited,
    StorageCorrupt,
    Unauthorized,
    UnknownByzantineMode,
)
from qchain.jsonform import PROBLEM_JSON


def test_a_problem_document_carries_the_typed_fields() -> None:
    doc = problem_doc(NonceMismatch(expected=4, got=2), "/v1/txs")
    assert doc == {
        "type": PROBLEM_BASE + "nonce-mismatch",
        "title": "Nonce mismatch",
        "status": 422,
        "detail": "nonce 2 does not match the expected nonce 4",
        "instance": "/v1/txs",
        "expected_nonce": 4,
        "nonce": 2,
    }


def test_fields_are_written_as_json_and_never_override_the_standard_members() -> None:
    doc = problem_doc(StorageCorrupt(b"\x01\x02", "checksum"))
    assert (doc["key"], doc["status"]) == ("0102", 503)
    dup = problem_doc(Duplicate("anchor", "ab", {"height": 3, "by": b"\xff"}))
    assert dup["first"] == {"height": 3, "by": "ff"}


def test_an_unlisted_class_takes_its_nearest_base_but_keeps_its_type() -> None:
    assert NonceInUse not in PROBLEMS and UnknownByzantineMode not in PROBLEMS
    doc = problem_doc(NonceInUse(3, b"\xaa" * 32))
    assert (doc["status"], doc["title"]) == (422, "Invalid transaction")
    assert doc["type"] == PROBLEM_BASE + "nonce-in-use"
    mode = problem_doc(UnknownByzantineMode("loud", ("silent",)))
    assert (mode["status"], mode["type"]) == (422, PROBLEM_BASE + "invalid-request")
    assert problem_status(InsufficientBalance(1, 2)) == (422, "Insufficient balance")


@pytest.mark.parametrize("exc", [QChainError("boom"), ConfigError("x", "y")])
def test_what_is_the_nodes_fault_is_an_internal_error(exc: QChainError) -> None:
    doc = problem_doc(exc)
    assert (doc["status"], doc["type"]) == (500, PROBLEM_BASE + InternalError.code)


def test_admin_refusals_are_in_the_same_table() -> None:
    assert problem_status(Unauthorized()) == (401, "Unauthorized")
    assert problem_status(InvalidRequest("bad"))[0] == 422
    rules = problem_doc(InvalidFaultRules("out.drop_pct", "a percentage in [0, 100]"))
    assert rules["type"] == PROBLEM_BASE + "invalid-fault-rules"
    assert rules["detail"] == "out.drop_pct: a percentage in [0, 100]"


@pytest.mark.parametrize(
    ("exc", "header", "value"),
    [
        (RateLimited(3), "Retry-After", "3"),
        (MethodNotAllowed("PUT", ["GET", "POST"]), "Allow", "GET, POST"),
        (CommitTimeout("ab" * 32, 1.0), "Location", "/v1/txs/" + "ab" * 32),
    ],
)
def test_responses_carry_the_headers_their_status_calls_for(
    exc: QChainError, header: str, value: str
) -> None:
    resp = problem_response(exc, make_mocked_request("POST", "/v1/txs"))
    assert resp.headers[header] == value
    assert resp.content_type == PROBLEM_JSON
    assert resp.body is not None
    assert json.loads(bytes(resp.body))["instance"] == "/v1/txs"  # type: ignore[arg-type]


def test_aiohttp_refusals_become_errors_of_the_tree() -> None:
    request = make_mocked_request("PATCH", "/v1/nowhere")
    assert isinstance(http_problem(web.HTTPNotFound(), request, 10), NotFound)
    not_allowed = http_problem(web.HTTPMethodNotAllowed("PATCH", ["GET"]), request, 10)
    assert isinstance(not_allowed, MethodNotAllowed) and not_allowed.allowed == ["GET"]
    too_large = http_problem(web.HTTPRequestEntityTooLarge(10, 11), request, 10)
    assert isinstance(too_large, BodyTooLarge) and too_large.limit == 10
    assert problem_status(http_problem(web.HTTPBadRequest(), request, 10))[0] == 400
    assert problem_status(http_problem(web.HTTPBadGateway(), request, 10))[0] == 500
