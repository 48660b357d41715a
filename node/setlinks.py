"""Links follow the set (CONSENSUS.md §10.6, the part the node builds).

On a chain whose genesis enables changes, the node keeps a link to every validator that
it may need at its current height `cur`, read from the executed chain
(`node.validatorsets.ChainSets`):

- the members of `V(x)` for x from `cur − LINGER_HEIGHTS` to `cur + 1`: the current and
  the next set, and a removed validator for `LINGER_HEIGHTS` heights after its last one
  (its DONEs and answers may still be needed to end its last height, §10.3);
- the new record of every approved `add` in flight (from its approval: the joiner
  catches up, and has keys to every member before it activates).

`SetLinks.follow` compares that with the links the node holds, opens the missing ones
(a QKD send and receive pool for the pair, then the transport's dialler and opener) and
closes the others (transport first, then the keys held for the pair are wiped). A link
that gets no keys shows in `/v1/qkd` as the pool's health (`degraded`, with the key
manager's error), and the chain goes on with the links that work.

Not built here (§10.6): per-link height ranges (a message is judged by its sender's id
and the set of its height, §10.3, in the engine), linger records and CLOSE, retirement
and the key sweep, request-only links. A `rotate` is refused instead: one id on two
machines is what the ranges exist for. The node refuses a transaction that proposes or
approves one and votes for no block carrying one (`ChainSets.refuse_rotation`); if one
is approved all the same, it stops deciding at the first height it starts after the
approval (`ChainSets.start_height`), before the rotation can activate, rather than count
two machines as one id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from node import byzantine
from node.alarms import Alarms
from node.links import Links, Opener
from node.validatorsets import ChainSets, Member
from qchain.errors import QChainError

log = logging.getLogger("qchain.node")

LINGER_HEIGHTS = 16
"""How many heights after its last one a removed validator stays linked."""
FOLLOW_S = 1.0
"""How often the links are compared with the set."""


class SetLinks:
    def __init__(
        self,
        sets: ChainSets,
        links: Links,
        alarms: Alarms,
        addresses: Mapping[int, str],
        byz: byzantine.ByzantineSwitch,
    ) -> None:
        """addresses: the p2p address of a peer as this node's config names it, which
        takes precedence over the directory data of the chain (`p2p` of the record)."""
        self.sets = sets
        self.links = links
        self.alarms = alarms
        self.addresses = dict(addresses)
        self.byzantine = byz
        self.opened = 0
        self.closed = 0

    def wanted(self, cur: int) -> dict[int, Member]:
        """Every validator this node keeps a link to at height `cur`, by id."""
        out: dict[int, Member] = {}
        for h in range(max(1, cur - LINGER_HEIGHTS), cur + 2):
            for m in self.sets.members(h):
                out[m.id] = m
        for m in self.sets.joiners():
            out.setdefault(m.id, m)
        return out

    def address(self, m: Member) -> str:
        return self.addresses.get(m.id) or m.p2p

    def start_peers(self, sae_id: str, cur: int) -> dict[int, str]:
        """The links to open at start, by id with their addresses: `wanted(cur)`'s, each
        at the address the config names, else at its directory address; the SAE ids
        (`Links.sae`) become the chain's, this node's own `sae_id` included."""
        links = self.links
        links.sae.clear()
        links.index_of_sae.clear()
        links.set_peer(links.me, sae_id)
        peers = {}
        for j, m in self.wanted(cur).items():
            address = self.address(m)
            if j != links.me and address:
                links.set_peer(j, m.sae_id)
                peers[j] = address
        return peers

    async def run(self, cur: Callable[[], int]) -> None:
        """Follow the set every `FOLLOW_S` seconds, at the engine's current height."""
        while True:
            await asyncio.sleep(FOLLOW_S)
            try:
                await self.follow(cur())
            except QChainError as e:
                log.warning("links do not follow the set: %s", e.message)

    async def follow(self, cur: int) -> None:
        """Open and close links so that they are `wanted(cur)`'s."""
        links = self.links
        if links.transport is None or links.endpoint is None:
            return
        if self.sets.rotations():
            return  # the node stopped deciding (`ChainSets.start_height`)
        want = {j: m for j, m in self.wanted(max(cur, 1)).items() if j != links.me}
        for j in sorted(set(links.sae) - set(want) - {links.me}):
            await self._close(j)
        for j, m in sorted(want.items()):
            if j not in links.sae:
                self._open(m)

    def _open(self, m: Member) -> None:
        links = self.links
        address = self.address(m)
        if not address:
            log.warning("validator %d has no p2p address: no link", m.id)
            return
        assert links.endpoint is not None and links.transport is not None
        links.endpoint.add_peer(m.sae_id)
        sealer = byzantine.Sealer(links.endpoint.sender(m.sae_id))
        self.byzantine.sealers[m.id] = sealer
        links.set_peer(m.id, m.sae_id)
        opener = Opener(links.endpoint.receiver, m.sae_id)
        links.transport.add_peer(m.id, address, sealer, opener)
        self.opened += 1
        log.info(
            "link to validator %d (SAE %s, %s) opened: it joins the set", m.id, m.sae_id, address
        )

    async def _close(self, j: int) -> None:
        links = self.links
        sae = links.sae.get(j)
        assert links.endpoint is not None and links.transport is not None
        await links.transport.remove_peer(j)
        links.drop_peer(j)
        self.byzantine.sealers.pop(j, None)
        if sae is not None:
            await links.endpoint.remove_peer(sae)
        self.closed += 1
        log.info("link to validator %d (SAE %s) closed: it left the set", j, sae)
