"""The one table from the exception tree to problem+json (`node.http.problems`)."""

from __future__ import annotations

import json
import re

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from node.http.problems import (
    EN,
    FIXED_DETAILS,
    LANGUAGES,
    PROBLEM_BASE,
    PROBLEMS,
    ZH_CN,
    http_problem,
    negotiate_language,
    problem_doc,
    problem_response,
    problem_status,
)
from qchain.errors import (
    BodyTooLarge,
    ByzantineDisabled,
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

from ..conftest import ApiHarness

HAN = re.compile(r"[\u4e00-\u9fff]")


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


# --- titles in the language the client accepts ------------------------------------------


def test_every_problem_type_has_an_english_and_a_chinese_title() -> None:
    titles_zh = [row.title_zh for row in PROBLEMS.values()]
    for cls, row in PROBLEMS.items():
        assert row.title and row.title.isascii(), cls
        assert HAN.search(row.title_zh), f"{cls.__name__}: {row.title_zh!r} is not Chinese"
    assert len(set(titles_zh)) == len(titles_zh), "two types share a Chinese title"
    assert all(HAN.search(zh) for zh in FIXED_DETAILS.values())
    assert LANGUAGES == (EN, ZH_CN)


@pytest.mark.parametrize(
    ("header", "language"),
    [
        (None, EN),
        ("", EN),
        ("zh", ZH_CN),
        ("zh-CN", ZH_CN),
        ("zh-Hans", ZH_CN),
        ("ZH-hans-cn", ZH_CN),
        ("zh-SG", ZH_CN),
        ("en-US,en;q=0.9", EN),
        # q-values, not the order written, decide; equals go to the first written
        ("en;q=0.5, zh-CN;q=0.8", ZH_CN),
        ("zh-CN;q=0.8, en;q=0.9", EN),
        ("zh-CN, en", ZH_CN),
        ("en, zh-CN", EN),
        ("fr-FR, zh;q=0.7, en;q=0.3", ZH_CN),
        ("zh;q=0, en;q=0.1", EN),
        ("zh;q=0", EN),
        ("zh-TW;q=1, en;q=0.5", EN),
        ("zh-Hant, zh-Hans;q=0.5", ZH_CN),
        # languages without titles of their own, and malformed headers: English
        ("fr, de;q=0.9", EN),
        ("ja", EN),
        ("*", EN),
        ("zh;q=2", EN),
        ("zh;q=0.x, ja", EN),
        ("zh;;;", EN),
        ("\udcff\udcfe, zh", ZH_CN),
        ("x" * 100_000, EN),
        ("fr," * 100 + "zh", EN),
    ],
)
def test_accept_language_is_negotiated(header: str | None, language: str) -> None:
    assert negotiate_language(header) == language


def test_the_same_problem_in_both_languages_keeps_its_type_and_fields() -> None:
    exc = NonceMismatch(expected=4, got=2)
    en = problem_doc(exc, "/v1/txs", EN)
    zh = problem_doc(exc, "/v1/txs", ZH_CN)
    assert (en["title"], zh["title"]) == ("Nonce mismatch", "交易序号 (nonce) 不符")
    assert {k: v for k, v in zh.items() if k != "title"} == {
        k: v for k, v in en.items() if k != "title"
    }
    assert problem_status(InsufficientBalance(1, 2), ZH_CN) == (422, "余额不足")
    assert problem_doc(NonceInUse(3, b"\xaa" * 32), language=ZH_CN)["title"] == "交易无效"


def test_fixed_details_are_translated_and_details_with_values_are_not() -> None:
    assert problem_doc(Unauthorized(), language=ZH_CN)["detail"] == "需要有效的 Bearer 令牌"
    assert problem_doc(Unauthorized(), language=EN)["detail"] == Unauthorized().message
    assert ByzantineDisabled().message in FIXED_DETAILS
    zh = problem_doc(NotFound("transaction", "ab"), language=ZH_CN)
    assert (zh["title"], zh["detail"], zh["kind"]) == ("未找到", "no transaction ab", "transaction")


def _body(resp: web.Response) -> dict[str, object]:
    assert resp.body is not None
    doc: dict[str, object] = json.loads(bytes(resp.body))  # type: ignore[arg-type]
    return doc


@pytest.mark.parametrize(
    ("header", "language", "title"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN", "请求过于频繁"),
        ("en-GB", "en", "Too many requests"),
        ("ko-KR", "en", "Too many requests"),
    ],
)
def test_responses_say_their_language(header: str, language: str, title: str) -> None:
    request = make_mocked_request("GET", "/v1/status", headers={"Accept-Language": header})
    resp = problem_response(RateLimited(2), request)
    assert resp.headers["Content-Language"] == language
    assert "Accept-Language" in resp.headers["Vary"]
    assert resp.headers["Retry-After"] == "2"
    doc = _body(resp)
    assert (doc["title"], doc["type"]) == (title, PROBLEM_BASE + "rate-limited")


async def test_the_api_answers_the_same_error_in_chinese_and_in_english(api: ApiHarness) -> None:
    path = "/v1/txs/" + "ab" * 32
    zh = await api.request("GET", path, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    en = await api.request("GET", path, headers={"Accept-Language": "en-US,en;q=0.9"})
    plain = await api.request("GET", path)
    assert zh.status == en.status == plain.status == 404
    assert zh.headers["Content-Language"] == "zh-CN"
    assert en.headers["Content-Language"] == plain.headers["Content-Language"] == "en"
    assert zh.json()["title"] == "未找到" and en.json()["title"] == "Not found"
    assert zh.json()["type"] == en.json()["type"] == PROBLEM_BASE + "not-found"
    assert plain.json() == en.json()
    assert {k: v for k, v in zh.json().items() if k != "title"} == {
        k: v for k, v in en.json().items() if k != "title"
    }
