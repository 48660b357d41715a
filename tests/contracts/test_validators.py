"""The `validators` contract (CONSENSUS.md §10.1–§10.2): genesis, changes, approval,
readiness, activation, every limit at its edge, expiry, drop and cancel, and the bounds on
hostile input."""

from __future__ import annotations

import copy
from typing import cast

import pytest

from contracts import validators
from contracts.genesis import init_state, parse_genesis
from contracts.runtime import Kind, named_args
from contracts.state import StateReader
from contracts.testing import DevChain, dev_genesis, pilot_chain
from qchain.errors import GenesisError, NotFound
from qchain.jsonform import value_to_json
from qchain.store import MemoryStore
from qchain.store.schema import state_prefix

from .validators_chain import (
    add_args,
    governed_chain,
    new_key,
    ready_signature,
    remove_args,
    rotate_args,
    send,
    set_ids,
    status,
)

# --- genesis -----------------------------------------------------------------------------


def _doc() -> dict[str, object]:
    genesis, _ = dev_genesis({"admin": ("admin",), "op": ("partner",)}, validators=4)
    return genesis.to_json()


def _with_operators(doc: dict[str, object]) -> dict[str, object]:
    out = copy.deepcopy(doc)
    op = cast(list[dict[str, str]], out["members"])[1]["address"]
    for v in cast(list[dict[str, object]], out["validators"]):
        v["operator"] = op
    return out


def test_a_genesis_without_governance_hashes_and_starts_as_before() -> None:
    doc = _doc()
    plain = parse_genesis(doc)
    explicit = copy.deepcopy(doc)
    cast(dict[str, object], explicit["consensus"]).update(
        reconfig_delay=2,
        proposal_ttl=10_000,
        ready_ttl=86_400_000,
        ready_ttl_heights=1_000,
        reconfiguration=False,
    )
    assert parse_genesis(explicit).hash == plain.hash
    assert "reconfig_delay" not in cast(dict[str, object], plain.to_json()["consensus"])
    state = init_state(MemoryStore(), plain)
    assert not [k for k, _ in state.write_set if k.startswith(state_prefix(validators.NAME))]
    # operators and non-default parameters are covered by the hash
    governed = parse_genesis(_with_operators(doc))
    assert governed.hash != plain.hash
    assert parse_genesis(governed.to_json()) == governed
    delayed = copy.deepcopy(doc)
    cast(dict[str, object], delayed["consensus"])["reconfig_delay"] = 3
    assert parse_genesis(delayed).hash not in (plain.hash, governed.hash)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d["validators"][2].pop("operator"), "validators[2].operator"),
        (lambda d: d["validators"][0].update(operator="00" * 20), "validators[0].operator"),
        (lambda d: d["validators"][0].update(operator="00"), "validators[0].operator"),
        (lambda d: d["consensus"].update(reconfig_delay=1), "consensus.reconfig_delay"),
        (lambda d: d["consensus"].update(reconfig_delay=17), "consensus.reconfig_delay"),
        (lambda d: d["consensus"].update(proposal_ttl=0), "consensus.proposal_ttl"),
        (lambda d: d["consensus"].update(ready_ttl=-1), "consensus.ready_ttl"),
        (lambda d: d["consensus"].update(ready_ttl_heights=0), "consensus.ready_ttl_heights"),
        (lambda d: d["consensus"].update(reconfiguration=1), "consensus.reconfiguration"),
        (lambda d: d["consensus"].update(reconfigure=True), "consensus.reconfigure"),
    ],
)
def test_bad_governance_fields_name_the_field(edit: object, field: str) -> None:
    doc = _with_operators(_doc())
    edit(doc)  # type: ignore[operator]
    with pytest.raises(GenesisError) as e:
        parse_genesis(doc)
    assert e.value.field == field


def test_changes_need_operators() -> None:
    doc = _doc()
    cast(dict[str, object], doc["consensus"])["reconfiguration"] = True
    with pytest.raises(GenesisError, match="operator"):
        parse_genesis(doc)


def test_genesis_state_holds_the_first_set() -> None:
    chain = governed_chain(4, operators=[0, 0, 1, 2])
    assert set_ids(chain, 1) == [0, 1, 2, 3]
    entry = chain.query(validators.NAME, "set", [1])
    assert isinstance(entry, dict) and (entry["n"], entry["f"]) == (4, 1)
    records = cast(list[validators.Record], entry["records"])
    assert records[1].operator == chain.address("op0")
    assert records[2].public_key == chain.genesis.validators[2].public_key
    d = chain.query(validators.NAME, "directory", [3])
    assert d == validators.Directory(3, chain.address("op2"), "validator-3", "", "")


