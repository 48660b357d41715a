"""The `validators` contract against a straightforward reference model of CONSENSUS.md
§10.2: random sequences of propose, approve, ready, cancel and idle blocks (so that
proposals expire and approved changes are dropped) on random sets and operator
assignments. After every run, the set of every height computed by the contract from its
schedule and history equals the model's, every transaction succeeded or failed as the
model says, and every change ends in the model's status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from contracts import validators
from contracts.testing import BLOCK_INTERVAL, DevChain
from qchain.types import Transaction

from .validators_chain import governed_chain, new_key

KEYS = 5
"""Size of the pool of new ML-DSA-65 keys (small, so that keys get reused)."""


@dataclass
class MChange:
    kind: str
    vid: int | None
    key: bytes
    sae: str
    operator: bytes
    proposer: bytes
    proposed: int
    status: str = "proposed"
    approved: int = 0
    ready: int = 0
    activation: int = 0
    seq: int | None = None
    approvals: set[bytes] = field(default_factory=set)
    cancels: set[bytes] = field(default_factory=set)


@dataclass
class Model:
    """§10.2, written for clarity rather than speed."""

    current: dict[int, tuple[bytes, str, bytes]]
    delay: int
    proposal_ttl: int
    ready_ttl: int
    ready_ttl_ms: int
    members: set[bytes]
    history: dict[int, dict[int, tuple[bytes, str, bytes]]] = field(default_factory=dict)
    used_keys: set[bytes] = field(default_factory=set)
    used_saes: set[str] = field(default_factory=set)
    changes: dict[bytes, MChange] = field(default_factory=dict)
    next_id: int = 0
    next_seq: int = 0

    def __post_init__(self) -> None:
        self.history[1] = dict(self.current)
        self.used_keys = {k for k, _, _ in self.current.values()}
        self.used_saes = {s for _, s, _ in self.current.values()}
        self.next_id = len(self.current)

    # -- helpers --
    def count(self, approvers: set[bytes]) -> int:
        return sum(1 for _, _, op in self.current.values() if op in approvers)

    def is_operator(self, who: bytes) -> bool:
        return any(op == who for _, _, op in self.current.values())

    def in_flight(self) -> list[MChange]:
        return [c for c in self.changes.values() if c.status in ("approved", "scheduled")]

    def target_ok(self, c: MChange) -> bool:
        if c.kind == "add":
            return True
        if c.vid not in self.current:
            return False
        return not any(o.vid == c.vid and o.kind != "add" for o in self.in_flight())

    def fresh(self, c: MChange) -> bool:
        return c.kind == "remove" or (c.key not in self.used_keys and c.sae not in self.used_saes)

    def set_at(self, h: int) -> dict[int, tuple[bytes, str, bytes]]:
        base = dict(self.history[max(e for e in self.history if e <= h)])
        for c in sorted(
            (c for c in self.changes.values() if c.status == "scheduled"),
            key=lambda c: cast(int, c.seq),
        ):
            if c.activation <= h:
                self.apply(base, c)
        return base

    @staticmethod
    def apply(s: dict[int, tuple[bytes, str, bytes]], c: MChange) -> None:
        assert c.vid is not None
        if c.kind == "remove":
            del s[c.vid]
        elif c.kind == "rotate":
            s[c.vid] = (c.key, c.sae, s[c.vid][2])
        else:
            s[c.vid] = (c.key, c.sae, c.operator)

    def schedule(self, c: MChange, r: int) -> None:
        c.status, c.activation, c.seq = "scheduled", r + self.delay, self.next_seq
        self.next_seq += 1

    # -- the block --
    def begin(self, h: int) -> None:
        due = sorted(
            (c for c in self.changes.values() if c.status == "scheduled" and c.activation == h),
            key=lambda c: cast(int, c.seq),
        )
        for c in due:
            self.apply(self.current, c)
            c.status = "active"
        if due:
            self.history[h] = dict(self.current)
        for c in self.changes.values():
            if c.status == "proposed" and h >= c.proposed + self.proposal_ttl:
                c.status = "expired"
            if (
                c.status == "approved"
                and h >= c.approved + self.ready_ttl
                and (h - c.approved) * BLOCK_INTERVAL > self.ready_ttl_ms
            ):
                c.status = "dropped"

    def propose(self, h: int, cid: bytes, c: MChange) -> bool:
        if not self.is_operator(c.proposer):
            return False
        mine = [o for o in self.changes.values() if o.status == "proposed"]
        if sum(1 for o in mine if o.proposer == c.proposer) >= 4 or len(mine) >= 64:
            return False
        if c.kind == "add" and c.operator not in self.members:
            return False
        if not self.target_ok(c) or not self.fresh(c):
            return False
        self.changes[cid] = c
        return True

    def approve(self, h: int, cid: bytes, who: bytes) -> bool:
        c = self.changes.get(cid)
        if c is None or c.status != "proposed" or not self.is_operator(who):
            return False
        c.approvals.add(who)
        n = len(self.current)
        if 3 * self.count(c.approvals) <= 2 * n:
            return True
        flight = self.in_flight()
        removes = sum(1 for o in [*flight, c] if o.kind == "remove")
        adds = sum(1 for o in [*flight, c] if o.kind == "add")
        if (
            not self.target_ok(c)
            or not self.fresh(c)
            or len(flight) + 1 > (n - 1) // 3
            or n - removes < 4
            or n + adds > validators.MAX_SET
        ):
            return True
        c.status, c.approved = "approved", h
        if c.kind == "add":
            c.vid = self.next_id
            self.next_id += 1
        if c.kind != "remove":
            self.used_keys.add(c.key)
            self.used_saes.add(c.sae)
        else:
            c.ready = h
        if c.ready:
            self.schedule(c, h)
        return True

    def cancel(self, cid: bytes, who: bytes) -> bool:
        c = self.changes.get(cid)
        if c is None or c.status != "approved" or not self.is_operator(who):
            return False
        c.cancels.add(who)
        if 3 * self.count(c.cancels) > 2 * len(self.current):
            c.status = "dropped"
        return True

    def ready_others(self, cid: bytes) -> list[bytes]:
        """The `checked` list a `ready` for cid must carry: the other adds and rotates in
        flight that are ready, ascending."""
        return sorted(
            k
            for k, o in self.changes.items()
            if k != cid and o.kind != "remove" and o.ready and o in self.in_flight()
        )

    def ready(self, h: int, cid: bytes, good: bool, checked: list[bytes]) -> bool:
        c = self.changes.get(cid)
        if c is None or c.kind == "remove" or c.status != "approved":
            return False
        if c.ready or not good or not set(self.ready_others(cid)) <= set(checked):
            return False
        c.ready = h
        self.schedule(c, h)
        return True


LABELS = 5
"""op0..op3 and the outsider (label 4)."""

approvers = st.lists(st.integers(0, LABELS - 1), min_size=1, max_size=LABELS)
actions = st.one_of(
    st.tuples(st.just("add"), st.integers(0, LABELS - 1), st.integers(0, KEYS - 1),
              st.integers(0, 9), st.integers(0, LABELS - 1)),
    st.tuples(st.just("remove"), st.integers(0, LABELS - 1), st.integers(0, 9)),
    st.tuples(st.just("rotate"), st.integers(0, LABELS - 1), st.integers(0, 9),
              st.integers(0, KEYS - 1), st.integers(0, 9)),
    st.tuples(st.just("approve"), approvers, st.integers(0, 50)),
    st.tuples(st.just("approve"), approvers, st.integers(0, 50)),
    st.tuples(st.just("approve"), approvers, st.integers(0, 50)),
    st.tuples(st.just("cancel"), approvers, st.integers(0, 50)),
    st.tuples(st.just("ready"), st.integers(0, 50), st.booleans()),
    st.tuples(st.just("ready"), st.integers(0, 50), st.just(True)),
)  # fmt: skip


def _label(i: int) -> str:
    return "outsider" if i == LABELS - 1 else f"op{i}"


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    n=st.sampled_from([4, 7]),
    ops=st.lists(st.integers(0, 3), min_size=10, max_size=10),
    delay=st.integers(2, 5),
    proposal_ttl=st.integers(2, 12),
    ready_ttl=st.integers(1, 5),
    ready_ttl_ms=st.sampled_from([0, 2_500, 4_000]),
    blocks=st.lists(st.lists(actions, min_size=1, max_size=4), min_size=8, max_size=24),
)
def test_the_set_of_every_height_matches_the_model(
    n: int,
    ops: list[int],
    delay: int,
    proposal_ttl: int,
    ready_ttl: int,
    ready_ttl_ms: int,
    blocks: list[list[tuple[object, ...]]],
) -> None:
    operators = ops[:n]
    operators[0] = 0  # op0..op3 need not all operate; op0 always does
    chain = governed_chain(
        n,
        operators=operators,
        delay=delay,
        proposal_ttl=proposal_ttl,
        ready_ttl=ready_ttl,
        ready_ttl_ms=ready_ttl_ms,
    )
    genesis = {v.index: (v.public_key, v.sae_id, v.operator) for v in chain.genesis.validators}
    members = {chain.address(label) for label in chain.keys}
    model = Model(genesis, delay, proposal_ttl, ready_ttl, ready_ttl_ms, members)
    proposed: list[bytes] = []
    for block in [*blocks, *([[]] * (delay + ready_ttl + 5))]:
        h = chain.height + 1
        model.begin(h)
        txs: list[Transaction] = []
        expected: list[bool] = []
        for action in block:
            for tx, ok in _step(chain, model, h, action, proposed):
                txs.append(tx)
                expected.append(ok)
        result = chain.block(txs)
        assert [r.ok for r in result.receipts] == expected, [r.message for r in result.receipts]
        for tx, r in zip(txs, result.receipts, strict=True):
            if r.ok and tx.method == "propose":
                assert r.result == tx.hash
    for h in range(1, chain.height + delay + 1):
        got = chain.query(validators.NAME, "set", [h])
        assert isinstance(got, dict)
        records = cast(list[validators.Record], got["records"])
        want = model.set_at(h)
        assert {r.id: (r.public_key, r.sae_id, r.operator) for r in records} == want, h
        assert [r.id for r in records] == sorted(want)
    for cid, c in model.changes.items():
        s = chain.query(validators.NAME, "change", [cid])
        assert isinstance(s, validators.ChangeStatus)
        got_c = s.change
        assert (got_c.status, got_c.id, got_c.sequence, got_c.activation_height) == (
            c.status,
            c.vid,
            c.seq,
            c.activation,
        )
    for c in model.changes.values():
        event(f"{c.kind} {c.status}")
    event(f"blocks {len(blocks) // 5 * 5}+, changes {len(model.changes)}")
    sequences = sorted(c.seq for c in model.changes.values() if c.seq is not None)
    assert sequences == list(range(len(sequences)))


def _pick(proposed: list[bytes], ref: object) -> bytes:
    """Mostly one of the last three proposals."""
    i = cast(int, ref)
    return proposed[-1 - i % min(3, len(proposed))] if i < 40 else proposed[i % len(proposed)]


def _step(
    chain: DevChain, model: Model, h: int, action: tuple[object, ...], proposed: list[bytes]
) -> list[tuple[Transaction, bool]]:
    """The transactions for one action, and whether the model says each succeeds (a
    successful proposal's change id is the transaction hash, so the model learns it)."""
    kind = action[0]
    if kind in ("add", "remove", "rotate"):
        sender = _label(cast(int, action[1]))
        if kind == "add":
            _, _, k, s, op = action
            key, sae = new_key(cast(int, k)).public_key, f"sae-{s}"
            operator = chain.address(_label(cast(int, op)))
            args: list[object] = ["add", None, key, sae, operator, "v", "", ""]
            c = MChange("add", None, key, sae, operator, chain.address(sender), h)
        elif kind == "remove":
            vid = cast(int, action[2])
            args = ["remove", vid, b"", "", b"", "", "", ""]
            c = MChange("remove", vid, b"", "", b"", chain.address(sender), h)
        else:
            _, _, vid, k, s = action
            key, sae = new_key(cast(int, k)).public_key, f"sae-{s}"
            args = ["rotate", vid, key, sae, b"", "", "", ""]
            c = MChange("rotate", cast(int, vid), key, sae, b"", chain.address(sender), h)
        tx = chain.tx(sender, validators.NAME, "propose", args)
        ok = model.propose(h, tx.hash, c)
        if ok:
            proposed.append(tx.hash)
        return [(tx, ok)]
    if not proposed:
        return []
    if kind == "ready":
        cid = _pick(proposed, action[1])
        good = cast(bool, action[2])
        c = model.changes[cid]
        signer = new_key(KEYS - 1 if not good else 0)
        if good and c.kind != "remove":
            signer = next(new_key(i) for i in range(KEYS) if new_key(i).public_key == c.key)
        # A good `ready` lists what the contract will ask for; a bad one leaves it out.
        checked = model.ready_others(cid) if action[2] else []
        message = validators.ready_message(chain.genesis.chain_id, cid, checked)
        signature = signer.sign(message)
        good = good or signer.public_key == c.key
        tx = chain.tx("op0", validators.NAME, "ready", [cid, signature, checked])
        return [(tx, model.ready(h, cid, good, checked))]
    cid = _pick(proposed, action[2])
    method = "approve" if kind == "approve" else "approve_cancel"
    out = []
    for i in cast(list[int], action[1]):
        who = _label(i)
        tx = chain.tx(who, validators.NAME, method, [cid])
        if kind == "approve":
            out.append((tx, model.approve(h, cid, chain.address(who))))
        else:
            out.append((tx, model.cancel(cid, chain.address(who))))
    return out
