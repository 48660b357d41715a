"""Errors as RFC 9457 problem+json documents: the one table for the public and admin APIs.

`PROBLEMS` maps classes of the exception tree (`qchain.errors`) to an HTTP status and a
title in English and in Simplified Chinese. The problem `type` is `PROBLEM_BASE +
exc.code`, stable per class and never translated, and the exception's `fields()` become
extension members (e.g. `expected_nonce`). A class not listed takes its nearest listed
base's status and titles but keeps its own `code`; anything that is the node's fault is
answered as `internal-error`, whatever its class.

The language of a response follows the request's `Accept-Language` (RFC 9110 §12.5.4,
q-values honoured, English by default): `title`, and `detail` where the server writes a
fixed sentence (`FIXED_DETAILS`), come in English or Simplified Chinese, and the response
says which in `Content-Language`. Details built from a request's values stay English; the
values themselves are in the typed extension members.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, NamedTuple

from aiohttp import web

from qchain.errors import (
    ArgumentError,
    BadParameter,
    BadSignature,
    BelowBase,
    BodyTooLarge,
    ByzantineDisabled,
    CodecError,
    CommitTimeout,
    ContractError,
    Duplicate,
    Expired,
    InsufficientBalance,
    InternalError,
    InvalidFaultRules,
    InvalidRequest,
    InvalidTransaction,
    MempoolFull,
    MethodNotAllowed,
    NonceMismatch,
    NotAMember,
    NotFound,
    NotGoverned,
    NotReady,
    Overloaded,
    PermissionDenied,
    QChainError,
    RateLimited,
    RotationNotSupported,
    RuleViolation,
    SchemeNotAccepted,
    SetChainUnavailable,
    StorageCorrupt,
    StorageError,
    TooLarge,
    TxTooLarge,
    Unauthorized,
    UnknownContract,
    UnknownMethod,
    UnknownScheme,
    UnsupportedMediaType,
    WrongChain,
)
from qchain.jsonform import PROBLEM_JSON, fields_to_json

log = logging.getLogger("qchain.api")

PROBLEM_BASE = "https://qchain.dev/problems/"


class Problem(NamedTuple):
    """One row of the table: the HTTP status and the title in each language."""

    status: int
    title: str
    """English, the default."""
    title_zh: str
    """Simplified Chinese (zh-CN)."""


PROBLEMS: dict[type[QChainError], Problem] = {
    CodecError: Problem(400, "Malformed input", "输入格式错误"),
    BadParameter: Problem(400, "Invalid parameter", "参数无效"),
    Unauthorized: Problem(401, "Unauthorized", "未授权"),
    PermissionDenied: Problem(403, "Permission denied", "权限不足"),
    ByzantineDisabled: Problem(403, "Byzantine modes disabled", "拜占庭模式未启用"),
    NotFound: Problem(404, "Not found", "未找到"),
    NotGoverned: Problem(
        404, "No set chain: the validator set never changes", "无验证者集合链：验证者集合不变"
    ),
    UnknownContract: Problem(404, "Unknown contract", "未知合约"),
    UnknownMethod: Problem(404, "Unknown contract method", "未知合约方法"),
    MethodNotAllowed: Problem(405, "Method not allowed", "不允许的请求方法"),
    BelowBase: Problem(410, "Block not held by this node", "本节点不保存该区块"),
    Duplicate: Problem(409, "Already exists", "已存在"),
    SetChainUnavailable: Problem(409, "Set chain unavailable", "无法提供验证者集合链"),
    TooLarge: Problem(413, "Transaction too large", "交易过大"),
    TxTooLarge: Problem(413, "Transaction larger than a block", "交易大于区块容量"),
    BodyTooLarge: Problem(413, "Request body too large", "请求体过大"),
    UnsupportedMediaType: Problem(415, "Unsupported media type", "不支持的媒体类型"),
    InvalidTransaction: Problem(422, "Invalid transaction", "交易无效"),
    BadSignature: Problem(422, "Bad signature", "签名无效"),
    UnknownScheme: Problem(422, "Unknown signature scheme", "未知签名算法"),
    SchemeNotAccepted: Problem(422, "Signature scheme not accepted", "本链不接受该签名算法"),
    WrongChain: Problem(422, "Wrong chain", "链标识不符"),
    NonceMismatch: Problem(422, "Nonce mismatch", "交易序号 (nonce) 不符"),
    Expired: Problem(422, "Transaction expired", "交易已过期"),
    NotAMember: Problem(422, "Sender is not a member", "发送方不是成员"),
    RotationNotSupported: Problem(422, "Validator rotation not supported", "不支持验证者轮换"),
    ContractError: Problem(422, "Contract error", "合约执行出错"),
    ArgumentError: Problem(422, "Invalid argument", "合约参数无效"),
    RuleViolation: Problem(422, "Contract rule violated", "违反合约规则"),
    InsufficientBalance: Problem(422, "Insufficient balance", "余额不足"),
    InvalidRequest: Problem(422, "Invalid request", "请求无效"),
    InvalidFaultRules: Problem(422, "Invalid fault rules", "故障规则无效"),
    RateLimited: Problem(429, "Too many requests", "请求过于频繁"),
    QChainError: Problem(500, "Internal error", "内部错误"),
    StorageError: Problem(503, "Storage unavailable", "存储不可用"),
    StorageCorrupt: Problem(503, "Store corrupt", "存储已损坏"),
    MempoolFull: Problem(503, "Mempool full", "交易池已满"),
    Overloaded: Problem(503, "Node overloaded; retry later", "节点过载，请稍后重试"),
    NotReady: Problem(503, "Not ready", "节点未就绪"),
    CommitTimeout: Problem(504, "Commit timeout", "提交超时"),
}
"""Exception class -> (HTTP status, English title, Chinese title)."""

EXPECTED_SERVER_ERRORS = (StorageError, NotReady, CommitTimeout, MempoolFull)
"""Answers of status 500 and above that are states of the node, not failures to log."""

EN = "en"
ZH_CN = "zh-CN"
LANGUAGES = (EN, ZH_CN)
"""The languages of problem titles; the first is the default."""

FIXED_DETAILS: dict[str, str] = {
    "a valid bearer token is required": "需要有效的 Bearer 令牌",
    "start the node with admin.byzantine = true (devnets only)": (
        "请以 admin.byzantine = true 启动节点（仅限开发网络）"
    ),
    "unexpected error; the node's log has the details": "意外错误；详情见节点日志",
}
"""The fixed sentences the server writes as `detail` -> their Simplified Chinese."""

MAX_ACCEPT_LANGUAGE = 512
"""Characters of `Accept-Language` read; the rest of a longer header is ignored."""
MAX_LANGUAGE_RANGES = 16
"""Language ranges read from `Accept-Language`; later ones are ignored."""

_RANGE = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*")
_QVALUE = re.compile(r"[qQ]=(0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)")
_SIMPLIFIED_REGIONS = frozenset({"cn", "sg", "my"})


def _language_of(tag: str) -> str | None:
    """The language of `LANGUAGES` that one language range asks for, if any: `zh`,
    `zh-CN`, `zh-Hans` (and `zh-SG`, `zh-Hans-*`) are Simplified Chinese; `zh-TW`,
    `zh-HK` and `zh-Hant` are not (no Traditional titles), `en-*` and `*` are English."""
    parts = tag.lower().split("-")
    if parts[0] == "*" or parts[0] == "en":
        return EN
    if parts[0] != "zh" or "hant" in parts[1:]:
        return None
    if len(parts) == 1 or "hans" in parts[1:] or parts[1] in _SIMPLIFIED_REGIONS:
        return ZH_CN
    return None


def negotiate_language(header: str | None) -> str:
    """The language to answer in for an `Accept-Language` header (hostile input: bounded,
    malformed ranges and q-values skipped): the acceptable range with the highest q-value
    that names one of `LANGUAGES`, the first of equals; English when none does."""
    best: tuple[float, str] | None = None
    entries = (header or "")[:MAX_ACCEPT_LANGUAGE].split(",")[:MAX_LANGUAGE_RANGES]
    for entry in entries:
        tag, *params = (p.strip() for p in entry.split(";"))
        if not _RANGE.fullmatch(tag):
            continue
        q = 1.0
        for param in params:
            m = _QVALUE.fullmatch(param)
            q = float(m.group(1)) if m else -1.0
        language = _language_of(tag)
        if language is not None and q > 0 and (best is None or q > best[0]):
            best = (q, language)
    return EN if best is None else best[1]


def problem_status(exc: QChainError, language: str = EN) -> tuple[int, str]:
    """The status and title of exc in `language`: those of its nearest class in
    `PROBLEMS`."""
    row = PROBLEMS[QChainError]
    for cls in type(exc).__mro__:
        if cls in PROBLEMS:
            row = PROBLEMS[cls]
            break
    return row.status, row.title_zh if language == ZH_CN else row.title


def problem_doc(
    exc: QChainError, instance: str | None = None, language: str = EN
) -> dict[str, Any]:
    """The problem document of exc in `language`; `instance` is the request's path when
    there is one."""
    status, title = problem_status(exc, language)
    code = exc.code if status != 500 else InternalError.code
    detail = exc.message
    if language == ZH_CN:
        detail = FIXED_DETAILS.get(detail, detail)
    doc: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance is not None:
        doc["instance"] = instance
    for k, v in exc.fields().items():
        doc.setdefault(k, fields_to_json(v))
    return doc


def problem_response(exc: QChainError, request: web.Request) -> web.Response:
    """exc answered as problem+json in the language the request accepts, with the headers
    its status calls for."""
    language = negotiate_language(request.headers.get("Accept-Language"))
    doc = problem_doc(exc, request.path, language)
    headers: dict[str, str] = {"Content-Language": language, "Vary": "Accept-Language"}
    if isinstance(exc, RateLimited | Overloaded):
        headers["Retry-After"] = str(exc.retry_after_s)
    elif isinstance(exc, MethodNotAllowed):
        headers["Allow"] = ", ".join(exc.allowed)
    elif isinstance(exc, CommitTimeout):
        headers["Location"] = f"/v1/txs/{exc.tx_hash}"
    return web.Response(
        status=doc["status"],
        body=json.dumps(doc).encode(),
        headers={"Content-Type": PROBLEM_JSON, **headers},
    )


def http_problem(e: web.HTTPException, request: web.Request, limit: int) -> QChainError:
    """aiohttp's own refusals (unknown route, wrong method, body over `limit`) as errors
    of the tree."""
    if e.status == 404:
        return NotFound("route", request.path)
    if e.status == 405:
        allowed = sorted(getattr(e, "allowed_methods", ()) or ())
        return MethodNotAllowed(request.method, allowed)
    if e.status == 413:
        return BodyTooLarge(limit)
    if e.status < 500:
        return BadParameter("request", e.reason)
    return InternalError(e.reason)


def log_server_error(e: QChainError, request: web.Request) -> None:
    """Log a problem that is the node's fault; not the expected states of the node
    (storage down, not ready, a commit wait that timed out)."""
    if problem_status(e)[0] >= 500 and not isinstance(e, EXPECTED_SERVER_ERRORS):
        log.error("error answering %s %s: %s", request.method, request.path, e)
