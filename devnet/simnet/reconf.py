"""Validator-set changes in the whole-network simulator (`qchain sim net --reconf`).

The genesis enables changes (`consensus.reconfiguration`) for the first n validators; one
more site is written as `qchain devnet add-validator` writes it (`devnet.joining.add_site`)
and not started. On a seeded schedule, beside the run's usual faults:

1. node0's operator proposes the add of the spare site from its join request and the
   members' operators approve it (`devnet.joining.Operators`, the same transactions as
   the devnet's, submitted to a node that is up through its facade and sent again to
   another one until they commit);
2. at its approval the key manager gets the joiner's SAE pairs at run time
   (`KeyManager.add_link_like`, what `PUT /admin/links/{a}/{b}` does); the joiner starts
   from an empty disk and catches up as a learner; once it is within `CAUGHT_UP_LAG`
   heights of the tip, its readiness is sent and the add activates D heights later;
3. later, a seeded member of the genesis is removed (proposal, approvals); once the chain
   is `LINGER_HEIGHTS` + 2 heights past the activation the removed node stops for good
   (as a crash; what its chain holds then is kept for the agreement checks) and its SAE
   pairs are dropped.

The operator of validator 1 (partner2) is one of the workload's senders too; the simulated
operators never sign for it (`SimOperators.members`), so the client's nonces stay its
own. What the node computed of each height's set is recorded at each `StartHeight` it
builds (`recording_sets`), and checked against the contract's sets
(`devnet.simnet.reconfcheck`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contracts import validators
from devnet.joining import CAUGHT_UP_LAG, TX_TIMEOUT_S, ChangeTxs, Operators
from devnet.network import NetworkPlan, NodePlan, account_key, operator_role
from devnet.simnet.loop import OWNER
from node.runtime import Validator
from node.service import TxStatus
from node.setlinks import LINGER_HEIGHTS
from node.validatorsets import ChainSets
from qchain.errors import ConfigError, QChainError
from qchain.jsonform import value_to_json
from qchain.qkd.keymanager import link_name
from qchain.types import Receipt

if TYPE_CHECKING:
    from devnet.simnet.world import World

SPARES = 1
"""Sites written beside the genesis's validators, started when their add is approved."""
ADD_AT = (0.5, 2.0)
"""When the add is proposed (virtual seconds, drawn)."""
REMOVE_AFTER = (0.5, 3.0)
"""How long after the add's activation the remove is proposed (drawn)."""
CLIENT_SENDERS = ("partner1", "partner2")
"""The workload's accounts (`devnet.simnet.client.Client`): never an operator's signer here."""
POLL_S = 0.1


@dataclass
class Changes:
    """What the schedule of changes did, for the checks."""

    joiner: int | None = None
    e_add: int | None = None
    removed: int | None = None
    e_remove: int | None = None
    retired: bool = False
    failure: str | None = None
    steps: list[str] = field(default_factory=list)
    starts: dict[int, dict[int, set[tuple[tuple[int, ...], tuple[int, ...]]]]] = field(
        default_factory=dict
    )
    """node -> height -> the (V(h), V(h+1)) ids it started that height with (every life)."""


@contextlib.contextmanager
def recording_sets(changes: Changes) -> Iterator[None]:
    """Record, per simulated node (the loop's owner of the running code), the sets each
    `StartHeight` it builds carries."""
    original = ChainSets.start_height

    def start_height(self: ChainSets, h: int, parent: bytes, anchor: int) -> Any:
        sh = original(self, h, parent, anchor)
        owner = OWNER.get()
        if owner is not None and sh.members is not None and sh.next_members is not None:
            seen = changes.starts.setdefault(owner, {}).setdefault(h, set())
            seen.add((sh.members.ids, sh.next_members.ids))
        return sh

    ChainSets.start_height = start_height  # type: ignore[method-assign]
    try:
        yield
    finally:
        ChainSets.start_height = original  # type: ignore[method-assign]


