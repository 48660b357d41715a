"""A validator joins or leaves a running devnet whose genesis enables set changes
(`qchain devnet init --reconfiguration`; docs/CONSENSUS.md §10, the `validators`
contract of docs/TRANSACTIONS.md §12).

Adding one, in order (`add_validator` does all of it):

1. `add_site`: the new site's files, as `init` writes a validator's: its dev validator
   key (the next id: ids are never given twice, so it is the number of sites ever
   made), SAE id, TLS client certificate from the devnet's CA, admin token and config
   (its peers: every site so far); `network.json` lists it.
2. `link_sae`: the key manager gets an SAE pair between the new SAE and every other one
   (its admin API, `PUT /admin/links/{a}/{b}`): on a real network the QKD operator does
   this.
3. `propose_add`: the operator of node0 proposes the add, from the site's join request
   (key, SAE id, operator, name, p2p, api), through a node's HTTP API;
4. `approve`: the operators of more than two thirds of the current set approve it;
5. the new node starts from an empty store: it catches up by replaying the blocks from
   its peers (a learner until its activation);
6. `ready`: once it has caught up (within `CAUGHT_UP_LAG` heights of the tip, not only
   to the height the chain had when it started: a joiner that activates while it still
   replays is a member that cannot vote, and one more failure then stops the chain), its
   new key signs `("qchain-ready", chain_id, change_id, [])` and any member sends it; the
   change is then scheduled for activation D heights later, and from there its votes
   count.

Removing one is `propose_remove` and `approve`; the validator's process may be stopped
once the activation height has passed (its links close `node.setlinks.LINGER_HEIGHTS`
heights later), and its SAE pairs dropped (`unlink_sae`). `mark_removed` then records it
in `network.json`: `up` does not start it again (it would only run as a learner), and
`status` and the endpoint table show it as removed. `reset_sites` undoes both kinds of
change for `qchain devnet reset`, whose chain starts again from the genesis: the removed
sites of the genesis are validators again, and sites added later are dropped (their ids
are given again by the new chain's adds).

Only the shared simulated KMS is supported (one KME per site would need every KME and
its relay told; an external KME is its operator's).
"""

from __future__ import annotations

import abc
import asyncio
import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

from contracts import validators
from devnet.local import LocalNetwork
from devnet.network import (
    NetworkPlan,
    NodePlan,
    account_key,
    free_ports,
    load_plan,
    node_config_toml,
    operator_role,
    validator_key,
)
from devnet.running import node_of
from node.setlinks import LINGER_HEIGHTS
from qchain.client import AsyncClient
from qchain.errors import ConfigError
from qchain.qkd import certs
from qchain.types import Receipt, Transaction, new_transaction

TX_TIMEOUT_S = 30.0
CAUGHT_UP_LAG = 2
"""How many heights below a member's the joiner may be when its readiness is sent."""


def add_site(directory: Path, ports: tuple[int, int, int] | None = None) -> NodePlan:
    """Write the next validator's site into the devnet and list it in `network.json`.
    ports: its p2p, API and admin ports (default: ports free now)."""
    plan = load_plan(directory)
    if not plan.reconfiguration:
        raise ConfigError(
            str(directory), "this devnet's genesis does not enable validator-set changes"
        )
    if plan.kme_mode != "shared":
        raise ConfigError(str(directory), "adding a validator needs the shared simulated KMS")
    index = len(plan.nodes)
    p2p, api, admin = ports or free_ports(3, plan.host)
    node = NodePlan(
        index=index,
        name=f"node{index}",
        sae_id=f"SAE-node{index}",
        host=plan.host,
        p2p_port=p2p,
        api_port=api,
        admin_port=admin,
    )
    plan = replace(plan, nodes=(*plan.nodes, node))
    ca_dir = directory / "ca"
    ca = certs.load(ca_dir / "ca.pem", ca_dir / "ca.key")
    certs.save(
        certs.issue(ca, node.sae_id),
        ca_dir / f"sae-{node.sae_id}.pem",
        ca_dir / f"sae-{node.sae_id}.key",
    )
    ndir = directory / "nodes" / node.name
    (ndir / "data").mkdir(parents=True, exist_ok=True)
    validator_key(index).save(ndir / "validator.key")
    (ndir / "config.toml").write_text(node_config_toml(plan, node))
    token = ndir / "admin.token"
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(os.urandom(16).hex() + "\n")
    _save_plan(directory, plan)
    return node


