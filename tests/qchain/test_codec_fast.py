"""The codec's fast paths against its reference paths, on the types every transaction
passes through (a transaction, a block, a receipt, a batch, a consensus block).

The fast paths: msgspec's encoder instead of `msgpack.packb` (to encode, and to check that
decoded bytes are canonical), and structs built by filling their dict instead of calling
their `__init__`. The reference: `msgpack.packb`, and the field converters with error paths.
Both must give the same bytes for every value, and for any input (valid bytes, mutated
bytes, non-minimal headers) both accept with equal values, or both reject.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.messages import Block as ConsensusBlock
from node.wire import OriginBatch, TxBatch
from qchain.codec import (
    DEFAULT_LIMITS,
    U64,
    Limits,
    Struct,
    _fast_pack,
    _plain_init,
    decode_value,
    pack_checked,
    unpack_canonical,
)
from qchain.errors import CodecError
from qchain.keys import dev_key
from qchain.types import (
    BLOCK_LIMITS,
    TX_LIMITS,
    Block,
    BlockHeader,
    Receipt,
    Transaction,
    new_transaction,
    tx_root,
)
from tests.qchain.test_codec import (
    SETTINGS,
    alt_pack,
    blocks,
    hash32,
    receipts,
    transactions,
    u16,
    u64,
    values,
)

tx_bytes = st.lists(st.binary(max_size=300), min_size=1, max_size=5).map(tuple)
HOT: dict[type[Struct], tuple[st.SearchStrategy[Any], Limits]] = {
    Transaction: (transactions, TX_LIMITS),
    Block: (blocks, BLOCK_LIMITS),
    Receipt: (receipts, DEFAULT_LIMITS),
    TxBatch: (st.builds(TxBatch, txs=tx_bytes), DEFAULT_LIMITS),
    OriginBatch: (st.builds(OriginBatch, origin=u16, seq=u64, txs=tx_bytes), DEFAULT_LIMITS),
    ConsensusBlock: (
        st.builds(
            ConsensusBlock,
            height=u64,
            parent=hash32,
            round=u64,
            proposer=u16,
            body=st.binary(max_size=400),
        ),
        DEFAULT_LIMITS,
    ),
}
HOT_PARAMS = [pytest.param(cls, id=f"{cls.__module__}.{cls.__name__}") for cls in HOT]
REJECTED = "rejected"


def reference_encode(s: Struct) -> bytes:
    """The struct through the converters (with error paths) and msgpack.packb."""
    out: bytes = msgpack.packb(s._to_wire(type(s).__name__), use_bin_type=True)
    return out


def reference_decode(cls: type[Struct], data: bytes, limits: Limits) -> object:
    """msgpack.unpackb under the limits, msgpack.packb to check the bytes are canonical,
    and the converters with error paths: the struct, or REJECTED."""
    if not data or len(data) > limits.max_size:
        return REJECTED
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_bin_len=limits.max_bytes_len,
            max_str_len=limits.max_str_len,
            max_array_len=limits.max_array_len,
            max_map_len=0,
            max_ext_len=0,
        )
        if msgpack.packb(obj, use_bin_type=True) != data:
            return REJECTED
    except Exception:
        return REJECTED
    try:
        return cls._from_wire(obj, cls.__name__)
    except CodecError:
        return REJECTED


def fast_decode(cls: type[Struct], data: bytes, limits: Limits) -> object:
    try:
        return cls.decode(data, limits)
    except CodecError:
        return REJECTED


def assert_same_outcome(cls: type[Struct], data: bytes, limits: Limits) -> bool:
    """Both paths accept data with equal values (whose encoding is data), or both reject
    it; whether they accepted."""
    fast = fast_decode(cls, data, limits)
    assert fast == reference_decode(cls, data, limits)
    if fast is REJECTED:
        return False
    assert isinstance(fast, Struct)
    assert fast.encode() == data
    assert reference_encode(fast) == data
    return True


def mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.choice(["flip", "set", "insert", "delete", "marker"])
        pos = rng.randrange(len(b)) if b else 0
        if op == "flip" and b:
            b[pos] ^= 1 << rng.randrange(8)
        elif op == "set" and b:
            b[pos] = rng.randrange(256)
        elif op == "insert":
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 3)))
        elif op == "delete" and b:
            del b[pos]
        elif b:
            b[pos] = rng.choice([0x90, 0x91, 0xC0, 0xC4, 0xC7, 0xCC, 0xD9, 0xDC, 0xDD, 0x80])
    return bytes(b)


# --- packing ------------------------------------------------------------------------------


@SETTINGS
@given(values)
def test_fast_pack_gives_msgpack_bytes_for_every_canonical_value(v: Any) -> None:
    assert _fast_pack(v) == msgpack.packb(v, use_bin_type=True)
    assert pack_checked(v) == msgpack.packb(v, use_bin_type=True)


def test_fast_pack_gives_msgpack_bytes_at_every_header_boundary() -> None:
    edges = [0, 1, 31, 32, 127, 128, 255, 256, 2**15, 2**16 - 1, 2**16, 2**31, 2**32 - 1, 2**32]
    edges += [2**63 - 1, 2**63, 2**64 - 1]
    vals: list[object] = [None, True, False, [], (), -(2**63), -33, -32, -129, -128, -32769]
    for n in edges:
        vals += [n, -min(n, 2**63)]
    for n in (0, 1, 15, 16, 31, 32, 255, 256, 65535, 65536, 70000):
        vals += ["a" * n, "é" * n, b"b" * n]
        if n <= 65536:
            vals += [[None] * n, (True,) * n]
    for v in vals:
        assert _fast_pack(v) == msgpack.packb(v, use_bin_type=True), repr(v)[:40]


def test_nesting_past_msgspec_limit_falls_back_to_msgpack() -> None:
    """msgspec refuses to pack nesting near Python's recursion limit, msgpack.packb does
    not: the reference decides, so such bytes are canonical to the codec as before (and
    refused by the depth limit)."""
    data = b"\x91" * 1000 + b"\x00"
    with pytest.raises(RecursionError):
        _fast_pack(msgpack.unpackb(data))
    v = unpack_canonical(data, DEFAULT_LIMITS)
    assert pack_checked(v) == data
    with pytest.raises(CodecError, match="nesting deeper than 16"):
        decode_value(data)


def test_an_empty_extension_value_is_refused_for_its_type_as_before() -> None:
    """msgspec packs msgpack's ExtType as an array; msgpack.packb decides."""
    with pytest.raises(CodecError, match="type ExtType is not allowed"):
        decode_value(b"\xc7\x00\x05")


