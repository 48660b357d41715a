"""Errors as RFC 9457 problem+json documents: the one table for the public and admin APIs.

`PROBLEMS` maps classes of the exception tree (`qchain.errors`) to an HTTP status and a
title. The problem `type` is `PROBLEM_BASE + exc.code`, stable per class, and the
exception's `fields()` become extension members (e.g. `expected_nonce`). A class not listed
takes its nearest listed base's status and title but keeps its own `code`; anything that
is the node's fault is answered as `internal-error`, whatever its class.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from qchain.errors import (
    ArgumentError,
    BadParameter,
    BadSignature,
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
    NotReady,
    PermissionDenied,
    QChainError,
    RateLimited,
    RuleViolation,
    SchemeNotAccepted,
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

PROBLEMS: dict[type[QChainError], tuple[int, str]] = {
    CodecError: (400, "Malformed input"),
    BadParameter: (400, "Invalid parameter"),
    Unauthorized: (401, "Unauthorized"),
    PermissionDenied: (403, "Permission denied"),
    ByzantineDisabled: (403, "Byzantine modes disabled"),
    NotFound: (404, "Not found"),
    UnknownContract: (404, "Unknown contract"),
    UnknownMethod: (404, "Unknown contract method"),
    MethodNotAllowed: (405, "Method not allowed"),
    Duplicate: (409, "Already exists"),
    TooLarge: (413, "Transaction too large"),
    TxTooLarge: (413, "Transaction larger than a block"),
    BodyTooLarge: (413, "Request body too large"),
    UnsupportedMediaType: (415, "Unsupported media type"),
    InvalidTransaction: (422, "Invalid transaction"),
    BadSignature: (422, "Bad signature"),
    UnknownScheme: (422, "Unknown signature scheme"),
    SchemeNotAccepted: (422, "Signature scheme not accepted"),
    WrongChain: (422, "Wrong chain"),
    NonceMismatch: (422, "Nonce mismatch"),
    Expired: (422, "Transaction expired"),
    NotAMember: (422, "Sender is not a member"),
    ContractError: (422, "Contract error"),
    ArgumentError: (422, "Invalid argument"),
    RuleViolation: (422, "Contract rule violated"),
    InsufficientBalance: (422, "Insufficient balance"),
    InvalidRequest: (422, "Invalid request"),
    InvalidFaultRules: (422, "Invalid fault rules"),
    RateLimited: (429, "Too many requests"),
    QChainError: (500, "Internal error"),
    StorageError: (503, "Storage unavailable"),
    StorageCorrupt: (503, "Store corrupt"),
    MempoolFull: (503, "Mempool full"),
    NotReady: (503, "Not ready"),
    CommitTimeout: (504, "Commit timeout"),
}
"""Exception class -> (HTTP status, title)."""

EXPECTED_SERVER_ERRORS = (StorageError, NotReady, CommitTimeout)
"""Answers of status 500 and above that are states of the node, not failures to log."""


def problem_status(exc: QChainError) -> tuple[int, str]:
    """The status and title of exc: those of its nearest class in `PROBLEMS`."""
    for cls in type(exc).__mro__:
        if cls in PROBLEMS:
            return PROBLEMS[cls]
    return PROBLEMS[QChainError]


def problem_doc(exc: QChainError, instance: str | None = None) -> dict[str, Any]:
    """The problem document of exc; `instance` is the request's path when there is one."""
    status, title = problem_status(exc)
    code = exc.code if status != 500 else InternalError.code
    doc: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "detail": exc.message,
    }
    if instance is not None:
        doc["instance"] = instance
    for k, v in exc.fields().items():
        doc.setdefault(k, fields_to_json(v))
    return doc


def problem_response(exc: QChainError, request: web.Request) -> web.Response:
    """exc answered as problem+json, with the headers its status calls for."""
    doc = problem_doc(exc, request.path)
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited):
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
