"""The links of a validator to its peers: the QKD endpoint and the transport over it.

Both exist only once the node has started (`Validator.start`); until then, and for a node
run without peers, every send is dropped. Consensus messages pass the node's
`ByzantineSwitch` on the way out, which leaves them alone unless a test mode is set.
"""

from __future__ import annotations

from collections.abc import Iterable

from consensus.messages import Message, encode_message
from node.byzantine import ByzantineSwitch
from node.transport import Transport
from node.wire import Envelope, Kind
from qchain.qkd.endpoint import QKDEndpoint


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

    @property
    def n(self) -> int:
        return len(self.sae)

    def others(self) -> list[int]:
        return [j for j in range(self.n) if j != self.me]

    def connected_peers(self) -> list[int]:
        return self.transport.connected_peers() if self.transport is not None else []

    def send(self, to: int, env: Envelope) -> None:
        if self.transport is not None:
            self.transport.send(to, env)

    def send_all(self, env: Envelope, to: Iterable[int]) -> None:
        """env to each of `to` but this node."""
        if self.transport is None:
            return
        for j in to:
            if j != self.me:
                self.transport.send(j, env)

    def send_consensus(self, to: int, msg: Message) -> None:
        if self.transport is None:
            return
        out = self.byzantine.outgoing(to, msg)
        if out is not None:
            self.transport.send(to, Envelope(Kind.CONSENSUS, encode_message(out)))
