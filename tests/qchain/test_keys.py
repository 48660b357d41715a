"""Signing keys: every scheme signs and verify transactions; any change to the signed bytes
breaks the signature; malformed keys and signatures are `BadSignature`; key files."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qchain.errors import BadSignature, KeyFileError, UnknownScheme
from qchain.hashing import Domain, hash_domain
from qchain.keys import (
    PUBLIC_KEY_LEN,
    SIGNATURE_LEN,
    Scheme,
    SigningKey,
    address_of,
    dev_key,
    parse_scheme,
    verify,
)
from qchain.types import Transaction, new_transaction

SCHEMES = [pytest.param(s, id=s.value) for s in Scheme]
MAX_EXAMPLES = {Scheme.ED25519: 200, Scheme.ML_DSA_65: 50, Scheme.SM2: 100}


def _tx(scheme: Scheme) -> Transaction:
    key = dev_key("test-keys", "alice", scheme)
    return new_transaction(
        key,
        chain_id="qchain-test",
        nonce=3,
        contract="registry",
        method="register",
        args=[b"\x01\x02", "name", 42, [True, None]],
        expiry_height=100,
    )


@pytest.mark.parametrize("scheme", SCHEMES)
def test_signed_transaction_verifies(scheme: Scheme) -> None:
    tx = _tx(scheme)
    assert tx.scheme == scheme.value
    assert len(tx.signature) == SIGNATURE_LEN[scheme]
    assert len(tx.public_key) == PUBLIC_KEY_LEN[scheme]
    assert tx.sender == address_of(scheme, tx.public_key)
    tx.verify_signature(tx.public_key)
    # A transaction carrying no key is checked against the registered key.
    keyless = Transaction(*tx.to_wire()[:8], b"", tx.signature)  # type: ignore[arg-type]
    with pytest.raises(BadSignature):
        keyless.verify_signature(tx.public_key)
    other = dev_key("test-keys", "bob", scheme)
    with pytest.raises(BadSignature):
        tx.verify_signature(other.public_key)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_flipping_any_byte_of_the_signed_bytes_breaks_the_signature(scheme: Scheme) -> None:
    tx = _tx(scheme)
    body = tx.body_bytes()
    digest = tx.signing_digest()
    assert digest == hash_domain(Domain.TX_SIGN, body)
    verify(scheme, tx.public_key, digest, tx.signature)

    @settings(max_examples=MAX_EXAMPLES[scheme], deadline=None)
    @given(
        target=st.sampled_from(["body", "digest", "signature"]),
        pos=st.integers(0, 10**6),
        mask=st.integers(1, 255),
    )
    def check(target: str, pos: int, mask: int) -> None:
        body_b, digest_b, sig_b = bytearray(body), bytearray(digest), bytearray(tx.signature)
        buf = {"body": body_b, "digest": digest_b, "signature": sig_b}[target]
        buf[pos % len(buf)] ^= mask
        signed = hash_domain(Domain.TX_SIGN, bytes(body_b)) if target == "body" else digest_b
        with pytest.raises(BadSignature):
            verify(scheme, tx.public_key, bytes(signed), bytes(sig_b))

    check()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_changing_any_field_breaks_the_signature(scheme: Scheme) -> None:
    tx = _tx(scheme)
    wire = tx.to_wire()
    changes = {0: "other-chain", 1: b"\xff" * 20, 2: 4, 3: "bank", 4: "pay", 5: [], 6: 101}
    for i, new in changes.items():
        w = list(wire)
        w[i] = new
        with pytest.raises(BadSignature):
            Transaction.from_wire(w).verify_signature(tx.public_key)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_wrong_length_keys_and_signatures(scheme: Scheme) -> None:
    tx = _tx(scheme)
    digest = tx.signing_digest()
    pk, sig = tx.public_key, tx.signature
    for bad_pk in (b"", pk[:-1], pk + b"\x00"):
        with pytest.raises(BadSignature):
            verify(scheme, bad_pk, digest, sig)
    for bad_sig in (b"", sig[:-1], sig + b"\x00"):
        with pytest.raises(BadSignature):
            verify(scheme, pk, digest, bad_sig)
    with pytest.raises(BadSignature):
        verify(scheme, b"\x00" * PUBLIC_KEY_LEN[scheme], digest, sig)
    with pytest.raises(BadSignature):
        verify(scheme, b"\xff" * PUBLIC_KEY_LEN[scheme], digest, b"\xff" * SIGNATURE_LEN[scheme])


def test_other_scheme_is_rejected() -> None:
    ed = _tx(Scheme.ED25519)
    with pytest.raises(BadSignature):
        verify(Scheme.ML_DSA_65, ed.public_key, ed.signing_digest(), ed.signature)
    with pytest.raises(UnknownScheme):
        verify("rsa", ed.public_key, ed.signing_digest(), ed.signature)
    with pytest.raises(UnknownScheme):
        parse_scheme("ED25519")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_dev_keys_are_deterministic(scheme: Scheme) -> None:
    a = dev_key("seed", "validator-0", scheme)
    assert a == dev_key(b"seed", "validator-0", scheme)
    assert a.public_key == dev_key("seed", "validator-0", scheme).public_key
    assert a.seed != dev_key("seed", "validator-1", scheme).seed
    assert a.seed != dev_key("seed2", "validator-0", scheme).seed
    other_scheme = Scheme.ED25519 if scheme is Scheme.ML_DSA_65 else Scheme.ML_DSA_65
    assert a.seed != dev_key("seed", "validator-0", other_scheme).seed


def test_address_depends_on_scheme() -> None:
    pk = b"\x07" * 32
    assert address_of(Scheme.ED25519, pk) != address_of(Scheme.ML_DSA_65, pk)
    assert len(address_of("ed25519", pk)) == 20


@pytest.mark.parametrize("scheme", SCHEMES)
def test_key_file_round_trip_and_mode(tmp_path: Path, scheme: Scheme) -> None:
    key = SigningKey.generate(scheme)
    path = tmp_path / "sub" / "key.json"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = SigningKey.load(path)
    assert loaded == key
    assert loaded.address == key.address
    # Overwriting a looser file tightens it again.
    path.chmod(0o644)
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "seed" not in repr(key) and key.seed.hex() not in repr(key)


def test_tampered_key_files_rejected(tmp_path: Path) -> None:
    key = dev_key("files", "k", Scheme.ED25519)
    path = tmp_path / "key.json"
    key.save(path)
    doc = json.loads(path.read_text())

    def write_and_load(d: object) -> None:
        path.write_text(json.dumps(d))
        SigningKey.load(path)

    with pytest.raises(KeyFileError, match="address"):
        write_and_load({**doc, "address": "00" * 20})
    with pytest.raises(KeyFileError):
        write_and_load({**doc, "seed": doc["seed"][:-2]})
    with pytest.raises(KeyFileError):
        write_and_load({**doc, "seed": "zz" * 32})
    with pytest.raises(KeyFileError):
        write_and_load({"scheme": "ed25519"})
    with pytest.raises(KeyFileError):
        write_and_load([doc])
    path.write_text("{not json")
    with pytest.raises(KeyFileError):
        SigningKey.load(path)
    with pytest.raises(KeyFileError):
        SigningKey.load(tmp_path / "missing.json")
