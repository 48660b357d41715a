"""Parsers of the API's path, query and header parameters.

Each takes the parameter's text as the request gave it and returns the typed value, or
raises `BadParameter` naming the parameter and why. Query arguments of contract queries are
read as JSON when they parse (`{"hex": ...}` becomes bytes), as text otherwise.
"""

from __future__ import annotations

import math
import re

from aiohttp import web

from qchain.errors import BadParameter, CodecError, InvalidJson, JsonSyntaxError
from qchain.jsonform import MSGPACK, named_value_from_json, parse_json

MSGPACK_TYPES = frozenset({MSGPACK, "application/x-msgpack", "application/octet-stream"})
"""Request media types taken as canonical bytes."""

_HEX64 = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
_HEX40 = re.compile(r"^(0x)?[0-9a-fA-F]{40}$")
_UINT = re.compile(r"^[0-9]{1,20}$")


def parse_hash(text: str, name: str = "hash") -> bytes:
    """A 32-byte hash from 64 hex digits (`0x` allowed)."""
    if not _HEX64.match(text):
        raise BadParameter(name, "expected 64 hex digits")
    return bytes.fromhex(text.removeprefix("0x"))


def parse_address(text: str) -> bytes:
    """A 20-byte address from 40 hex digits (`0x` allowed)."""
    if not _HEX40.match(text):
        raise BadParameter("address", "expected 40 hex digits")
    return bytes.fromhex(text.removeprefix("0x"))


def parse_uint(text: str, name: str, lo: int = 0, hi: int = 2**64 - 1) -> int:
    """A decimal integer in [lo, hi]."""
    if not _UINT.match(text):
        raise BadParameter(name, "expected a non-negative integer")
    value = int(text)
    if not lo <= value <= hi:
        raise BadParameter(name, f"must be between {lo} and {hi}")
    return value


def parse_seconds(text: str, name: str, hi: float) -> float:
    """A number of seconds above 0 and at most hi."""
    try:
        value = float(text)
    except ValueError:
        raise BadParameter(name, "expected a number of seconds") from None
    if not (math.isfinite(value) and 0 < value <= hi):
        raise BadParameter(name, f"must be above 0 and at most {hi}")
    return value


def query_arg(text: str, name: str) -> object:
    """A contract query's argument: its JSON value if the text parses as JSON (byte strings
    as `{"hex": ...}`, floats refused), else the text itself."""
    try:
        value = parse_json(text, name)
    except JsonSyntaxError:
        return text
    except InvalidJson as e:
        at = f" (at {e.pointer})" if e.pointer else ""
        raise BadParameter(name, e.reason + at) from None
    try:
        return named_value_from_json(value, name)
    except CodecError as e:
        raise BadParameter(name, e.message.removeprefix(f"{name}: ")) from None


def media_type(request: web.Request) -> str:
    """The request body's media type, lowercase and without parameters. aiohttp parses
    the header with the standard library's email package, which raises assorted
    exceptions on malformed values (HeaderParseError, IndexError, ...): all a 400."""
    try:
        return request.content_type
    except Exception as e:
        raise BadParameter("Content-Type", f"does not parse ({type(e).__name__})") from None


def wants_msgpack(request: web.Request) -> bool:
    """Whether the Accept header asks for canonical bytes."""
    for part in request.headers.get("Accept", "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media.lower() in (MSGPACK, "application/x-msgpack") and "q=0" not in params:
            return True
    return False
