"""Validator-set changes as timeline steps, and the checks of a run whose set changed
(a chain whose genesis sets `consensus.reconfiguration`: docs/CONSENSUS.md §10 and its
Revision 1.20, which says what the node builds and what it refuses).

The steps reuse `devnet.joining`, the flow `qchain devnet add-validator` and
`remove-validator` run, each in a thread with an event loop of its own, so the load and
the observer go on while the flow waits for heights and starts or stops processes. Their
governance transactions come from the operators' dev accounts, which the load sends from
too, so they take their nonces from the run's counter (`Accounts.take`).

- `add-validator` [via, operator]: a new site (the next id, a fresh key and SAE id, its
  SAE pairs at the KMS), proposed and approved, started, caught up, ready, and waited for
  until its activation height. `operator = "nodeX"`: the new machine's operator is
  nodeX's (a partner's new machine after an incident, before its old one is removed).
- `remove-validator` target [via]: proposed, approved, activated; the node's chain is
  read once the linger after its last height has passed, then the process is stopped and
  its SAE pairs dropped. The load stops sending to it when the step starts.
- `propose-rotate` target [via]: an in-place `rotate` of the target's id to a fresh key
  and SAE id, proposed by via's operator. The node refuses it at admission (HTTP 422
  `rotation-not-supported`, Revision 1.20): one id on two machines needs §10.6's per-end
  link ranges, which are not built. The step fails unless that is the answer.

The checks (`set_change_checks`):

- **set-changes**: every set-change step finished; every `propose-rotate` was refused
  with 422 `rotation-not-supported` and its transaction is in no node's chain.
- **membership**: every member at the end executes the set the changes give (genesis
  ids, plus those added, less those removed) at its last height, with each added
  validator's operator as its step named.
- **signers**: every member serves the receipt of every height at or below its own that
  holds a load transaction (a joiner too, for the heights it replayed: it asks its peers
  for their certificates, given CERT_WAIT_S), and every commit certificate read from
  them has at least q(h) signatures, all of members of the set the changes give for h;
  every added validator signs at least one certificate at or above its activation height
  (its votes count), every removed one none.
- **activation-window** (`activate_during = "ACTION"`): each change activated (the first
  status sample at its activation height) while a step of that action was in force
  (until its undo, a later `heal` step or the final heal).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from contracts import validators
from devnet.faults.checkers import CheckResult, check_lost_writes, first_items
from devnet.faults.history import ChainViews, Op, StatusSample
from devnet.faults.observer import read_chain
from devnet.network import account_key, operator_role
from devnet.running import BackendError, Network
from qchain.client import AsyncClient
from qchain.errors import ApiError, QChainError
from qchain.keys import Scheme, dev_key
from qchain.limits import MAX_MESSAGE
from qchain.types import new_transaction

if TYPE_CHECKING:
    from devnet.faults.actions import StepRecord, TimelineState
    from devnet.local import LocalNetwork

TIMEOUT_S = 180.0
"""How long one flow may wait for a height (catch-up, activation, linger)."""
REFUSAL = (422, "rotation-not-supported")
MAX_CERTS = 200
"""Certificates read from each member at the end of a run (one per height, the highest
heights first)."""
CERT_WAIT_S = 120.0
"""How long a member is given to hold the certificate of every height read: a validator
that caught up by block replay asks its peers for those of the heights it replayed
without signing them (`node.certbackfill`)."""

T = TypeVar("T")


@dataclass(frozen=True)
class SetChange:
    kind: str
    """add or remove."""
    node: str
    vid: int
    activation: int
    """The first height of the set with (add) or without (remove) the validator."""
    operator: str = ""
    """add: the node whose operator runs the new validator."""


# --- the steps -----------------------------------------------------------------------


def _local(st: TimelineState) -> LocalNetwork:
    from devnet.local import LocalNetwork

    if not isinstance(st.net, LocalNetwork):
        raise BackendError("set changes need a local devnet (devnet.joining)")
    return st.net


def _via(st: TimelineState, rec: StepRecord, avoid: Sequence[str] = ()) -> str:
    via = rec.step.param("via")
    if via:
        if via not in st.net.node_names() or via in avoid:
            raise BackendError(f"via: {via} is not a member to send through")
        return str(via)
    return next(n for n in st.net.node_names() if n not in avoid)


async def _in_thread(action: str, flow: Coroutine[Any, Any, T]) -> T:
    """Run a `devnet.joining` flow on an event loop of its own, in a thread; its failures
    become the step's error."""
    try:
        return await asyncio.to_thread(asyncio.run, flow)
    except (QChainError, OSError) as e:
        raise BackendError(f"{action}: {e}") from e