class SimOperators(Operators):
    """The operators' transactions on the simulated network: each submitted to a node
    that is up, and again to another one each second until a node has it committed."""

    def __init__(self, world: World, plan: NetworkPlan) -> None:
        super().__init__(plan)
        self.world = world
        self.rng = world.clock.rng("operators")
        self.nonces: dict[str, int] = {}

    def _up(self) -> list[tuple[int, Validator]]:
        return [(i, v) for i, v in enumerate(self.world.nodes) if v is not None]

    async def highest(self) -> Validator:
        """The node up with the highest chain (waits for one)."""
        while True:
            up = self._up()
            if up:
                return max(up, key=lambda x: (x[1].chain.height(), -x[0]))[1]
            await asyncio.sleep(POLL_S)

    def _committed(self, tx_hash: bytes) -> TxStatus | None:
        for _, v in self._up():
            st = v.tx_status(tx_hash)
            if st is not None and st.state == "committed":
                return st
        return None

    async def send(self, role: str, method: str, args: list[object]) -> Receipt:
        if role in CLIENT_SENDERS:
            raise ConfigError(role, "the workload's account: the simulated operators do not sign")
        w, loop = self.world, self.world.loop
        nonce = self.nonces.get(role)
        if nonce is None:
            address = account_key(role, self.plan.scheme).address
            account = (await self.highest()).account(address)
            nonce = 0 if account is None else int(account["nonce"])
        tx = self.transaction(role, nonce, method, args)
        deadline = loop.time() + TX_TIMEOUT_S
        st = self._committed(tx.hash)
        while st is None:
            if loop.time() > deadline:
                raise ConfigError(f"validators.{method}", f"not committed in {TX_TIMEOUT_S:g} s")
            up = self._up()
            if up:
                i, v = up[self.rng.randrange(len(up))]
                try:
                    v.submit_tx(tx)
                    w.trace("operator-submitted", role, method, i)
                except QChainError as e:
                    w.trace("operator-refused", role, method, i, e.code)
            for _ in range(int(1.0 / POLL_S)):
                await asyncio.sleep(POLL_S)
                st = self._committed(tx.hash)
                if st is not None:
                    break
        self.nonces[role] = nonce + 1
        w.trace("operator-committed", role, method, st.height)
        return self.receipt(method, st.receipt)

    def sign_ready(self, node: NodePlan, message: bytes) -> bytes:
        """A fixed signature where `READY_SIGNATURES` holds one for this message: ML-DSA-65
        signing (the `cryptography` library's) is randomised, and the readiness
        transaction's bytes reach every later block hash, so a freshly signed one would
        make the run's trace differ from its replay. The message is the same for every
        seed of a network size (the add's proposal is the same transaction in every run).
        Any other message is signed afresh, and the trace says the run will not replay."""
        fixed = _fixed_signatures().get(hashlib.sha256(message).hexdigest())
        if fixed is not None:
            return fixed
        self.world.trace("ready-signed-afresh", hashlib.sha256(message).hexdigest()[:16])
        return super().sign_ready(node, message)

    async def change(self, change_id: bytes) -> dict[str, Any]:
        v = await self.highest()
        doc = value_to_json(v.query(validators.NAME, "change", {"change_id": change_id.hex()}))
        if not isinstance(doc, dict):
            raise ConfigError("validators.change", "the answer is not an object")
        return doc

    async def members(self) -> list[int]:
        """The ids of the current set (at the highest node's height) whose operator is
        not one of the workload's accounts."""
        v = await self.highest()
        doc: Any = v.query(validators.NAME, "set", {"height": max(v.chain.height(), 1)})
        return [int(r.id) for r in doc["records"] if operator_role(int(r.id)) not in CLIENT_SENDERS]


READY_SIGNATURES = Path(__file__).with_name("ready_signatures.json")
"""SHA-256 of a readiness message -> the spare site's signature of it (hex)."""


@functools.cache
def _fixed_signatures() -> dict[str, bytes]:
    doc = json.loads(READY_SIGNATURES.read_text())
    return {str(k): bytes.fromhex(str(v)) for k, v in doc.items()}


