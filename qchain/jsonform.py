"""The JSON form of canonical values and transactions, for the HTTP API and the CLI.

Canonical values map to JSON one to one: integers, text, booleans, null and arrays as
themselves, byte strings as `{"hex": "..."}`. Struct fields whose type is bytes (addresses,
keys, signatures, hashes) are plain lowercase hex strings, since their type is known.
Parsing is strict: unknown fields, floats and malformed hex are `CodecError`s.

JSON text from outside is read with `parse_json`, before anything else looks at it: it
must be UTF-8 (a byte order mark is allowed), nest at most `MAX_JSON_DEPTH` arrays and
objects deep (checked before parsing, so nesting can never exhaust the parser's
recursion), and hold no text with a lone surrogate (a `\\ud800` escape), no NaN or
Infinity and no number outside the 64-bit integer range. Anything else is an
`InvalidJson` naming the offending value.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

from qchain.codec import INT_MAX, INT_MIN, Value, is_unicode
from qchain.errors import CodecError, InvalidJson, JsonSyntaxError
from qchain.types import Transaction

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects in JSON input: far above what a document of the
API needs (a batch item's arguments are at most 20 deep), far below what would exhaust
the parser's recursion."""

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
    if isinstance(v, bytes):
        return {"hex": v.hex()}
    if isinstance(v, list | tuple):
        return [value_to_json(x) for x in v]
    return v


def value_from_json(j: object, path: str = "value", depth: int = 0) -> Value:
    if depth > 16:
        raise CodecError(f"{path}: nested too deeply")
    if j is None or type(j) in (bool, str):
        return j  # type: ignore[return-value]
    if type(j) is int:
        if not INT_MIN <= j <= INT_MAX:
            raise CodecError(f"{path}: integer out of the 64-bit range")
        return j
    if isinstance(j, list):
        return [value_from_json(x, f"{path}[{i}]", depth + 1) for i, x in enumerate(j)]
    if isinstance(j, dict) and set(j) == {"hex"}:
        return hex_field(j["hex"], path)
    raise CodecError(f"{path}: {type(j).__name__} is not a canonical value")


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
    return Transaction.from_wire(wire)


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
