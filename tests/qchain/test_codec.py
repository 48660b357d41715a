"""The canonical codec: round trips, rejection of every non-canonical encoding, limits.

Non-canonical encodings are produced by `_Packer`, a small independent MessagePack writer
that may choose any legal (but non-shortest) header for each node; the codec must reject
every output whose bytes differ from the canonical ones and must never raise anything but
`CodecError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import struct
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from qchain.codec import INT_MAX, INT_MIN, Limits, Struct, decode_value, encode_value
from qchain.errors import CodecError
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

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies ----------------------------------------------------------------------------

ints = st.integers(INT_MIN, INT_MAX)
leaf_values = st.one_of(
    ints, st.binary(max_size=300), st.text(max_size=40), st.booleans(), st.none()
)
values: st.SearchStrategy[Any] = st.recursive(
    leaf_values, lambda inner: st.lists(inner, max_size=20), max_leaves=30
)
small_values: st.SearchStrategy[Any] = st.recursive(
    leaf_values, lambda inner: st.lists(inner, max_size=4), max_leaves=8
)
u16 = st.integers(0, 2**16 - 1)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
name = st.text(min_size=1, max_size=16)
hash32 = st.binary(min_size=32, max_size=32)

transactions = st.builds(
    Transaction,
    chain_id=name,
    sender=st.binary(min_size=20, max_size=20),
    nonce=u64,
    contract=name,
    method=name,
    args=st.lists(small_values, max_size=4),
    expiry_height=u64,
    scheme=st.text(min_size=1, max_size=4),
    public_key=st.binary(max_size=64),
    signature=st.binary(max_size=64),
)
headers = st.builds(
    BlockHeader,
    chain_id=name,
    height=u64,
    round=u32,
    time=u64,
    parent=hash32,
    proposer=u16,
    tx_root=hash32,
    receipts_root=hash32,
    app_hash=hash32,
)
blocks = st.builds(Block, header=headers, txs=st.lists(transactions, max_size=3).map(tuple))
events = st.builds(Event, contract=name, name=name, data=small_values)
receipts = st.builds(
    Receipt,
    tx_hash=hash32,
    height=u64,
    index=u32,
    ok=st.booleans(),
    code=st.text(max_size=16),
    message=st.text(max_size=40),
    result=small_values,
    events=st.lists(events, max_size=3).map(tuple),
)
commit_sigs = st.builds(
    CommitSignature, validator=u16, signature=st.binary(min_size=1, max_size=80)
)
certificates = st.builds(
    CommitCertificate,
    height=u64,
    block_hash=hash32,
    signatures=st.lists(commit_sigs, max_size=4).map(tuple),
)
merkle_proofs = st.builds(
    MerkleProof, index=u32, size=u32, path=st.lists(hash32, max_size=6).map(tuple)
)
receipt_proofs = st.builds(
    ReceiptProof, receipt=receipts, proof=merkle_proofs, header=headers, certificate=certificates
)

STRUCTS: dict[type[Struct], st.SearchStrategy[Any]] = {
    Transaction: transactions,
    BlockHeader: headers,
    Block: blocks,
    Receipt: receipts,
    Event: events,
    CommitCertificate: certificates,
    CommitSignature: commit_sigs,
    MerkleProof: merkle_proofs,
    ReceiptProof: receipt_proofs,
}
STRUCT_PARAMS = [pytest.param(cls, id=cls.__name__) for cls in STRUCTS]
ANY_FIELDS = {"args", "result", "data"}
"""Fields typed `AnyValue`: any canonical value is a valid content for them."""


def decode_or_codec_error(cls: type[Struct], data: bytes) -> Struct | None:
    """Decode; a success must be canonical. Any exception but CodecError fails the test."""
    try:
        s = cls.decode(data)
    except CodecError:
        return None
    assert s.encode() == data
    return s


# --- an independent MessagePack writer with free choice of header width --------------------


def _int_forms(n: int) -> list[bytes]:
    forms = []
    if 0 <= n <= 0x7F:
        forms.append(bytes([n]))
    if -32 <= n < 0:
        forms.append(struct.pack(">b", n))
    for code, fmt, lo, hi in (
        (0xCC, ">B", 0, 2**8 - 1),
        (0xCD, ">H", 0, 2**16 - 1),
        (0xCE, ">I", 0, 2**32 - 1),
        (0xCF, ">Q", 0, 2**64 - 1),
        (0xD0, ">b", -(2**7), 2**7 - 1),
        (0xD1, ">h", -(2**15), 2**15 - 1),
        (0xD2, ">i", -(2**31), 2**31 - 1),
        (0xD3, ">q", -(2**63), 2**63 - 1),
    ):
        if lo <= n <= hi:
            forms.append(bytes([code]) + struct.pack(fmt, n))
    return forms


def _len_forms(n: int, fix: tuple[int, int] | None, codes: tuple[int, int, int]) -> list[bytes]:
    forms = []
    if fix is not None and n < fix[1]:
        forms.append(bytes([fix[0] | n]))
    for code, fmt, hi in zip(codes, (">B", ">H", ">I"), (2**8, 2**16, 2**32), strict=True):
        if code and n < hi:
            forms.append(bytes([code]) + struct.pack(fmt, n))
    return forms


def forms_of_header(v: object) -> list[bytes]:
    """Every legal encoding of v's header (for scalars: of v itself)."""
    if v is None:
        return [b"\xc0"]
    if v is True:
        return [b"\xc3"]
    if v is False:
        return [b"\xc2"]
    if type(v) is int:
        return _int_forms(v)
    if type(v) is bytes:
        return _len_forms(len(v), None, (0xC4, 0xC5, 0xC6))
    if type(v) is str:
        return _len_forms(len(v.encode()), (0xA0, 32), (0xD9, 0xDA, 0xDB))
    assert type(v) is list
    return _len_forms(len(v), (0x90, 16), (0, 0xDC, 0xDD))


