"""The links of a validator to its peers: the QKD endpoint and the transport over it.

`build_key_source` is the client of the node's key manager; `Opener` is the receiving
side of one peer's link as the transport sees it (the sending side is
`node.byzantine.Sealer`).

Both exist only once the node has started (`Validator.start`); until then, and for a node
run without peers, every send is dropped. Consensus messages pass the node's
`ByzantineSwitch` on the way out, which leaves them alone unless a test mode is set; a
PROPOSE then leaves by reference, naming its transactions by batch (`compact`,
`node.batches`).

An envelope that need not leave at once (a commit signature) can *ride*: it waits for
the next envelope to its peer (a consensus message, forwarded transactions) and goes in
the same frame (the transport packs what is queued together into one frame, one key), or
leaves on its own after a wait. In the good case the next height's first consensus frame
carries it, as it carries the DONE of the height before (CONSENSUS.md §7), so a commit
costs no frame of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from consensus.messages import Message, Propose, encode_message
from node.byzantine import ByzantineSwitch
from node.keypacing import LinkKeys
from node.transport import Transport
from node.wire import Envelope, Kind
from qchain.config import NodeConfig
from qchain.errors import CodecError
from qchain.qkd.endpoint import QKDEndpoint
from qchain.qkd.source import MAC_KEY_BITS, KeySource

MAX_RIDERS = 16
"""Envelopes waiting to ride per peer; one more sends them all at once."""


class Links:
    """Sending to peers, and who they are."""

    def __init__(self, me: int, sae: dict[int, str], byzantine: ByzantineSwitch) -> None:
        self.me = me
        self.sae = sae
        """SAE id of every validator, by index."""
        self.index_of_sae = {s: i for i, s in sae.items()}
        self.byzantine = byzantine
        self.transport: Transport | None = None
        self.endpoint: QKDEndpoint | None = None
        self._riders: dict[int, list[tuple[float, Envelope]]] = {}
        """peer -> (loop time it may leave alone, envelope), oldest first."""
        self._rider_timer: asyncio.TimerHandle | None = None
        self.compact: Callable[[Propose], Envelope | None] | None = None
        """A proposal by reference (`node.batches.Dissemination.compact`; None: whole)."""

    @property
    def n(self) -> int:
        return len(self.sae)

    def knows(self, j: int) -> bool:
        """Whether j is a validator this node holds a link to (or this node)."""
        return j in self.sae

    def others(self) -> list[int]:
        """Every validator this node holds a link to, by id (the set may change, §10.6)."""
        return [j for j in sorted(self.sae) if j != self.me]

    def set_peer(self, j: int, sae_id: str) -> None:
        """A link to validator j (SAE id `sae_id`) exists from now on (`node.setlinks`)."""
        self.sae[j] = sae_id
        self.index_of_sae[sae_id] = j

    def drop_peer(self, j: int) -> None:
        """The link to validator j is closed: nothing more is sent to it."""
        sae = self.sae.pop(j, None)
        if sae is not None:
            self.index_of_sae.pop(sae, None)
        self._riders.pop(j, None)

    def connected_peers(self) -> list[int]:
        return self.transport.connected_peers() if self.transport is not None else []

    def key_rate(self, peer: int) -> float | None:
        """Keys a second the key manager last reported for the link to peer (256-bit)."""
        ep = self.endpoint
        pool = None if ep is None else ep.send_pools.get(self.sae.get(peer, ""))
        bps = None if pool is None else pool.health.bits_per_second
        return None if bps is None else bps / MAC_KEY_BITS

    def keys(self) -> dict[int, LinkKeys]:
        """Per peer: keys spent on the link (both directions), the pair's key rate as the
        key manager last reported it, and the waits of the send pool (for key pacing)."""
        ep = self.endpoint
        if ep is None:
            return {}
        out = {}
        for j, sae in self.sae.items():
            send, receive = ep.send_pools.get(sae), ep.receive_pools.get(sae)
            if send is None or receive is None:
                continue
            out[j] = LinkKeys(
                keys_spent=send.counters.keys_consumed + receive.counters.keys_consumed,
                keys_per_s=self.key_rate(j),
                waits=send.counters.waits,
            )
        return out

    def send(self, to: int, env: Envelope) -> None:
        if self.transport is not None:
            self._release(to)
            self.transport.send(to, env)

    def send_all(self, env: Envelope, to: Iterable[int], lazy_s: float = 0.0) -> None:
        """env to each of `to` but this node (lazily: see `Transport.send`)."""
        if self.transport is None:
            return
        for j in to:
            if j == self.me:
                continue
            if lazy_s > 0:
                self._release(j, lazy_s)
                self.transport.send(j, env, lazy_s)
            else:
                self._release(j)
                self.transport.send(j, env)

    def send_riding(self, env: Envelope, to: Iterable[int], wait_s: float) -> None:
        """env to each of `to` but this node, in the frame of the next consensus message
        to that peer, or on its own once `wait_s` has passed."""
        if self.transport is None:
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + wait_s
        for j in to:
            if j == self.me:
                continue
            waiting = self._riders.setdefault(j, [])
            waiting.append((due, env))
            if len(waiting) > MAX_RIDERS:
                self._release(j)
        self._arm(loop)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """The timer for the envelope that has waited longest, if it is not armed yet."""
        if self._rider_timer is not None or not self._riders:
            return
        first = min(due for waiting in self._riders.values() for due, _ in waiting)
        self._rider_timer = loop.call_at(first, self._release_due)

    def _release_due(self) -> None:
        """Send the envelopes whose wait is over, with any that wait behind them on the
        same link (the frame is paid for anyway)."""
        self._rider_timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for j in [j for j, waiting in self._riders.items() if waiting[0][0] <= now]:
            self._release(j)
        self._arm(loop)

    def cancel_timers(self) -> None:
        """Stop waiting: what still waits to ride is dropped with the node's queues."""
        if self._rider_timer is not None:
            self._rider_timer.cancel()
            self._rider_timer = None
        self._riders.clear()

    def _release(self, j: int, lazy_s: float = 0.0) -> None:
        """Send what waits to ride to j, with the envelope that releases it (lazily too
        when that one goes lazily)."""
        waiting = self._riders.pop(j, None)
        if waiting and self.transport is not None:
            for _, env in waiting:
                if lazy_s > 0:
                    self.transport.send(j, env, lazy_s)
                else:
                    self.transport.send(j, env)

    def send_consensus(self, to: int, msg: Message) -> None:
        if self.transport is None:
            return
        self._release(to)
        out = self.byzantine.outgoing(to, msg)
        if out is None:
            return
        env = None
        if isinstance(out, Propose) and self.compact is not None:
            env = self.compact(out)
        if env is None:
            env = Envelope(Kind.CONSENSUS, encode_message(out))
        self.transport.send(to, env)


class Opener:
    """The receiving side of one peer's link, checking the frame names that peer."""

    def __init__(self, receiver: Any, sae_id: str) -> None:
        self.receiver = receiver
        self.sae_id = sae_id

    async def open(self, frame: bytes) -> bytes:
        opened = await self.receiver.open(frame)
        if opened.sender != self.sae_id:
            raise CodecError("frame sender does not match the connection's peer")
        body: bytes = opened.body
        return body

    def reconnected(self) -> None:
        return None


def build_key_source(cfg: NodeConfig) -> KeySource:
    """The ETSI GS QKD 014 client for this node's key manager (mutual TLS when the config
    names the files, the dev header otherwise)."""
    from qchain.qkd.client import ETSIClient, TLSConfig

    q = cfg.qkd
    tls = None
    if q.client_cert is not None and q.client_key is not None and q.ca_cert is not None:
        tls = TLSConfig(q.ca_cert, q.client_cert, q.client_key)
    return ETSIClient(q.kme_url, q.sae_id, tls=tls, insecure_sae_header=q.insecure_dev_header)
