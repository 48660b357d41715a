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


class InvalidJson(CodecError):
    """JSON input that is refused before anything reads it: not UTF-8, not JSON, nested
    too deeply, or holding what no qchain value can be (text with a lone surrogate, NaN or
    Infinity, a number outside the 64-bit integer range). `where` is what was parsed (the
    body, a query parameter), `pointer` the offending value's RFC 6901 JSON pointer when
    one is known. The problem type is that of `CodecError`."""

    def __init__(self, where: str, reason: str, pointer: str | None = None) -> None:
        super().__init__(f"{where}{f' at {pointer}' if pointer else ''}: {reason}")
        self.where = where
        self.reason = reason
        self.pointer = pointer

    def fields(self) -> dict[str, object]:
        out: dict[str, object] = {"reason": self.reason}
        if self.pointer is not None:
            out["pointer"] = self.pointer
        return out


class JsonSyntaxError(InvalidJson):
    """Text that is not JSON at all (as opposed to JSON whose content is refused)."""


class ConfigError(QChainError):
    """A configuration file or value that fails validation."""

    code = "invalid-config"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def fields(self) -> dict[str, object]:
        return {"field": self.field, "reason": self.reason}


class StoreMismatch(ConfigError):
    """The store in the node's data directory belongs to another chain (another chain id,
    or another genesis): the configuration points at the wrong directory or genesis.
    Nothing in the store is damaged."""

    def __init__(self, what: str, stored: str, expected: str) -> None:
        super().__init__("node.data_dir", f"the store's {what} is {stored}, not {expected}")
        self.what = what
        self.stored = stored
        self.expected = expected

    def fields(self) -> dict[str, object]:
        return {
            **super().fields(),
            "what": self.what,
            "stored": self.stored,
            "expected": self.expected,
        }


class StorageError(QChainError):
    """The store could not be opened, read or written."""

    code = "storage-error"


class StorageCorrupt(StorageError):
    """Stored bytes that are not what was written: a LevelDB checksum failed, or a value
    does not match the hash that commits to it (a block against its header, a receipt
    against the receipts root, a certificate against the block hash). The node never
    serves such data; it stops and must be rebuilt from its peers."""

    code = "store-corrupt"

    def __init__(self, key: bytes, reason: str) -> None:
        super().__init__(f"store is corrupt at key {key.hex()}: {reason}")
        self.key = key
        self.reason = reason

    def fields(self) -> dict[str, object]:
        return {"key": self.key.hex(), "reason": self.reason}


class StoreLocked(StorageError):
    """The database is held by another process (LevelDB allows one): the node is running."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"cannot open LevelDB at {path}: in use by another process ({reason})")
        self.path = str(path)
        self.reason = reason

    def fields(self) -> dict[str, object]:
        return {"path": self.path, "reason": self.reason}


class BackupError(QChainError):
    """A backup file (`node.backup`) that is refused: not one, damaged, of another format
    or schema, or beyond a bound. `field` names the part of the file that is wrong. A
    refused backup never changes the node's store."""

    code = "invalid-backup"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"backup {field}: {reason}")
        self.field = field
        self.reason = reason

    def fields(self) -> dict[str, object]:
        return {"field": self.field, "reason": self.reason}


class BackupTruncated(BackupError):
    """The file ends before its trailer: an interrupted copy or transfer."""

    code = "backup-truncated"


class BackupDigestMismatch(BackupError):
    """The trailing SHA-256 does not match the bytes before it: the file was altered."""

    code = "backup-digest-mismatch"


class BackupMismatch(BackupError):
    """A well-formed backup of something else: another chain id, genesis or schema
    version than the node's config and genesis (`what`)."""

    code = "backup-mismatch"

    def __init__(self, what: str, stored: str, expected: str) -> None:
        super().__init__(f"header.{what}", f"is {stored}, this node's is {expected}")
        self.what = what
        self.stored = stored
        self.expected = expected

    def fields(self) -> dict[str, object]:
        return {
            **super().fields(),
            "what": self.what,
            "stored": self.stored,
            "expected": self.expected,
        }


