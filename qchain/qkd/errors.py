"""Typed errors of the QKD key layer.

Two families hang under `QKDError`:

- `KeySourceError`: a key source (the ETSI GS QKD 014 client, the in-process simulated
  source, or the key manager itself) could not give keys. `classify` sorts every one
  into one of two `ErrorClass`es, the single place where the retry policy is decided:
  `KeyConfigError` (HTTP 401 `KeyUnauthorised`, a TLS or identity failure, a link that
  cannot give the key size frames need) is a configuration error, retried slowly and
  reported loudly; everything else (`KeyUnavailable` for 404/409/429/5xx, timeouts and
  connection errors, `KeyExhausted` when the pool holds fewer keys than asked for,
  `KeyBadRequest` for a 400 on a request we built correctly, a malformed answer) is
  transient and retried with capped, jittered backoff. `status` holds the HTTP status of
  the answer when there was one.
- `FrameRejected`: an authenticated frame that failed verification. Each subclass names
  one check, carries a stable `reason` slug that the counters use, and is the only
  exception `LinkReceiver.open` raises for bad input.
"""

from __future__ import annotations

from enum import StrEnum

from qchain.errors import QChainError


class QKDError(QChainError):
    """Root of the QKD key layer's errors."""

    code = "qkd-error"


# --- key sources -------------------------------------------------------------------------


class KeySourceError(QKDError):
    """A key source could not serve a request."""

    code = "qkd-key-source"
    status = 500

    def __init__(
        self,
        message: str,
        details: tuple[dict[str, object], ...] = (),
        *,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.details = details
        self.http_status = http_status
        """The key manager's HTTP answer, if it gave one."""

    def fields(self) -> dict[str, object]:
        return {"details": list(self.details)}


class KeyUnavailable(KeySourceError):
    """Keys cannot be delivered now; the caller should retry later (HTTP 404, 409, 429,
    5xx, a timeout or a connection error)."""

    code = "qkd-unavailable"
    status = 503


class KeyExhausted(KeyUnavailable):
    """Fewer keys are stored on the link than were requested (HTTP 503)."""

    code = "qkd-exhausted"

    def __init__(self, stored: int, requested: int) -> None:
        super().__init__(
            f"not enough keys: {requested} requested, {stored} stored",
            ({"reason": "exhausted", "stored_key_count": stored, "requested": requested},),
        )
        self.stored = stored
        self.requested = requested


class KeyConfigError(KeySourceError):
    """This node and its key manager disagree on who it is or what the link gives (HTTP
    401, a TLS handshake or certificate failure, an unusable key size): an operator has
    to act, retrying fast will not help."""

    code = "qkd-config"


class KeyUnauthorised(KeyConfigError):
    """The caller is not identified, or not allowed to use this link (HTTP 401)."""

    code = "qkd-unauthorised"
    status = 401


class KeyBadRequest(KeySourceError):
    """The key manager calls the request malformed (HTTP 400). The client only sends
    requests it knows are well formed, and key managers also answer 400 for a key id
    that has not reached this site yet, so it is transient."""

    code = "qkd-bad-request"
    status = 400


class ErrorClass(StrEnum):
    """How the key pools treat a failed key-manager call."""

    CONFIG = "config"
    """Retried every `PoolConfig.config_retry` seconds; logged at ERROR once per change."""
    TRANSIENT = "transient"
    """Retried with capped, jittered exponential backoff; logged at INFO."""


def classify(error: KeySourceError) -> ErrorClass:
    """The retry class of a key-source error (the whole policy; see the README table)."""
    return ErrorClass.CONFIG if isinstance(error, KeyConfigError) else ErrorClass.TRANSIENT


# --- frames ------------------------------------------------------------------------------


class FrameRejected(QKDError):
    """A frame that failed verification. `reason` is the counter name."""

    code = "qkd-frame-rejected"
    reason = "rejected"

    def fields(self) -> dict[str, object]:
        return {"reason": self.reason}


class FrameMalformed(FrameRejected):
    """The bytes are not a well-formed frame (bad layout, non-canonical header)."""

    reason = "malformed"


class FrameTooLarge(FrameRejected):
    """The frame, its header or its body exceeds the configured limits."""

    reason = "too-large"


class WrongVersion(FrameRejected):
    reason = "wrong-version"


class WrongChain(FrameRejected):
    reason = "wrong-chain"


class WrongReceiver(FrameRejected):
    """The frame is addressed to another node."""

    reason = "wrong-receiver"


class UnknownSender(FrameRejected):
    """The sender is not one of this node's peers."""

    reason = "unknown-sender"


class StaleSequence(FrameRejected):
    """The link sequence number is not above the last accepted one (replay or reorder)."""

    reason = "stale-sequence"


class KeyReused(FrameRejected):
    """The key id was already used (or burnt by a failed verification) on this link."""

    reason = "key-reused"


class UnknownKey(FrameRejected):
    """The key id was never announced, or the key manager does not know it."""

    reason = "unknown-key"


class BadTag(FrameRejected):
    """The Poly1305 tag does not match header and body."""

    reason = "bad-tag"


class LinkClosed(QKDError):
    """The link or its key pool was closed."""

    code = "qkd-link-closed"