# --- not enabled ---------------------------------------------------------------------------


def test_changes_are_refused_unless_the_genesis_enables_them() -> None:
    for chain in (governed_chain(4, enabled=False), pilot_chain(MemoryStore())):
        label = "op0" if "op0" in chain.keys else "admin"
        for method, args in (
            ("propose", remove_args(1)),
            ("approve", [bytes(32)]),
            ("approve_cancel", [bytes(32)]),
            ("ready", [bytes(32), b"x", []]),
            ("update_endpoint", [0, "n", "", ""]),
        ):
            r = send(chain, label, method, args)
            assert (r.code, r.ok) == ("rule-violation", False)
            assert validators.DISABLED in r.message and "CONSENSUS.md §10" in r.message
    # a genesis without operators has no set in the contract
    with pytest.raises(NotFound):
        pilot_chain(MemoryStore()).query(validators.NAME, "set", [1])


# --- the life of a change ------------------------------------------------------------------


def test_add_lifecycle_approval_readiness_activation() -> None:
    chain = governed_chain(4, operators=[0, 0, 1, 2], delay=3)
    r = send(chain, "op1", "propose", add_args(0, chain.address("outsider"), name="v-new"))
    assert r.ok, r.message
    cid = cast(bytes, r.result)
    assert cid == r.tx_hash
    r = send(chain, "op1", "approve", [cid])
    assert r.ok and status(chain, cid).change.status == "proposed"
    assert status(chain, cid).approvals == 1
    r = send(chain, "op0", "approve", [cid])  # operator of validators 0 and 1: counts twice
    assert r.ok, r.message
    s = status(chain, cid)
    a = chain.height
    assert (s.change.status, s.change.id, s.approvals, s.needed) == ("approved", 4, 3, 3)
    assert s.change.approved_height == a and s.change.ready_height == 0
    assert chain.query(validators.NAME, "directory", [4]) == validators.Directory(
        4, chain.address("outsider"), "v-new", "", ""
    )
    r = send(chain, "outsider", "ready", [cid, ready_signature(chain, cid, 0), []])
    assert r.ok, r.message
    s = status(chain, cid)
    e = chain.height + 3
    assert (s.change.status, s.change.activation_height, s.change.sequence) == (
        "scheduled",
        e,
        0,
    )
    sched = chain.query(validators.NAME, "schedule", [])
    assert sched == [
        {"sequence": 0, "activation_height": e, "change_id": cid, "kind": "add", "id": 4}
    ]
    # the set of e is known before e; it applies at the start of block e
    assert set_ids(chain, e) == [0, 1, 2, 3, 4]
    while chain.height < e - 1:
        chain.block()
    assert set_ids(chain, e - 1) == [0, 1, 2, 3]
    result = chain.block()
    assert ("activated", [cid, 0]) in [(ev.name, ev.data) for ev in result.events]
    assert status(chain, cid).change.status == "active"
    assert chain.query(validators.NAME, "schedule", []) == []
    history = chain.query(validators.NAME, "history", [0, 10])
    assert isinstance(history, list)
    assert [(h.height, len(h.records), h.sequences) for h in history] == [
        (1, 4, ()),
        (e, 5, (0,)),
    ]
    assert set_ids(chain, e - 1) == [0, 1, 2, 3] and set_ids(chain, e + 50) == [0, 1, 2, 3, 4]
    # the new member's operator now counts; n = 5 needs 4
    assert status(chain, cid).n == 5 and status(chain, cid).needed == 4