class EvidenceMismatch(QChainError):
    """Notary evidence that does not show what it is taken to show (`node.notary_evidence`):
    `part` names what is wrong: `file` (its digest is not the anchored one: another or a
    modified document), `transaction` (not the receipt's transaction, or not a notary
    anchor), `receipt` (the anchor failed) or `certificate` (the proof does not verify
    against the genesis's validator keys)."""

    code = "evidence-mismatch"

    def __init__(self, part: str, reason: str) -> None:
        super().__init__(f"{part}: {reason}")
        self.part = part
        self.reason = reason

    def fields(self) -> dict[str, object]:
        return {"part": self.part, "reason": self.reason}


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


class SchemeNotAccepted(InvalidTransaction):
    """A known signature scheme that this chain's genesis does not accept
    (`accepted_schemes`), for a transaction or a key being registered."""

    code = "scheme-not-accepted"

    def __init__(self, scheme: str, accepted: tuple[str, ...]) -> None:
        super().__init__(
            f"this chain does not accept {scheme} signatures (it accepts {', '.join(accepted)})"
        )
        self.scheme = scheme
        self.accepted = accepted

    def fields(self) -> dict[str, object]:
        return {"scheme": self.scheme, "accepted_schemes": list(self.accepted)}


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


class TxTooLarge(InvalidTransaction):
    """A transaction larger than every block this node builds: it could never commit."""

    code = "tx-too-large"

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"transaction of {size} bytes can never enter a block: "
            f"blocks hold at most {limit} bytes of transactions"
        )
        self.size = size
        self.limit = limit

    def fields(self) -> dict[str, object]:
        return {"size": self.size, "limit": self.limit}


class RotationNotSupported(InvalidTransaction):
    """A `validators` transaction that proposes or approves a `rotate` (a validator's
    certificate key or SAE id replaced), on a chain whose set changes: the node does not
    build rotation (docs/CONSENSUS.md, Revision 1.20), and one approved stops every node."""

    code = "rotation-not-supported"

    def __init__(self, method: str, validator: int | None) -> None:
        super().__init__(
            f"validators.{method} of a rotate (validator {validator}) is refused: this node "
            "does not build rotation (docs/CONSENSUS.md §10.6's per-end link ranges), and "
            "an approved rotate would stop every node. Remove the validator and add it "
            "again with its new key and SAE id instead"
        )
        self.method = method
        self.validator = validator

    def fields(self) -> dict[str, object]:
        return {"method": self.method, "validator": self.validator}


class NotAMember(InvalidTransaction):
    code = "not-a-member"

    def __init__(self, address: str, reason: str = "is not a registered member") -> None:
        super().__init__(f"sender {address} {reason}")
        self.address = address

    def fields(self) -> dict[str, object]:
        return {"address": self.address}


class GenesisError(ConfigError):
    """A genesis file that fails validation; `field` names the offending entry."""

    code = "invalid-genesis"


class BelowBase(QChainError):
    """A block this node does not hold because its store started from a snapshot above
    it (state sync): the block exists, ask a node that holds it."""

    code = "below-base"

    def __init__(self, height: int, base_height: int) -> None:
        super().__init__(
            f"block {height} is not held here: this node's history starts at its "
            f"snapshot of height {base_height}"
        )
        self.height = height
        self.base_height = base_height

    def fields(self) -> dict[str, object]:
        return {"height": self.height, "base_height": self.base_height}


class ResponseTooLarge(CodecError):
    """A node's answer longer than the client reads for it."""

    code = "response-too-large"


class InvalidSnapshot(QChainError):
    """A state snapshot (manifest or chunk) that does not match the commitment it must
    match: a chunk whose hash is not the manifest's, entries out of order or outside the
    state, a manifest whose root is not the certified app hash's."""

    code = "invalid-snapshot"


