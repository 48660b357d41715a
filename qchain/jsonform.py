"""The JSON forms of qchain's values and of the node API's documents: the one module the
node's HTTP layer, the client SDK and the CLI all use.

Canonical values (contract arguments, results and event data) map to JSON one to one:
integers, text, booleans, null and arrays as themselves, byte strings as
`{"hex": "..."}`, at any depth and whether arguments are given by position or by name.
Fields whose type is bytes (addresses, keys, signatures, hashes) are plain lowercase hex
strings, since their type is known; so are byte strings in the node's own documents
(status, accounts, events, problem members), written by `fields_to_json`. Parsing is
strict: unknown fields, floats and malformed hex are `CodecError`s.

JSON text from outside is read with `parse_json`, before anything else looks at it: it
must be UTF-8 (a byte order mark is allowed), nest at most `MAX_JSON_DEPTH` arrays and
objects deep (checked before parsing, so nesting can never exhaust the parser's
recursion), and hold no text with a lone surrogate (a `\\ud800` escape), no NaN or
Infinity and no number outside the 64-bit integer range. Anything else is an
`InvalidJson` naming the offending value.

The API's documents (transactions, block headers, blocks, receipts, commit certificates,
receipt proofs) have `*_to_json` and `*_from_json` here; a `*_from_json` checks what it
builds as decoding the canonical bytes would.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterator, Mapping
from itertools import accumulate
from typing import Any

from qchain.codec import INT_MAX, INT_MIN, Value, is_unicode
from qchain.errors import CodecError, InvalidJson, JsonSyntaxError
from qchain.merkle import MerkleProof
from qchain.types import (
    Block,
    BlockHeader,
    CommitCertificate,
    CommitSignature,
    Event,
    Receipt,
    ReceiptProof,
    Transaction,
    decode_transaction,
)

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects in JSON input: far above what a document of the
API needs (a batch item's arguments are at most 20 deep), far below what would exhaust
the parser's recursion."""

MAX_VALUE_DEPTH = 16
"""Deepest nesting of arrays in a canonical value's JSON form."""

MSGPACK = "application/msgpack"
"""Media type of canonical bytes (transactions, receipt proofs) on the API."""
PROBLEM_JSON = "application/problem+json"
"""Media type of the API's error documents (RFC 9457)."""

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_MAX_INT_TEXT = len(str(INT_MIN))


