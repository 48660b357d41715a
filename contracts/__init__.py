"""The pilot platform's application: native contracts (membership, notary, voucher,
validators) and deterministic block execution over a state view. Pure: no disk, network,
clock or randomness. `contracts/README.md` describes the API the node uses."""

from contracts.execution import (
    BlockContext,
    BlockResult,
    Rejected,
    app_hash,
    build_block,
    check_inclusion,
    check_sender,
    execute_block,
    validate_block,
)
from contracts.genesis import Genesis, GenesisState, init_state, parse_genesis
from contracts.query import query
from contracts.registry import DEFAULT_REGISTRY
from contracts.runtime import named_args
from contracts.state import Overlay, StateSource, WriteSet, write_set_to_batch

__all__ = [
    "DEFAULT_REGISTRY",
    "BlockContext",
    "BlockResult",
    "Genesis",
    "GenesisState",
    "Overlay",
    "Rejected",
    "StateSource",
    "WriteSet",
    "app_hash",
    "build_block",
    "check_inclusion",
    "check_sender",
    "execute_block",
    "init_state",
    "named_args",
    "parse_genesis",
    "query",
    "validate_block",
    "write_set_to_batch",
]