def alt_pack(v: object, choose: Callable[[int], int]) -> bytes:
    """MessagePack bytes of v where `choose(k)` picks one of the k legal header forms."""
    forms = forms_of_header(v)
    head = forms[choose(len(forms))]
    if type(v) is bytes:
        return head + v
    if type(v) is str:
        return head + v.encode()
    if type(v) is list:
        return head + b"".join(alt_pack(x, choose) for x in v)
    return head


def test_alt_pack_shortest_choice_is_msgpack() -> None:
    v = [0, -1, 127, 128, -33, 2**64 - 1, -(2**63), "a" * 31, "b" * 32, b"", [None, True]]
    assert alt_pack(v, lambda k: 0) == msgpack.packb(v, use_bin_type=True)


# --- round trips ----------------------------------------------------------------------------


@SETTINGS
@given(values)
def test_value_round_trip(v: Any) -> None:
    data = encode_value(v)
    assert decode_value(data) == v
    assert encode_value(decode_value(data)) == data


@pytest.mark.parametrize("cls", STRUCT_PARAMS)
@SETTINGS
@given(data=st.data())
def test_struct_round_trip(cls: type[Struct], data: st.DataObject) -> None:
    s = data.draw(STRUCTS[cls])
    enc = s.encode()
    back = cls.decode(enc)
    assert back == s
    assert back.encode() == enc


def test_tuples_encode_like_lists() -> None:
    assert encode_value((1, (b"x",))) == encode_value([1, [b"x"]])


# --- non-canonical encodings ---------------------------------------------------------------


@SETTINGS
@given(v=values, data=st.data())
def test_value_non_minimal_headers_rejected(v: Any, data: st.DataObject) -> None:
    enc = alt_pack(v, lambda k: data.draw(st.integers(0, k - 1)))
    canonical = encode_value(v)
    assume(enc != canonical)
    with pytest.raises(CodecError):
        decode_value(enc)