def test_ready_before_approval_is_refused_and_counts_after_it() -> None:
    """§10.2 (review 6, N4): a `ready` for a change not approved yet is refused."""
    chain = governed_chain(4)
    cid = cast(bytes, send(chain, "op0", "propose", rotate_args(2, 1)).result)
    r = send(chain, "op3", "ready", [cid, ready_signature(chain, cid, 1), []])
    assert r.code == "rule-violation" and "not approved yet" in r.message
    assert status(chain, cid).change.ready_height == 0
    for op in ("op0", "op1", "op2"):
        assert send(chain, op, "approve", [cid]).ok
    assert status(chain, cid).change.status == "approved"
    assert send(chain, "op3", "ready", [cid, ready_signature(chain, cid, 1), []]).ok
    s = status(chain, cid)
    assert (s.change.status, s.change.activation_height) == ("scheduled", chain.height + 2)
    while chain.height < s.change.activation_height:
        chain.block()
    entry = chain.query(validators.NAME, "set", [chain.height])
    assert isinstance(entry, dict)
    rotated = cast(list[validators.Record], entry["records"])[2]
    assert rotated.public_key == new_key(1).public_key and rotated.sae_id == "sae-new-1"
    assert rotated.operator == chain.address("op2")
    # the rotated-away key and SAE id stay used
    r = send(chain, "op0", "propose", ["rotate", 3, chain.genesis.validators[2].public_key,
                                      "sae-x", b"", "", "", ""])  # fmt: skip
    assert r.code == "rule-violation" and "public key was used" in r.message
    r = send(chain, "op0", "propose", rotate_args(3, 5, sae="sae-2"))
    assert r.code == "rule-violation" and "sae-2" in r.message


@pytest.mark.parametrize("wrong", ["key", "chain", "change", "garbage"])
def test_ready_needs_the_new_keys_signature_of_this_change(wrong: str) -> None:
    chain = governed_chain(4)
    cid = cast(bytes, send(chain, "op0", "propose", add_args(0, chain.address("op0"))).result)
    other = cast(bytes, send(chain, "op0", "propose", add_args(1, chain.address("op0"))).result)
    assert _approve_all(chain, cid, range(3)).change.status == "approved"
    signature = {
        "key": new_key(1).sign(validators.ready_message(chain.genesis.chain_id, cid)),
        "chain": new_key(0).sign(validators.ready_message("another-chain", cid)),
        "change": ready_signature(chain, other, 0),
        "garbage": b"\x01" * 3309,
    }[wrong]
    r = send(chain, "op0", "ready", [cid, signature, []])
    assert r.code == "rule-violation" and "ready signature" in r.message
    assert status(chain, cid).change.ready_height == 0
    assert send(chain, "op0", "ready", [cid, ready_signature(chain, cid, 0), []]).ok
    r = send(chain, "op0", "ready", [cid, ready_signature(chain, cid, 0), []])
    assert r.code == "rule-violation" and "is scheduled" in r.message  # ready, so scheduled


def test_ready_message_is_the_canonical_encoding() -> None:
    msg = validators.ready_message("qchain-test", bytes(range(32)))
    expected = b"\x94\xacqchain-ready\xabqchain-test\xc4\x20" + bytes(range(32)) + b"\x90"
    assert msg == expected
    checked = validators.ready_message("qchain-test", bytes(range(32)), [b"\x01" * 32])
    assert checked == expected[:-1] + b"\x91\xc4\x20" + b"\x01" * 32


def test_ready_must_name_every_other_ready_change_in_flight_in_order() -> None:
    """§10.2 (review 6, N5): the machine signing `ready` checked its links to the new
    records of the other adds and rotates in flight that are ready; `checked` names them,
    ascending, and the signature covers it."""
    chain = governed_chain(7)  # f = 2: two changes in flight, five approvals each
    first = cast(bytes, send(chain, "op0", "propose", add_args(0, chain.address("op0"))).result)
    second = cast(bytes, send(chain, "op1", "propose", add_args(1, chain.address("op1"))).result)
    for cid in (first, second):
        assert _approve_all(chain, cid, range(5)).change.status == "approved"
    # Nothing is ready yet: an empty list is complete.
    assert send(chain, "op0", "ready", [first, ready_signature(chain, first, 0), []]).ok
    assert status(chain, first).change.status == "scheduled"
    r = send(chain, "op0", "ready", [second, ready_signature(chain, second, 1), []])
    assert r.code == "rule-violation" and first.hex() in r.message
    wrong = [second, ready_signature(chain, second, 1, (first,)), []]  # signed, not listed
    assert send(chain, "op0", "ready", wrong).code == "rule-violation"
    twice = (first, first)
    r = send(chain, "op0", "ready", [second, ready_signature(chain, second, 1, twice), [*twice]])
    assert r.code == "rule-violation" and "ascending" in r.message
    listed = [second, ready_signature(chain, second, 1), [first]]  # listed, not signed
    r = send(chain, "op0", "ready", listed)
    assert r.code == "rule-violation" and "ready signature" in r.message
    good = [second, ready_signature(chain, second, 1, (first,)), [first]]
    assert send(chain, "op0", "ready", good).ok
    assert status(chain, second).change.status == "scheduled"


