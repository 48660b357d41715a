"""Signing keys: ML-DSA-65 (post-quantum, FIPS 204, from `cryptography`), Ed25519
(classical, from PyNaCl) and SM2 (classical, the Chinese national standard GB/T 32918.2
with SM3, through Tongsuo: `qchain/sm2.py`) behind one small interface.

Every scheme signs the same message, the 32-byte signing digest of a transaction or block.
Encodings: an Ed25519 key is 32 bytes, an ML-DSA-65 key 1952; an SM2 public key is the
uncompressed point `04 || x || y` (65 bytes) and an SM2 signature `r || s` (64 bytes, not
DER), with the standard's default user ID `1234567812345678` in its Z value. A key's
`seed` is the 32-byte secret: the seed ML-DSA-65 and Ed25519 expand, and for SM2 the
private key d itself (big-endian, `1 <= d <= n - 2`), so a partner can bring a key it
already holds.

A partner's address is `H(ADDRESS, scheme || 0x00 || public key)[:20]`, so the same key
bytes under two schemes give two addresses. `dev_key` derives keys deterministically from
a seed and a label; it exists for devnets and tests only, and anyone who knows the seed
knows the key.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import nacl.exceptions
import nacl.signing
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import mldsa

from qchain import sm2
from qchain.errors import BadSignature, KeyFileError, UnknownScheme
from qchain.hashing import Domain, hash_domain

ADDRESS_LEN = 20


class Scheme(StrEnum):
    ML_DSA_65 = "ml-dsa-65"
    ED25519 = "ed25519"
    SM2 = "sm2"


POST_QUANTUM = frozenset({Scheme.ML_DSA_65})
"""The schemes a large quantum computer does not break (Ed25519 and SM2 are elliptic-curve
schemes: Shor's algorithm breaks both)."""

PUBLIC_KEY_LEN = {
    Scheme.ML_DSA_65: 1952,
    Scheme.ED25519: 32,
    Scheme.SM2: sm2.PUBLIC_KEY_LEN,
}
SIGNATURE_LEN = {
    Scheme.ML_DSA_65: 3309,
    Scheme.ED25519: 64,
    Scheme.SM2: sm2.SIGNATURE_LEN,
}
SEED_LEN = 32


def parse_scheme(name: str) -> Scheme:
    try:
        return Scheme(name)
    except ValueError:
        raise UnknownScheme(name) from None


def address_of(scheme: Scheme | str, public_key: bytes) -> bytes:
    """The 20-byte address of a public key under a scheme."""
    s = parse_scheme(str(scheme))
    return hash_domain(Domain.ADDRESS, s.value.encode() + b"\x00" + public_key)[:ADDRESS_LEN]


def verify(scheme: Scheme | str, public_key: bytes, message: bytes, signature: bytes) -> None:
    """Raise `BadSignature` unless signature is valid for message under public_key."""
    s = parse_scheme(str(scheme))
    if len(public_key) != PUBLIC_KEY_LEN[s]:
        raise BadSignature(f"{s} public key must be {PUBLIC_KEY_LEN[s]} bytes")
    if len(signature) != SIGNATURE_LEN[s]:
        raise BadSignature(f"{s} signature must be {SIGNATURE_LEN[s]} bytes")
    try:
        if s is Scheme.ED25519:
            nacl.signing.VerifyKey(public_key).verify(message, signature)
        elif s is Scheme.SM2:
            sm2.verify(public_key, message, signature)
        else:
            _mldsa_key(public_key).verify(signature, message)
    except sm2.SM2Error as e:
        raise BadSignature(str(e)) from e
    except (nacl.exceptions.BadSignatureError, InvalidSignature, ValueError) as e:
        raise BadSignature("signature does not verify") from e


@functools.lru_cache(maxsize=4096)
def _mldsa_key(public_key: bytes) -> mldsa.MLDSA65PublicKey:
    """A parsed ML-DSA-65 public key (parsing one costs a tenth of a verification; a
    validator checks the same members' keys over and over). Raises `ValueError`."""
    return mldsa.MLDSA65PublicKey.from_public_bytes(public_key)


@dataclass(frozen=True)
class SigningKey:
    """A private key. `seed` is the 32-byte secret: what ML-DSA-65 and Ed25519 derive their
    key from, and the SM2 private key d itself."""

    scheme: Scheme
    seed: bytes

    def __post_init__(self) -> None:
        if len(self.seed) != SEED_LEN:
            raise KeyFileError(f"a key seed is {SEED_LEN} bytes")
        if self.scheme is Scheme.SM2:
            try:
                sm2.parse_private_key(self.seed)
            except sm2.SM2Error as e:
                raise KeyFileError(str(e)) from None

    def __repr__(self) -> str:
        return f"SigningKey({self.scheme}, address={self.address.hex()})"

    @classmethod
    def generate(cls, scheme: Scheme | str = Scheme.ML_DSA_65) -> SigningKey:
        s = parse_scheme(str(scheme))
        if s is Scheme.SM2:
            return cls(s, sm2.generate_private_key())
        return cls(s, os.urandom(SEED_LEN))

    @property
    def public_key(self) -> bytes:
        return _public_key(self.scheme, self.seed)

    @property
    def address(self) -> bytes:
        return address_of(self.scheme, self.public_key)

    def sign(self, message: bytes) -> bytes:
        if self.scheme is Scheme.ED25519:
            signed: bytes = nacl.signing.SigningKey(self.seed).sign(message).signature
            return signed
        if self.scheme is Scheme.SM2:
            return sm2.sign(self.seed, message)
        return _mldsa_private(self.seed).sign(message)

    def to_json(self) -> dict[str, str]:
        return {
            "scheme": self.scheme.value,
            "seed": self.seed.hex(),
            "public_key": self.public_key.hex(),
            "address": self.address.hex(),
        }

    @classmethod
    def from_json(cls, doc: object) -> SigningKey:
        if not isinstance(doc, dict):
            raise KeyFileError("a key file holds a JSON object")
        try:
            key = cls(parse_scheme(str(doc["scheme"])), bytes.fromhex(str(doc["seed"])))
        except (KeyError, ValueError) as e:
            raise KeyFileError(f"bad key file: {e}") from e
        if "address" in doc and doc["address"] != key.address.hex():
            raise KeyFileError("key file address does not match its seed")
        return key

    def save(self, path: Path) -> None:
        """Write the key as JSON, readable by the owner only (0600)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.to_json(), f, indent=2)
            f.write("\n")
        os.chmod(path, 0o600)

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise KeyFileError(f"cannot read key file {path}: {e}") from e
        return cls.from_json(doc)


_PUB_CACHE: dict[tuple[Scheme, bytes], bytes] = {}
_PRIV_CACHE: dict[bytes, mldsa.MLDSA65PrivateKey] = {}


def _mldsa_private(seed: bytes) -> mldsa.MLDSA65PrivateKey:
    key = _PRIV_CACHE.get(seed)
    if key is None:
        key = mldsa.MLDSA65PrivateKey.from_seed_bytes(seed)
        if len(_PRIV_CACHE) < 1024:
            _PRIV_CACHE[seed] = key
    return key


def _public_key(scheme: Scheme, seed: bytes) -> bytes:
    cached = _PUB_CACHE.get((scheme, seed))
    if cached is not None:
        return cached
    if scheme is Scheme.ED25519:
        pub: bytes = bytes(nacl.signing.SigningKey(seed).verify_key)
    elif scheme is Scheme.SM2:
        pub = sm2.public_key_of(seed)
    else:
        pub = _mldsa_private(seed).public_key().public_bytes_raw()
    if len(_PUB_CACHE) < 1024:
        _PUB_CACHE[(scheme, seed)] = pub
    return pub


def dev_key(seed: bytes | str, label: str, scheme: Scheme | str = Scheme.ML_DSA_65) -> SigningKey:
    """INSECURE, devnets and tests only: a key derived from a public seed and a label."""
    raw = seed.encode() if isinstance(seed, str) else seed
    s = parse_scheme(str(scheme))
    material = hash_domain(
        Domain.DEV_KEY, raw + b"\x00" + s.value.encode() + b"\x00" + label.encode()
    )
    if s is Scheme.SM2:
        # An SM2 seed is d itself, in [1, n-2]; a SHA-256 output is beyond n - 2 with
        # probability below 2^-32: such a label's key is the next hash in the chain.
        while not 1 <= int.from_bytes(material, "big") <= sm2.SM2P256V1.n - 2:
            material = hash_domain(Domain.DEV_KEY, material)
    return SigningKey(s, material)


# --- the published dev seed and what is derived from it -----------------------------------

DEV_SEED = "qchain-devnet-insecure-dev-seed"
"""Published on purpose: keys derived from it protect nothing. Devnets derive every
validator key (`dev_validator_key`) and dev account key (`dev_account_key`) from it."""

DEVNET_CHAIN_PREFIX = "qchain-devnet"
"""Every devnet's chain id starts with this (`qchain devnet init` writes no other), and
no other chain may (`qchain genesis build` refuses one). A chain whose id does not start
with it is a real chain: `qchain node run` refuses dev-seed keys on it."""

DEV_ACCOUNT_ROLES = ("admin", "partner1", "partner2", "issuer", "provider", "auditor")
"""The labels (`account-ROLE`) of the devnet's dev accounts."""


def is_devnet_chain(chain_id: str) -> bool:
    return chain_id.startswith(DEVNET_CHAIN_PREFIX)


def dev_validator_key(index: int) -> SigningKey:
    """INSECURE dev key of devnet validator `index` (ML-DSA-65: it signs certificates)."""
    return dev_key(DEV_SEED, f"validator-{index}", Scheme.ML_DSA_65)


def dev_account_key(role: str, scheme: Scheme | str) -> SigningKey:
    """INSECURE dev key of a devnet's dev account."""
    return dev_key(DEV_SEED, f"account-{role}", scheme)


def dev_seed_label(scheme: Scheme | str, public_key: bytes, validators: int) -> str | None:
    """The dev-seed label (`validator-I`, `account-ROLE`) that derives public_key under
    scheme, checking validator indices below `validators` and every dev account; None if
    the key is not one of them."""
    s = parse_scheme(str(scheme))
    labels: list[tuple[str, SigningKey]] = [
        (f"account-{role}", dev_account_key(role, s)) for role in DEV_ACCOUNT_ROLES
    ]
    if s is Scheme.ML_DSA_65:
        labels += [(f"validator-{i}", dev_validator_key(i)) for i in range(validators)]
    for label, key in labels:
        if key.public_key == public_key:
            return label
    return None
