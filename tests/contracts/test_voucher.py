from __future__ import annotations

import pytest

from contracts.testing import DevChain
from contracts.voucher import HistoryEntry, Programme
from qchain.errors import ArgumentError, NotFound


def programme(chain: DevChain, pid: str = "p1") -> Programme:
    p = chain.query("voucher", "programme", [pid])
    assert isinstance(p, Programme)
    return p


def setup(chain: DevChain, budget: int = 1000, expiry: int = 20) -> None:
    assert chain.run(
        chain.tx("bureau", "voucher", "create", ["p1", "AI pilots", budget, expiry])
    ).ok


def grant(chain: DevChain, to: str, amount: int) -> object:
    r = chain.run(chain.tx("bureau", "voucher", "grant", ["p1", chain.address(to), amount]))
    assert r.ok, r.message
    return r.result


def test_lifecycle(chain: DevChain) -> None:
    setup(chain)
    assert grant(chain, "ent", 300) == 300
    prov = chain.address("prov")
    r = chain.run(chain.tx("ent", "voucher", "pay", ["p1", prov, 120, "invoice 7"]))
    assert r.ok and r.result == 180
    r = chain.run(chain.tx("prov", "voucher", "redeem", ["p1", 100]))
    assert r.ok and r.result == 20
    p = programme(chain)
    assert (p.budget, p.issued, p.held, p.redeemed, p.returned) == (1000, 300, 200, 100, 0)
    assert chain.query("voucher", "balance", ["p1", chain.address("ent")]) == {
        "programme": "p1",
        "held": 180,
        "earned": 0,
    }
    assert chain.query("voucher", "balances", [prov]) == [
        {"programme": "p1", "held": 0, "earned": 20}
    ]
    hist = chain.query("voucher", "history", [prov, 0, 10])
    assert isinstance(hist, list)
    assert [(h.kind, h.amount) for h in hist] == [("received", 120), ("redeemed", 100)]
    page = chain.query("voucher", "history", [prov, 1, 1])
    assert isinstance(page, list) and [h.kind for h in page] == ["redeemed"]


def test_expiry_returns_enterprise_balances(chain: DevChain) -> None:
    setup(chain, expiry=5)
    grant(chain, "ent", 300)
    grant(chain, "ent2", 50)
    chain.run(chain.tx("ent", "voucher", "pay", ["p1", chain.address("prov"), 100, ""]))
    while chain.height < 5:
        chain.block()
    assert not programme(chain).expired
    result = chain.block()
    assert [(e.name, e.data) for e in result.events] == [("expired", ["p1", 250])]
    p = programme(chain)
    assert p.expired and (p.issued, p.held, p.redeemed, p.returned) == (350, 100, 0, 250)
    hist = chain.query("voucher", "history", [chain.address("ent2"), 0, 10])
    assert isinstance(hist, list) and hist[-1] == HistoryEntry(
        6, b"", "returned", "p1", 50, chain.address("bureau"), ""
    )
    r = chain.run(chain.tx("bureau", "voucher", "grant", ["p1", chain.address("ent"), 1]))
    assert r.code == "rule-violation" and "expired" in r.message
    r = chain.run(chain.tx("ent", "voucher", "pay", ["p1", chain.address("prov"), 1, ""]))
    assert r.code == "rule-violation" and "expired" in r.message
    # providers keep their earnings and may still redeem them
    assert chain.run(chain.tx("prov", "voucher", "redeem", ["p1", 100])).ok
    p = programme(chain)
    assert (p.held, p.redeemed) == (0, 100)


@pytest.mark.parametrize(
    ("label", "args", "code", "fragment"),
    [
        ("ent", ["p2", "t", 10, 50], "permission-denied", "issuer"),
        ("bureau", ["P 2", "t", 10, 50], "invalid-argument", "argument id"),
        ("bureau", ["p2", "t", 0, 50], "invalid-argument", "argument budget"),
        ("bureau", ["p2", "t", 10, 1], "rule-violation", "expiry height 1"),
        ("bureau", ["p1", "t", 10, 50], "duplicate", "p1"),
    ],
)
def test_create_errors(
    chain: DevChain, label: str, args: list[object], code: str, fragment: str
) -> None:
    setup(chain)
    r = chain.run(chain.tx(label, "voucher", "create", args))
    assert r.code == code and fragment in r.message


