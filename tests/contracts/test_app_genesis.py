from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from contracts.genesis import init_state, parse_genesis
from contracts.membership import Member, get_member
from contracts.state import StateReader
from contracts.testing import PILOT_MEMBERS, dev_genesis
from node.genesis_file import load_genesis, save_genesis
from qchain.errors import GenesisError
from qchain.store import MemoryStore


def doc(validators: int = 4) -> dict[str, Any]:
    genesis, _ = dev_genesis(PILOT_MEMBERS, validators=validators, voucher_issuers=["bureau"])
    return genesis.to_json()


def test_round_trip(tmp_path: Path) -> None:
    genesis, keys = dev_genesis(PILOT_MEMBERS, validators=4, voucher_issuers=["bureau"])
    path = tmp_path / "genesis.json"
    save_genesis(genesis, path)
    loaded = load_genesis(path)
    assert loaded == genesis and loaded.hash == genesis.hash
    assert loaded.consensus.tenure == 64 and loaded.consensus.first_leader == 0
    assert [v.sae_id for v in loaded.validators] == ["sae-0", "sae-1", "sae-2", "sae-3"]
    assert len(loaded.validator_keys()) == 4
    bureau = next(m for m in loaded.members if m.address == keys["bureau"].address)
    assert bureau.roles == ("auditor", "issuer")


def test_defaults_and_hints() -> None:
    d = doc()
    del d["consensus"], d["genesis_time"], d["voucher_issuers"]
    g = parse_genesis(d)
    assert (g.consensus.tenure, g.consensus.first_leader, g.genesis_time) == (64, 0, 0)
    hinted = copy.deepcopy(d)
    hinted["validators"][0]["p2p"] = "10.0.0.1:7000"
    hinted["validators"][0]["api"] = "http://10.0.0.1:8080"
    h = parse_genesis(hinted)
    assert h.validators[0].p2p == "10.0.0.1:7000"
    assert h.hash == g.hash, "address hints are not part of the chain's identity"
    d["chain_id"] = "other"
    assert parse_genesis(d).hash != g.hash


def edit(path: str, value: object) -> dict[str, Any]:
    d = doc()
    target: Any = d
    parts = path.split("/")
    for p in parts[:-1]:
        target = target[int(p)] if p.isdigit() else target[p]
    last = parts[-1]
    if value is KeyError:
        del target[last]
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return d


@pytest.mark.parametrize(
    ("d", "field", "reason"),
    [
        (edit("chain_id", KeyError), "chain_id", "missing"),
        (edit("chain_id", ""), "chain_id", "length"),
        (edit("extra", 1), "extra", "unknown field"),
        (edit("genesis_time", -1), "genesis_time", "between"),
        (edit("consensus/tenure", 0), "consensus.tenure", "between"),
        (edit("consensus/first_leader", 4), "consensus.first_leader", "between"),
        (edit("consensus/first_leader", True), "consensus.first_leader", "integer"),
        (edit("validators", []), "validators", "3f+1"),
        (edit("validators/0/index", 1), "validators[0].index", "expected 0"),
        (edit("validators/1/public_key", "00"), "validators[1].public_key", "1952 bytes"),
        (edit("validators/1/public_key", "xyz"), "validators[1].public_key", "hex"),
        (edit("validators/1/scheme", "ed25519"), "validators[1].scheme", "ml-dsa-65"),
        (edit("validators/2/sae_id", "sae-0"), "validators[2].sae_id", "validators[0]"),
        (edit("validators/2/sae_id", KeyError), "validators[2].sae_id", "missing"),
        (edit("members", "x"), "members", "array"),
        (edit("members/0/roles", ["root"]), "members[0].roles", "unknown role"),
        (edit("members/0/roles", []), "members[0].roles", "at least one role"),
        (edit("members/0/roles", ["partner"]), "members", "admin"),
        (edit("members/1/scheme", "rsa"), "members[1].scheme", "unknown"),
        (edit("members/1/public_key", "0011"), "members[1].public_key", "32 bytes"),
        (edit("members/1/address", "00" * 20), "members[1].address", "does not match"),
        (edit("voucher_issuers/0", "00" * 20), "voucher_issuers[0]", "not one of the members"),
        (edit("voucher_issuers/0", "00"), "voucher_issuers[0]", "20 bytes"),
    ],
)
def test_errors_name_field_and_reason(d: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(GenesisError) as e:
        parse_genesis(d)
    assert e.value.field == field and reason in e.value.reason, e.value.message


def test_duplicate_member_and_issuer() -> None:
    d = doc()
    d["members"].append(dict(d["members"][1]))
    with pytest.raises(GenesisError, match=r"members\[6\]: same key as members\[1\]"):
        parse_genesis(d)
    d = doc()
    d["voucher_issuers"].append(d["voucher_issuers"][0])
    with pytest.raises(GenesisError, match="listed twice"):
        parse_genesis(d)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(GenesisError, match="cannot read"):
        load_genesis(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(GenesisError, match="not valid JSON"):
        load_genesis(bad)
    bad.write_text(json.dumps([1]))
    with pytest.raises(GenesisError, match="expected an object"):
        load_genesis(bad)


def test_init_state_is_deterministic() -> None:
    genesis, keys = dev_genesis(PILOT_MEMBERS, voucher_issuers=["bureau"])
    a, b = init_state(MemoryStore(), genesis), init_state(MemoryStore(), genesis)
    assert a == b and len(a.write_set) > 0
    store = MemoryStore()
    for k, v in a.write_set:
        assert v is not None
        store.put(k, v)
    m = get_member(StateReader(store, "membership"), keys["admin"].address)
    assert isinstance(m, Member) and m.roles == ("admin",) and m.joined_height == 0
