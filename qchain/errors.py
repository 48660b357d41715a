"""The one exception tree of qchain.

Every error that can be caused by input from outside is a `QChainError` subclass with
typed fields. The HTTP layer maps these classes to RFC 9457 problem+json documents in one
table, using `code` as the stable problem type slug.
"""

from __future__ import annotations


class QChainError(Exception):
    """Root of every error qchain raises on purpose."""

    code = "qchain-error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def fields(self) -> dict[str, object]:
        """Extra typed fields to expose to clients (problem+json extension members)."""
        return {}


class CodecError(QChainError):
    """Bytes that are not a canonical encoding of the expected structure."""

    code = "malformed-encoding"


class ConfigError(QChainError):
    """A configuration file or value that fails validation."""

    code = "invalid-config"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def fields(self) -> dict[str, object]:
        return {"field": self.field, "reason": self.reason}


class StorageError(QChainError):
    """The store could not be opened, read or written."""

    code = "storage-error"


class KeyFileError(QChainError):
    """A key file that cannot be read or has the wrong format."""

    code = "invalid-key-file"


class InvalidTransaction(QChainError):
    """A transaction that must not enter the mempool or a block."""

    code = "invalid-transaction"


class BadSignature(InvalidTransaction):
    code = "bad-signature"


class UnknownScheme(InvalidTransaction):
    code = "unknown-signature-scheme"

    def __init__(self, scheme: str) -> None:
        super().__init__(f"unknown signature scheme {scheme!r}")
        self.scheme = scheme

    def fields(self) -> dict[str, object]:
        return {"scheme": self.scheme}


class WrongChain(InvalidTransaction):
    code = "wrong-chain"

    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f"transaction is for chain {got!r}, this chain is {expected!r}")
        self.expected = expected
        self.got = got

    def fields(self) -> dict[str, object]:
        return {"expected_chain_id": self.expected, "chain_id": self.got}


class NonceMismatch(InvalidTransaction):
    code = "nonce-mismatch"

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"nonce {got} does not match the expected nonce {expected}")
        self.expected = expected
        self.got = got

    def fields(self) -> dict[str, object]:
        return {"expected_nonce": self.expected, "nonce": self.got}


class Expired(InvalidTransaction):
    code = "expired"

    def __init__(self, expiry_height: int, height: int) -> None:
        super().__init__(f"transaction expired at height {expiry_height}, chain is at {height}")
        self.expiry_height = expiry_height
        self.height = height

    def fields(self) -> dict[str, object]:
        return {"expiry_height": self.expiry_height, "height": self.height}


class TooLarge(InvalidTransaction):
    code = "too-large"

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit

    def fields(self) -> dict[str, object]:
        return {"size": self.size, "limit": self.limit}


class NotAMember(InvalidTransaction):
    code = "not-a-member"

    def __init__(self, address: str, reason: str = "is not a registered member") -> None:
        super().__init__(f"sender {address} {reason}")
        self.address = address

    def fields(self) -> dict[str, object]:
        return {"address": self.address}