class InvalidBlock(QChainError):
    """A proposed or fetched block that must not be voted for or committed: a transaction
    that may not be included (bad signature, wrong nonce, ...), or results that differ
    from the header's receipts root or app hash."""

    code = "invalid-block"

    def __init__(self, reason: str, index: int | None = None, cause: str = "") -> None:
        where = "" if index is None else f"transaction {index}: "
        super().__init__(f"invalid block: {where}{reason}")
        self.reason = reason
        self.index = index
        self.cause = cause

    def fields(self) -> dict[str, object]:
        return {"reason": self.reason, "index": self.index, "cause": self.cause}


class ContractError(QChainError):
    """A contract call or query that failed. In a block the transaction is still included:
    its nonce is consumed, its writes are reverted and its receipt carries `code` and the
    message."""

    code = "contract-error"


class UnknownContract(ContractError):
    code = "unknown-contract"

    def __init__(self, contract: str) -> None:
        super().__init__(f"no contract named {contract!r}")
        self.contract = contract

    def fields(self) -> dict[str, object]:
        return {"contract": self.contract}


class UnknownMethod(ContractError):
    code = "unknown-method"

    def __init__(self, contract: str, method: str, kind: str) -> None:
        super().__init__(f"contract {contract!r} has no {kind} method {method!r}")
        self.contract = contract
        self.method = method
        self.kind = kind

    def fields(self) -> dict[str, object]:
        return {"contract": self.contract, "method": self.method, "kind": self.kind}


class ArgumentError(ContractError):
    """An argument that does not match the method's schema or is out of range."""

    code = "invalid-argument"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"argument {field}: {reason}")
        self.field = field
        self.reason = reason

    def fields(self) -> dict[str, object]:
        return {"field": self.field, "reason": self.reason}


class PermissionDenied(ContractError):
    code = "permission-denied"

    def __init__(self, action: str, reason: str) -> None:
        super().__init__(f"{action}: {reason}")
        self.action = action
        self.reason = reason

    def fields(self) -> dict[str, object]:
        return {"action": self.action, "reason": self.reason}


class RuleViolation(ContractError):
    """A call that is well-formed and permitted but breaks a rule of the contract; `rule`
    is a stable slug such as `last-admin` or `budget-exceeded`."""

    code = "rule-violation"

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule

    def fields(self) -> dict[str, object]:
        return {"rule": self.rule}


class InsufficientBalance(RuleViolation):
    code = "insufficient-balance"

    def __init__(self, available: int, requested: int) -> None:
        super().__init__(
            "insufficient-balance", f"balance {available} is less than the amount {requested}"
        )
        self.available = available
        self.requested = requested

    def fields(self) -> dict[str, object]:
        return {"rule": self.rule, "available": self.available, "requested": self.requested}


class NotFound(ContractError):
    code = "not-found"

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"no {kind} {key}")
        self.kind = kind
        self.key = key

    def fields(self) -> dict[str, object]:
        return {"kind": self.kind, "key": self.key}


class NotFoundAboveBase(NotFound):
    """Not found on a node whose store starts from a snapshot (state sync): it may be in
    a block below `base_height`, which this node does not hold."""

    def __init__(self, kind: str, key: str, base_height: int) -> None:
        super().__init__(kind, key)
        self.message = (
            f"no {kind} {key} from height {base_height} on (this node holds no block "
            f"below its snapshot of height {base_height})"
        )
        self.args = (self.message,)
        self.base_height = base_height

    def fields(self) -> dict[str, object]:
        return {**super().fields(), "base_height": self.base_height}


class Duplicate(ContractError):
    """Something that exists already; `first` describes the existing entry."""

    code = "duplicate"

    def __init__(self, kind: str, key: str, first: dict[str, object], detail: str = "") -> None:
        super().__init__(f"{kind} {key} already exists{': ' + detail if detail else ''}")
        self.kind = kind
        self.key = key
        self.first = first

    def fields(self) -> dict[str, object]:
        return {"kind": self.kind, "key": self.key, "first": self.first}