@pytest.mark.parametrize("cls", STRUCT_PARAMS)
@SETTINGS
@given(data=st.data())
def test_struct_non_minimal_headers_rejected(cls: type[Struct], data: st.DataObject) -> None:
    s = data.draw(STRUCTS[cls])
    wire = s.to_wire()
    # Force one header in the tree to a non-shortest form, draw the others freely.
    n_nodes = len(_flatten(wire))
    forced = data.draw(st.integers(0, n_nodes - 1))
    counter = iter(range(n_nodes))

    def choose(k: int) -> int:
        if next(counter) == forced and k > 1:
            return data.draw(st.integers(1, k - 1))
        return data.draw(st.integers(0, k - 1))

    enc = alt_pack(wire, choose)
    assume(enc != s.encode())
    with pytest.raises(CodecError):
        cls.decode(enc)


def _flatten(v: object) -> list[object]:
    if type(v) is list:
        return [v, *(x for item in v for x in _flatten(item))]
    return [v]


def test_examples_of_non_minimal_forms_rejected() -> None:
    for bad in (
        b"\xcd\x00\x05",  # 5 as uint16
        b"\xcc\x05",  # 5 as uint8
        b"\xd0\x05",  # 5 as int8
        b"\xd1\xff\xff",  # -1 as int16
        b"\xd9\x01a",  # "a" with a str8 header
        b"\xc5\x00\x01x",  # b"x" with a bin16 header
        b"\xdc\x00\x01\x01",  # [1] with an array16 header
        b"\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00",  # float 1.0
        b"\xca\x3f\x80\x00\x00",  # float32 1.0
        b"\x81\x01\x02",  # {1: 2}
        b"\x80",  # {}
        b"\xd4\x01\x00",  # fixext1
        b"\xd6\xff\x00\x00\x00\x00",  # timestamp
        b"\x01\x02",  # trailing byte
        b"\x92\x01",  # truncated array
        b"",
    ):
        with pytest.raises(CodecError):
            decode_value(bad)


def _kind(v: object) -> type:
    return type(v)


@pytest.mark.parametrize("cls", STRUCT_PARAMS)
@SETTINGS
@given(data=st.data())
def test_struct_mutations_rejected(cls: type[Struct], data: st.DataObject) -> None:
    """Re-ordered, missing, extra fields; maps, floats and wrong types in a field; a map
    instead of the struct; trailing bytes; truncation."""
    s = data.draw(STRUCTS[cls])
    wire = s.to_wire()
    enc = s.encode()
    names = [f for f, _, _ in cls._spec()]
    typed = [i for i, f in enumerate(names) if f not in ANY_FIELDS]
    how = data.draw(
        st.sampled_from(
            [
                "swap",
                "missing",
                "extra",
                "map_field",
                "float_field",
                "wrong_type",
                "map",
                "trail",
                "truncate",
            ]
        )
    )
    bad: bytes
    if how == "swap":
        pairs = [
            (i, j) for i in typed for j in typed if i < j and _kind(wire[i]) is not _kind(wire[j])
        ]
        assume(pairs)
        i, j = data.draw(st.sampled_from(pairs))
        w = list(wire)
        w[i], w[j] = w[j], w[i]
        bad = msgpack.packb(w, use_bin_type=True)
    elif how == "missing":
        i = data.draw(st.integers(0, len(wire) - 1))
        bad = msgpack.packb(wire[:i] + wire[i + 1 :], use_bin_type=True)
    elif how == "extra":
        i = data.draw(st.integers(0, len(wire)))
        extra = data.draw(small_values)
        bad = msgpack.packb([*wire[:i], extra, *wire[i:]], use_bin_type=True)
    elif how == "map_field":
        i = data.draw(st.integers(0, len(wire) - 1))
        w = list(wire)
        w[i] = {0: w[i]}
        bad = msgpack.packb(w, use_bin_type=True)
    elif how == "float_field":
        ints_at = [i for i in range(len(wire)) if type(wire[i]) is int]
        assume(ints_at)
        i = data.draw(st.sampled_from(ints_at))
        w = list(wire)
        w[i] = float(w[i])
        bad = msgpack.packb(w, use_bin_type=True)
    elif how == "wrong_type":
        i = data.draw(st.sampled_from(typed))
        replacement = data.draw(st.one_of(ints, st.binary(max_size=8), st.text(max_size=8)))
        replacement = data.draw(
            st.sampled_from([replacement, None, True, [replacement], [wire[i]]])
        )
        assume(_kind(replacement) is not _kind(wire[i]))
        w = list(wire)
        w[i] = replacement
        bad = msgpack.packb(w, use_bin_type=True)
    elif how == "map":
        bad = msgpack.packb(dict(zip(names, wire, strict=True)), use_bin_type=True)
    elif how == "trail":
        bad = enc + data.draw(st.binary(min_size=1, max_size=8))
    else:
        bad = enc[: data.draw(st.integers(0, len(enc) - 1))]
    with pytest.raises(CodecError):
        cls.decode(bad)


