from __future__ import annotations

import pytest

from contracts.execution import build_block
from contracts.membership import Member
from contracts.testing import DevChain
from qchain.errors import ArgumentError, InvalidBlock, NotAMember, NotFound
from qchain.keys import Scheme, dev_key


def onboard_args(label: str, roles: list[str], scheme: Scheme = Scheme.ED25519) -> list[object]:
    key = dev_key("new", label, scheme)
    return [f"Org {label}", key.scheme.value, key.public_key, roles]


def test_onboard(chain: DevChain) -> None:
    key = dev_key("new", "acme", Scheme.ML_DSA_65)
    r = chain.run(
        chain.tx(
            "admin",
            "membership",
            "onboard",
            onboard_args("acme", ["partner", "provider"], Scheme.ML_DSA_65),
        )
    )
    assert r.ok and r.result == key.address
    assert r.events[0].name == "onboarded"
    m = chain.query("membership", "member", [key.address])
    assert isinstance(m, Member)
    assert m.roles == ("partner", "provider") and m.active and m.joined_height == 1
    account = chain.query("membership", "account", [key.address])
    assert account == {
        "address": key.address,
        "nonce": 0,
        "roles": ["partner", "provider"],
        "status": "active",
        "scheme": "ml-dsa-65",
    }


def test_onboarded_member_can_transact(chain: DevChain) -> None:
    key = dev_key("new", "acme", Scheme.ED25519)
    chain.run(chain.tx("admin", "membership", "onboard", onboard_args("acme", ["partner"])))
    chain.keys["acme"] = key
    r = chain.run(chain.tx("acme", "notary", "anchor", [b"\x01" * 32, "sm3", "t", "c", b""]))
    assert r.ok


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (onboard_args("x", ["wizard"]), "invalid-argument", "unknown role"),
        (onboard_args("x", ["partner", "partner"]), "invalid-argument", "twice"),
        (onboard_args("x", []), "invalid-argument", "roles"),
        (["Org", "rsa", b"\x01" * 32, ["partner"]], "invalid-argument", "scheme"),
        (["Org", "ed25519", b"\x01" * 31, ["partner"]], "invalid-argument", "public_key"),
        (["", "ed25519", b"\x01" * 32, ["partner"]], "invalid-argument", "name"),
        (["Org", "ed25519", b"\x01" * 32], "invalid-argument", "expected 4 arguments"),
    ],
)
def test_onboard_argument_errors(
    chain: DevChain, args: list[object], code: str, fragment: str
) -> None:
    r = chain.run(chain.tx("admin", "membership", "onboard", args))
    assert not r.ok and r.code == code and fragment in r.message


def test_onboard_duplicate(chain: DevChain) -> None:
    chain.run(chain.tx("admin", "membership", "onboard", onboard_args("x", ["partner"])))
    r = chain.run(chain.tx("admin", "membership", "onboard", onboard_args("x", ["auditor"])))
    assert not r.ok and r.code == "duplicate"


def test_onboard_needs_admin(chain: DevChain) -> None:
    r = chain.run(chain.tx("ent", "membership", "onboard", onboard_args("x", ["partner"])))
    assert not r.ok and r.code == "permission-denied" and "admin" in r.message


def test_suspended_member_cannot_transact(chain: DevChain) -> None:
    ent = chain.address("ent")
    r = chain.run(chain.tx("admin", "membership", "suspend", [ent, "unpaid fees"]))
    assert r.ok
    m = chain.query("membership", "member", [ent])
    assert isinstance(m, Member) and m.status == "suspended" and m.reason == "unpaid fees"
    tx = chain.tx("ent", "notary", "anchor", [b"\x02" * 32, "sha256", "t", "c", b""])
    with pytest.raises(InvalidBlock) as e:
        chain.execute([tx])
    assert e.value.cause == NotAMember.code and e.value.index == 0
    _, included, rejected = build_block(chain.store, chain.context(), [tx])
    assert included == [] and isinstance(rejected[0].error, NotAMember)


def test_suspend_then_reinstate(chain: DevChain) -> None:
    ent = chain.address("ent")
    assert chain.run(chain.tx("admin", "membership", "suspend", [ent, ""])).ok
    r = chain.run(chain.tx("admin", "membership", "suspend", [ent, ""]))
    assert r.code == "rule-violation" and "already suspended" in r.message
    assert chain.run(chain.tx("admin", "membership", "reinstate", [ent])).ok
    r = chain.run(chain.tx("admin", "membership", "reinstate", [ent]))
    assert r.code == "rule-violation" and "not suspended" in r.message
    assert chain.run(
        chain.tx("ent", "notary", "anchor", [b"\x03" * 32, "sha256", "t", "c", b""])
    ).ok


