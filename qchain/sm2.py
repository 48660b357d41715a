"""SM2 signatures (GB/T 32918.2-2016, GM/T 0003.2-2012) with SM3 (GB/T 32905-2016).

An SM2 signature signs `e = SM3(Z_A || M)`, where the signer's *Z value*

    Z_A = SM3(ENTL_A || ID_A || a || b || x_G || y_G || x_A || y_A)

binds the signer's user ID (`ID_A`, with `ENTL_A` its length in bits as two big-endian
bytes) and public key `(x_A, y_A)` to the curve (`a, b, G`), every element as 32
big-endian bytes. qchain uses the recommended curve (`sm2p256v1`, GB/T 32918.5-2017) and
the default user ID `1234567812345678` (GM/T 0009-2012 §10), which every SM2 signer
(Tongsuo, GmSSL, OpenSSL, Bouncy Castle, HSMs and USB keys) uses when none is given.

Encodings, one byte string each so a signature has exactly one form:

- a public key is the uncompressed point `04 || x || y` (65 bytes), on the curve;
- a private key is `d` as 32 big-endian bytes, `1 <= d <= n - 2`;
- a signature is `r || s` (64 bytes, each big-endian), `1 <= r, s <= n - 1`, not DER.
  SM2 has no ECDSA-style `s -> n - s` twin (the verifier adds `r + s`), so there is no
  "low s" rule: it would refuse half of the signatures a standard signer makes.

Tongsuo uses the default user ID when it is given none (a test pins it: it verifies the
standard's example made with that ID, and the reference verifies Tongsuo's signatures).

Two verifiers pass the same tests: `verify_reference` is plain Python over any curve
(`Curve`), written from the standard and kept as the reference; `verify` is the one the
chain runs, through Tongsuo (`tongsuopy`, the Tongsuo/BabaSSL fork of OpenSSL), after the
same input checks. Key derivation and signing go through Tongsuo only: a private-key
operation needs constant-time arithmetic, which plain Python integers do not give. The
README's scheme section says why Tongsuo and which libraries were measured.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from tongsuopy.crypto import hashes as tong_hashes
from tongsuopy.crypto.asymciphers import ec as tong_ec
from tongsuopy.crypto.exceptions import InvalidSignature
from tongsuopy.crypto.serialization import Encoding, PublicFormat

DEFAULT_USER_ID = b"1234567812345678"
"""The user ID qchain signs with: the standard's default (GM/T 0009-2012 §10)."""

PUBLIC_KEY_LEN = 65
SIGNATURE_LEN = 64
PRIVATE_KEY_LEN = 32
MAX_USER_ID_BITS = 0xFFFF
"""ENTL is two bytes: a user ID is at most 8191 bytes."""


class SM2Error(ValueError):
    """A malformed key or signature, or a signature that does not verify."""


@dataclass(frozen=True)
class Curve:
    """A short Weierstrass curve y^2 = x^3 + ax + b over F_p with a base point G of
    prime order n and cofactor 1 (both SM2 curves of the standard have cofactor 1)."""

    p: int
    a: int
    b: int
    gx: int
    gy: int
    n: int

    @property
    def g(self) -> tuple[int, int]:
        return (self.gx, self.gy)


SM2P256V1 = Curve(
    p=0xFFFFFFFE_FFFFFFFF_FFFFFFFF_FFFFFFFF_FFFFFFFF_00000000_FFFFFFFF_FFFFFFFF,
    a=0xFFFFFFFE_FFFFFFFF_FFFFFFFF_FFFFFFFF_FFFFFFFF_00000000_FFFFFFFF_FFFFFFFC,
    b=0x28E9FA9E_9D9F5E34_4D5A9E4B_CF6509A7_F39789F5_15AB8F92_DDBCBD41_4D940E93,
    gx=0x32C4AE2C_1F198119_5F990446_6A39C994_8FE30BBF_F2660BE1_715A4589_334C74C7,
    gy=0xBC3736A2_F4F6779C_59BDCEE3_6B692153_D0A9877C_C62A4740_02DF32E5_2139F0A0,
    n=0xFFFFFFFE_FFFFFFFF_FFFFFFFF_FFFFFFFF_7203DF6B_21C6052B_53BBF409_39D54123,
)
"""The recommended curve of GB/T 32918.5-2017 (GM/T 0003.5-2012), the only one qchain
accepts."""


def sm3(data: bytes) -> bytes:
    """SM3 (GB/T 32905-2016), from the OpenSSL inside `cryptography`."""
    h = hashes.Hash(hashes.SM3())
    h.update(data)
    return h.finalize()


def _int32(b: bytes) -> int:
    return int.from_bytes(b, "big")


def _bytes32(i: int) -> bytes:
    return i.to_bytes(32, "big")


# --- checks on the encodings ------------------------------------------------------------------