# --- fuzz: only CodecError, ever ------------------------------------------------------------


@pytest.mark.parametrize("cls", STRUCT_PARAMS)
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_random_bytes_only_codec_error(cls: type[Struct], data: bytes) -> None:
    decode_or_codec_error(cls, data)
    with contextlib.suppress(CodecError):
        decode_value(data)


@pytest.mark.parametrize("cls", STRUCT_PARAMS)
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_mutated_encodings_only_codec_error(cls: type[Struct], data: st.DataObject) -> None:
    enc = bytearray(data.draw(STRUCTS[cls]).encode())
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "set"]))
        pos = data.draw(st.integers(0, max(0, len(enc) - 1)))
        if op == "flip" and enc:
            enc[pos] ^= data.draw(st.integers(1, 255))
        elif op == "insert":
            enc[pos:pos] = data.draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and enc:
            del enc[pos]
        elif enc:
            enc[pos] = data.draw(st.sampled_from([0xC0, 0xC1, 0xCB, 0xDC, 0xDD, 0xDF, 0xFF]))
    decode_or_codec_error(cls, bytes(enc))


def test_seeded_byte_flip_fuzz_of_a_real_transaction() -> None:
    """A few thousand seeded random mutations of one realistic transaction."""
    from qchain.keys import dev_key
    from qchain.types import new_transaction

    key = dev_key("codec-fuzz", "alice", "ed25519")
    tx = new_transaction(
        key, chain_id="fuzz", nonce=7, contract="registry", method="put", args=[b"k", "v", 3]
    )
    enc = tx.encode()
    rng = random.Random(20240601)
    for _ in range(3000):
        b = bytearray(enc)
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        try:
            decoded = decode_transaction(bytes(b))
        except CodecError:
            continue
        assert decoded.encode() == bytes(b)


# --- limits ---------------------------------------------------------------------------------


def _nested(depth: int) -> list[Any]:
    v: list[Any] = []
    for _ in range(depth):
        v = [v]
    return v


def test_depth_limit() -> None:
    limits = Limits()
    ok = _nested(limits.max_depth)
    assert decode_value(encode_value(ok)) == ok
    too_deep = _nested(limits.max_depth + 1)
    with pytest.raises(CodecError, match="nesting"):
        encode_value(too_deep)
    with pytest.raises(CodecError, match="nesting"):
        decode_value(b"\x91" * (limits.max_depth + 1) + b"\x90")
    with pytest.raises(CodecError):
        decode_value(b"\x91" * 100_000 + b"\xc0")
    shallow = Limits(max_depth=2)
    with pytest.raises(CodecError):
        decode_value(encode_value(_nested(3)), shallow)