def mark_removed(directory: Path, name: str) -> NodePlan:
    """Record in `network.json` that site `name` left the set."""
    plan = load_plan(directory)
    node = replace(node_of(plan, name), removed=True)
    nodes = tuple(node if n.name == name else n for n in plan.nodes)
    _save_plan(directory, replace(plan, nodes=nodes))
    return node


def reset_sites(directory: Path) -> list[str]:
    """The sites of a devnet whose chain starts again from its genesis: the genesis's
    sites, none removed; the files of the sites added later are deleted. Returns the
    names of those dropped."""
    plan = load_plan(directory)
    kept = tuple(replace(n, removed=False) for n in plan.nodes[: plan.validators])
    dropped = [n.name for n in plan.nodes[plan.validators :]]
    for name in dropped:
        shutil.rmtree(directory / "nodes" / name, ignore_errors=True)
    _save_plan(directory, replace(plan, nodes=kept))
    return dropped


def _save_plan(directory: Path, plan: NetworkPlan) -> None:
    (directory / "network.json").write_text(json.dumps(plan.to_json(), indent=2) + "\n")


def _kms_admin(directory: Path, plan: NetworkPlan, method: str, path: str) -> Any:
    token = (directory / "kms" / "admin.token").read_text().strip()
    data = None if method in ("GET", "DELETE") else b"{}"
    req = urllib.request.Request(f"{plan.kms_admin_url}/admin/{path}", data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def link_sae(directory: Path, node: NodePlan, skip: Collection[str] = ()) -> None:
    """SAE pairs between `node` and every other site's SAE at the shared KMS (but those
    in `skip`: a link that gets no keys, for tests)."""
    plan = load_plan(directory)
    for other in plan.nodes:
        if other.sae_id != node.sae_id and other.sae_id not in skip and not other.removed:
            _kms_admin(directory, plan, "PUT", f"links/{node.sae_id}/{other.sae_id}")


def kms_links(net: LocalNetwork) -> list[str]:
    """The names (`a~b`) of the SAE pairs the shared KMS holds."""
    doc = _kms_admin(net.dir, net.plan, "GET", "links")
    return [str(lk["link"]) for lk in doc["links"]]


def unlink_sae(directory: Path, node: NodePlan) -> None:
    """Drop every SAE pair of `node` at the shared KMS (it left the set)."""
    plan = load_plan(directory)
    for other in plan.nodes:
        if other.sae_id != node.sae_id:
            try:
                _kms_admin(directory, plan, "DELETE", f"links/{node.sae_id}/{other.sae_id}")
            except urllib.error.HTTPError as e:
                if e.code != 404:
                    raise


Nonces = Callable[[str], int]
"""The next nonce of a dev account's role, from a counter its caller keeps (a load
sending from the same accounts); without one, the chain's next nonce is asked."""


class ChangeTxs:
    """The transactions of the `validators` contract from the dev operators' accounts,
    built and signed; how they reach the chain is `Operators`'."""

    def __init__(self, plan: NetworkPlan) -> None:
        self.plan = plan

    def transaction(self, role: str, nonce: int, method: str, args: list[object]) -> Transaction:
        return new_transaction(
            account_key(role, self.plan.scheme),
            chain_id=self.plan.chain_id,
            nonce=nonce,
            contract=validators.NAME,
            method=method,
            args=args,
        )

    @staticmethod
    def receipt(method: str, receipt: Receipt | None) -> Receipt:
        """The receipt of a committed transaction, or `ConfigError` naming the refusal."""
        if receipt is None or not receipt.ok:
            why = "no receipt" if receipt is None else receipt.message
            raise ConfigError(f"validators.{method}", f"refused: {why}")
        return receipt

    def add_args(self, node: NodePlan, operator: int | None = None) -> list[object]:
        """The `propose` arguments of the add of `node`, from its join request (key, SAE
        id, operator, name, p2p, api). Its operator is that of validator `operator` if
        given (a partner's new machine), else its own."""
        op = account_key(
            operator_role(node.index if operator is None else operator), self.plan.scheme
        )
        return [
            "add",
            None,
            validator_key(node.index).public_key,
            node.sae_id,
            op.address,
            node.name,
            node.p2p,
            node.api_url,
        ]

    def sign_ready(self, node: NodePlan, message: bytes) -> bytes:
        """The joiner's ML-DSA-65 signature of its readiness message."""
        return validator_key(node.index).sign(message)


class Operators(ChangeTxs, abc.ABC):
    """The operators' changes of the set, sent and waited for. How a transaction reaches
    the chain is a subclass's: `Governance` (a node's HTTP API), the whole-network
    simulator's (`devnet.simnet.reconf`, the simulated nodes' facades)."""

    @abc.abstractmethod
    async def send(self, role: str, method: str, args: list[object]) -> Receipt:
        """Sign and submit a transaction of `role`'s account, wait for its commit; its
        receipt, or `ConfigError` naming the contract's refusal."""

    @abc.abstractmethod
    async def change(self, change_id: bytes) -> dict[str, Any]:
        """The change's status (the contract's `change` query)."""

    @abc.abstractmethod
    async def members(self) -> list[int]:
        """The ids of the current set whose operators approve changes."""

    async def propose_add(self, node: NodePlan, operator: int | None = None) -> bytes:
        """node0's operator proposes the add of `node` (`add_args`); returns the change
        id."""
        args = self.add_args(node, operator)
        return (await self.send(operator_role(0), "propose", args)).tx_hash

    async def propose_remove(self, vid: int, proposer: int = 0) -> bytes:
        args: list[object] = ["remove", vid, b"", "", b"", "", "", ""]
        return (await self.send(operator_role(proposer), "propose", args)).tx_hash

    async def approve(self, change_id: bytes, members: list[int]) -> dict[str, Any]:
        """Each of `members`' operators approves; the change's status after the last."""
        for vid in members:
            await self.send(operator_role(vid), "approve", [change_id])
        return await self.change(change_id)

    async def ready(self, change_id: bytes, node: NodePlan, sender: int = 0) -> dict[str, Any]:
        """The joiner's key signs its readiness (no other add or rotate is in flight, so
        `checked` is empty); a member's operator sends it."""
        message = validators.ready_message(self.plan.chain_id, change_id, ())
        signature = self.sign_ready(node, message)
        await self.send(operator_role(sender), "ready", [change_id, signature, []])
        return await self.change(change_id)

    async def approve_all(self, change_id: bytes) -> dict[str, Any]:
        """Approvals from the members' operators, in id order, until the change is no
        longer `proposed` (more than 2/3 of the set approved); its status."""
        status = await self.change(change_id)
        for vid in await self.members():
            if status["change"]["status"] != "proposed":
                break
            status = await self.approve(change_id, [vid])
        return status


class Governance(Operators):
    """The operators' transactions sent to one node's HTTP API and waited for."""

    def __init__(self, plan: NetworkPlan, api_url: str, nonces: Nonces | None = None) -> None:
        super().__init__(plan)
        self.api_url = api_url
        self.nonces = nonces

    async def send(self, role: str, method: str, args: list[object]) -> Receipt:
        key = account_key(role, self.plan.scheme)
        async with AsyncClient(self.api_url) as c:
            nonce = self.nonces(role) if self.nonces else await c.next_nonce(key.address)
            tx = self.transaction(role, nonce, method, args)
            info = await c.submit_and_wait(tx, TX_TIMEOUT_S)
        return self.receipt(method, info.receipt)

    async def change(self, change_id: bytes) -> dict[str, Any]:
        async with AsyncClient(self.api_url) as c:
            doc = await c.query(validators.NAME, "change", {"change_id": {"hex": change_id.hex()}})
        if not isinstance(doc, dict):
            raise ConfigError("validators.change", "the answer is not an object")
        return doc

    async def members(self) -> list[int]:
        """The ids of the current set, as the node executed it."""
        async with AsyncClient(self.api_url) as c:
            h = int((await c.status())["height"])
            doc = await c.query(validators.NAME, "set", {"height": max(h, 1)})
        return [int(r["id"]) for r in doc["records"]]


async def _height(net: LocalNetwork, name: str) -> int:
    async with AsyncClient(net.api_url(name)) as c:
        return int((await c.status())["height"])


async def _wait(what: str, check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f} s")
        await asyncio.sleep(0.5)


async def add_validator(
    net: LocalNetwork,
    via: str = "node0",
    timeout: float = 120.0,
    say: Callable[[str], None] = print,
    *,
    operator: int | None = None,
    nonces: Nonces | None = None,
    scheduled: Callable[[NodePlan, int], None] | None = None,
) -> NodePlan:
    """The whole add on a running devnet: the site, its SAE pairs, the proposal, the
    approvals, the new node started and caught up, its readiness, its activation.
    `operator`: the validator whose operator runs the new one (default: its own dev
    operator); `scheduled` is told the activation height once it is known."""
    node = add_site(net.dir)
    say(f"{node.name}: site written (id {node.index}, SAE {node.sae_id}, p2p {node.p2p})")
    link_sae(net.dir, node)
    net.plan = load_plan(net.dir)
    gov = Governance(net.plan, net.api_url(via), nonces)
    cid = await gov.propose_add(node, operator)
    status = await gov.approve_all(cid)
    change = status["change"]
    if change["status"] != "approved" or change["id"] != node.index:
        raise ConfigError("add", f"the add was not approved as id {node.index}: {status}")
    say(f"{node.name}: add {cid.hex()} approved by {status['approvals']} of {status['n']}")
    net.start_node(node.name)

    async def caught_up() -> bool:
        try:
            return await _height(net, node.name) >= await _height(net, via) - CAUGHT_UP_LAG
        except Exception:
            return False

    await _wait(f"{node.name} caught up with {via}", caught_up, timeout)
    change = (await gov.ready(cid, node))["change"]
    e = int(change["activation_height"])
    say(f"{node.name}: ready; a member from height {e}")
    if scheduled is not None:
        scheduled(node, e)

    async def active() -> bool:
        return await _height(net, via) >= e

    await _wait(f"activation height {e}", active, timeout)
    return node


async def remove_validator(
    net: LocalNetwork,
    name: str,
    via: str = "node0",
    timeout: float = 120.0,
    say: Callable[[str], None] = print,
    *,
    nonces: Nonces | None = None,
    before_stop: Callable[[int], Awaitable[None]] | None = None,
) -> int:
    """The whole remove on a running devnet: proposal, approvals, activation; then the
    process is stopped and its SAE pairs dropped. Returns the activation height.
    `before_stop` is awaited with it once the linger has passed, while the removed node
    still runs (to read its chain)."""
    node = net.node(name)
    if node.removed:
        raise ConfigError(name, "this site was removed from the set already")
    if name == via:
        raise ConfigError("--via", "send the remove through another node than the one removed")
    gov = Governance(net.plan, net.api_url(via), nonces)
    cid = await gov.propose_remove(
        node.index, proposer=next(i for i in await gov.members() if i != node.index)
    )
    status = await gov.approve_all(cid)
    change = status["change"]
    if change["status"] != "scheduled":
        raise ConfigError("remove", f"the remove was not approved: {status}")
    e = int(change["activation_height"])
    say(f"{name}: remove {cid.hex()} approved; not a member from height {e}")

    async def gone() -> bool:
        return await _height(net, via) >= e + LINGER_HEIGHTS + 2

    await _wait(f"height {e} and the linger after it", gone, timeout)
    if before_stop is not None:
        await before_stop(e)
    net.stop_node(name)
    unlink_sae(net.dir, node)
    mark_removed(net.dir, name)
    net.plan = load_plan(net.dir)
    say(f"{name}: stopped, its SAE pairs dropped; the devnet no longer starts it")
    return e
