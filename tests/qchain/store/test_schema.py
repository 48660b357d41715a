"""The key schema: one builder per family, numeric order of heights, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qchain.errors import StorageError
from qchain.store import schema

U64 = st.integers(0, 2**64 - 1)


@given(U64, U64)
def test_height_keys_sort_numerically(a: int, b: int) -> None:
    for build in (schema.block_key, schema.cert_key, schema.consensus_key):
        assert (build(a) < build(b)) == (a < b)
        assert len(build(a)) == 9
    assert (schema.receipt_key(a, 1) < schema.receipt_key(b, 0)) == (a < b)
    assert schema.read_u64(schema.u64(a)) == a


@given(U64, st.integers(0, 2**32))
def test_receipt_keys_under_their_height_prefix(h: int, i: int) -> None:
    key = schema.receipt_key(h, i)
    assert key.startswith(schema.receipts_prefix(h))
    assert schema.read_u64(key[9:]) == i
    assert not schema.receipt_key(h + 1 if h < 2**64 - 1 else 0, i).startswith(
        schema.receipts_prefix(h)
    )


@given(
    st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s),
    st.binary(max_size=40),
)
def test_state_key_split_round_trip(contract: str, key: bytes) -> None:
    full = schema.state_key(contract, key)
    assert full.startswith(schema.state_prefix(contract))
    assert schema.split_state_key(full) == (contract, key)


def test_state_prefixes_do_not_overlap() -> None:
    """'bank' state never shows up under the prefix of 'ban'."""
    assert not schema.state_key("bank", b"x").startswith(schema.state_prefix("ban"))


def test_invalid_names_rejected() -> None:
    for bad in ("", "a\x00b", "x" * 256, "é" * 128):
        for build in (schema.state_prefix, schema.meta_key, schema.qkd_lease_key, schema.aux_key):
            with pytest.raises(StorageError):
                build(bad)
    assert schema.meta_key("x" * 255) == b"m" + b"x" * 255


def test_malformed_keys_rejected() -> None:
    for bad in (b"", b"m-not-state", b"sno-separator"):
        with pytest.raises(StorageError):
            schema.split_state_key(bad)
    with pytest.raises(StorageError):
        schema.read_u64(b"\x00" * 7)


def test_families_have_distinct_prefixes() -> None:
    prefixes = [
        schema.BLOCK,
        schema.BLOCK_HASH,
        schema.TX,
        schema.RECEIPT,
        schema.STATE,
        schema.CERT,
        schema.CONSENSUS,
        schema.PENDING_BODY,
        schema.META,
        schema.QKD_LEASE,
        schema.AUX,
        schema.CONSENSUS_VALUE,
        schema.HEADER,
        schema.SNAPSHOT,
        schema.SNAPSHOT_CHUNK,
        schema.SET_STATE,
    ]
    assert len(set(prefixes)) == len(prefixes)
    assert set(prefixes) == schema.PREFIXES
    assert all(len(p) == 1 for p in prefixes)
    h = b"\x11" * 32
    assert schema.block_hash_key(h) == b"h" + h
    assert schema.tx_key(h) == b"t" + h
    assert schema.pending_body_key(7, h) == b"p" + schema.u64(7) + h
    assert schema.pending_body_key(7, h).startswith(schema.pending_prefix(7))
    assert schema.split_pending_key(schema.pending_body_key(7, h)) == (7, h)
    assert schema.META_SCHEMA_VERSION == b"mschema-version"
    assert schema.SCHEMA_VERSION == 2