def _say(st: TimelineState, action: str) -> Callable[[str], None]:
    return lambda msg: st.history.event(st.clock(), f"{action}: {msg}")


def _members(st: TimelineState, leaving: Sequence[str] = ()) -> list[str]:
    return [n for n in st.net.node_names() if n not in leaving]


async def add_validator_step(st: TimelineState, rec: StepRecord) -> None:
    from devnet.joining import add_validator

    net = _local(st)
    via = _via(st, rec)
    operator = rec.step.param("operator")
    if operator is not None and operator not in net.node_names():
        raise BackendError(f"operator: {operator} is not a member")
    scheduled: dict[str, int] = {}
    node = await _in_thread(
        "add-validator",
        add_validator(
            net,
            via,
            TIMEOUT_S,
            _say(st, "add-validator"),
            operator=None if operator is None else net.node(operator).index,
            nonces=None if st.accounts is None else st.accounts.take,
            scheduled=lambda n, e: scheduled.update(activation=e),
        ),
    )
    change = SetChange("add", node.name, node.index, scheduled["activation"], operator or node.name)
    rec.nodes = [node.name]
    rec.detail.update(asdict(change))
    st.changes.append(change)
    st.follow(_members(st))


async def remove_validator_step(st: TimelineState, rec: StepRecord) -> None:
    from devnet.joining import remove_validator

    net = _local(st)
    if len(rec.nodes) != 1:
        raise BackendError(f"remove-validator takes one node, not {rec.nodes}")
    name = rec.nodes[0]
    via = _via(st, rec, avoid=[name])
    vid = net.node(name).index
    url = net.api_url(name)
    st.follow(_members(st, leaving=[name]))

    async def read_before_stop(e: int) -> None:
        async with AsyncClient(url, timeout_s=10.0) as c:
            bad: list[str] = []
            st.left[name] = await read_chain(c, bad)
        if bad:
            st.history.bad_blocks[name] = bad

    e = await _in_thread(
        "remove-validator",
        remove_validator(
            net,
            name,
            via,
            TIMEOUT_S,
            _say(st, "remove-validator"),
            nonces=None if st.accounts is None else st.accounts.take,
            before_stop=read_before_stop,
        ),
    )
    change = SetChange("remove", name, vid, e)
    rec.detail.update(asdict(change))
    st.changes.append(change)
    st.follow(_members(st))


async def propose_rotate_step(st: TimelineState, rec: StepRecord) -> None:
    """An in-place rotate of one id: the node must refuse it (Revision 1.20)."""
    net = st.net
    if len(rec.nodes) != 1:
        raise BackendError(f"propose-rotate takes one node, not {rec.nodes}")
    name = rec.nodes[0]
    via = _via(st, rec)
    role = operator_role(_index(net, via))
    key = account_key(role, net.plan.scheme)
    # A refused transaction uses no nonce: the run's counter is read, not advanced.
    nonce = st.accounts.nonce[role] if st.accounts is not None else 0
    vid = _index(net, name)
    fresh = dev_key("qchain-fault-rotate", f"{name}-{st.rng.randrange(1 << 32)}", Scheme.ML_DSA_65)
    tx = new_transaction(
        key,
        chain_id=net.plan.chain_id,
        nonce=nonce,
        contract=validators.NAME,
        method="propose",
        args=["rotate", vid, fresh.public_key, f"SAE-{name}-rotated", b"", "", "", ""],
    )
    rec.detail.update(tx=tx.hash.hex(), validator=vid, via=via)
    async with AsyncClient(net.api_url(via), timeout_s=10.0) as c:
        try:
            await c.submit(tx)
        except ApiError as e:
            rec.detail.update(status=e.status, code=e.code)
            if (e.status, e.code) == REFUSAL:
                return
            raise BackendError(f"the rotate of {name} was answered {e.status} {e.code}") from e
        except QChainError as e:
            raise BackendError(f"propose-rotate: {e}") from e
    rec.detail.update(status=202, code="accepted")
    raise BackendError(f"{via} accepted an in-place rotate of {name}'s id {vid}")