def parse_public_key(public_key: bytes, curve: Curve = SM2P256V1) -> tuple[int, int]:
    """The point of an uncompressed public key, checked to lie on the curve (with
    cofactor 1 every such point other than infinity is in the group of G)."""
    if len(public_key) != PUBLIC_KEY_LEN or public_key[0] != 0x04:
        raise SM2Error("an SM2 public key is 65 bytes: 04 || x || y")
    x, y = _int32(public_key[1:33]), _int32(public_key[33:])
    if x >= curve.p or y >= curve.p:
        raise SM2Error("an SM2 public key's coordinates must be below p")
    if (y * y - (x * x * x + curve.a * x + curve.b)) % curve.p:
        raise SM2Error("the SM2 public key is not a point of the curve")
    return x, y


def parse_signature(signature: bytes, curve: Curve = SM2P256V1) -> tuple[int, int]:
    """(r, s) of a 64-byte `r || s`, each in [1, n-1] (GB/T 32918.2 §7.1 B1, B2)."""
    if len(signature) != SIGNATURE_LEN:
        raise SM2Error("an SM2 signature is 64 bytes: r || s")
    r, s = _int32(signature[:32]), _int32(signature[32:])
    if not (1 <= r < curve.n and 1 <= s < curve.n):
        raise SM2Error("SM2 signature r and s must be in [1, n-1]")
    return r, s


def parse_private_key(private_key: bytes, curve: Curve = SM2P256V1) -> int:
    """d of a 32-byte private key, in [1, n-2] (GB/T 32918.1 §6.1: 1 + d is invertible)."""
    if len(private_key) != PRIVATE_KEY_LEN:
        raise SM2Error("an SM2 private key is 32 bytes")
    d = _int32(private_key)
    if not 1 <= d <= curve.n - 2:
        raise SM2Error("an SM2 private key must be in [1, n-2]")
    return d


def z_value(public_key: bytes, user_id: bytes = DEFAULT_USER_ID, curve: Curve = SM2P256V1) -> bytes:
    """Z_A = SM3(ENTL_A || ID_A || a || b || x_G || y_G || x_A || y_A)."""
    if len(user_id) * 8 > MAX_USER_ID_BITS:
        raise SM2Error("an SM2 user ID is at most 8191 bytes")
    x, y = parse_public_key(public_key, curve)
    return sm3(
        (len(user_id) * 8).to_bytes(2, "big")
        + user_id
        + b"".join(_bytes32(v) for v in (curve.a, curve.b, curve.gx, curve.gy, x, y))
    )


def message_digest(
    public_key: bytes, message: bytes, user_id: bytes = DEFAULT_USER_ID, curve: Curve = SM2P256V1
) -> bytes:
    """e = SM3(Z_A || M), the value the signature signs."""
    return sm3(z_value(public_key, user_id, curve) + message)


# --- the reference verifier: plain Python over any curve ----------------------------------------

_Jacobian = tuple[int, int, int]
_INFINITY: _Jacobian = (1, 1, 0)


def _double(pt: _Jacobian, c: Curve) -> _Jacobian:
    x, y, z = pt
    if z == 0 or y == 0:
        return _INFINITY
    p = c.p
    yy = y * y % p
    s = 4 * x * yy % p
    zz = z * z % p
    m = (3 * x * x + c.a * zz * zz) % p
    x3 = (m * m - 2 * s) % p
    return x3, (m * (s - x3) - 8 * yy * yy) % p, 2 * y * z % p


def _add(p1: _Jacobian, p2: _Jacobian, c: Curve) -> _Jacobian:
    if p1[2] == 0:
        return p2
    if p2[2] == 0:
        return p1
    p = c.p
    x1, y1, z1 = p1
    x2, y2, z2 = p2
    z1z1, z2z2 = z1 * z1 % p, z2 * z2 % p
    u1, u2 = x1 * z2z2 % p, x2 * z1z1 % p
    s1, s2 = y1 * z2 * z2z2 % p, y2 * z1 * z1z1 % p
    if u1 == u2:
        return _double(p1, c) if s1 == s2 else _INFINITY
    h, r = (u2 - u1) % p, (s2 - s1) % p
    hh = h * h % p
    hhh = h * hh % p
    v = u1 * hh % p
    x3 = (r * r - hhh - 2 * v) % p
    return x3, (r * (v - x3) - s1 * hhh) % p, h * z1 * z2 % p


def _mul_add(k1: int, q1: tuple[int, int], k2: int, q2: tuple[int, int], c: Curve) -> _Jacobian:
    """k1*q1 + k2*q2 (Shamir's trick). Variable time: verification only, public inputs."""
    a, b = (*q1, 1), (*q2, 1)
    both = _add(a, b, c)
    acc = _INFINITY
    for i in range(max(k1.bit_length(), k2.bit_length()) - 1, -1, -1):
        acc = _double(acc, c)
        bits = ((k1 >> i) & 1, (k2 >> i) & 1)
        if bits == (1, 1):
            acc = _add(acc, both, c)
        elif bits == (1, 0):
            acc = _add(acc, a, c)
        elif bits == (0, 1):
            acc = _add(acc, b, c)
    return acc


def _affine_x(pt: _Jacobian, c: Curve) -> int | None:
    x, _, z = pt
    if z == 0:
        return None
    return x * pow(z * z, -1, c.p) % c.p


