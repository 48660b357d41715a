"""Every transaction a node admits decodes inside a block.

A transaction is decoded alone under `TX_LIMITS` (the API, a peer's batch) and inside a
block under `BLOCK_LIMITS`, two levels down. Before, a lone transaction could hold an
array of up to 100,000 items while a block allowed 10,000: a partner's one transaction
was admitted, and every block that carried it failed to decode at every follower, so each
leader that proposed it lost its round. The JSON form was not bounded by `TX_LIMITS` at
all. (Nesting is bounded the same way alone and in a block: by the argument value's own
depth check.)"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qchain.errors import CodecError
from qchain.jsonform import tx_from_json, tx_to_json
from qchain.keys import Scheme, SigningKey
from qchain.types import (
    BLOCK_LIMITS,
    MAX_BLOCK_SIZE,
    TX_LIMITS,
    Block,
    BlockHeader,
    Transaction,
    decode_transaction,
    new_transaction,
)

KEY = SigningKey.generate(Scheme.ED25519)
HEADER = BlockHeader("c", 1, 0, 0, b"\0" * 32, 0, b"\0" * 32, b"\0" * 32, b"\0" * 32)


def _tx(args: list[Any]) -> Transaction:
    return new_transaction(
        KEY, chain_id="c", nonce=0, contract="notary", method="anchor", args=args
    )


def _in_block(tx: Transaction) -> Block:
    return Block.decode(Block(HEADER, (tx,)).encode())


def test_a_lone_transaction_is_bounded_no_looser_than_one_inside_a_block() -> None:
    assert TX_LIMITS.max_array_len <= BLOCK_LIMITS.max_array_len
    assert TX_LIMITS.max_bytes_len <= BLOCK_LIMITS.max_bytes_len
    assert TX_LIMITS.max_str_len <= BLOCK_LIMITS.max_str_len
    assert TX_LIMITS.max_size <= MAX_BLOCK_SIZE


def test_an_array_a_block_cannot_carry_is_refused_in_bytes_and_in_json() -> None:
    too_long = _tx([[0] * (BLOCK_LIMITS.max_array_len + 1)])
    with pytest.raises(CodecError):
        _in_block(too_long)
    with pytest.raises(CodecError):
        decode_transaction(too_long.encode())
    with pytest.raises(CodecError):
        tx_from_json(tx_to_json(too_long))
    longest = _tx([[0] * BLOCK_LIMITS.max_array_len])
    assert decode_transaction(longest.encode()) == longest
    assert _in_block(longest).txs == (longest,)


_leaf = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.booleans(),
    st.none(),
    st.binary(max_size=64),
    st.text(max_size=16),
)
_value = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.lists(st.integers(0, 3), min_size=9_990, max_size=10_010)
    ),
    max_leaves=20,
)


@settings(max_examples=25, deadline=None)
@given(st.lists(_value, max_size=3))
def test_whatever_decodes_alone_decodes_inside_a_block(args: list[Any]) -> None:
    try:
        tx = decode_transaction(_tx(args).encode())
    except CodecError:
        return
    assert _in_block(tx).txs == (tx,)
    assert tx_from_json(tx_to_json(tx)) == tx
