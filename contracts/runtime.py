"""The contract runtime: native contracts registered by name, with typed methods.

A `Contract` has methods of two kinds: transactions (`Contract.tx`), which run inside a
block and may write state, and queries (`Contract.query`), which read committed state. Each
method declares its arguments as a `Struct` subclass: the transaction's positional `args`
list is checked against it field by field (types, lengths, ranges) and a mismatch is an
`ArgumentError` naming the field. A transaction method may also declare the roles allowed to
call it; the runtime checks them before the method runs (`PermissionDenied`).

A transaction method gets a `CallContext`: the sender's address and roles, the block's
height and time, the transaction hash, a writable view of its own contract's state, read-only
views of other contracts, and `emit` for events that go into the receipt. A query gets a
`QueryContext` with read-only views only. A contract may also have a begin-block hook that
runs before the block's first transaction (voucher expiry uses it).

`named_args` turns an object of named arguments into the positional list a transaction
carries. Byte strings arrive as bytes (the JSON layer, `qchain.jsonform`, has already turned
`{"hex": ...}` into bytes) or, from a URL query parameter, which is text, as hex text.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from contracts.state import Overlay, StateReader, StateSource, StateWriter
from qchain.codec import Struct, encode_value
from qchain.errors import (
    ArgumentError,
    CodecError,
    PermissionDenied,
    UnknownContract,
    UnknownMethod,
)
from qchain.types import Event

A = TypeVar("A", bound=Struct)

MAX_EVENTS_PER_TX = 1024


class Kind(StrEnum):
    TX = "tx"
    QUERY = "query"


@dataclass(frozen=True)
class NoArgs(Struct):
    """The argument schema of a method without arguments."""


class _ReadsOthers:
    """`read`, which every context has: another contract's state, read-only."""

    source: StateSource

    def read(self, contract: str) -> StateReader:
        """Read-only view of another contract's state, as this context sees it."""
        return StateReader(self.source, contract)


@dataclass
class CallContext(_ReadsOthers):
    """What a transaction method sees."""

    contract: str
    sender: bytes
    roles: frozenset[str]
    chain_id: str
    height: int
    time: int
    """Block time, milliseconds since the Unix epoch (from the header)."""
    tx_hash: bytes
    state: StateWriter
    """This contract's state, inside the transaction's own overlay."""
    source: StateSource
    events: list[Event] = field(default_factory=list)

    def emit(self, name: str, data: Sequence[object]) -> None:
        if len(self.events) >= MAX_EVENTS_PER_TX:
            raise RuntimeError("too many events in one call")
        self.events.append(Event(self.contract, name, list(data)))


@dataclass
class BlockHookContext(_ReadsOthers):
    """What a begin-block hook sees."""

    contract: str
    chain_id: str
    height: int
    time: int
    state: StateWriter
    source: StateSource
    events: list[Event] = field(default_factory=list)

    def emit(self, name: str, data: Sequence[object]) -> None:
        self.events.append(Event(self.contract, name, list(data)))


@dataclass(frozen=True)
class QueryContext(_ReadsOthers):
    """What a query sees: committed state, read-only."""

    contract: str
    state: StateReader
    source: StateSource


TxHandler = Callable[[CallContext, Any], object]
QueryHandler = Callable[[QueryContext, Any], object]
BlockHook = Callable[[BlockHookContext], None]


@dataclass(frozen=True)
class Method:
    contract: str
    name: str
    kind: Kind
    args: type[Struct]
    handler: Callable[..., object]
    roles: frozenset[str] | None
    """Roles allowed to call (any one suffices); None: any active member."""
    doc: str

    @property
    def params(self) -> tuple[str, ...]:
        return field_names(self.args)

    def parse_args(self, args: object) -> Struct:
        """Check a positional argument list against the schema."""
        return parse_args(self.args, args)

    def check_roles(self, roles: frozenset[str]) -> None:
        if self.roles is not None and not roles & self.roles:
            need = " or ".join(sorted(self.roles))
            raise PermissionDenied(f"{self.contract}.{self.name}", f"requires role {need}")


class Contract:
    """A named native contract and its methods."""

    def __init__(self, name: str, doc: str = "") -> None:
        self.name = name
        self.doc = doc
        self._methods: dict[tuple[Kind, str], Method] = {}
        self.begin_block: BlockHook | None = None

    def _add(
        self,
        kind: Kind,
        name: str,
        args: type[Struct],
        fn: Callable[..., object],
        roles: Iterable[str] | None,
    ) -> None:
        if (kind, name) in self._methods:
            raise ValueError(f"{self.name}.{name} is declared twice")
        self._methods[(kind, name)] = Method(
            self.name,
            name,
            kind,
            args,
            fn,
            None if roles is None else frozenset(roles),
            (fn.__doc__ or "").strip(),
        )

    def tx(
        self, name: str, args: type[A], *, roles: Iterable[str] | None = None
    ) -> Callable[[Callable[[CallContext, A], object]], Callable[[CallContext, A], object]]:
        """Register a transaction method."""

        def deco(fn: Callable[[CallContext, A], object]) -> Callable[[CallContext, A], object]:
            self._add(Kind.TX, name, args, fn, roles)
            return fn

        return deco

    def query(
        self, name: str, args: type[A]
    ) -> Callable[[Callable[[QueryContext, A], object]], Callable[[QueryContext, A], object]]:
        """Register a read-only query."""

        def deco(fn: Callable[[QueryContext, A], object]) -> Callable[[QueryContext, A], object]:
            self._add(Kind.QUERY, name, args, fn, None)
            return fn

        return deco

    def on_begin_block(self, fn: BlockHook) -> BlockHook:
        """Register the hook that runs before the first transaction of every block."""
        self.begin_block = fn
        return fn

    def method(self, name: str, kind: Kind) -> Method:
        m = self._methods.get((kind, name))
        if m is None:
            raise UnknownMethod(self.name, name, kind.value)
        return m

    def methods(self) -> list[Method]:
        return [self._methods[k] for k in sorted(self._methods)]