def public_key_of_reference(private_key: bytes, curve: Curve = SM2P256V1) -> bytes:
    """04 || x || y of d*G, in plain variable-time Python: for test vectors only."""
    d = parse_private_key(private_key, curve)
    x, y, z = _mul_add(d, curve.g, 0, curve.g, curve)
    zi = pow(z, -1, curve.p)
    return b"\x04" + _bytes32(x * zi * zi % curve.p) + _bytes32(y * zi * zi * zi % curve.p)


def verify_reference(
    public_key: bytes,
    message: bytes,
    signature: bytes,
    user_id: bytes = DEFAULT_USER_ID,
    curve: Curve = SM2P256V1,
) -> None:
    """GB/T 32918.2 §7.1, step by step. Raises `SM2Error` unless the signature verifies."""
    point = parse_public_key(public_key, curve)
    r, s = parse_signature(signature, curve)  # B1, B2
    e = _int32(message_digest(public_key, message, user_id, curve))  # B3, B4
    t = (r + s) % curve.n  # B5
    if t == 0:
        raise SM2Error("signature does not verify")
    x1 = _affine_x(_mul_add(s, curve.g, t, point, curve), curve)  # B6
    if x1 is None or (e + x1) % curve.n != r:  # B7
        raise SM2Error("signature does not verify")


# --- the verifier and signer the chain runs (Tongsuo) ------------------------------------------


def verify(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Raise `SM2Error` unless `signature` is a valid SM2 signature of message under
    public_key on the recommended curve, with the default user ID."""
    key = _public_key_object(public_key)
    r, s = parse_signature(signature)
    if (r + s) % SM2P256V1.n == 0:
        raise SM2Error("signature does not verify")
    try:
        key.verify(_der(r, s), message, _SM2_SM3)
    except (InvalidSignature, ValueError) as e:
        raise SM2Error("signature does not verify") from e


@functools.lru_cache(maxsize=4096)
def _public_key_object(public_key: bytes) -> tong_ec.EllipticCurvePublicKey:
    """A checked, parsed public key, memoised: a validator sees the same members' keys over
    and over (an invalid key raises, and exceptions are not cached)."""
    parse_public_key(public_key)
    return tong_ec.EllipticCurvePublicKey.from_encoded_point(tong_ec.SM2(), public_key)


def sign(private_key: bytes, message: bytes) -> bytes:
    """A 64-byte `r || s` SM2 signature of message with the default user ID (Tongsuo
    draws k from its CSPRNG)."""
    der = _private_key_object(private_key).sign(message, _SM2_SM3)
    return b"".join(_bytes32(v) for v in _undo_der(der))


def public_key_of(private_key: bytes) -> bytes:
    """04 || x || y of d*G, computed by Tongsuo."""
    point: bytes = (
        _private_key_object(private_key)
        .public_key()
        .public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    )
    return point


def generate_private_key() -> bytes:
    """A fresh private key: 32 random bytes from the OS, drawn again until in [1, n-2]."""
    while True:
        candidate = os.urandom(PRIVATE_KEY_LEN)
        if 1 <= _int32(candidate) <= SM2P256V1.n - 2:
            return candidate


_PRIVATE: dict[bytes, tong_ec.EllipticCurvePrivateKey] = {}


def _private_key_object(private_key: bytes) -> tong_ec.EllipticCurvePrivateKey:
    key = _PRIVATE.get(private_key)
    if key is None:
        key = tong_ec.derive_private_key(parse_private_key(private_key), tong_ec.SM2())
        if len(_PRIVATE) < 1024:
            _PRIVATE[private_key] = key
    return key


_SM2_SM3 = tong_ec.ECDSA(tong_hashes.SM3())
"""Tongsuo's name for "SM2 with SM3" on an SM2 key: the Z value and e = SM3(Z || M) are
computed inside, with the default user ID."""


def _der(r: int, s: int) -> bytes:
    """The DER SEQUENCE { INTEGER r, INTEGER s } Tongsuo takes (GB/T 35276 SM2Signature)."""
    body = b"".join(_der_int(v) for v in (r, s))
    return b"\x30" + bytes((len(body),)) + body


def _der_int(v: int) -> bytes:
    raw = v.to_bytes((v.bit_length() + 8) // 8, "big")
    return b"\x02" + bytes((len(raw),)) + raw


def _undo_der(der: bytes) -> tuple[int, int]:
    """(r, s) of the DER signature Tongsuo returns (short lengths only: r, s < 2^256)."""
    if len(der) < 8 or der[0] != 0x30 or der[1] != len(der) - 2:
        raise SM2Error("Tongsuo returned a malformed signature")
    values = []
    i = 2
    for _ in range(2):
        if der[i] != 0x02:
            raise SM2Error("Tongsuo returned a malformed signature")
        n = der[i + 1]
        values.append(_int32(der[i + 2 : i + 2 + n]))
        i += 2 + n
    if i != len(der):
        raise SM2Error("Tongsuo returned a malformed signature")
    return values[0], values[1]