class ApiError(QChainError):
    """A problem+json answer (RFC 9457) of a node's HTTP API, as a client sees it.

    `code` is the problem type's slug (the last segment of `type`), so a client tests
    `e.code == "nonce-mismatch"` the same way it would test a local error; `extra` holds
    the problem's extension members (e.g. `expected_nonce`)."""

    code = "api-error"

    def __init__(
        self, status: int, type_: str, title: str, detail: str, extra: dict[str, object]
    ) -> None:
        super().__init__(f"{title}: {detail}" if detail and detail != title else title)
        self.status = status
        self.type = type_
        self.title = title
        self.detail = detail
        self.extra = extra
        self.code = type_.rstrip("/").rsplit("/", 1)[-1] or "api-error"

    @property
    def retry_after_s(self) -> float | None:
        """Seconds the node asked to wait before sending the same request again (its
        `retry_after` member, as `Retry-After` says it: 429 and 503 only); None when it
        gave none."""
        value = self.extra.get("retry_after")
        if self.status not in (429, 503) or type(value) not in (int, float):
            return None
        seconds = float(value)  # type: ignore[arg-type]
        return seconds if 0 <= seconds < float("inf") else None

    def fields(self) -> dict[str, object]:
        return {"status": self.status, "type": self.type, **self.extra}


class NodeUnavailable(QChainError):
    """A node that could not be reached or gave an answer that is not the API's."""

    code = "node-unavailable"


class MempoolFull(QChainError):
    code = "mempool-full"

    def __init__(self, reason: str) -> None:
        super().__init__(f"mempool is full: {reason}; retry later")
        self.reason = reason

    def fields(self) -> dict[str, object]:
        return {"reason": self.reason}


class Overloaded(MempoolFull):
    """The node holds as many of its clients' transactions as the chain commits within
    the admission bound (`[node] admission_bound_ms`): retry after `retry_after_s`."""

    code = "overloaded"

    def __init__(
        self, retry_after_s: int, backlog_ms: int, bound_ms: int, waits_for: int | None = None
    ) -> None:
        """waits_for: the transaction would wait behind this missing nonce of its sender
        while the node is under load (it cannot commit within the bound)."""
        if waits_for is None:
            message = (
                f"the node's backlog ({backlog_ms} ms at the measured commit rate) is at its "
                f"bound ({bound_ms} ms); retry in {retry_after_s} s"
            )
            self.reason = "backlog at the admission bound"
        else:
            message = (
                f"the node is under load and this transaction would wait behind nonce "
                f"{waits_for} of its sender, which this node does not hold; send that "
                f"nonce first, this one again in {retry_after_s} s"
            )
            self.reason = "waits behind a nonce gap while the node is under load"
        QChainError.__init__(self, message)
        self.retry_after_s = retry_after_s
        self.backlog_ms = backlog_ms
        self.bound_ms = bound_ms
        self.waits_for = waits_for

    def fields(self) -> dict[str, object]:
        out: dict[str, object] = {
            "reason": self.reason,
            "retry_after": self.retry_after_s,
            "backlog_ms": self.backlog_ms,
            "bound_ms": self.bound_ms,
        }
        if self.waits_for is not None:
            out["waits_for"] = self.waits_for
        return out


class NonceInUse(InvalidTransaction):
    code = "nonce-in-use"

    def __init__(self, nonce: int, pending_hash: bytes) -> None:
        super().__init__(
            f"nonce {nonce} is already used by pending transaction {pending_hash.hex()}"
        )
        self.nonce = nonce
        self.pending_hash = pending_hash

    def fields(self) -> dict[str, object]:
        return {"nonce": self.nonce, "pending_tx_hash": self.pending_hash.hex()}


class NotGoverned(QChainError):
    """A set chain asked of a chain whose validator set never changes (its genesis does
    not set `consensus.reconfiguration`): every height has the genesis set."""

    code = "not-governed"

    def __init__(self) -> None:
        super().__init__(
            "this chain's validator set never changes (its genesis does not set "
            "consensus.reconfiguration): every height has the genesis set, and no set chain "
            "exists; verify receipts against the genesis alone"
        )


