"""What comes at a simulated network from outside its validators: the fault kit's
outside attacker (`devnet.faults.attacker`) and a partner flood
(`devnet.faults.load.partner_flood`), for `devnet.simnet.world.World.apply`."""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

from devnet.faults import attacker
from devnet.faults.load import Accounts, max_size_anchor_many
from devnet.simnet.loop import OWNER
from qchain.errors import QChainError

if TYPE_CHECKING:
    from devnet.simnet.world import World

FLOOD_ROLE = "issuer"
"""The dev account a partner flood sends from (the client workload sends from partner1
and partner2)."""
ATTACKER_OWNER = 2000
"""The owner numbers of outside attackers (`attack`): at no site."""


def attack(world: World, args: dict[str, Any]) -> None:
    """The fault kit's outside attacker (`devnet.faults.attacker`) on the simulated
    network and clock, as an owner at no site (`ATTACKER_OWNER` + how many came
    before it): hellos claiming validators' indexes, forged frames, or half-open
    connections, for `seconds`."""
    victims = attacker.victims(world.plan)
    spec = attacker.AttackSpec(
        kind=args["mode"],
        targets=tuple(victims[world.names[world.resolve(t)]] for t in args["targets"]),
        claims=tuple(victims[world.names[c]] for c in args["claims"]),
        chain_id=world.plan.chain_id,
        duration_s=float(args["seconds"]),
        rate=float(args["rate"]),
        connections=int(args["connections"]),
    )
    run = attacker.Attacker(
        spec, world.clock.rng("attack"), connect=world.net.open_connection, clock=world.loop.time
    )
    owner = ATTACKER_OWNER + len(world.attacks)
    ctx = contextvars.copy_context()
    ctx.run(OWNER.set, owner)
    world.attacks.append(world.loop.create_task(_attack(world, owner, run), context=ctx))


def flood(world: World, count: int) -> None:
    """The fault kit's `partner-flood` (`devnet.faults.load.partner_flood`): `count`
    anchor_many transactions of the largest size a transaction may have, from one
    account, to every node up, the first nonce last (so all become ready together).
    The account is `FLOOD_ROLE`, which the client workload does not use."""
    up = [v for v in world.nodes if v is not None]
    if not up:
        return
    if world.flood_accounts is None:
        world.flood_accounts = Accounts("ed25519", up[0].chain_id)
    accounts = world.flood_accounts
    tag = f"flood-{world.seed}-{accounts.nonce[FLOOD_ROLE]}"
    txs = [max_size_anchor_many(accounts, FLOOD_ROLE, tag) for _ in range(count)]
    outcome: dict[str, int] = {}
    for batch in (txs[1:], txs[:1]):
        for v in up:
            for tx in batch:
                try:
                    v.submit_tx(tx)
                    key = "accepted"
                except QChainError as e:
                    key = e.code
                outcome[key] = outcome.get(key, 0) + 1
    world.trace("flood", count, sorted(outcome.items()))


async def _attack(world: World, owner: int, run: attacker.Attacker) -> None:
    stats = await run.run()
    world.trace("attack-done", owner, run.spec.kind, sorted(stats.to_json().items()))