def _index(net: Network, name: str) -> int:
    return next(n.index for n in net.plan.nodes if n.name == name)


SET_CHANGE_STEPS: dict[str, Callable[[TimelineState, StepRecord], Awaitable[None]]] = {
    "add-validator": add_validator_step,
    "remove-validator": remove_validator_step,
    "propose-rotate": propose_rotate_step,
}


# --- what the checks read at the end ---------------------------------------------------


@dataclass
class SetEvidence:
    genesis: tuple[int, ...]
    sets: dict[str, tuple[int, ...] | None]
    """Each member's `validators.set` at its last height (None: it did not answer)."""
    operators: dict[int, str]
    """Each id of the final set, as one member executed it: its operator's address."""
    certs: dict[str, dict[int, tuple[int, ...]]]
    """Member -> height -> the validator ids that signed the commit certificate it holds
    (a node keeps the first q(h) signatures it received, its own among them if it
    signed)."""
    unread: int = 0
    """Receipts of heights at or below a member's height that it did not serve."""


async def collect(net: Network, ops: Sequence[Op], changes: Sequence[SetChange]) -> SetEvidence:
    """Each member's final set, and the signers of one certificate per height that holds
    a committed load transaction, from 20 heights below the first change on (highest
    first)."""
    genesis = tuple(n.index for n in net.plan.nodes[: net.plan.validators])
    sets: dict[str, tuple[int, ...] | None] = {}
    operators: dict[int, str] = {}
    by_height: dict[int, str] = {}
    low = min((c.activation for c in changes), default=0) - 20
    for o in ops:
        if o.height is not None and o.height >= low:
            by_height.setdefault(o.height, o.tx_hash)
    certs: dict[str, dict[int, tuple[int, ...]]] = {}
    unread = 0
    for name in net.node_names():
        certs[name] = {}
        async with AsyncClient(net.api_url(name), timeout_s=10.0) as c:
            try:
                h = int((await c.status())["height"])
                doc = await c.query(validators.NAME, "set", {"height": max(h, 1)})
            except (QChainError, KeyError, TypeError, ValueError):
                sets[name] = None
                continue
            records = doc.get("records", []) if isinstance(doc, dict) else []
            sets[name] = tuple(sorted(int(r["id"]) for r in records))
            operators = {int(r["id"]): _hex(r.get("operator")) for r in records}
            heights = [x for x in sorted(by_height, reverse=True)[:MAX_CERTS] if x <= h]
            await _certified(c, heights, CERT_WAIT_S)
            for height in heights:
                try:
                    proof = await c.receipt(by_height[height])
                except QChainError:
                    unread += 1
                    continue
                certs[name][height] = tuple(x.validator for x in proof.certificate.signatures)
    return SetEvidence(genesis, sets, operators, certs, unread)


async def _certified(c: AsyncClient, heights: Sequence[int], wait_s: float) -> None:
    """Wait up to wait_s until the node serves the certificate of every height."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    left = list(heights)
    while left:
        missing = []
        for height in left:
            try:
                await c.certificate_bytes(height, MAX_MESSAGE)
            except QChainError:
                missing.append(height)
        left = missing
        if not left or loop.time() >= deadline:
            return
        await asyncio.sleep(1.0)


def _hex(value: object) -> str:
    """Bytes as a query answers them ({"hex": ...}), as hex."""
    return str(value["hex"]) if isinstance(value, dict) and "hex" in value else str(value)


# --- the checks ----------------------------------------------------------------------


def quorum(n: int) -> int:
    """q = n − f, f = (n − 1) // 3 (CONSENSUS.md §1)."""
    return n - (n - 1) // 3


