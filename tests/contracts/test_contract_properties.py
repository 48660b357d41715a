"""Property tests: voucher conservation under random operations, identical results on both
storage backends and on re-execution, and no write left behind by a failed call."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from contracts.execution import build_block
from contracts.membership import nonce_key
from contracts.state import StateReader
from contracts.testing import DevChain, digest, pilot_chain
from contracts.voucher import Programme
from qchain.store import MemoryStore, open_store
from qchain.store.schema import state_key
from qchain.types import Transaction

PIDS = ("a", "b")
LABELS = ("ent", "ent2", "prov", "bureau", "admin", "auditor")


class VoucherMachine(RuleBasedStateMachine):
    """Random voucher operations, one per block, some of them failing."""

    def __init__(self) -> None:
        super().__init__()
        self.chain = pilot_chain(MemoryStore())

    @rule(pid=st.sampled_from(PIDS), budget=st.integers(1, 500), life=st.integers(1, 8))
    def create(self, pid: str, budget: int, life: int) -> None:
        self.chain.run(
            self.chain.tx(
                "bureau", "voucher", "create", [pid, "t", budget, self.chain.height + life]
            )
        )

    @rule(
        pid=st.sampled_from(PIDS),
        to=st.sampled_from(("ent", "ent2", "prov")),
        amount=st.integers(1, 300),
    )
    def grant(self, pid: str, to: str, amount: int) -> None:
        self.chain.run(
            self.chain.tx("bureau", "voucher", "grant", [pid, self.chain.address(to), amount])
        )

    @rule(
        payer=st.sampled_from(("ent", "ent2")),
        pid=st.sampled_from(PIDS),
        to=st.sampled_from(("prov", "ent2")),
        amount=st.integers(1, 200),
    )
    def pay(self, payer: str, pid: str, to: str, amount: int) -> None:
        self.chain.run(
            self.chain.tx(payer, "voucher", "pay", [pid, self.chain.address(to), amount, ""])
        )

    @rule(pid=st.sampled_from(PIDS), amount=st.integers(1, 200))
    def redeem(self, pid: str, amount: int) -> None:
        self.chain.run(self.chain.tx("prov", "voucher", "redeem", [pid, amount]))

    @rule(n=st.integers(1, 3))
    def wait(self, n: int) -> None:
        for _ in range(n):
            self.chain.block()

    @invariant()
    def conserved(self) -> None:
        state = StateReader(self.chain.store, "voucher")
        for _, raw in state.iterate(b"p"):
            p = Programme.decode(raw)
            held = sum(state.get_int(k) for k, _ in state.iterate(b"g" + p.id.encode() + b"\x00"))
            earned = sum(state.get_int(k) for k, _ in state.iterate(b"e" + p.id.encode() + b"\x00"))
            assert p.issued == p.held + p.redeemed + p.returned
            assert p.held == held + earned
            assert p.issued <= p.budget
            assert not (p.expired and held), "an expired programme holds no enterprise balance"


TestVoucherConservation = VoucherMachine.TestCase
TestVoucherConservation.settings = settings(
    max_examples=30,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

op = st.one_of(
    st.tuples(st.just("anchor"), st.sampled_from(LABELS), st.sampled_from("abcdef")),
    st.tuples(
        st.just("create"),
        st.just("bureau"),
        st.sampled_from(PIDS),
        st.integers(1, 100),
        st.integers(1, 4),
    ),
    st.tuples(
        st.just("grant"),
        st.just("bureau"),
        st.sampled_from(PIDS),
        st.sampled_from(("ent", "ent2")),
        st.integers(1, 60),
    ),
    st.tuples(
        st.just("pay"), st.sampled_from(("ent", "ent2")), st.sampled_from(PIDS), st.integers(1, 60)
    ),
    st.tuples(st.just("redeem"), st.just("prov"), st.sampled_from(PIDS), st.integers(1, 60)),
    st.tuples(st.just("suspend"), st.just("admin"), st.sampled_from(("ent2", "admin"))),
    st.tuples(st.just("reinstate"), st.just("admin"), st.sampled_from(("ent2",))),
)


def make_tx(chain: DevChain, o: tuple[object, ...]) -> Transaction:
    kind, label = str(o[0]), str(o[1])
    args: list[object]
    if kind == "anchor":
        return chain.tx(label, "notary", "anchor", [digest(str(o[2])), "sha256", "t", "c", b""])
    if kind == "create":
        args = [o[2], "t", o[3], chain.height + int(str(o[4])) + 1]
    elif kind == "grant":
        args = [o[2], chain.address(str(o[3])), o[4]]
    elif kind == "pay":
        args = [o[2], chain.address("prov"), o[3], "m"]
    elif kind == "redeem":
        args = [o[2], o[3]]
    elif kind == "suspend":
        return chain.tx(label, "membership", kind, [chain.address(str(o[2])), "r"])
    else:
        return chain.tx(label, "membership", kind, [chain.address(str(o[2]))])
    return chain.tx(label, "voucher", kind, args)


@settings(max_examples=20, deadline=None)
@given(blocks=st.lists(st.lists(op, max_size=6), min_size=1, max_size=5))
def test_same_results_on_both_backends_and_on_reexecution(
    blocks: list[list[tuple[object, ...]]],
) -> None:
    builder = pilot_chain(MemoryStore())
    chains_txs: list[list[Transaction]] = []
    for ops in blocks:
        # the builder keeps only what it can include (a suspended sender is left out)
        txs = [make_tx(builder, o) for o in ops]
        _, included, _ = build_block(builder.store, builder.context(), txs)
        builder.block(included)
        builder.sync_nonces()
        chains_txs.append(included)
    with tempfile.TemporaryDirectory() as tmp, open_store(Path(tmp) / "db") as db:
        others = [
            DevChain(db, builder.genesis, builder.keys),
            DevChain(MemoryStore(), builder.genesis, builder.keys),
        ]
        for other in others:
            for txs in chains_txs:
                other.block(txs)
            assert other.results == builder.results
            assert other.app_hash == builder.app_hash
            assert list(other.store.iterate()) == list(builder.store.iterate())


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(0, 2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    contract=st.sampled_from(("membership", "notary", "voucher", "nope")),
    method=st.sampled_from(
        (
            "onboard",
            "suspend",
            "reinstate",
            "set_roles",
            "rotate_key",
            "anchor",
            "anchor_many",
            "create",
            "grant",
            "pay",
            "redeem",
            "get",
            "x",
        )
    ),
    args=st.lists(values, max_size=6),
    label=st.sampled_from(LABELS),
)
def test_failed_call_leaves_no_write(
    contract: str, method: str, args: list[object], label: str
) -> None:
    chain = pilot_chain(MemoryStore())
    chain.run(chain.tx("bureau", "voucher", "create", ["a", "t", 100, 50]))
    chain.run(chain.tx("ent", "notary", "anchor", [digest("a"), "sha256", "t", "c", b""]))
    tx = chain.tx(label, contract, method, args)
    result = chain.execute([tx])
    if not result.receipts[0].ok:
        assert [k for k, _ in result.write_set] == [state_key("membership", nonce_key(tx.sender))]