# --- the hot types: fast and reference paths agree ---------------------------------------


@pytest.mark.parametrize("cls", HOT_PARAMS)
@SETTINGS
@given(data=st.data())
def test_hot_types_encode_and_decode_as_the_reference(
    cls: type[Struct], data: st.DataObject
) -> None:
    strategy, limits = HOT[cls]
    s = data.draw(strategy)
    enc = s.encode()
    assert enc == reference_encode(s)
    assert assert_same_outcome(cls, enc, limits)
    assert cls.decode(enc, limits) == s


@pytest.mark.parametrize("cls", HOT_PARAMS)
@SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**32))
def test_hot_types_mutated_bytes_both_accept_or_both_reject(
    cls: type[Struct], data: st.DataObject, seed: int
) -> None:
    strategy, limits = HOT[cls]
    enc = data.draw(strategy).encode()
    rng = random.Random(seed)
    for _ in range(20):
        assert_same_outcome(cls, mutate(enc, rng), limits)


@pytest.mark.parametrize("cls", HOT_PARAMS)
@SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**32))
def test_hot_types_non_minimal_headers_both_reject(
    cls: type[Struct], data: st.DataObject, seed: int
) -> None:
    strategy, limits = HOT[cls]
    wire = msgpack.unpackb(data.draw(strategy).encode(), raw=False)
    rng = random.Random(seed)
    bad = alt_pack(wire, lambda k: rng.randrange(k))
    assert assert_same_outcome(cls, bad, limits) == (bad == msgpack.packb(wire))


def test_real_transactions_and_their_block_under_seeded_mutations() -> None:
    """Signed transactions of both schemes and a block of them: a few thousand seeded
    mutations each, the fast and reference paths agree on every one."""
    txs = []
    for i, scheme in enumerate(["ed25519", "ml-dsa-65"]):
        key = dev_key("codec-fast", f"s{i}", scheme)
        args = ["alice", b"\x01" * 32, 1000 + i, [True, None, -5]]
        txs.append(
            new_transaction(
                key, chain_id="fast", nonce=i, contract="registry", method="put", args=args
            )
        )
    header = BlockHeader("fast", 3, 0, 1, b"\x02" * 32, 1, tx_root(txs), b"\x03" * 32, b"\x04" * 32)
    block = Block(header, tuple(txs))
    rng = random.Random(20261205)
    cases: list[tuple[type[Struct], bytes, Limits]] = [
        (Transaction, txs[0].encode(), TX_LIMITS),
        (Transaction, txs[1].encode(), TX_LIMITS),
        (Block, block.encode(), BLOCK_LIMITS),
    ]
    for cls, enc, limits in cases:
        assert assert_same_outcome(cls, enc, limits)
        accepted = sum(assert_same_outcome(cls, mutate(enc, rng), limits) for _ in range(1500))
        assert accepted < 1500


# --- building structs by filling their dict -------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Plain(Struct):
    a: U64
    b: bytes


@dataclasses.dataclass(frozen=True)
class _PostInit(Struct):
    a: U64

    def __post_init__(self) -> None:
        object.__setattr__(self, "doubled", 2 * self.a)


@dataclasses.dataclass(frozen=True, init=False)
class _OwnInit(Struct):
    a: U64

    def __init__(self, a: int) -> None:
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "seen", True)


def test_only_structs_with_a_generated_init_are_built_by_filling_their_dict() -> None:
    assert _plain_init(_Plain, ["a", "b"])
    assert not _plain_init(_PostInit, ["a"])
    assert not _plain_init(_OwnInit, ["a"])
    p = _Plain.decode(_Plain(5, b"x").encode())
    assert p == _Plain(5, b"x") and vars(p) == vars(_Plain(5, b"x"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.a = 6  # type: ignore[misc]
    assert _PostInit.decode(_PostInit(4).encode()).doubled == 8  # type: ignore[attr-defined]
    assert _OwnInit.decode(_OwnInit(4).encode()).seen  # type: ignore[attr-defined]