class SetChainUnavailable(QChainError):
    """The node cannot give the set chain of a height (docs/CONSENSUS.md §10.5): `reason`
    says why (`too-many-changes`, `no-certificate`, `not-recorded`, `too-large`)."""

    code = "set-chain-unavailable"

    def __init__(self, height: int, reason: str, detail: str) -> None:
        super().__init__(f"no set chain of height {height}: {detail}")
        self.height = height
        self.reason = reason

    def fields(self) -> dict[str, object]:
        return {"height": self.height, "reason": self.reason}


# --- refusals of the HTTP layer ----------------------------------------------------------


class BadParameter(QChainError):
    """A path, query or header parameter that does not parse or is out of range."""

    code = "invalid-parameter"

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"parameter {name}: {reason}")
        self.name = name
        self.reason = reason

    def fields(self) -> dict[str, object]:
        return {"parameter": self.name, "reason": self.reason}


class UnsupportedMediaType(QChainError):
    code = "unsupported-media-type"

    def __init__(self, content_type: str, supported: list[str]) -> None:
        super().__init__(f"content type {content_type!r} is not one of {', '.join(supported)}")
        self.content_type = content_type
        self.supported = supported

    def fields(self) -> dict[str, object]:
        return {"content_type": self.content_type, "supported": self.supported}


class BodyTooLarge(QChainError):
    code = "body-too-large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds the limit of {limit} bytes")
        self.limit = limit

    def fields(self) -> dict[str, object]:
        return {"limit": self.limit}


class MethodNotAllowed(QChainError):
    code = "method-not-allowed"

    def __init__(self, method: str, allowed: list[str]) -> None:
        super().__init__(f"method {method} is not allowed here; allowed: {', '.join(allowed)}")
        self.method = method
        self.allowed = allowed

    def fields(self) -> dict[str, object]:
        return {"method": self.method, "allowed": self.allowed}


class RateLimited(QChainError):
    code = "rate-limited"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many requests from this address; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s

    def fields(self) -> dict[str, object]:
        return {"retry_after": self.retry_after_s}


class CommitTimeout(QChainError):
    """`?wait=commit` gave up; the transaction is still pending and may commit later."""

    code = "commit-timeout"

    def __init__(self, tx_hash: str, timeout_s: float) -> None:
        super().__init__(f"transaction {tx_hash} not committed within {timeout_s} s")
        self.tx_hash = tx_hash
        self.timeout_s = timeout_s

    def fields(self) -> dict[str, object]:
        return {"tx_hash": self.tx_hash, "tx_status": "pending", "timeout": self.timeout_s}


class NotReady(QChainError):
    code = "not-ready"

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("node is not ready: " + "; ".join(reasons))
        self.reasons = reasons

    def fields(self) -> dict[str, object]:
        return {"reasons": self.reasons}


class InternalError(QChainError):
    """Something went wrong that is the node's fault; the node's log has the details."""

    code = "internal-error"


class Unauthorized(QChainError):
    """An admin request without the admin API's bearer token."""

    code = "unauthorized"

    def __init__(self) -> None:
        super().__init__("a valid bearer token is required")


class InvalidRequest(QChainError):
    """An admin request body that is not what the route takes."""

    code = "invalid-request"


class UnknownByzantineMode(InvalidRequest):
    """A Byzantine mode the admin API does not know."""

    def __init__(self, mode: object, modes: tuple[str, ...]) -> None:
        super().__init__(f"mode must be one of {', '.join(modes)} or null")
        self.mode = mode
        self.modes = modes


class InvalidFaultRules(InvalidRequest):
    """Transport fault rules that do not parse; `field` names the offending one."""

    code = "invalid-fault-rules"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class ByzantineDisabled(QChainError):
    """A Byzantine mode asked of a node not started with the devnet flag."""

    code = "byzantine-disabled"

    def __init__(self) -> None:
        super().__init__("start the node with admin.byzantine = true (devnets only)")