class Registry:
    """The contracts a chain runs, in a fixed order (the order of begin-block hooks)."""

    def __init__(self, contracts: Sequence[Contract]) -> None:
        self._contracts = {c.name: c for c in contracts}
        if len(self._contracts) != len(contracts):
            raise ValueError("two contracts with one name")
        self.order = tuple(c.name for c in contracts)

    def get(self, name: str) -> Contract:
        c = self._contracts.get(name)
        if c is None:
            raise UnknownContract(name)
        return c

    def method(self, contract: str, name: str, kind: Kind) -> Method:
        return self.get(contract).method(name, kind)

    def contracts(self) -> list[Contract]:
        return [self._contracts[n] for n in self.order]

    def run_begin_block(
        self, overlay: Overlay, chain_id: str, height: int, time: int
    ) -> list[Event]:
        events: list[Event] = []
        for c in self.contracts():
            if c.begin_block is not None:
                hook_ctx = BlockHookContext(
                    c.name, chain_id, height, time, StateWriter(overlay, c.name), overlay
                )
                c.begin_block(hook_ctx)
                events.extend(hook_ctx.events)
        return events


def field_names(cls: type[Struct]) -> tuple[str, ...]:
    """The field names of a struct class, in declaration (wire) order."""
    return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]


def parse_args(cls: type[A], args: object) -> A:
    """`cls` built from a positional argument list; `ArgumentError` names the bad field."""
    if type(args) is not list:
        raise ArgumentError("args", f"expected a list of arguments, got {type(args).__name__}")
    n = len(field_names(cls))
    if len(args) != n:
        raise ArgumentError("args", f"expected {n} arguments, got {len(args)}")
    try:
        return cls.from_wire(args, "args")
    except CodecError as e:
        where, _, reason = e.message.partition(": ")
        name = where.removeprefix("args.") if where.startswith("args.") else "args"
        raise ArgumentError(name, reason or e.message) from None


# --- JSON -------------------------------------------------------------------------------


def named_args(method: Method, named: Mapping[str, object]) -> list[object]:
    """The positional argument list for a JSON object of named arguments. Byte strings are
    given as hex (an optional `0x` prefix is accepted), nested structs as objects or
    arrays. The result is also checked against the schema."""
    hints = typing.get_type_hints(method.args, include_extras=True)
    names = method.params
    for key in named:
        if key not in names:
            raise ArgumentError(key, "unknown parameter")
    out: list[object] = []
    for name in names:
        if name not in named:
            raise ArgumentError(name, "missing")
        out.append(_from_json(hints[name], named[name], name))
    parse_args(method.args, out)
    return out


def _from_json(tp: Any, value: object, path: str) -> object:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _from_json(typing.get_args(tp)[0], value, path)
    if tp is bytes:
        if isinstance(value, bytes):
            return value
        if not isinstance(value, str):
            raise ArgumentError(path, "expected a hex string")
        try:
            return bytes.fromhex(value.removeprefix("0x"))
        except ValueError:
            raise ArgumentError(path, "not a hex string") from None
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = next(a for a in typing.get_args(tp) if a is not type(None))
        return _from_json(inner, value, path)
    if origin is tuple:
        if not isinstance(value, list):
            raise ArgumentError(path, "expected an array")
        item = typing.get_args(tp)[0]
        return [_from_json(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(tp, type) and issubclass(tp, Struct):
        hints = typing.get_type_hints(tp, include_extras=True)
        fields = field_names(tp)
        if isinstance(value, list):
            if len(value) != len(fields):
                raise ArgumentError(path, f"expected {len(fields)} items")
            return [
                _from_json(hints[f], v, f"{path}.{f}") for f, v in zip(fields, value, strict=True)
            ]
        if not isinstance(value, dict):
            raise ArgumentError(path, "expected an object")
        for key in value:
            if key not in fields:
                raise ArgumentError(f"{path}.{key}", "unknown field")
        missing = [f for f in fields if f not in value]
        if missing:
            raise ArgumentError(f"{path}.{missing[0]}", "missing")
        return [_from_json(hints[f], value[f], f"{path}.{f}") for f in fields]
    return value


def canonical_result(value: object) -> object:
    """A transaction result as a canonical value (structs become arrays)."""
    if isinstance(value, Struct):
        return value.to_wire()
    encode_value(value)
    return value