# --- threshold ----------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "needed"), [(4, 3), (5, 4), (6, 5), (7, 5), (10, 7)])
def test_threshold_is_more_than_two_thirds(n: int, needed: int) -> None:
    assert validators.threshold(n) == needed
    assert 3 * needed > 2 * n and 3 * (needed - 1) <= 2 * n


def test_threshold_at_its_edge_with_seven() -> None:
    chain = governed_chain(7)
    cid = cast(bytes, send(chain, "op0", "propose", remove_args(6)).result)
    for i in range(4):
        assert send(chain, f"op{i}", "approve", [cid]).ok
    s = status(chain, cid)
    assert (s.change.status, s.approvals, s.needed) == ("proposed", 4, 5)
    # re-sending an approval neither counts twice nor grows the list
    assert send(chain, "op0", "approve", [cid]).ok
    assert status(chain, cid).approvals == 4 and len(status(chain, cid).approvers) == 4
    assert send(chain, "op4", "approve", [cid]).ok
    s = status(chain, cid)
    assert (s.change.status, s.approvals) == ("scheduled", 5)  # a remove is ready at approval


def test_outsiders_cannot_propose_or_approve() -> None:
    chain = governed_chain(4)
    r = send(chain, "outsider", "propose", remove_args(1))
    assert r.code == "permission-denied"
    cid = cast(bytes, send(chain, "op0", "propose", rotate_args(1, 0)).result)
    for method in ("approve", "approve_cancel"):
        r = send(chain, "outsider", method, [cid])
        assert r.code in ("permission-denied", "rule-violation")
    r = send(chain, "outsider", "approve", [cid])
    assert r.code == "permission-denied"
    assert status(chain, cid).approvers == ()


def test_approvals_of_operators_no_longer_members_do_not_count() -> None:
    chain = governed_chain(7, delay=2, proposal_ttl=100)
    pending = cast(bytes, send(chain, "op0", "propose", rotate_args(0, 3)).result)
    for i in (6, 5, 4):
        assert send(chain, f"op{i}", "approve", [pending]).ok
    assert status(chain, pending).approvals == 3
    gone = cast(bytes, send(chain, "op0", "propose", remove_args(6)).result)
    for i in range(5):
        assert send(chain, f"op{i}", "approve", [gone]).ok
    e = status(chain, gone).change.activation_height
    while chain.height < e:
        chain.block()
    s = status(chain, pending)
    assert (s.n, s.approvals, s.needed) == (6, 2, 5)
    assert chain.address("op6") in s.approvers
    assert send(chain, "op6", "approve", [pending]).code == "permission-denied"
    for i in (1, 2):
        assert send(chain, f"op{i}", "approve", [pending]).ok
    assert status(chain, pending).change.status == "proposed"  # 4 of 6: 4 > 4 is false
    assert send(chain, "op3", "approve", [pending]).ok
    assert status(chain, pending).change.status == "approved"


# --- limits -------------------------------------------------------------------------------


def _approve_all(chain: DevChain, cid: bytes, ops: range) -> validators.ChangeStatus:
    for i in ops:
        r = send(chain, f"op{i}", "approve", [cid])
        assert r.ok, r.message
    return status(chain, cid)


def test_at_most_f_changes_in_flight() -> None:
    chain = governed_chain(4, ready_ttl=50, proposal_ttl=50)
    first = cast(bytes, send(chain, "op0", "propose", add_args(0, chain.address("op0"))).result)
    second = cast(bytes, send(chain, "op1", "propose", add_args(1, chain.address("op1"))).result)
    assert _approve_all(chain, first, range(3)).change.status == "approved"
    s = _approve_all(chain, second, range(3))
    assert (s.change.status, s.change.rule) == ("proposed", "too-many-in-flight")
    assert "f = 1" in s.change.reason
    # the first activates; re-sending one approval re-evaluates the second (n = 5, f = 1)
    assert send(chain, "op0", "ready", [first, ready_signature(chain, first, 0), []]).ok
    e = status(chain, first).change.activation_height
    while chain.height < e:
        chain.block()
    s = _approve_all(chain, second, range(1))
    assert (s.change.status, s.change.rule, s.change.id) == ("approved", "", 5)