class _Refused:
    """Stands in for a number the parser must not turn into a value; `parse_json` then
    reports it with its position."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def parse_json(data: bytes | str, where: str = "body", max_depth: int = MAX_JSON_DEPTH) -> Any:
    """JSON text from outside as a value, or `InvalidJson` (`JsonSyntaxError` for text
    that is not JSON at all); `where` names the input in messages."""
    if isinstance(data, bytes):
        try:
            text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidJson(
                where, f"not valid UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start})"
            ) from None
    elif is_unicode(data):
        text = data
    else:
        raise InvalidJson(where, "text holds a lone surrogate (not Unicode)")
    if not text.strip():
        raise JsonSyntaxError(where, "empty, expected a JSON document")
    if _too_deep(text, max_depth):
        raise InvalidJson(where, f"arrays and objects nested deeper than {max_depth} levels")
    refused: list[_Refused] = []

    def refuse(reason: str) -> _Refused:
        marker = _Refused(reason)
        refused.append(marker)
        return marker

    def parse_int(s: str) -> int | _Refused:
        if len(s) <= _MAX_INT_TEXT:
            v = int(s)
            if INT_MIN <= v <= INT_MAX:
                return v
            return refuse(f"integer {s} is outside the 64-bit range")
        return refuse(f"integer of {len(s.lstrip('-'))} digits is outside the 64-bit range")

    def parse_float(s: str) -> float | _Refused:
        v = float(s)
        if math.isfinite(v):
            return v
        shown = s if len(s) <= 40 else s[:40] + "..."
        return refuse(f"number {shown} is out of range")

    def parse_constant(name: str) -> _Refused:
        return refuse(f"{name} is not a JSON number")

    try:
        doc = json.loads(
            text, parse_int=parse_int, parse_float=parse_float, parse_constant=parse_constant
        )
    except json.JSONDecodeError as e:
        raise JsonSyntaxError(
            where, f"not JSON: {e.msg} (line {e.lineno}, column {e.colno})"
        ) from None
    if refused or _SURROGATE_ESCAPE.search(text):
        bad = _find_refused(doc)
        if bad is not None:
            tokens, reason = bad
            raise InvalidJson(where, reason, _pointer(reversed(tokens)))
    return doc


def _too_deep(text: str, max_depth: int) -> bool:
    """Whether arrays and objects nest deeper than max_depth: brackets counted outside
    strings, without parsing (for text that is not JSON this may overcount, never
    undercount what the parser would enter before failing)."""
    if text.count("[") + text.count("{") <= max_depth:
        return False
    skeleton = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_DEPTH_STEP.__getitem__, skeleton)), default=0) > max_depth


def _find_refused(v: object) -> tuple[list[str], str] | None:
    """The first refused value in a parsed document: its path (innermost key first) and
    why. The document nests at most MAX_JSON_DEPTH deep."""
    if isinstance(v, _Refused):
        return [], v.reason
    if type(v) is str:
        return None if is_unicode(v) else ([], "text holds a lone surrogate (not Unicode)")
    if type(v) is list:
        for i, x in enumerate(v):
            found = _find_refused(x)
            if found is not None:
                found[0].append(str(i))
                return found
    elif type(v) is dict:
        for k, x in v.items():
            if not is_unicode(k):
                return [], "an object key holds a lone surrogate (not Unicode)"
            found = _find_refused(x)
            if found is not None:
                found[0].append(k)
                return found
    return None


def _pointer(tokens: Any, limit: int = 200) -> str:
    text = "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens)
    return text if len(text) <= limit else text[:limit] + "..."


def value_to_json(v: object) -> Any:
    """A canonical value (or a query result) as JSON: byte strings as `{"hex": ...}`,
    sequences as arrays, mappings and structs (dataclasses) as objects of their items
    and fields; anything else as `fields_to_json` writes it."""
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, bytes):
        return {"hex": v.hex()}
    if isinstance(v, list | tuple):
        return [value_to_json(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): value_to_json(x) for k, x in v.items()}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: value_to_json(getattr(v, f.name)) for f in dataclasses.fields(v)}
    return fields_to_json(v)


def fields_to_json(v: object) -> Any:
    """A value of the node's own documents (status, accounts, events, problem members) as
    JSON: byte strings as plain hex, since each field's type is known; mappings and
    sequences recursively, non-finite floats as null, anything else as its text."""
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, Mapping):
        return {str(k): fields_to_json(x) for k, x in v.items()}
    if isinstance(v, list | tuple | set | frozenset):
        return [fields_to_json(x) for x in v]
    return str(v)


def value_from_json(j: object, path: str = "value", depth: int = 0) -> Value:
    """The JSON form of a canonical value as the value; byte strings must be
    `{"hex": ...}` (a bare string is text)."""
    if depth > MAX_VALUE_DEPTH:
        raise CodecError(f"{path}: nested too deeply")
    if j is None or type(j) in (bool, str):
        return j  # type: ignore[return-value]
    if type(j) is int:
        if not INT_MIN <= j <= INT_MAX:
            raise CodecError(f"{path}: integer out of the 64-bit range")
        return j
    if isinstance(j, list):
        return [value_from_json(x, f"{path}[{i}]", depth + 1) for i, x in enumerate(j)]
    if _is_hex_object(j):
        return hex_field(j["hex"], path)  # type: ignore[index]
    raise CodecError(f"{path}: {type(j).__name__} is not a canonical value")


def named_value_from_json(j: object, path: str = "value", depth: int = 0) -> object:
    """A named argument from JSON: as `value_from_json`, except that objects other than
    `{"hex": ...}` are kept (with their items converted), since a named argument may be a
    struct given by its fields. Floats are refused."""
    if depth > MAX_VALUE_DEPTH:
        raise CodecError(f"{path}: nested too deeply")
    if isinstance(j, dict) and not _is_hex_object(j):
        return {k: named_value_from_json(x, f"{path}.{k}", depth + 1) for k, x in j.items()}
    if isinstance(j, list):
        return [named_value_from_json(x, f"{path}[{i}]", depth + 1) for i, x in enumerate(j)]
    if isinstance(j, float):
        raise CodecError(f"{path}: floats are not allowed")
    return value_from_json(j, path, depth)


def _is_hex_object(j: object) -> bool:
    return isinstance(j, dict) and set(j) == {"hex"}


def hex_field(s: object, path: str) -> bytes:
    if not isinstance(s, str):
        raise CodecError(f"{path}: expected a hex string")
    text = s[2:] if s.startswith("0x") else s
    try:
        return bytes.fromhex(text)
    except ValueError as e:
        raise CodecError(f"{path}: not valid hex") from e


_TX_BYTES = {"sender", "public_key", "signature"}


def tx_to_json(tx: Transaction) -> dict[str, Any]:
    return {
        "chain_id": tx.chain_id,
        "sender": tx.sender.hex(),
        "nonce": tx.nonce,
        "contract": tx.contract,
        "method": tx.method,
        "args": value_to_json(tx.args),
        "expiry_height": tx.expiry_height,
        "scheme": tx.scheme,
        "public_key": tx.public_key.hex(),
        "signature": tx.signature.hex(),
    }


def tx_from_json(doc: object) -> Transaction:
    """Parse the JSON form of a transaction; the result is checked like decoded bytes."""
    if not isinstance(doc, dict):
        raise CodecError("transaction: expected a JSON object")
    fields = list(tx_to_json_fields())
    unknown = set(doc) - set(fields)
    if unknown:
        raise CodecError(f"transaction: unknown field {sorted(unknown)[0]!r}")
    wire: list[object] = []
    for name in fields:
        if name not in doc:
            if name in ("public_key", "signature"):
                wire.append(b"")
                continue
            if name == "expiry_height":
                wire.append(0)
                continue
            raise CodecError(f"transaction.{name}: missing")
        raw = doc[name]
        if name in _TX_BYTES:
            wire.append(hex_field(raw, f"transaction.{name}"))
        elif name == "args":
            wire.append(value_from_json(raw, "transaction.args"))
        else:
            wire.append(raw)
    tx = Transaction.from_wire(wire)
    # The bounds of decoding (`TX_LIMITS`: depth, sizes, array lengths), as for bytes.
    return decode_transaction(tx.encode())


def tx_to_json_fields() -> tuple[str, ...]:
    return (
        "chain_id",
        "sender",
        "nonce",
        "contract",
        "method",
        "args",
        "expiry_height",
        "scheme",
        "public_key",
        "signature",
    )


# --- documents of the API -----------------------------------------------------------------


def header_to_json(h: BlockHeader) -> dict[str, Any]:
    return {
        "hash": h.hash.hex(),
        "chain_id": h.chain_id,
        "height": h.height,
        "round": h.round,
        "time": h.time,
        "parent": h.parent.hex(),
        "proposer": h.proposer,
        "tx_root": h.tx_root.hex(),
        "receipts_root": h.receipts_root.hex(),
        "app_hash": h.app_hash.hex(),
    }


def block_to_json(b: Block) -> dict[str, Any]:
    return {
        "hash": b.hash.hex(),
        "height": b.height,
        "header": header_to_json(b.header),
        "txs": [{"hash": tx.hash.hex(), **tx_to_json(tx)} for tx in b.txs],
    }


def receipt_outcome_to_json(r: Receipt) -> dict[str, Any]:
    """A receipt's JSON form without its events: what the transaction came to."""
    return {
        "tx_hash": r.tx_hash.hex(),
        "height": r.height,
        "index": r.index,
        "ok": r.ok,
        "code": r.code,
        "message": r.message,
        "result": value_to_json(r.result),
    }