def test_grant_errors(chain: DevChain) -> None:
    setup(chain, budget=100)
    ent = chain.address("ent")
    # another issuer may not grant from this programme
    chain.run(chain.tx("admin", "membership", "set_roles", [chain.address("auditor"), ["issuer"]]))
    r = chain.run(chain.tx("auditor", "voucher", "grant", ["p1", ent, 1]))
    assert r.code == "permission-denied" and "only the programme's issuer" in r.message
    r = chain.run(chain.tx("ent", "voucher", "grant", ["p1", ent, 1]))
    assert r.code == "permission-denied"
    r = chain.run(chain.tx("bureau", "voucher", "grant", ["p1", chain.address("prov"), 1]))
    assert r.code == "rule-violation" and "not an active partner" in r.message
    r = chain.run(chain.tx("bureau", "voucher", "grant", ["nope", ent, 1]))
    assert r.code == NotFound.code
    grant(chain, "ent", 90)
    r = chain.run(chain.tx("bureau", "voucher", "grant", ["p1", ent, 11]))
    assert r.code == "rule-violation" and "budget" in r.message and "10 left" in r.message
    r = chain.run(chain.tx("bureau", "voucher", "grant", ["p1", ent, 0]))
    assert r.code == ArgumentError.code
    chain.run(chain.tx("admin", "membership", "suspend", [ent, ""]))
    r = chain.run(chain.tx("bureau", "voucher", "grant", ["p1", ent, 1]))
    assert r.code == "rule-violation"


def test_pay_errors(chain: DevChain) -> None:
    setup(chain)
    grant(chain, "ent", 100)
    prov = chain.address("prov")
    r = chain.run(chain.tx("ent", "voucher", "pay", ["p1", prov, 101, ""]))
    assert r.code == "insufficient-balance" and "100" in r.message
    r = chain.run(chain.tx("ent", "voucher", "pay", ["p1", chain.address("ent2"), 1, ""]))
    assert r.code == "rule-violation" and "not an active provider" in r.message
    r = chain.run(chain.tx("prov", "voucher", "pay", ["p1", prov, 1, ""]))
    assert r.code == "permission-denied"
    chain.run(
        chain.tx(
            "admin", "membership", "set_roles", [chain.address("ent"), ["partner", "provider"]]
        )
    )
    r = chain.run(chain.tx("ent", "voucher", "pay", ["p1", chain.address("ent"), 1, ""]))
    assert r.code == "rule-violation" and "itself" in r.message
    r = chain.run(chain.tx("ent", "voucher", "pay", ["p9", prov, 1, ""]))
    assert r.code == NotFound.code
    assert programme(chain).held == 100


def test_redeem_errors(chain: DevChain) -> None:
    setup(chain)
    grant(chain, "ent", 100)
    chain.run(chain.tx("ent", "voucher", "pay", ["p1", chain.address("prov"), 40, ""]))
    r = chain.run(chain.tx("prov", "voucher", "redeem", ["p1", 41]))
    assert r.code == "insufficient-balance"
    r = chain.run(chain.tx("ent", "voucher", "redeem", ["p1", 1]))
    assert r.code == "permission-denied"
    r = chain.run(chain.tx("prov", "voucher", "redeem", ["p2", 1]))
    assert r.code == NotFound.code


def test_queries_errors(chain: DevChain) -> None:
    with pytest.raises(NotFound):
        chain.query("voucher", "programme", ["p1"])
    with pytest.raises(NotFound):
        chain.query("voucher", "balance", ["p1", chain.address("ent")])
    with pytest.raises(ArgumentError):
        chain.query("voucher", "history", [chain.address("ent"), 0, 0])
    assert chain.query("voucher", "balances", [chain.address("ent")]) == []