def test_the_set_stays_at_least_four() -> None:
    chain = governed_chain(4)
    cid = cast(bytes, send(chain, "op0", "propose", remove_args(3)).result)
    s = _approve_all(chain, cid, range(4))
    assert (s.change.status, s.change.rule) == ("proposed", "set-too-small")
    chain7 = governed_chain(7)
    ids = []
    for vid in (6, 5):
        ids.append(cast(bytes, send(chain7, "op0", "propose", remove_args(vid)).result))
    assert _approve_all(chain7, ids[0], range(5)).change.status == "scheduled"
    s = _approve_all(chain7, ids[1], range(5))
    # 7 - 2 = 5 >= 4 and 2 <= f: both may be in flight
    assert s.change.status == "scheduled" and s.change.sequence == 1


def test_the_in_flight_removes_keep_four_with_seven_and_a_pending_removal() -> None:
    chain = governed_chain(7, delay=16)
    removes = [cast(bytes, send(chain, "op0", "propose", remove_args(v)).result) for v in (6, 5)]
    for cid in removes:
        assert _approve_all(chain, cid, range(5)).change.status == "scheduled"
    e = status(chain, removes[1]).change.activation_height
    while chain.height < e:
        chain.block()
    assert set_ids(chain, chain.height) == [0, 1, 2, 3, 4]
    third = cast(bytes, send(chain, "op0", "propose", remove_args(4)).result)
    s = _approve_all(chain, third, range(4))  # n = 5: needs 4, f = 1, 5 - 1 = 4
    assert s.change.status == "scheduled"
    fourth = cast(bytes, send(chain, "op0", "propose", remove_args(3)).result)
    s = _approve_all(chain, fourth, range(4))
    assert s.change.rule == "too-many-in-flight"
    while chain.height < status(chain, third).change.activation_height:
        chain.block()
    s = _approve_all(chain, fourth, range(1))  # n = 4: 4 - 1 < 4
    assert (s.change.status, s.change.rule) == ("proposed", "set-too-small")


def test_remove_or_rotate_of_a_non_member_or_an_id_in_flight() -> None:
    chain = governed_chain(7, delay=16)
    r = send(chain, "op0", "propose", remove_args(9))
    assert r.code == "rule-violation" and "validator 9 is not a member" in r.message
    r = send(chain, "op0", "propose", rotate_args(7, 0))
    assert r.code == "rule-violation" and "not a member" in r.message
    first = cast(bytes, send(chain, "op0", "propose", remove_args(5)).result)
    twin = cast(bytes, send(chain, "op1", "propose", rotate_args(5, 0)).result)
    assert _approve_all(chain, first, range(5)).change.status == "scheduled"
    r = send(chain, "op0", "propose", rotate_args(5, 1))
    assert r.code == "rule-violation" and "already removes or rotates" in r.message
    s = _approve_all(chain, twin, range(5))
    assert (s.change.status, s.change.rule) == ("proposed", "id-in-flight")
    # once the remove is active, the id is not a member
    while chain.height < status(chain, first).change.activation_height:
        chain.block()
    s = _approve_all(chain, twin, range(1))
    assert s.change.rule == "not-a-validator"


def test_keys_and_sae_ids_are_never_used_twice() -> None:
    chain = governed_chain(4, ready_ttl=3)
    genesis_key = chain.genesis.validators[1].public_key
    r = send(chain, "op0", "propose", ["add", None, genesis_key, "sae-z", chain.address("op0"),
                                      "n", "", ""])  # fmt: skip
    assert r.code == "rule-violation" and "public key was used" in r.message
    r = send(chain, "op0", "propose", add_args(0, chain.address("op0"), sae="sae-3"))
    assert r.code == "rule-violation" and "SAE id 'sae-3'" in r.message
    # two proposals naming one key: the first approved uses it, the second fails at approval
    a = cast(bytes, send(chain, "op0", "propose", add_args(0, chain.address("op0"))).result)
    b = cast(bytes, send(chain, "op1", "propose", add_args(0, chain.address("op1"))).result)
    assert _approve_all(chain, a, range(3)).change.status == "approved"
    # a dropped change's key stays used and its id is not given again
    while status(chain, a).change.status == "approved":
        chain.block()
    s = status(chain, a)
    assert (s.change.status, s.change.rule) == ("dropped", "ready-ttl")
    s = _approve_all(chain, b, range(3))
    assert (s.change.status, s.change.rule) == ("proposed", "key-used")
    c = cast(bytes, send(chain, "op1", "propose", add_args(1, chain.address("op1"))).result)
    s = _approve_all(chain, c, range(3))
    assert (s.change.status, s.change.id) == ("approved", 5)