def test_size_and_length_limits() -> None:
    tiny = Limits(max_size=12, max_bytes_len=4, max_str_len=4, max_array_len=3)
    with pytest.raises(CodecError):
        decode_value(encode_value(b"x" * 20), tiny)
    with pytest.raises(CodecError):
        encode_value(b"x" * 20, tiny)
    with pytest.raises(CodecError):
        decode_value(encode_value(b"12345"), tiny)
    with pytest.raises(CodecError):
        decode_value(encode_value("12345"), tiny)
    with pytest.raises(CodecError):
        decode_value(encode_value([1, 2, 3, 4]), tiny)
    assert decode_value(encode_value([b"1234", "abcd"]), tiny) == [b"1234", "abcd"]
    # A declared length far beyond the input must fail fast, not allocate.
    with pytest.raises(CodecError):
        decode_value(b"\xc6\xff\xff\xff\xff")
    with pytest.raises(CodecError):
        decode_value(b"\xdd\xff\xff\xff\xff")


def test_encode_rejects_non_canonical_types() -> None:
    for bad in (1.5, {"a": 1}, {1, 2}, bytearray(b"x"), INT_MAX + 1, INT_MIN - 1, [object()]):
        with pytest.raises(CodecError):
            encode_value(bad)


def test_struct_field_bounds_enforced() -> None:
    base = BlockHeader("c", 1, 0, 0, b"\x00" * 32, 0, b"\x00" * 32, b"\x00" * 32, b"\x00" * 32)
    wire = base.to_wire()
    for i, bad in ((1, -1), (1, 2**64), (2, 2**32), (4, b"\x00" * 31), (5, 2**16), (0, "")):
        w = list(wire)
        w[i] = bad
        with pytest.raises(CodecError):
            BlockHeader.from_wire(w)
        if bad != 2**64:
            with pytest.raises(CodecError):
                BlockHeader.decode(msgpack.packb(w, use_bin_type=True))


# --- fast paths agree with the generic codec ----------------------------------------------


def _generic(s: Struct) -> bytes:
    """The encoding by the definition: the struct's array value, packed."""
    return encode_value(s.to_wire())


big_signatures = st.one_of(
    st.binary(max_size=300),
    st.binary(min_size=0x100, max_size=0x100),
    st.binary(min_size=3309, max_size=3309),
)


@SETTINGS
@given(transactions, big_signatures)
def test_transaction_body_bytes_is_every_field_but_the_signature(
    tx: Transaction, sig: bytes
) -> None:
    for t in (tx, dataclasses.replace(tx, signature=sig)):
        assert t.body_bytes() == encode_value(t.to_wire()[:-1])
        decoded = decode_transaction(_generic(t))
        assert decoded.body_bytes() == t.body_bytes()
        assert decoded.signing_digest() == t.signing_digest()


@SETTINGS
@given(blocks)
def test_block_and_receipt_encodings_match_the_generic_codec(block: Block) -> None:
    assert block.encode() == _generic(block)
    again = Block.decode(block.encode())
    assert again == block
    assert again.encode() == _generic(block)
    for tx, original in zip(again.txs, block.txs, strict=True):
        # A transaction decoded inside a block knows its own bytes.
        assert tx.encoded == original.encode() == _generic(original)
        assert tx.hash == original.hash


@SETTINGS
@given(receipts)
def test_cached_receipt_encoding_matches_the_generic_codec(r: Receipt) -> None:
    assert r.encode() == _generic(r) == r.encode()
    assert Receipt.decode(r.encode()) == r


def test_struct_errors_name_the_field_path() -> None:
    """Decoding checks without building paths, then names the failing field exactly."""
    tx = Transaction("c", b"\x01" * 20, 1, "n", "m", [], 0, "ed25519", b"", b"s")
    header = BlockHeader("c", 1, 0, 1, b"\x00" * 32, 0, b"\x00" * 32, b"\x00" * 32, b"\x00" * 32)
    wire = Block(header, (tx, tx)).to_wire()
    wire[1][1][2] = "not a nonce"  # type: ignore[index]
    with pytest.raises(CodecError, match=r"^Block\.txs\[1\]\.nonce: expected integer"):
        Block.decode(msgpack.packb(wire, use_bin_type=True))
    wire = tx.to_wire()
    wire[5] = [1.5]
    with pytest.raises(CodecError, match=r"^Transaction\.args: type float"):
        Transaction.decode(msgpack.packb(wire, use_bin_type=True))
    with pytest.raises(CodecError, match=r"Block\.txs: length 10001"):
        Block(header, (tx,) * 10_001).encode()


