"""Block bodies by consensus value: fetching the ones the engine is missing, serving the
ones peers ask for, and the committed values a syncing peer asks for.

A missing body is asked of one peer at a time, starting at a random one and moving to the
next every FETCH_RETRY_S until some peer answers. A request is served from the pending
bodies and the committed chain, up to the peer's lookup budget and one message's size; a
node whose store is damaged serves nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from consensus.events import BlockFetched, Event, ReplySync
from consensus.messages import Block as CBlock
from consensus.messages import BlockReq, BlockResp, SyncResp
from consensus.messages import block_hash as consensus_value
from node.alarms import Alarms
from node.budget import BLOCK_LOOKUPS, Budgets
from node.chain import ChainApp
from node.links import Links
from qchain import clock
from qchain.limits import BLOCK_RESP_FRAMING, MAX_MESSAGE
from qchain.store.kv import KVStore

FETCH_RETRY_S = 0.5


class BlockFetcher:
    """Missing block bodies of one validator, and the requests of its peers."""

    def __init__(
        self,
        chain_id: str,
        store: KVStore,
        app: ChainApp,
        links: Links,
        budgets: Budgets,
        alarms: Alarms,
        feed: Callable[[Event], None],
    ) -> None:
        self.chain_id = chain_id
        self.store = store
        self.app = app
        self.links = links
        self.budgets = budgets
        self.alarms = alarms
        self.feed = feed
        self.fetching: dict[bytes, int] = {}
        """Values being fetched -> attempts so far (the next peer to ask, modulo)."""
        self._timer: asyncio.TimerHandle | None = None
        self._rng = clock.new_rng("fetcher")

    def cancel_timers(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None

    def local_body(self, value: bytes) -> CBlock | None:
        return self.app.committed_cblock(value) or self.app.pending_cblock(value)

    def fetch(self, value: bytes) -> None:
        body = self.local_body(value)
        if body is not None:
            self.feed(BlockFetched(body))
            return
        if value not in self.fetching:
            self.fetching[value] = self._rng.randrange(self.links.n)
        self._send_fetches()

    def forget(self, value: bytes) -> None:
        """The value was committed: stop asking for it."""
        self.fetching.pop(value, None)

    def _send_fetches(self) -> None:
        if not self.fetching:
            return
        peers = self.links.others()
        for value, attempt in list(self.fetching.items()):
            peer = peers[attempt % len(peers)]
            self.fetching[value] = attempt + 1
            self.links.send_consensus(peer, BlockReq(self.chain_id, (value,)))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FETCH_RETRY_S, self._retry)

    def _retry(self) -> None:
        self._timer = None
        self._send_fetches()

    def serve(self, sender: int, req: BlockReq) -> None:
        if self.alarms.store_corrupt is not None:
            return
        blocks = []
        size = BLOCK_RESP_FRAMING
        granted = self.budgets.take(sender, BLOCK_LOOKUPS, len(req.hashes))
        for value in req.hashes[:granted]:
            body = self.local_body(value)
            if body is None:
                continue
            size += len(body.encode())
            if size > MAX_MESSAGE:
                break
            blocks.append(body)
        if blocks:
            self.links.send_consensus(sender, BlockResp(self.chain_id, tuple(blocks)))

    def received(self, resp: BlockResp) -> None:
        for body in resp.blocks:
            value = consensus_value(body)
            if self.fetching.pop(value, None) is not None:
                self.feed(BlockFetched(body))

    def reply_sync(self, a: ReplySync) -> None:
        """The consensus values of up to a.max_count committed heights from a.from_height."""
        top = self.app.chain.height()
        hashes = []
        for h in range(a.from_height, min(top, a.from_height + a.max_count - 1) + 1):
            v = self.app.committed_value(h)
            if v is None:
                break
            hashes.append(v)
        self.links.send_consensus(a.to, SyncResp(self.chain_id, a.from_height, tuple(hashes)))