def receipt_to_json(r: Receipt) -> dict[str, Any]:
    return {
        **receipt_outcome_to_json(r),
        "events": [
            {"contract": e.contract, "name": e.name, "data": value_to_json(e.data)}
            for e in r.events
        ],
    }


def certificate_to_json(c: CommitCertificate) -> dict[str, Any]:
    return {
        "height": c.height,
        "block_hash": c.block_hash.hex(),
        "signatures": [
            {"validator": s.validator, "signature": s.signature.hex()} for s in c.signatures
        ],
    }


def receipt_proof_to_json(p: ReceiptProof) -> dict[str, Any]:
    return {
        "receipt": receipt_to_json(p.receipt),
        "proof": {
            "index": p.proof.index,
            "size": p.proof.size,
            "path": [x.hex() for x in p.proof.path],
        },
        "header": header_to_json(p.header),
        "certificate": certificate_to_json(p.certificate),
    }


def expect_object(doc: object, path: str) -> dict[str, Any]:
    """doc, which must be a JSON object; `path` names it in the error."""
    if not isinstance(doc, dict):
        raise CodecError(f"{path}: expected a JSON object")
    return doc


def expect_member(doc: dict[str, Any], name: str, path: str) -> Any:
    """The member `name` of doc, which must be there."""
    if name not in doc:
        raise CodecError(f"{path}.{name}: missing")
    return doc[name]


