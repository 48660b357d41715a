"""Hostile arguments to every `validators` method: whatever a member sends, the call ends
in a receipt (a `ContractError` at worst), never in another exception, which block
execution treats as a broken node."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import validators
from contracts.runtime import Kind

from .validators_chain import governed_chain, new_key

CHAIN = governed_chain(4, proposal_ttl=1000, ready_ttl=1000)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.integers(-2, 8),
    st.binary(max_size=40),
    st.sampled_from([b"\x00" * 20, b"\x01" * 32, new_key(0).public_key, b"\x02" * 3309]),
    st.text(max_size=40),
    st.sampled_from(["add", "remove", "rotate", "", "x" * 129, "é" * 40]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=12)
methods = st.sampled_from([m.name for m in validators.contract.methods() if m.kind is Kind.TX])


keys = st.sampled_from([b"", b"\x03" * 1952, *(new_key(i).public_key for i in range(3))])
texts = st.one_of(st.text(max_size=8), st.sampled_from(["sae-0", "sae-9", "n" * 64, "n" * 65]))
addresses = st.sampled_from([b"", b"\x00" * 20, CHAIN.address("op1"), CHAIN.address("outsider")])
propose_args = st.tuples(
    st.sampled_from(["add", "remove", "rotate"]),
    st.one_of(st.none(), st.integers(0, 9), st.just(2**16)),
    keys, texts, addresses, texts, texts, texts,
).map(list)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=methods,
    label=st.sampled_from(["op0", "op1", "outsider"]),
    args=st.one_of(st.lists(values, max_size=9), st.lists(scalars, min_size=8, max_size=8)),
)
def test_any_arguments_end_in_a_receipt(method: str, label: str, args: list[object]) -> None:
    receipt = CHAIN.run(CHAIN.tx(label, validators.NAME, method, args))
    assert receipt.ok or receipt.code


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    label=st.sampled_from(["op0", "op1", "op2", "outsider"]),
    args=propose_args,
    then=st.lists(
        st.tuples(
            st.sampled_from(["approve", "approve_cancel", "ready"]),
            st.sampled_from(["op0", "op1", "op2", "op3", "outsider"]),
            st.sampled_from([b"", b"\x05" * 3309, b"\x05" * 4096]),
        ),
        max_size=5,
    ),
)
def test_well_typed_sequences_end_in_receipts(
    label: str, args: list[object], then: list[tuple[str, str, bytes]]
) -> None:
    r = CHAIN.run(CHAIN.tx(label, validators.NAME, "propose", args))
    assert r.ok or r.code
    cid = r.tx_hash if r.ok else b"\x00" * 32
    for method, who, signature in then:
        call: list[object] = [cid, signature or b"\x01", []] if method == "ready" else [cid]
        receipt = CHAIN.run(CHAIN.tx(who, validators.NAME, method, call))
        assert receipt.ok or receipt.code