def members_at(genesis: Sequence[int], changes: Sequence[SetChange], height: int) -> set[int]:
    """The ids of the set the changes give for `height`."""
    ids = set(genesis)
    for ch in sorted(changes, key=lambda c: c.activation):
        if ch.activation <= height:
            if ch.kind == "add":
                ids.add(ch.vid)
            else:
                ids.discard(ch.vid)
    return ids


def check_set_changes(
    records: Sequence[StepRecord], changes: Sequence[SetChange], chains: ChainViews
) -> CheckResult:
    """Every set-change step finished; every in-place rotate was refused and is in no chain."""
    problems = []
    refused = 0
    in_chain = {tx for blocks in chains.values() for b in blocks.values() for tx in b.txs}
    for rec in records:
        s = rec.step
        if s.action not in SET_CHANGE_STEPS:
            continue
        where = f"{s.action} (step {s.index})"
        if rec.error or rec.applied_at is None:
            problems.append(f"{where}: {rec.error or 'never applied'}")
            continue
        if s.action == "propose-rotate":
            answer = (rec.detail.get("status"), rec.detail.get("code"))
            if answer != REFUSAL:
                problems.append(f"{where}: answered {answer}, not {REFUSAL}")
            elif rec.detail.get("tx") in in_chain:
                problems.append(f"{where}: refused, yet tx {rec.detail['tx'][:16]} is in a chain")
            else:
                refused += 1
    if problems:
        return CheckResult(
            "set-changes", False, f"{len(problems)} set changes failed", tuple(problems)
        )
    done = ", ".join(f"{c.kind} {c.node} (id {c.vid}) at {c.activation}" for c in changes)
    return CheckResult(
        "set-changes",
        True,
        f"{done or 'no change'}; {refused} in-place rotates refused with 422",
        data={"changes": [asdict(c) for c in changes], "rotates_refused": refused},
    )


def check_membership(
    evidence: SetEvidence, changes: Sequence[SetChange], expected_operators: Mapping[int, str]
) -> CheckResult:
    """Every member executes the set the changes give at its last height (and each
    added validator has the operator its step named: expected_operators)."""
    want = tuple(sorted(members_at(evidence.genesis, changes, 2**63)))
    bad = [f"{n}: {ids}" for n, ids in sorted(evidence.sets.items()) if ids != want]
    for vid, address in expected_operators.items():
        if evidence.operators.get(vid) != address:
            bad.append(f"id {vid}: operator {evidence.operators.get(vid)}, expected {address}")
    if bad or not evidence.sets:
        return CheckResult(
            "membership", False, f"members disagree with the set {list(want)}", tuple(bad)
        )
    return CheckResult(
        "membership",
        True,
        f"{len(evidence.sets)} members execute the set {list(want)}",
        data={"set": list(want)},
    )