def expect_array(doc: dict[str, Any], name: str, path: str) -> list[Any]:
    """The member `name` of doc, which must be there and be an array."""
    items = expect_member(doc, name, path)
    if not isinstance(items, list):
        raise CodecError(f"{path}.{name}: expected an array")
    return items


def expect_objects(
    doc: dict[str, Any], name: str, path: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The items of the array member `name` of doc, each with the path that names it in
    errors; each must be an object (checked as it is reached, so errors come in order)."""
    items = expect_array(doc, name, path)
    for i, item in enumerate(items):
        where = f"{path}.{name}[{i}]"
        yield where, expect_object(item, where)


def header_from_json(doc: object) -> BlockHeader:
    d = expect_object(doc, "header")
    hexes = {"parent", "tx_root", "receipts_root", "app_hash"}
    wire = [
        hex_field(expect_member(d, f, "header"), f"header.{f}")
        if f in hexes
        else expect_member(d, f, "header")
        for f in (
            "chain_id",
            "height",
            "round",
            "time",
            "parent",
            "proposer",
            "tx_root",
            "receipts_root",
            "app_hash",
        )
    ]
    header = BlockHeader.from_wire(wire)
    if "hash" in d and hex_field(d["hash"], "header.hash") != header.hash:
        raise CodecError("header.hash does not match the header's fields")
    return header


def block_from_json(doc: object) -> Block:
    d = expect_object(doc, "block")
    parsed: list[Transaction] = []
    for where, t in expect_objects(d, "txs", "block"):
        item = dict(t)
        claimed = item.pop("hash", None)
        tx = tx_from_json(item)
        if claimed is not None and hex_field(claimed, f"{where}.hash") != tx.hash:
            raise CodecError(f"{where}.hash does not match the transaction")
        parsed.append(tx)
    block = Block(header_from_json(expect_member(d, "header", "block")), tuple(parsed))
    block.check_body()
    return block


def receipt_from_json(doc: object) -> Receipt:
    d = expect_object(doc, "receipt")
    evs = [
        Event.from_wire(
            [
                expect_member(ed, "contract", "event"),
                expect_member(ed, "name", "event"),
                value_from_json(expect_member(ed, "data", "event"), f"{where}.data"),
            ]
        )
        for where, ed in expect_objects(d, "events", "receipt")
    ]
    return Receipt.from_wire(
        [
            hex_field(expect_member(d, "tx_hash", "receipt"), "receipt.tx_hash"),
            expect_member(d, "height", "receipt"),
            expect_member(d, "index", "receipt"),
            expect_member(d, "ok", "receipt"),
            expect_member(d, "code", "receipt"),
            expect_member(d, "message", "receipt"),
            value_from_json(expect_member(d, "result", "receipt"), "receipt.result"),
            [e.to_wire() for e in evs],
        ]
    )


def certificate_from_json(doc: object) -> CommitCertificate:
    d = expect_object(doc, "certificate")
    parsed = [
        CommitSignature.from_wire(
            [
                expect_member(sd, "validator", "signature"),
                hex_field(expect_member(sd, "signature", "signature"), "signature"),
            ]
        ).to_wire()
        for _, sd in expect_objects(d, "signatures", "certificate")
    ]
    return CommitCertificate.from_wire(
        [
            expect_member(d, "height", "certificate"),
            hex_field(expect_member(d, "block_hash", "certificate"), "certificate.block_hash"),
            parsed,
        ]
    )


def receipt_proof_from_json(doc: object) -> ReceiptProof:
    d = expect_object(doc, "receipt proof")
    p = expect_object(expect_member(d, "proof", "receipt proof"), "proof")
    path = expect_array(p, "path", "proof")
    proof = MerkleProof.from_wire(
        [
            expect_member(p, "index", "proof"),
            expect_member(p, "size", "proof"),
            [hex_field(x, "proof.path") for x in path],
        ]
    )
    return ReceiptProof(
        receipt_from_json(expect_member(d, "receipt", "receipt proof")),
        proof,
        header_from_json(expect_member(d, "header", "receipt proof")),
        certificate_from_json(expect_member(d, "certificate", "receipt proof")),
    )
