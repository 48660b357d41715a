"""SM2 members end to end in the contracts: genesis members, onboarding, key rotation,
transactions executed and refused; and a genesis that restricts the accepted schemes."""

from __future__ import annotations

from typing import Any

import pytest

from contracts import membership
from contracts.execution import check_sender
from contracts.genesis import parse_genesis
from contracts.testing import PILOT_MEMBERS, DevChain, dev_genesis
from qchain.errors import BadSignature, GenesisError, SchemeNotAccepted
from qchain.keys import Scheme, dev_key
from qchain.store import MemoryStore

ANCHOR = ["notary", "anchor", [b"\x05" * 32, "sm3", "contract", "c", b""]]


def _anchor(i: int) -> list[Any]:
    return ["notary", "anchor", [bytes([i]) * 32, "sm3", "contract", "c", b""]]


def test_sm2_genesis_members_transact_and_receipts_name_the_scheme() -> None:
    genesis, keys = dev_genesis(PILOT_MEMBERS, scheme=Scheme.SM2)
    chain = DevChain(MemoryStore(), genesis, keys)
    tx = chain.tx("ent", *_anchor(1))
    assert tx.scheme == "sm2" and len(tx.public_key) == 65 and len(tx.signature) == 64
    assert chain.run(tx).ok
    account = chain.query("membership", "account", [keys["ent"].address])
    assert isinstance(account, dict) and account["scheme"] == "sm2" and account["nonce"] == 1


def test_mixed_schemes_and_rotation_to_sm2() -> None:
    schemes = {"ent": Scheme.SM2, "ent2": Scheme.ML_DSA_65}
    genesis, keys = dev_genesis(PILOT_MEMBERS, schemes=schemes)
    chain = DevChain(MemoryStore(), genesis, keys)
    assert chain.run(chain.tx("ent", *_anchor(1))).ok
    assert chain.run(chain.tx("ent2", *_anchor(2))).ok
    assert chain.run(chain.tx("admin", *_anchor(3))).ok  # ed25519
    # ent2 moves from ML-DSA-65 to SM2; its address stays.
    new = dev_key("rotate", "ent2", Scheme.SM2)
    r = chain.run(chain.tx("ent2", "membership", "rotate_key", ["sm2", new.public_key]))
    assert r.ok, r.message
    chain.keys["ent2"] = new
    assert chain.run(chain.tx("ent2", *_anchor(4))).ok


def test_onboard_sm2_and_bad_sm2_keys_are_argument_errors() -> None:
    genesis, keys = dev_genesis(PILOT_MEMBERS)
    chain = DevChain(MemoryStore(), genesis, keys)
    key = dev_key("new", "bank", Scheme.SM2)
    r = chain.run(
        chain.tx("admin", "membership", "onboard", ["Bank", "sm2", key.public_key, ["partner"]])
    )
    assert r.ok and r.result == key.address
    off_curve = key.public_key[:64] + bytes([key.public_key[64] ^ 1])
    for bad in (off_curve, b"\x02" + key.public_key[1:], key.public_key[:33]):
        r = chain.run(chain.tx("admin", "membership", "onboard", ["X", "sm2", bad, ["partner"]]))
        assert not r.ok and r.code == "invalid-argument", r.message
        assert "public_key" in r.message


def _restricted(accepted: list[str], scheme: Scheme = Scheme.SM2) -> dict[str, Any]:
    genesis, _ = dev_genesis(PILOT_MEMBERS, scheme=scheme)
    return {**genesis.to_json(), "accepted_schemes": accepted}


def test_genesis_accepted_schemes_round_trip_and_hash() -> None:
    plain, _ = dev_genesis(PILOT_MEMBERS, scheme=Scheme.SM2)
    doc = _restricted(["sm2", "ml-dsa-65"])
    g = parse_genesis(doc)
    assert g.accepted_schemes == ("ml-dsa-65", "sm2")  # in the order of Scheme
    assert parse_genesis(g.to_json()) == g
    assert g.hash != plain.hash
    assert "accepted_schemes" not in plain.to_json()
    assert parse_genesis(plain.to_json()).hash == plain.hash


@pytest.mark.parametrize(
    ("accepted", "field"),
    [
        (["ed25519"], "members[0].scheme"),
        (["sm2", "rsa"], "accepted_schemes[1]"),
        ([], "accepted_schemes"),
        (["sm2", "sm2"], "accepted_schemes"),
        ("sm2", "accepted_schemes"),
    ],
)
def test_bad_accepted_schemes_name_the_field(accepted: Any, field: str) -> None:
    with pytest.raises(GenesisError) as e:
        parse_genesis(_restricted(accepted))
    assert e.value.field == field


def test_a_restricted_chain_refuses_other_schemes() -> None:
    genesis = parse_genesis(_restricted(["sm2"]))
    _, keys = dev_genesis(PILOT_MEMBERS, scheme=Scheme.SM2)
    chain = DevChain(MemoryStore(), genesis, keys)
    assert chain.run(chain.tx("ent", *_anchor(1))).ok
    # Onboarding or rotating to an Ed25519 key fails with a receipt naming the scheme.
    ed = dev_key("new", "ed", Scheme.ED25519)
    r = chain.run(
        chain.tx(
            "admin", "membership", "onboard", ["Ed Org", "ed25519", ed.public_key, ["partner"]]
        )
    )
    assert not r.ok and r.code == "invalid-argument" and "does not accept ed25519" in r.message
    r = chain.run(chain.tx("ent", "membership", "rotate_key", ["ed25519", ed.public_key]))
    assert not r.ok and "does not accept ed25519" in r.message
    # A transaction signed with another scheme is refused before any signature check.
    ent_address = chain.address("ent")
    chain.keys["ent"] = dev_key("other", "ent", Scheme.ED25519)
    tx = chain.tx("ent", *_anchor(2))
    assert tx.sender == ent_address
    with pytest.raises(SchemeNotAccepted) as e:
        check_sender(chain.store, tx, exact_nonce=False, max_nonce_ahead=64)
    assert e.value.fields() == {"scheme": "ed25519", "accepted_schemes": ["sm2"]}
    stored = membership.accepted_schemes(membership.StateReader(chain.store, membership.NAME))
    assert stored == ("sm2",)


def test_an_unrestricted_chain_reports_a_scheme_mismatch_as_a_bad_signature() -> None:
    genesis, keys = dev_genesis(PILOT_MEMBERS, scheme=Scheme.SM2)
    chain = DevChain(MemoryStore(), genesis, keys)
    chain.keys["ent"] = dev_key("other", "ent", Scheme.ED25519)
    with pytest.raises(BadSignature, match="registered key is sm2, not ed25519"):
        check_sender(chain.store, chain.tx("ent", *_anchor(1)), exact_nonce=False)