def test_suspend_unknown_member(chain: DevChain) -> None:
    r = chain.run(chain.tx("admin", "membership", "suspend", [b"\x09" * 20, ""]))
    assert r.code == NotFound.code


def test_reinstate_and_set_roles_need_admin(chain: DevChain) -> None:
    ent = chain.address("ent")
    assert chain.run(chain.tx("ent2", "membership", "reinstate", [ent])).code == "permission-denied"
    assert (
        chain.run(chain.tx("ent2", "membership", "set_roles", [ent, ["admin"]])).code
        == "permission-denied"
    )
    assert (
        chain.run(chain.tx("ent2", "membership", "suspend", [ent, ""])).code == "permission-denied"
    )


def test_last_admin_cannot_remove_itself(chain: DevChain) -> None:
    admin = chain.address("admin")
    r = chain.run(chain.tx("admin", "membership", "suspend", [admin, "leaving"]))
    assert r.code == "rule-violation" and "at least one active admin" in r.message
    r = chain.run(chain.tx("admin", "membership", "set_roles", [admin, ["auditor"]]))
    assert r.code == "rule-violation"
    # with a second admin, the first may step down
    assert chain.run(
        chain.tx(
            "admin", "membership", "set_roles", [chain.address("auditor"), ["admin", "auditor"]]
        )
    ).ok
    assert chain.run(chain.tx("admin", "membership", "set_roles", [admin, ["auditor"]])).ok
    by_role = chain.query("membership", "members_by_role", ["admin"])
    assert isinstance(by_role, list) and [m.address for m in by_role] == [chain.address("auditor")]


def test_set_roles(chain: DevChain) -> None:
    ent = chain.address("ent")
    r = chain.run(chain.tx("admin", "membership", "set_roles", [ent, ["provider", "partner"]]))
    assert r.ok
    providers = chain.query("membership", "members_by_role", ["provider"])
    assert isinstance(providers, list) and ent in [m.address for m in providers]
    r = chain.run(chain.tx("admin", "membership", "set_roles", [ent, ["king"]]))
    assert r.code == "invalid-argument"
    r = chain.run(chain.tx("admin", "membership", "set_roles", [b"\x07" * 20, ["partner"]]))
    assert r.code == "not-found"


def test_rotate_key(chain: DevChain) -> None:
    ent = chain.address("ent")
    new = dev_key("rotated", "ent", Scheme.ML_DSA_65)
    r = chain.run(chain.tx("ent", "membership", "rotate_key", [new.scheme.value, new.public_key]))
    assert r.ok
    m = chain.query("membership", "member", [ent])
    assert isinstance(m, Member) and m.public_key == new.public_key and m.key_height == 1
    old_signed = chain.tx("ent", "notary", "anchor", [b"\x04" * 32, "sha256", "t", "c", b""])
    with pytest.raises(InvalidBlock) as e:
        chain.execute([old_signed])
    assert e.value.cause == "bad-signature"
    chain.keys["ent"] = new
    tx = chain.tx("ent", "notary", "anchor", [b"\x04" * 32, "sha256", "t", "c", b""], nonce=1)
    assert tx.sender == ent
    assert chain.run(tx).ok


def test_rotate_to_same_key(chain: DevChain) -> None:
    key = chain.keys["ent"]
    r = chain.run(chain.tx("ent", "membership", "rotate_key", [key.scheme.value, key.public_key]))
    assert r.code == "rule-violation" and "current key" in r.message


def test_rotate_bad_key(chain: DevChain) -> None:
    r = chain.run(chain.tx("ent", "membership", "rotate_key", ["ml-dsa-65", b"\x01" * 32]))
    assert r.code == ArgumentError.code


def test_queries_not_found_and_bad_role(chain: DevChain) -> None:
    with pytest.raises(NotFound):
        chain.query("membership", "member", [b"\x05" * 20])
    with pytest.raises(NotFound):
        chain.query("membership", "account", [b"\x05" * 20])
    with pytest.raises(ArgumentError):
        chain.query("membership", "members_by_role", ["wizard"])