def check_signers(evidence: SetEvidence, changes: Sequence[SetChange]) -> CheckResult:
    """Certificates are signed by a quorum of the set of their height; an added validator
    signs some at or above its activation, a removed one none."""
    problems = []
    if evidence.unread:
        problems.append(f"{evidence.unread} receipts of committed heights not served")
    every = [(n, h, signers) for n, cs in evidence.certs.items() for h, signers in cs.items()]
    for node, h, signers in sorted(every):
        vset = members_at(evidence.genesis, changes, h)
        outsiders = sorted(set(signers) - vset)
        if outsiders:
            problems.append(f"{node}, height {h}: signed by {outsiders}, not of {sorted(vset)}")
        if len(set(signers)) < quorum(len(vset)):
            problems.append(
                f"{node}, height {h}: {len(set(signers))} signatures, q = {quorum(len(vset))}"
            )
    signed: dict[str, int] = {}
    replayed: dict[str, int] = {}
    """Receipts an added validator served of heights below its activation."""
    for ch in changes:
        if ch.kind == "add":
            held = evidence.certs.get(ch.node, {})
            replayed[ch.node] = sum(1 for h in held if h < ch.activation)
        after = [signers for _, h, signers in every if h >= ch.activation]
        count = sum(1 for signers in after if ch.vid in signers)
        signed[f"{ch.kind} {ch.vid}"] = count
        if not after:
            problems.append(f"{ch.kind} of id {ch.vid}: no certificate at or above {ch.activation}")
        elif ch.kind == "add" and count == 0:
            problems.append(
                f"id {ch.vid} signed none of {len(after)} certificates from {ch.activation}"
            )
    if problems:
        return CheckResult(
            "signers", False, f"{len(problems)} certificate problems", first_items(problems)
        )
    return CheckResult(
        "signers",
        True,
        f"{len(every)} certificates signed by a quorum of their height's set "
        f"({evidence.unread} unread, {replayed} of joiners below their activation); "
        f"certificates signed from activation: {signed}",
        data={"signed_from_activation": signed, "unread": evidence.unread, "replayed": replayed},
    )


def activated_at(statuses: Sequence[StatusSample], height: int) -> float | None:
    """The first sample at which a node was at `height` or above."""
    return min((s.t for s in statuses if s.height is not None and s.height >= height), default=None)


def check_activation_window(
    changes: Sequence[SetChange],
    statuses: Sequence[StatusSample],
    records: Sequence[StepRecord],
    action: str,
    healed_at: float,
) -> CheckResult:
    """Each change activated while a step of `action` was in force: from when it was
    applied until its undo, the next `heal` step or the final heal, whichever came first
    (a step that failed is not in force)."""
    heals = [r.applied_at for r in records if r.step.action == "heal" and r.applied_at]
    windows = []
    for r in records:
        if r.step.action != action or r.applied_at is None or r.error:
            continue
        ends = [healed_at, *(t for t in heals if t >= r.applied_at)]
        if r.undone_at is not None:
            ends.append(r.undone_at)
        windows.append((r.applied_at, min(ends)))
    seen = []
    bad = []
    for ch in changes:
        t = activated_at(statuses, ch.activation)
        line = f"{ch.kind} {ch.node} at height {ch.activation}, {t if t is None else round(t, 1)}s"
        seen.append(line)
        if t is None or not any(a <= t <= b for a, b in windows):
            bad.append(line)
    if bad or not changes:
        return CheckResult(
            "activation-window",
            False,
            f"not every change activated during a {action} step",
            tuple(bad) + tuple(f"{action}: {a:.1f}s..{b:.1f}s" for a, b in windows),
        )
    return CheckResult(
        "activation-window", True, f"every change activated during a {action} step", tuple(seen)
    )


def left_lost_writes(ops: Sequence[Op], left: ChainViews) -> list[CheckResult]:
    """A removed validator's chain, read before it stopped, holds every transaction
    acknowledged committed up to its last height, exactly once and where reported."""
    out = []
    for name, blocks in sorted(left.items()):
        top = max(blocks, default=0)
        mine = [o for o in ops if o.height is not None and o.height <= top]
        res = check_lost_writes(mine, {name: blocks})
        out.append(replace(res, name=f"no-lost-writes {name} (left at {top})"))
    return out


def expected_operators(net: Network, changes: Sequence[SetChange]) -> dict[int, str]:
    """The operator address (hex) of each added validator whose step named another
    member's operator: that member's dev operator account."""
    by_name = {n.name: n.index for n in net.plan.nodes}
    out = {}
    for ch in changes:
        if ch.kind == "add" and ch.operator and ch.operator != ch.node:
            role = operator_role(by_name[ch.operator])
            out[ch.vid] = account_key(role, net.plan.scheme).address.hex()
    return out