# --- expiry, drop, cancel -----------------------------------------------------------------


def test_a_proposal_expires_after_proposal_ttl() -> None:
    chain = governed_chain(4, proposal_ttl=4)
    cid = cast(bytes, send(chain, "op0", "propose", rotate_args(1, 0)).result)
    p = chain.height
    while chain.height < p + 3:
        chain.block()
    assert status(chain, cid).change.status == "proposed"
    result = chain.block()
    assert chain.height == p + 4
    assert ("expired", [cid]) in [(e.name, e.data) for e in result.events]
    s = status(chain, cid)
    assert (s.change.status, s.change.rule) == ("expired", "proposal-ttl")
    r = send(chain, "op0", "approve", [cid])
    assert r.code == "rule-violation" and "is expired" in r.message
    r = send(chain, "op0", "ready", [cid, ready_signature(chain, cid, 0), []])
    assert r.code == "rule-violation"


def test_an_approved_change_not_ready_is_dropped_after_ready_ttl() -> None:
    chain = governed_chain(4, ready_ttl=3)
    cid = cast(bytes, send(chain, "op0", "propose", add_args(0, chain.address("op0"))).result)
    a = _approve_all(chain, cid, range(3)).change.approved_height
    while chain.height < a + 2:
        chain.block()
    assert status(chain, cid).change.status == "approved"
    chain.block()
    s = status(chain, cid)
    assert (s.change.status, s.change.rule) == ("dropped", "ready-ttl")
    r = send(chain, "op0", "ready", [cid, ready_signature(chain, cid, 0), []])
    assert r.code == "rule-violation" and "dropped" in r.message
    with pytest.raises(NotFound):
        chain.query(validators.NAME, "directory", [4])
    # it left the in-flight count at once
    nxt = cast(bytes, send(chain, "op0", "propose", remove_args(3)).result)
    assert _approve_all(chain, nxt, range(3)).change.rule == "set-too-small"


def test_ready_ttl_needs_its_heights_and_its_block_time() -> None:
    # blocks are 1000 ms apart: 3 heights have passed at a + 3, 5500 ms only at a + 6
    chain = governed_chain(4, ready_ttl=3, ready_ttl_ms=5_500)
    cid = cast(bytes, send(chain, "op0", "propose", add_args(0, chain.address("op0"))).result)
    s = _approve_all(chain, cid, range(3))
    a = s.change.approved_height
    assert s.change.approved_time == chain.time
    while chain.height < a + 5:
        chain.block()
    assert status(chain, cid).change.status == "approved"
    chain.block()
    assert status(chain, cid).change.status == "dropped"
    # with a long height bound, the block time alone does not drop it
    chain = governed_chain(4, ready_ttl=8, ready_ttl_ms=0)
    cid = cast(bytes, send(chain, "op0", "propose", add_args(0, chain.address("op0"))).result)
    a = _approve_all(chain, cid, range(3)).change.approved_height
    while chain.height < a + 7:
        chain.block()
    assert status(chain, cid).change.status == "approved"
    chain.block()
    assert status(chain, cid).change.status == "dropped"


def test_cancel_by_the_same_threshold() -> None:
    chain = governed_chain(4, ready_ttl=100)
    cid = cast(bytes, send(chain, "op0", "propose", rotate_args(1, 0)).result)
    r = send(chain, "op0", "approve_cancel", [cid])
    assert r.code == "rule-violation" and "only an approved change" in r.message
    _approve_all(chain, cid, range(3))
    for i in range(2):
        assert send(chain, f"op{i}", "approve_cancel", [cid]).ok
    s = status(chain, cid)
    assert (s.change.status, s.cancel_approvals) == ("approved", 2)
    assert send(chain, "op3", "approve_cancel", [cid]).ok
    s = status(chain, cid)
    assert (s.change.status, s.change.rule) == ("dropped", "cancelled")
    assert chain.query(validators.NAME, "schedule", []) == []


def test_a_scheduled_change_cannot_be_cancelled() -> None:
    chain = governed_chain(7)
    cid = cast(bytes, send(chain, "op0", "propose", remove_args(4)).result)
    assert _approve_all(chain, cid, range(5)).change.status == "scheduled"
    r = send(chain, "op0", "approve_cancel", [cid])
    assert r.code == "rule-violation" and "scheduled" in r.message


