"""The JSON form of canonical values and transactions, for the HTTP API and the CLI.

Canonical values map to JSON one to one: integers, text, booleans, null and arrays as
themselves, byte strings as `{"hex": "..."}`. Struct fields whose type is bytes (addresses,
keys, signatures, hashes) are plain lowercase hex strings, since their type is known.
Parsing is strict: unknown fields, floats and malformed hex are `CodecError`s.
"""

from __future__ import annotations

from typing import Any

from qchain.codec import INT_MAX, INT_MIN, Value
from qchain.errors import CodecError
from qchain.types import Transaction


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