def write_ready_signature(plan: NetworkPlan, genesis_n: int) -> str:
    """Sign the readiness of the first spare site of `plan` (as `Schedule` proposes its
    add) into `READY_SIGNATURES`; returns the message's hash."""
    joiner = plan.nodes[genesis_n]
    ops = ChangeTxs(plan)
    propose = ops.transaction(operator_role(0), 0, "propose", ops.add_args(joiner))
    message = validators.ready_message(plan.chain_id, propose.hash, ())
    doc = json.loads(READY_SIGNATURES.read_text()) if READY_SIGNATURES.exists() else {}
    key = hashlib.sha256(message).hexdigest()
    doc[key] = ops.sign_ready(joiner, message).hex()
    READY_SIGNATURES.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return key


class Schedule:
    """The seeded add, then remove, played on the world (module docstring)."""

    def __init__(self, world: World, plan: NetworkPlan, genesis_n: int, changes: Changes):
        self.world = world
        self.plan = plan
        self.genesis_n = genesis_n
        self.changes = changes
        self.ops = SimOperators(world, plan)
        rng = world.clock.rng("reconf")
        self.add_at = round(rng.uniform(*ADD_AT), 3)
        self.remove_after = round(rng.uniform(*REMOVE_AFTER), 3)
        self.victim = rng.randrange(genesis_n)

    def _step(self, what: str, *detail: object) -> None:
        self.changes.steps.append(f"{self.world.loop.time():.3f} {what}")
        self.world.trace("reconf", what, *detail)

    async def run(self) -> None:
        try:
            await self._run()
        except (QChainError, TimeoutError) as e:
            self.changes.failure = f"{self.world.loop.time():.3f}: {e}"
            self.world.trace("reconf-failed", str(e))

    async def _height(self) -> int:
        return (await self.ops.highest()).chain.height()

    async def _until_height(self, h: int) -> None:
        while await self._height() < h:
            await asyncio.sleep(POLL_S)

    async def _run(self) -> None:
        w, ch, loop = self.world, self.changes, self.world.loop
        await asyncio.sleep(max(0.0, self.add_at - loop.time()))
        joiner = self.plan.nodes[self.genesis_n]
        cid = await self.ops.propose_add(joiner)
        status = (await self.ops.approve_all(cid))["change"]
        if status["status"] != "approved" or status["id"] != joiner.index:
            raise ConfigError("add", f"not approved as id {joiner.index}: {status}")
        self._step("add approved", joiner.index)
        for other in self.plan.nodes[: self.genesis_n]:
            w.manager.add_link_like(joiner.sae_id, other.sae_id)
        ch.joiner = joiner.index
        await w.join(joiner.index)
        # Ready once within CAUGHT_UP_LAG heights of the tip, as the devnet's flow.
        while (v := w.nodes[joiner.index]) is None or (
            v.chain.height() < await self._height() - CAUGHT_UP_LAG
        ):
            await asyncio.sleep(POLL_S)
        self._step("joiner caught up", v.chain.height())
        change = (await self.ops.ready(cid, joiner))["change"]
        ch.e_add = int(change["activation_height"])
        self._step("add scheduled", ch.e_add)
        await self._until_height(ch.e_add)
        await asyncio.sleep(self.remove_after)
        members = await self.ops.members()
        proposer = next(i for i in members if i != self.victim)
        cid = await self.ops.propose_remove(self.victim, proposer)
        change = (await self.ops.approve_all(cid))["change"]
        # Scheduled, or already active where the chain passed e before the query.
        if change["status"] not in ("scheduled", "active"):
            raise ConfigError("remove", f"not approved: {change}")
        ch.removed, ch.e_remove = self.victim, int(change["activation_height"])
        self._step("remove scheduled", self.victim, ch.e_remove)
        await self._until_height(ch.e_remove + LINGER_HEIGHTS + 2)
        w.retire(self.victim)
        gone = self.plan.nodes[self.victim].sae_id
        for other in self.plan.nodes:
            if link_name(other.sae_id, gone) in w.manager.link_names():
                w.manager.drop_link(other.sae_id, gone)
        ch.retired = True
        self._step("removed node stopped", self.victim)
