"""SM2 and SM3 against the standards' published examples (`tests/vectors/sm2/`), the
reference verifier and the Tongsuo one agreeing, and every malformed key and signature
refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qchain import sm2
from qchain.errors import BadSignature, KeyFileError
from qchain.keys import Scheme, SigningKey, verify

VECTORS = Path(__file__).parents[1] / "vectors" / "sm2"
N = sm2.SM2P256V1.n


def _load(name: str) -> list[dict[str, Any]]:
    doc = json.loads((VECTORS / name).read_text())
    assert doc["source"]
    vectors: list[dict[str, Any]] = doc["vectors"]
    return vectors


def _curve(v: dict[str, Any]) -> sm2.Curve:
    if v["curve"] == "sm2p256v1":
        return sm2.SM2P256V1
    return sm2.Curve(**{k: int(x, 16) for k, x in v["curve"].items()})


SIGNATURES = [pytest.param(v, id=v["name"][:24]) for v in _load("signatures.json")]


@pytest.mark.parametrize("v", _load("sm3.json"), ids=lambda v: v["name"][:3])
def test_sm3_vectors(v: dict[str, str]) -> None:
    assert sm2.sm3(bytes.fromhex(v["message_hex"])).hex() == v["digest_hex"]


@pytest.mark.parametrize("v", SIGNATURES)
def test_reference_reproduces_every_published_value(v: dict[str, Any]) -> None:
    curve, uid, msg = _curve(v), v["user_id"].encode(), v["message"].encode()
    d = bytes.fromhex(v["private_key"])
    pub = bytes.fromhex(v["public_key"])
    assert sm2.public_key_of_reference(d, curve) == pub
    assert sm2.z_value(pub, uid, curve).hex().upper() == v["z"]
    e = sm2.message_digest(pub, msg, uid, curve)
    assert e.hex().upper() == v["e"]
    # Signing with the published k gives the published (r, s) (GB/T 32918.2 §6.1 A4-A6).
    k, di, ei = int(v["k"], 16), int(v["private_key"], 16), int.from_bytes(e, "big")
    x1 = sm2._affine_x(sm2._mul_add(k, curve.g, 0, curve.g, curve), curve)
    assert x1 is not None
    r = (ei + x1) % curve.n
    s = pow(1 + di, -1, curve.n) * (k - r * di) % curve.n
    assert (f"{r:064X}", f"{s:064X}") == (v["r"], v["s"])
    sig = bytes.fromhex(v["r"] + v["s"])
    sm2.verify_reference(pub, msg, sig, uid, curve)
    with pytest.raises(sm2.SM2Error):
        sm2.verify_reference(pub, msg + b".", sig, uid, curve)
    with pytest.raises(sm2.SM2Error):
        sm2.verify_reference(pub, msg, sig, uid + b"X", curve)


def test_tongsuo_verifies_and_derives_the_recommended_curve_example() -> None:
    (v,) = [p.values[0] for p in SIGNATURES if p.values[0]["curve"] == "sm2p256v1"]
    assert v["user_id"].encode() == sm2.DEFAULT_USER_ID
    d, pub = bytes.fromhex(v["private_key"]), bytes.fromhex(v["public_key"])
    msg, sig = v["message"].encode(), bytes.fromhex(v["r"] + v["s"])
    assert sm2.public_key_of(d) == pub
    sm2.verify(pub, msg, sig)
    verify(Scheme.SM2, pub, msg, sig)
    with pytest.raises(BadSignature):
        verify(Scheme.SM2, pub, msg + b".", sig)
    # Tongsuo's own signature (a fresh k) verifies under the reference.
    sm2.verify_reference(pub, msg, sm2.sign(d, msg))


@settings(max_examples=60, deadline=None)
@given(
    message=st.binary(max_size=64),
    pos=st.integers(0, 63),
    mask=st.integers(0, 255),
)
def test_reference_and_tongsuo_agree(message: bytes, pos: int, mask: int) -> None:
    key = SigningKey.generate(Scheme.SM2)
    sig = bytearray(key.sign(message))
    sig[pos] ^= mask
    outcomes = []
    for check in (sm2.verify, sm2.verify_reference):
        try:
            check(key.public_key, message, bytes(sig))
            outcomes.append(True)
        except sm2.SM2Error:
            outcomes.append(False)
    assert outcomes[0] == outcomes[1] == (mask == 0)


def _sig(r: int, s: int) -> bytes:
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def test_out_of_range_r_and_s_are_refused() -> None:
    key = SigningKey.generate(Scheme.SM2)
    good = key.sign(b"m")
    r, s = int.from_bytes(good[:32], "big"), int.from_bytes(good[32:], "big")
    bad = [
        _sig(0, s),
        _sig(r, 0),
        _sig(N, s),
        _sig(r, N),
        _sig(r + N, s) if r + N < 2**256 else _sig(2**256 - 1, s),
        _sig(r, 2**256 - 1),
        _sig(r, N - r),  # t = r + s = 0 mod n (B5)
    ]
    for sig in bad:
        for check in (sm2.verify, sm2.verify_reference):
            with pytest.raises(sm2.SM2Error):
                check(key.public_key, b"m", sig)
        with pytest.raises(BadSignature):
            verify(Scheme.SM2, key.public_key, b"m", sig)
    # No "low s" rule: SM2 has no s -> n - s twin, and the twin does not verify.
    with pytest.raises(BadSignature):
        verify(Scheme.SM2, key.public_key, b"m", _sig(r, N - s))


def test_malformed_public_keys_are_refused() -> None:
    key = SigningKey.generate(Scheme.SM2)
    pub, sig = key.public_key, key.sign(b"m")
    p = sm2.SM2P256V1.p
    off_curve = pub[:64] + bytes([pub[64] ^ 1])
    compressed_prefix = b"\x02" + pub[1:]
    big_x = b"\x04" + p.to_bytes(32, "big") + pub[33:]
    for bad in (off_curve, compressed_prefix, big_x, pub[:33], b"\x04" + b"\x00" * 64):
        with pytest.raises(sm2.SM2Error):
            sm2.parse_public_key(bad)
        with pytest.raises(BadSignature):
            verify(Scheme.SM2, bad, b"m", sig)


def test_private_keys_outside_one_to_n_minus_two_are_refused() -> None:
    for d in (0, N - 1, N, 2**256 - 1):
        with pytest.raises(KeyFileError):
            SigningKey(Scheme.SM2, d.to_bytes(32, "big"))
    assert SigningKey(Scheme.SM2, (N - 2).to_bytes(32, "big")).sign(b"m")
    assert SigningKey(Scheme.SM2, (1).to_bytes(32, "big")).public_key == b"\x04" + (
        sm2.SM2P256V1.gx.to_bytes(32, "big") + sm2.SM2P256V1.gy.to_bytes(32, "big")
    )


def test_signature_encoding_is_fixed_r_s() -> None:
    key = SigningKey.generate(Scheme.SM2)
    for i in range(20):
        sig = key.sign(bytes([i]))
        assert len(sig) == 64
        r, s = sm2.parse_signature(sig)
        assert sm2._undo_der(sm2._der(r, s)) == (r, s)
