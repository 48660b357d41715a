"""The `validators` contract's `accept_missing` (CONSENSUS.md §10.2, review 8 Q7) and the
byte bound on `set`, `schedule` and `q` (§10.2, review 8 ambiguity 6), each at its edge."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import cast

import pytest

from contracts import validators
from contracts.genesis import parse_genesis
from contracts.state import StateReader
from contracts.testing import DevChain, dev_genesis
from qchain.codec import encode_value
from qchain.errors import GenesisError
from qchain.store import MemoryStore

from .validators_chain import (
    add_args,
    governed_chain,
    new_key,
    ready_signature,
    remove_args,
    rotate_args,
    send,
    status,
)


def _record(chain: DevChain, vid: int) -> validators.Record:
    state = StateReader(chain.store, validators.NAME)
    return next(r for r in validators.current_set(state).records if r.id == vid)


def _approved_add(chain: DevChain, key: int, approvers: list[str]) -> bytes:
    r = send(chain, approvers[0], "propose", add_args(key, chain.address("outsider")))
    assert r.ok, r.message
    cid = cast(bytes, r.result)
    for op in approvers:
        assert send(chain, op, "approve", [cid]).ok
    assert status(chain, cid).change.status == "approved"
    return cid


def _readiness(chain: DevChain, cid: bytes) -> dict[str, object]:
    out = chain.query(validators.NAME, "readiness", [cid])
    assert isinstance(out, dict)
    return out


def _accepts(chain: DevChain, cid: bytes) -> list[validators.MissingAccept]:
    out = chain.query(validators.NAME, "accepts", [cid])
    assert isinstance(out, list)
    return cast(list[validators.MissingAccept], out)


def test_accept_missing_lifecycle_proposal_approval_readiness_activation() -> None:
    chain = governed_chain(4, delay=4)
    cid = _approved_add(chain, 0, ["op0", "op1", "op2"])
    assert _readiness(chain, cid) == {"links": [0, 1, 2, 3], "checked": []}
    r = send(chain, "op3", "accept_missing", [cid, [0]])
    assert r.ok, r.message
    aid = cast(bytes, r.result)
    assert aid == r.tx_hash
    assert [(a.status, a.ids) for a in _accepts(chain, cid)] == [("proposed", (0,))]
    # approved like a change: more than 2·4/3, that is 3 members' operators
    for op in ("op3", "op0"):
        r = send(chain, op, "approve_missing", [aid])
        assert r.ok, r.message
        assert status(chain, cid).missing == ()
    assert _readiness(chain, cid)["links"] == [0, 1, 2, 3]
    r = send(chain, "op1", "approve_missing", [aid])
    assert r.ok, r.message
    assert status(chain, cid).missing == (0,)
    acc = _accepts(chain, cid)[0]
    assert (acc.status, acc.approved_height) == ("approved", chain.height)
    assert acc.records == (validators.record_digest(_record(chain, 0)),)
    # the new record's machine skips the working link to 0 only
    assert _readiness(chain, cid) == {"links": [1, 2, 3], "checked": []}
    r = send(chain, "op1", "approve_missing", [aid])
    assert (r.ok, r.code) == (False, "rule-violation") and "approved" in r.message
    # once ready, no accept_missing is proposed or approved for it, and the accepted ids
    # stay listed while it is in flight
    r = send(chain, "op2", "accept_missing", [cid, [1]])
    assert r.ok, r.message
    pending = cast(bytes, r.result)
    assert send(chain, "outsider", "ready", [cid, ready_signature(chain, cid, 0), []]).ok
    e = status(chain, cid).change.activation_height
    for method, args in (("accept_missing", [cid, [2]]), ("approve_missing", [pending])):
        r = send(chain, "op0", method, args)
        assert (r.ok, r.code) == (False, "rule-violation") and "not ready" in r.message
    assert status(chain, cid).missing == (0,)
    # the approval expires with the change: at activation its accepts are gone
    while chain.height < e:
        chain.block()
    assert status(chain, cid).change.status == "active"
    assert status(chain, cid).missing == ()
    assert _accepts(chain, cid) == []
    r = send(chain, "op0", "approve_missing", [aid])
    assert (r.ok, r.code) == (False, "not-found")


def test_accept_missing_is_refused_outside_its_scope() -> None:
    chain = governed_chain(7)
    proposed = cast(
        bytes, send(chain, "op0", "propose", add_args(0, chain.address("outsider"))).result
    )
    rot = cast(bytes, send(chain, "op0", "propose", rotate_args(2, 1)).result)
    rem = cast(bytes, send(chain, "op1", "propose", remove_args(4)).result)
    for cid in (rot, rem):
        for op in ("op0", "op1", "op2", "op3", "op4"):
            assert send(chain, op, "approve", [cid]).ok
    assert status(chain, rot).change.status == "approved"
    assert status(chain, rem).change.status == "scheduled"

    def refused(label: str, args: list[object], code: str, words: str) -> None:
        r = send(chain, label, "accept_missing", args)
        assert (r.ok, r.code) == (False, code), r.message
        assert words in r.message, r.message

    refused("op0", [proposed, [0]], "rule-violation", "is proposed: accept_missing is for")
    refused("op0", [rem, [0]], "rule-violation", "ready at approval")
    refused("op0", [rot, [2]], "rule-violation", "the one the change rotates")
    refused("op0", [rot, [9]], "rule-violation", "not a member")
    refused("op0", [rot, [3, 1]], "invalid-argument", "ascending")
    refused("op0", [rot, [1, 1]], "invalid-argument", "ascending")
    refused("op0", [rot, []], "invalid-argument", "ids")
    refused("op0", [rot, list(range(validators.MAX_MISSING + 1))], "invalid-argument", "ids")
    refused("outsider", [rot, [1]], "permission-denied", "operator")
    refused("op0", [bytes(32), [1]], "not-found", "change")
    # at most MAX_ACCEPTS_PER_CHANGE per change, proposed or approved
    for i in range(validators.MAX_ACCEPTS_PER_CHANGE):
        assert send(chain, f"op{i}", "accept_missing", [rot, [i if i != 2 else 5]]).ok
    refused("op5", [rot, [0]], "rule-violation", "accept_missing already")


def test_at_most_f_ids_over_the_changes_in_flight_and_a_drop_frees_them() -> None:
    chain = governed_chain(7, ready_ttl=500)  # f = 2, threshold 5
    ops = ["op0", "op1", "op2", "op3", "op4"]
    a = _approved_add(chain, 0, ops)
    b = _approved_add(chain, 1, ops)
    acc_a = cast(bytes, send(chain, "op0", "accept_missing", [a, [0, 1]]).result)
    acc_b = cast(bytes, send(chain, "op0", "accept_missing", [b, [2]]).result)
    for op in ops:
        assert send(chain, op, "approve_missing", [acc_a]).ok
    assert status(chain, a).missing == (0, 1)
    # 2 + 1 > f(a) = 2: the approval is recorded, the accept stays proposed, rule named
    for op in ops:
        r = send(chain, op, "approve_missing", [acc_b])
        assert r.ok, r.message
    held = _accepts(chain, b)[0]
    assert (held.status, held.rule) == ("proposed", "too-many-missing")
    assert status(chain, b).missing == ()
    # a only one more id fits: exactly f
    acc_b1 = cast(bytes, send(chain, "op1", "accept_missing", [b, [3]]).result)
    assert acc_b1
    # the cancel of a drops it and its accepts: b's accept passes on re-approval
    for op in ops:
        assert send(chain, op, "approve_cancel", [a]).ok
    assert status(chain, a).change.status == "dropped"
    assert _accepts(chain, a) == [] and status(chain, a).missing == ()
    r = send(chain, "op0", "approve_missing", [acc_b])
    assert r.ok, r.message
    assert status(chain, b).missing == (2,)
    for op in ops:
        assert send(chain, op, "approve_missing", [acc_b1]).ok
    assert status(chain, b).missing == (2, 3)


def test_the_cap_counts_an_id_named_for_two_changes_once() -> None:
    """Revision 1.15 (review 9 S4): the cap is on distinct ids, since the fault is counted
    once per id whatever number of changes excuse it."""
    chain = governed_chain(7, ready_ttl=500)  # f = 2, threshold 5
    ops = ["op0", "op1", "op2", "op3", "op4"]
    a = _approved_add(chain, 0, ops)
    b = _approved_add(chain, 1, ops)
    acc_a = cast(bytes, send(chain, "op0", "accept_missing", [a, [0, 1]]).result)
    for op in ops:
        assert send(chain, op, "approve_missing", [acc_a]).ok
    acc_b = cast(bytes, send(chain, "op0", "accept_missing", [b, [1]]).result)
    for op in ops:
        assert send(chain, op, "approve_missing", [acc_b]).ok
    assert status(chain, b).missing == (1,)
    acc_c = cast(bytes, send(chain, "op0", "accept_missing", [b, [2]]).result)
    for op in ops:
        assert send(chain, op, "approve_missing", [acc_c]).ok
    held = next(x for x in _accepts(chain, b) if x.accept_id == acc_c)
    assert (held.status, held.rule) == ("proposed", "too-many-missing")


def test_the_exemption_is_by_id_and_follows_a_rotation_of_the_named_id() -> None:
    """§10.2 as written: `accept_missing` names ids; readiness skips the link to the id's
    record in force, whatever rotated since (review 9, S4, answered so in Revision 1.15)."""
    chain = governed_chain(7, delay=2, ready_ttl=500)
    ops = ["op0", "op1", "op2", "op3", "op4"]
    w = _approved_add(chain, 0, ops)
    aid = cast(bytes, send(chain, "op0", "accept_missing", [w, [4]]).result)
    for op in ops:
        assert send(chain, op, "approve_missing", [aid]).ok
    before = _record(chain, 4)
    rot = cast(bytes, send(chain, "op0", "propose", rotate_args(4, 1)).result)
    for op in ops:
        assert send(chain, op, "approve", [rot]).ok
    assert send(chain, "outsider", "ready", [rot, ready_signature(chain, rot, 1), []]).ok
    e = status(chain, rot).change.activation_height
    while chain.height < e:
        chain.block()
    after = _record(chain, 4)
    assert after != before and after.public_key == new_key(1).public_key
    accepts = _accepts(chain, w)
    assert validators.link_exempt(accepts, after)
    assert validators.record_digest(after) not in accepts[0].records
    assert 4 not in cast(list[int], _readiness(chain, w)["links"])


# --- the byte bound ------------------------------------------------------------------------

N_EDGE = 79
"""f = 26 changes in flight at n = 79: 11 adds (n + adds = 90) and 15 rotates."""
LONG_SAE = 128


def _edge_chain(genesis_sae: int) -> DevChain:
    """N_EDGE validators with SAE ids of genesis_sae bytes: validators 0..53 operated by
    op0 (more than 2·79/3 of them, so op0 alone approves), the rest by op1..op6."""
    ops = [0 if i < 54 else 1 + i % 6 for i in range(N_EDGE)]
    members = {"admin": ("admin",), "outsider": ("partner",)}
    members.update({f"op{i}": ("partner",) for i in range(7)})
    genesis, keys = dev_genesis(members, validators=N_EDGE, seed="qchain-validators-edge")
    doc = copy.deepcopy(genesis.to_json())
    for i, v in enumerate(cast(list[dict[str, object]], doc["validators"])):
        v["operator"] = keys[f"op{ops[i]}"].address.hex()
        v["sae_id"] = f"{i:03d}".ljust(genesis_sae, "s")
    cast(dict[str, object], doc["consensus"]).update(reconfiguration=True, proposal_ttl=1000)
    return DevChain(MemoryStore(), parse_genesis(doc), keys)


def _worst(chain: DevChain, extra: validators.Change) -> int:
    """The bound's count, built here from the documented rule: every current member, every
    in-flight add and each rotated id at its larger record in `set`; an entry per in-flight
    change in `schedule` (sequence and activation at their largest, 9 bytes each); `q`
    after all are scheduled."""
    state = chain_state(chain)
    flight = [validators.get_change(state, k[1:]) for k, _ in state.iterate(b"f")]
    changes = [c for c in flight if c is not None] + [extra]
    records = {r.id: r for r in validators.current_set(state).records}
    entries = []
    next_id = state.get_int(validators.NEXT_ID_KEY)
    for c in changes:
        vid = c.id if c.id is not None else next_id
        if c.kind == "add":
            records[vid] = validators.Record(vid, c.public_key, c.sae_id, c.operator)
        else:
            old = records[vid]
            new = replace(old, public_key=c.public_key, sae_id=c.sae_id)
            records[vid] = max(old, new, key=lambda r: len(r.encode()))
        top = 2**64 - 1
        entries.append(
            validators.ScheduleEntry(
                top, top, c.change_id, c.kind, vid, c.public_key, c.sae_id, c.operator
            )
        )
    return (
        len(validators.ValidatorSet(tuple(records[i] for i in sorted(records))).encode())
        + len(validators.Schedule(tuple(entries)).encode())
        + len(encode_value(len(entries)))
    )


def chain_state(chain: DevChain) -> StateReader:
    return StateReader(chain.store, validators.NAME)


def test_set_schedule_and_q_at_most_245760_bytes_exactly_at_and_one_over() -> None:
    chain = _edge_chain(genesis_sae=128)
    outsider = chain.address("outsider")
    proposers = [f"op{i % 7}" for i in range(26)]
    txs = []
    for i in range(25):  # 11 adds, 14 rotates, SAE ids of 128 bytes
        sae = f"n{i:02d}".ljust(LONG_SAE, "x")
        args = add_args(i, outsider, sae=sae) if i < 11 else rotate_args(40 + i, i, sae=sae)
        txs.append(chain.tx(proposers[i], validators.NAME, "propose", args))
    cids = [r.result for r in chain.block(txs).receipts]
    assert all(isinstance(c, bytes) for c in cids)
    r = chain.block([chain.tx("op0", validators.NAME, "approve", [c]) for c in cids])
    assert all(x.ok for x in r.receipts)
    assert all(status(chain, cast(bytes, c)).change.status == "approved" for c in cids)

    # the 26th change, a rotate (its SAE id counts once: in its schedule entry, the
    # record's genesis SAE id being longer): the length that lands exactly on the bound
    def candidate(vid: int, key: int, length: int) -> validators.Change:
        a = rotate_args(vid, key, sae=f"e{key}".ljust(length, "z"))
        return validators.Change(
            bytes(32), "rotate", vid, a[2], a[3], b"", "", "", "", outsider, 0,
            "proposed", 0, 0, 0, 0, None, "", "",
        )  # fmt: skip

    base = _worst(chain, candidate(70, 30, 40))
    length = 40 + validators.MAX_STATE_BYTES - base
    assert 32 <= length < 128, f"retune the edge: base {base}"
    assert _worst(chain, candidate(70, 30, length)) == validators.MAX_STATE_BYTES
    assert _worst(chain, candidate(71, 31, length + 1)) == validators.MAX_STATE_BYTES + 1
    at = cast(bytes, send(chain, "op6", "propose", candidate_args(70, 30, length)).result)
    over = cast(bytes, send(chain, "op5", "propose", candidate_args(71, 31, length + 1)).result)
    r = send(chain, "op0", "approve", [over])
    assert r.ok, r.message
    s = status(chain, over)
    assert (s.change.status, s.change.rule) == ("proposed", "set-too-large")
    assert str(validators.MAX_STATE_BYTES + 1) in s.change.reason
    r = send(chain, "op0", "approve", [at])
    assert r.ok, r.message
    assert status(chain, at).change.status == "approved"
    # every state the chain then reaches stays within the bound: all ready in one block,
    # then each activation
    flight = [cast(bytes, c) for c in cids] + [at]
    keys = [*range(25), 30]
    # a later ready names the earlier ones still in flight: one per block, in order
    for c, k in zip(flight, keys, strict=True):
        others = sorted(x for x in flight if status(chain, x).change.status == "scheduled")
        sig = ready_signature(chain, c, k, tuple(others))
        r = send(chain, "outsider", "ready", [c, sig, others])
        assert r.ok, r.message
        assert _stored_bytes(chain) <= validators.MAX_STATE_BYTES
    for _ in range(4):
        chain.block()
        assert _stored_bytes(chain) <= validators.MAX_STATE_BYTES
    assert len(validators.current_set(chain_state(chain)).records) == 90
    assert _record(chain, 70).public_key == new_key(30).public_key


def candidate_args(vid: int, key: int, length: int) -> list[object]:
    return rotate_args(vid, key, sae=f"e{key}".ljust(length, "z"))


def _stored_bytes(chain: DevChain) -> int:
    state = chain_state(chain)
    return sum(
        len(state.get(k) or b"")
        for k in (validators.SET_KEY, validators.SCHEDULE_KEY, validators.NEXT_SEQ_KEY)
    )


def test_a_genesis_with_changes_enabled_is_refused_above_the_byte_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The largest genesis (90 records with SAE ids of 128 bytes) fits the bound; the
    genesis check counts what the contract counts, so a lower bound refuses a genesis."""
    largest = [
        validators.Record(i, bytes(1952), "s" * 128, bytes(20)) for i in range(validators.MAX_SET)
    ]
    assert validators.state_bytes(largest, [], 0) < validators.MAX_STATE_BYTES
    chain = governed_chain(4)
    doc = chain.genesis.to_json()
    state = chain_state(chain)
    size = validators.state_bytes(validators.current_set(state).records, [], 0)
    assert size == sum(
        len(state.get(k) or b"")
        for k in (validators.SET_KEY, validators.SCHEDULE_KEY, validators.NEXT_SEQ_KEY)
    )
    monkeypatch.setattr(validators, "MAX_STATE_BYTES", size)
    assert parse_genesis(doc) == chain.genesis
    monkeypatch.setattr(validators, "MAX_STATE_BYTES", size - 1)
    with pytest.raises(GenesisError, match=f"takes {size} bytes"):
        parse_genesis(doc)