def test_text_with_a_lone_surrogate_is_refused() -> None:
    """A Python string can hold a lone surrogate (a JSON `\\ud800` escape gives one); it
    has no UTF-8 encoding, so encoding and struct checks refuse it as a CodecError."""
    for bad in ("\ud800", "ok\udfff", "\U0001f600\udc00"):
        with pytest.raises(CodecError, match="not valid Unicode"):
            encode_value([1, bad])
        tx = ["c", b"\x01" * 20, 1, "n", "m", [bad], 0, "ed25519", b"", b"s"]
        with pytest.raises(CodecError, match=r"^Transaction\.args: text is not valid Unicode"):
            Transaction.from_wire(tx)
        for i in (0, 3, 4, 7):
            wire = list(tx)
            wire[5] = []
            wire[i] = bad
            with pytest.raises(CodecError, match="not valid Unicode"):
                Transaction.from_wire(wire)
    assert decode_value(encode_value(["\U0001f600", "é"])) == ["\U0001f600", "é"]


# --- the compiled fast mode against the converters ----------------------------------------

odd_values = st.one_of(
    values,
    st.floats(allow_nan=False),
    st.text(alphabet="é中\U0001f600a", max_size=70),
    st.integers(-(2**70), 2**70),
    st.dictionaries(st.text(max_size=3), ints, max_size=2),
)


def _outcome(f: Callable[[], object]) -> object:
    """f's result, or the message of the CodecError it raised."""
    try:
        return f()
    except CodecError as e:
        return ("error", e.message)


@pytest.mark.parametrize("cls", STRUCT_PARAMS)
@SETTINGS
@given(data=st.data())
def test_fast_mode_decodes_exactly_as_the_converters(
    cls: type[Struct], data: st.DataObject
) -> None:
    """A wire array with one field replaced by anything (another type, out of range, text
    that is not ASCII): `from_wire` gives what the converters give, value or error, and
    the fast mode alone never accepts what they refuse nor gives another value."""
    wire = data.draw(STRUCTS[cls]).to_wire()
    i = data.draw(st.integers(0, len(wire) - 1))
    wire[i] = data.draw(odd_values)
    reference = _outcome(lambda: cls._from_wire(wire, cls.__name__))
    assert _outcome(lambda: cls.from_wire(wire)) == reference
    fast = _outcome(lambda: cls._from_wire(wire, None))
    if not isinstance(fast, tuple):
        assert fast == reference


@pytest.mark.parametrize("cls", STRUCT_PARAMS)
@SETTINGS
@given(data=st.data())
def test_fast_mode_encodes_exactly_as_the_converters(
    cls: type[Struct], data: st.DataObject
) -> None:
    s = data.draw(STRUCTS[cls])
    name = data.draw(st.sampled_from([f for f, _, _ in cls._spec()]))
    object.__setattr__(s, name, data.draw(odd_values))
    reference = _outcome(lambda: s._to_wire(cls.__name__))
    assert _outcome(s.to_wire) == reference
    fast = _outcome(lambda: s._to_wire(None))
    if not isinstance(fast, tuple):
        assert fast == reference


def test_fast_mode_declines_text_that_is_not_ascii_and_the_converters_decide() -> None:
    tx = Transaction("chaîne", b"\x01" * 20, 1, "notary", "anchor", [], 0, "ed25519", b"", b"")
    wire = tx.to_wire()
    with pytest.raises(CodecError):
        Transaction._from_wire(wire, None)
    assert Transaction.from_wire(wire) == tx
    assert decode_transaction(tx.encode()) == tx
    long = dataclasses.replace(tx, chain_id="é" * 33)  # 33 code points, 66 UTF-8 bytes
    with pytest.raises(CodecError, match=r"^Transaction\.chain_id: length 66 outside"):
        long.to_wire()