def test_sequence_numbers_follow_the_order_changes_enter_the_schedule() -> None:
    chain = governed_chain(7, delay=4)
    rot = cast(bytes, send(chain, "op0", "propose", rotate_args(2, 0)).result)
    rem = cast(bytes, send(chain, "op1", "propose", remove_args(3)).result)
    assert _approve_all(chain, rot, range(5)).change.status == "approved"  # waits for ready
    assert _approve_all(chain, rem, range(5)).change.sequence == 0
    ready = chain.block(
        [
            chain.tx("op0", validators.NAME, "ready", [rot, ready_signature(chain, rot, 0), []]),
        ]
    )
    assert ready.receipts[0].ok
    assert status(chain, rot).change.sequence == 1
    sched = chain.query(validators.NAME, "schedule", [])
    assert isinstance(sched, list) and [x["sequence"] for x in sched] == [0, 1]
    while chain.height < status(chain, rot).change.activation_height:
        chain.block()
    history = chain.query(validators.NAME, "history", [2, 10])
    assert isinstance(history, list)
    assert [h.sequences for h in history] == [(0,), (1,)]
    assert set_ids(chain, chain.height) == [0, 1, 2, 4, 5, 6]


# --- directory ----------------------------------------------------------------------------


def test_update_endpoint_by_the_operator_only() -> None:
    chain = governed_chain(4, operators=[0, 0, 1, 2])
    r = send(chain, "op0", "update_endpoint", [1, "node-1", "10.0.0.1:26600", "https://a:1"])
    assert r.ok, r.message
    assert chain.query(validators.NAME, "directory", [1]) == validators.Directory(
        1, chain.address("op0"), "node-1", "10.0.0.1:26600", "https://a:1"
    )
    r = send(chain, "op1", "update_endpoint", [1, "stolen", "", ""])
    assert r.code == "permission-denied"
    r = send(chain, "op0", "update_endpoint", [9, "n", "", ""])
    assert r.code == "not-found"
    # directory data is not part of the set
    assert set_ids(chain, chain.height) == [0, 1, 2, 3]


# --- hostile input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "args", "field"),
    [
        ("propose", ["swap", 1, b"", "", b"", "", "", ""], "kind"),
        ("propose", ["remove", None, b"", "", b"", "", "", ""], "id"),
        ("propose", ["remove", 1, b"\x01", "", b"", "", "", ""], "public_key"),
        ("propose", ["remove", 1, b"", "", b"", "name", "", ""], "name"),
        ("propose", ["rotate", 1, b"\x01" * 1951, "s", b"", "", "", ""], "public_key"),
        ("propose", ["rotate", 1, b"\x01" * 1953, "s", b"", "", "", ""], "public_key"),
        ("propose", ["rotate", 1, b"\x01" * 1952, "", b"", "", "", ""], "sae_id"),
        ("propose", ["rotate", 1, b"\x01" * 1952, "s" * 129, b"", "", "", ""], "sae_id"),
        ("propose", ["rotate", 2**16, b"\x01" * 1952, "s", b"", "", "", ""], "id"),
        ("propose", ["add", None, b"\x01" * 1952, "s", b"\x01" * 19, "n", "", ""], "operator"),
        ("propose", ["add", None, b"\x01" * 1952, "s", b"\x01" * 20, "", "", ""], "name"),
        ("propose", ["add", None, b"\x01" * 1952, "s", b"\x01" * 20, "n" * 65, "", ""], "name"),
        ("propose", ["add", None, b"\x01" * 1952, "s", b"\x01" * 20, "n", "p" * 257, ""], "p2p"),
        ("propose", ["add", 3, b"\x01" * 1952, "s", b"\x01" * 20, "n", "", ""], "id"),
        ("ready", [bytes(32), b"\x01" * 4097, []], "signature"),
        ("ready", [bytes(31), b"\x01", []], "change_id"),
        ("approve", [bytes(33)], "change_id"),
        ("update_endpoint", [0, "n", "", "a" * 257], "api"),
        ("update_endpoint", [0, "n" * 65, "", ""], "name"),
    ],
)
def test_oversized_and_misshapen_arguments_are_refused(
    method: str, args: list[object], field: str
) -> None:
    chain = governed_chain(4)
    r = send(chain, "op0", method, args)
    assert r.code == "invalid-argument", r.message
    assert f"argument {field}" in r.message


