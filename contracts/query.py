"""Read-only queries over committed state: the one entry point the node's API calls."""

from __future__ import annotations

from collections.abc import Mapping

from contracts.registry import DEFAULT_REGISTRY
from contracts.runtime import Kind, QueryContext, Registry, named_args
from contracts.state import StateReader, StateSource


def query(
    source: StateSource,
    contract: str,
    method: str,
    args: list[object] | Mapping[str, object],
    *,
    registry: Registry = DEFAULT_REGISTRY,
) -> object:
    """Run a query method on source (the store, or an overlay). `args` is the positional
    list or a mapping of named arguments (bytes as bytes, or as hex text from a URL).
    Raises a `ContractError` (`UnknownContract`, `UnknownMethod`, `ArgumentError`,
    `NotFound`, ...); the result may hold bytes, structs and dicts:
    `qchain.jsonform.value_to_json` makes it JSON-ready."""
    m = registry.method(contract, method, Kind.QUERY)
    positional = named_args(m, args) if isinstance(args, Mapping) else args
    parsed = m.parse_args(positional)
    return m.handler(QueryContext(contract, StateReader(source, contract), source), parsed)
