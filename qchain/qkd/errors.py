"""Typed errors of the QKD key layer.

Two families hang under `QKDError`:

- `KeySourceError`: a key source (the ETSI GS QKD 014 client, the in-process simulated
  source, or the key manager itself) could not give keys. `KeyUnavailable` means "retry
  later" (HTTP 503: outage, eavesdropper alarm, not enough keys yet); `KeyExhausted` is
  the unavailable case where the pool simply holds fewer keys than asked for.
  `KeyUnauthorised` (HTTP 401) and `KeyBadRequest` (HTTP 400) are not worth retrying.
- `FrameRejected`: an authenticated frame that failed verification. Each subclass names
  one check, carries a stable `reason` slug that the counters use, and is the only
  exception `LinkReceiver.open` raises for bad input.
"""

from __future__ import annotations

from qchain.errors import QChainError


class QKDError(QChainError):
    """Root of the QKD key layer's errors."""

    code = "qkd-error"


# --- key sources -------------------------------------------------------------------------


class KeySourceError(QKDError):
    """A key source could not serve a request."""

    code = "qkd-key-source"
    status = 500

    def __init__(self, message: str, details: tuple[dict[str, object], ...] = ()) -> None:
        super().__init__(message)
        self.details = details

    def fields(self) -> dict[str, object]:
        return {"details": list(self.details)}


class KeyUnavailable(KeySourceError):
    """Keys cannot be delivered now; the caller should retry later (HTTP 503)."""

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


class KeyUnauthorised(KeySourceError):
    """The caller is not identified, or not allowed to use this link (HTTP 401)."""

    code = "qkd-unauthorised"
    status = 401


class KeyBadRequest(KeySourceError):
    """The request is malformed or asks for something the link cannot give (HTTP 400)."""

    code = "qkd-bad-request"
    status = 400


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
    """The link or its key pool was closed, or failed for good (unauthorised, bad request)."""

    code = "qkd-link-closed"