def test_unknown_changes_are_not_found() -> None:
    chain = governed_chain(4)
    for method, args in (("approve", [bytes(32)]), ("ready", [bytes(32), b"\x01", []])):
        assert send(chain, "op0", method, args).code == "not-found"
    with pytest.raises(NotFound):
        chain.query(validators.NAME, "change", [bytes(32)])


def test_proposals_pending_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    chain = governed_chain(4)
    for k in range(validators.MAX_PROPOSED_PER_PROPOSER):
        assert send(chain, "op0", "propose", add_args(k, chain.address("op0"))).ok
    r = send(chain, "op0", "propose", add_args(9, chain.address("op0")))
    assert r.code == "rule-violation" and "proposed changes already" in r.message
    monkeypatch.setattr(validators, "MAX_PROPOSED", 6)
    assert send(chain, "op1", "propose", add_args(10, chain.address("op1"))).ok
    assert send(chain, "op1", "propose", add_args(11, chain.address("op1"))).ok
    r = send(chain, "op2", "propose", add_args(12, chain.address("op2")))
    assert r.code == "rule-violation" and "6 changes are proposed already" in r.message


def test_history_pages_are_bounded() -> None:
    chain = governed_chain(4)
    with pytest.raises(Exception, match="limit"):
        chain.query(validators.NAME, "history", [0, validators.MAX_HISTORY_PAGE + 1])
    with pytest.raises(Exception, match="height"):
        chain.query(validators.NAME, "set", [0])


def test_add_operator_must_be_a_member() -> None:
    chain = governed_chain(4)
    r = send(chain, "op0", "propose", add_args(0, b"\x07" * 20))
    assert r.code == "rule-violation" and "is not a member" in r.message


def test_named_arguments_from_json() -> None:
    chain = governed_chain(4)
    m = validators.contract.method("propose", Kind.TX)
    args = named_args(
        m,
        {
            "kind": "remove",
            "id": 2,
            "public_key": "",
            "sae_id": "",
            "operator": "0x",
            "name": "",
            "p2p": "",
            "api": "",
        },
    )
    assert args == remove_args(2)
    assert send(chain, "op0", "propose", args).ok


def test_set_of_a_far_height_is_the_latest_known() -> None:
    chain = governed_chain(4)
    assert set_ids(chain, 2**64 - 1) == [0, 1, 2, 3]


def test_query_results_have_a_json_form() -> None:
    chain = governed_chain(4)
    cid = cast(bytes, send(chain, "op0", "propose", add_args(0, chain.address("op1"))).result)
    doc = value_to_json(chain.query(validators.NAME, "change", [cid]))
    assert isinstance(doc, dict)
    change = doc["change"]
    assert isinstance(change, dict)
    assert (change["kind"], change["id"], change["status"]) == ("add", None, "proposed")
    s = value_to_json(chain.query(validators.NAME, "set", [1]))
    assert isinstance(s, dict) and s["n"] == 4


def test_the_state_keys_set_and_schedule_hold_canonical_values() -> None:
    chain = governed_chain(7, delay=5)
    state = StateReader(chain.store, validators.NAME)
    vset = state.load(validators.SET_KEY, validators.ValidatorSet)
    assert vset is not None and [r.id for r in vset.records] == list(range(7))
    assert state.load(validators.SCHEDULE_KEY, validators.Schedule) == validators.Schedule(())
    cid = cast(bytes, send(chain, "op0", "propose", remove_args(4)).result)
    e = _approve_all(chain, cid, range(5)).change.activation_height
    schedule = state.load(validators.SCHEDULE_KEY, validators.Schedule)
    assert schedule == validators.Schedule(
        (validators.ScheduleEntry(0, e, cid, "remove", 4, b"", "", b""),)
    )
    while chain.height < e:
        chain.block()
    vset = state.load(validators.SET_KEY, validators.ValidatorSet)
    assert vset is not None and [r.id for r in vset.records] == [0, 1, 2, 3, 5, 6]
    assert state.load(validators.SCHEDULE_KEY, validators.Schedule) == validators.Schedule(())


def test_a_genesis_with_governance_has_at_most_90_validators() -> None:
    """§10.2 (review 7, P3): n ≤ 90 keeps a set-chain proof within SETCHAIN's bound."""
    assert governed_chain(88).genesis.validators[-1].index == 87
    with pytest.raises(GenesisError) as e:
        governed_chain(91)
    assert "at most 90 validators" in str(e.value)
    with pytest.raises(GenesisError):
        governed_chain(91, enabled=False)  # operators named: the contract keeps the set
