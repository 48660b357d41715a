"""One node's side of every QKD-authenticated link, wired together.

`QKDEndpoint` builds, for a node `me` with peers P, a `SendKeyPool` and `LinkSender` per
peer (me -> p) and a `ReceiveKeyPool` per peer behind one `LinkReceiver` (p -> me), all
drawing on one `KeySource`. The node transport needs only `sender(peer).seal(body)`,
`receiver.open(frame)`, `sender(peer).resync()` after a reconnection, `stats()` for
metrics and link health, and `start()` / `close()`. A receive pool asks the key manager
for at most as many ids per call as the send pool toward the same peer read from the
link's status (`max_key_per_request`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from qchain.qkd.clock import Clock, SystemClock
from qchain.qkd.frame import DEFAULT_FRAME_LIMITS, FrameLimits, LinkReceiver, LinkSender
from qchain.qkd.lease import Lease, read_floor
from qchain.qkd.pool import PoolConfig, ReceiveKeyPool, SendKeyPool
from qchain.qkd.source import KeySource
from qchain.store.kv import KVStore


class QKDEndpoint:
    def __init__(
        self,
        chain_id: str,
        me: str,
        peers: Iterable[str],
        source: KeySource,
        *,
        config: PoolConfig | None = None,
        clock: Clock | None = None,
        limits: FrameLimits = DEFAULT_FRAME_LIMITS,
        store: KVStore | None = None,
    ) -> None:
        """With a `store`, each sender draws its sequence numbers from a persisted `Lease`
        named `seq/<me>/<peer>` that starts at max(its stored end, the store's lease
        floor), the floor read once here (`qchain.qkd.lease`; a damaged floor is refused
        with `StorageError`), so a restarted, restored, rebuilt or state-synced node never
        repeats a number its peers have seen; without, they start at 1."""
        self.me = me
        self.source = source
        clock = clock or SystemClock()
        self._made = (chain_id, config, clock, limits, store)
        peers = sorted(set(peers) - {me})
        floor = 0 if store is None else read_floor(store)
        self.send_pools = {p: SendKeyPool(source, p, config, clock) for p in peers}
        self.receive_pools = {
            p: ReceiveKeyPool(source, p, config, clock, batch_size=self._batch_of(p)) for p in peers
        }
        self.senders = {
            p: LinkSender(
                chain_id,
                me,
                p,
                self.send_pools[p],
                seq_lease=None if store is None else Lease(store, f"seq/{me}/{p}", floor=floor),
                limits=limits,
            )
            for p in peers
        }
        self.receiver = LinkReceiver(chain_id, me, self.receive_pools, limits=limits)

    def _batch_of(self, peer: str) -> Callable[[], int]:
        pool = self.send_pools[peer]
        return lambda: pool.batch_size

    def add_peer(self, peer: str) -> None:
        """A link to a validator that joins the set on a running chain (CONSENSUS.md
        §10.6), built as the ones given at start; its send pool starts filling at once."""
        if peer == self.me or peer in self.senders:
            return
        chain_id, config, clock, limits, store = self._made
        add = QKDEndpoint(
            chain_id,
            self.me,
            [peer],
            self.source,
            config=config,
            clock=clock,
            limits=limits,
            store=store,
        )
        self.send_pools[peer] = add.send_pools[peer]
        self.receive_pools[peer] = add.receive_pools[peer]
        self.senders[peer] = add.senders[peer]
        self.receiver.peers[peer] = add.receiver.peers[peer]
        self.send_pools[peer].start()

    async def remove_peer(self, peer: str) -> None:
        """Close the link to a validator that left the set (§10.6): its frames are
        refused from now on (an unknown sender) and the keys held for it are wiped."""
        self.senders.pop(peer, None)
        self.receiver.peers.pop(peer, None)
        send, receive = self.send_pools.pop(peer, None), self.receive_pools.pop(peer, None)
        if send is not None:
            await send.close()
        if receive is not None:
            await receive.close()

    def sender(self, peer: str) -> LinkSender:
        return self.senders[peer]

    def start(self) -> None:
        """Start filling every send pool (call from the running event loop)."""
        for pool in self.send_pools.values():
            pool.start()

    async def close(self) -> None:
        """Wipe every key held; the key source is the caller's to close."""
        for pool in self.send_pools.values():
            await pool.close()
        for rpool in self.receive_pools.values():
            await rpool.close()

    def stats(self) -> dict[str, dict[str, object]]:
        """Per peer: pool levels, counters of both directions, rejections by reason, and
        each direction's `health` (`LinkHealth`: ok, degraded or config-error, since when,
        the last key-manager error, the batch sizes derived from the link's status)."""
        out: dict[str, dict[str, object]] = {}
        for p, sender in self.senders.items():
            state = self.receiver.peers[p]
            out[p] = {
                "send": {
                    "level": self.send_pools[p].level,
                    "frames": sender.counters.frames,
                    "next_seq": sender.next_seq,
                    **self.send_pools[p].counters.__dict__,
                    "health": self.send_pools[p].health.to_json(),
                },
                "receive": {
                    "level": self.receive_pools[p].level,
                    "frames": state.accepted,
                    "last_seq": state.last_seq,
                    "rejected": dict(state.rejected),
                    **self.receive_pools[p].counters.__dict__,
                    "health": self.receive_pools[p].health.to_json(),
                },
            }
        return out
