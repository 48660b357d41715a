"""The transport's handshake, timeouts and bounds, with two real `Transport`s on 127.0.0.1
whose links are sealed and opened by real `LinkSender`/`LinkReceiver`s over the simulated
key manager, and raw sockets playing the attacker (or a peer that stops reading)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from devnet.network import free_ports
from node import transport as node_transport
from node.transport import HELLO_MAGIC, TCP_KEEPIDLE_S, Transport, TransportLimits
from node.wire import Envelope, Kind, body_size, decode_body, encode_body, envelope_size
from qchain.errors import CodecError
from qchain.qkd.clock import SystemClock
from qchain.qkd.endpoint import QKDEndpoint
from qchain.qkd.errors import UnknownKey
from qchain.qkd.frame import (
    DEFAULT_FRAME_LIMITS,
    FrameHeader,
    FrameLimits,
    LinkReceiver,
    LinkSender,
    encode_frame,
)
from qchain.qkd.pool import SendKeyPool
from qchain.qkd.simsource import LocalKeySource
from qchain.qkd.testing import sim_endpoints, wait_until

CHAIN = "test-chain"
SAES = ("SAE-0", "SAE-1")
pytestmark = pytest.mark.timeout(30)
HELLO = struct.Struct(">4sH")
LEN = struct.Struct(">I")


class Sealer:
    """`LinkSealer` over a `LinkSender`, remembering the size of every body it sealed."""

    def __init__(self, inner: LinkSender) -> None:
        self.inner = inner
        self.bodies: list[int] = []

    async def seal(self, body: bytes) -> bytes:
        self.bodies.append(len(body))
        return await self.inner.seal(body)

    def reconnected(self) -> None:
        self.inner.resync()


class Opener:
    """`LinkOpener` over a `LinkReceiver` for one peer, counting `reconnected` calls."""

    def __init__(self, receiver: LinkReceiver, sae_id: str) -> None:
        self.receiver = receiver
        self.sae_id = sae_id
        self.reconnects = 0
        self.lose_next = 0
        """Frames to refuse as `UnknownKey`, as when this site's KME lost their keys."""

    async def open(self, frame: bytes) -> bytes:
        if self.lose_next > 0:
            self.lose_next -= 1
            raise UnknownKey("key id not known to the key manager")
        opened = await self.receiver.open(frame)
        if opened.sender != self.sae_id:
            raise CodecError("frame sender does not match the connection's peer")
        return opened.body

    def reconnected(self) -> None:
        self.reconnects += 1


@dataclass
class Node:
    transport: Transport
    sealer: Sealer
    opener: Opener
    address: str
    received: list[Envelope] = field(default_factory=list)


@dataclass
class Pair:
    a: Node
    """Validator 0 (SAE-0)."""
    b: Node
    """Validator 1 (SAE-1)."""
    endpoints: dict[str, QKDEndpoint]

    def restarted_sender(self, first_seq: int) -> LinkSender:
        """A fresh sender SAE-0 -> SAE-1 on the same key manager, as after a restart."""
        manager = self.endpoints["SAE-0"].source
        assert isinstance(manager, LocalKeySource)
        pool = SendKeyPool(manager, "SAE-1", clock=SystemClock())
        pool.start()
        return LinkSender(CHAIN, "SAE-0", "SAE-1", pool, first_seq=first_seq)


def payload(n: int, tag: int) -> Envelope:
    return Envelope(Kind.CONSENSUS, bytes([tag % 256]) * n)


@contextlib.asynccontextmanager
async def running_pair(
    limits: TransportLimits,
    *,
    max_body: int = DEFAULT_FRAME_LIMITS.max_body,
    frame_limits: FrameLimits | None = None,
    b_address: str | None = None,
) -> AsyncIterator[Pair]:
    """Transports for validators 0 and 1, linked, started and connected. With
    `b_address`, validator 1 is not started: validator 0 dials that address instead."""
    _, endpoints = sim_endpoints(SAES, chain_id=CHAIN, clock=SystemClock())
    if frame_limits is not None:
        for sae, other in (("SAE-0", "SAE-1"), ("SAE-1", "SAE-0")):
            ep = endpoints[sae]
            ep.senders[other] = LinkSender(
                CHAIN, sae, other, ep.send_pools[other], limits=frame_limits
            )
    ports = free_ports(2)
    addresses = [f"127.0.0.1:{p}" for p in ports]
    if b_address is not None:
        addresses[1] = b_address
    nodes: list[Node] = []
    for me, sae in enumerate(SAES):
        peer, peer_sae = 1 - me, SAES[1 - me]
        sealer = Sealer(endpoints[sae].sender(peer_sae))
        opener = Opener(endpoints[sae].receiver, peer_sae)
        received: list[Envelope] = []
        transport = Transport(
            me,
            f"127.0.0.1:{ports[me]}",
            {peer: addresses[peer]},
            {peer: sealer},
            {peer: opener},
            collector(received),
            max_body=max_body,
            limits=limits,
        )
        nodes.append(Node(transport, sealer, opener, addresses[me], received))
    a, b = nodes
    started = [a] if b_address is not None else [a, b]
    for ep in endpoints.values():
        ep.start()
    for n in started:
        await n.transport.start()
    try:
        if b_address is None:
            await wait_until(
                lambda: (
                    a.transport.connected_peers() == [1] and b.transport.connected_peers() == [0]
                )
            )
        yield Pair(a, b, endpoints)
    finally:
        for n in started:
            await n.transport.stop()
        for ep in endpoints.values():
            await ep.close()


def collector(received: list[Envelope]) -> Callable[[int, Envelope], None]:
    def on_envelope(_sender: int, envelope: Envelope) -> None:
        received.append(envelope)

    return on_envelope


async def flows(src: Node, dst: Node, peer: int, count: int, tag: int) -> None:
    """`count` messages from src reach dst, in order."""
    start = len(dst.received)
    for i in range(count):
        src.transport.send(peer, payload(32, tag + i))
    await wait_until(lambda: len(dst.received) >= start + count, timeout=5)
    assert [e.payload[0] for e in dst.received[start : start + count]] == [
        (tag + i) % 256 for i in range(count)
    ]


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float) -> bool:
    """Whether the other side closes the connection within `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


async def raw_connect(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, _, port = address.rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def flood(address: str, n: int) -> tuple[list[asyncio.StreamWriter], list[bool]]:
    """n raw connections to address that send nothing: their writers, and for each
    whether the other side closed it within a second."""
    conns = [await raw_connect(address) for _ in range(n)]
    closed = await asyncio.gather(*(closed_by_peer(r, 1.0) for r, _ in conns))
    return [w for _, w in conns], closed


async def raw_hello(
    address: str, claimed: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await raw_connect(address)
    writer.write(HELLO.pack(HELLO_MAGIC, claimed))
    await writer.drain()
    return reader, writer


def forged_frame(key_id: bytes, seq: int) -> bytes:
    """A well-formed frame SAE-0 -> SAE-1 tagged with a key the attacker made up."""
    header = FrameHeader(1, CHAIN, "SAE-0", "SAE-1", seq, key_id, (key_id,))
    return encode_frame(header, encode_body([payload(8, 7)]), bytearray(b"\x42" * 32))


# --- (a) hellos that claim a verified peer's index, then nothing ---------------------------


async def test_hello_only_connections_never_disturb_the_verified_link() -> None:
    limits = TransportLimits(hello_timeout_s=0.3, handshake_timeout_s=0.6, accept_burst=100)
    async with running_pair(limits) as p:
        a, b = p.a, p.b
        assert b.opener.reconnects == 1
        attackers = []
        for round_no in range(12):
            for _ in range(3):
                attackers.append(await raw_hello(b.address, 0))
            await flows(a, b, 1, 5, tag=round_no * 5)
        assert b.opener.reconnects == 1, "an unverified hello reached the opener"
        assert b.transport.stats[0].handshakes == 1
        assert b.transport.connected_peers() == [0]
        results = await asyncio.gather(*(closed_by_peer(r, 3.0) for r, _ in attackers))
        assert all(results), "every hello-only connection is closed by the deadline"
        rejected = b.transport.stats[0].rejected
        assert rejected["conn-handshake-timeout"] + rejected["conn-pending-limit"] == len(attackers)
        assert rejected["conn-pending-limit"] > 0, "at most two unverified connections per index"
        await flows(a, b, 1, 5, tag=200)
        assert b.opener.reconnects == 1
        for _, w in attackers:
            w.close()


# --- (b) a hello and a forged frame --------------------------------------------------------


async def test_forged_first_frame_closes_the_connection_and_is_counted() -> None:
    limits = TransportLimits(handshake_timeout_s=10.0, keepalive_s=5.0, idle_timeout_s=30.0)
    async with running_pair(limits) as p:
        a, b = p.a, p.b
        reader, writer = await raw_hello(b.address, 0)
        frame = forged_frame(b"\x13" * 16, seq=10**9)
        writer.write(LEN.pack(len(frame)) + frame)
        await writer.drain()
        assert await closed_by_peer(reader, 2.0), "closed at once, not at the deadline"
        writer.close()
        st = b.transport.stats[0]
        assert st.rejected["conn-handshake-failed"] == 1
        assert st.rejected["unknown-key"] == 1
        assert b.opener.reconnects == 1
        assert st.handshakes == 1
        await flows(a, b, 1, 10, tag=1)
        assert b.transport.connected_peers() == [0]


# --- (c) a flood of connections from one address ---------------------------------------------


async def test_connection_flood_from_one_source_is_refused_past_the_rate() -> None:
    limits = TransportLimits(accept_rate_per_s=1.0, accept_burst=4, hello_timeout_s=4.0)
    async with running_pair(limits) as p:
        a, b = p.a, p.b
        writers, closed = await flood(b.address, 20)
        # Validator 0's own connection took one token of 127.0.0.1's burst of 4.
        assert sum(closed) >= 16, "connections past the burst are closed at once"
        assert b.transport.refused["rate-limited"] == sum(closed)
        for w in writers:
            w.close()
        await flows(a, b, 1, 5, tag=3)
        assert b.opener.reconnects == 1


async def test_unverified_connections_past_the_total_are_refused() -> None:
    limits = TransportLimits(max_pending_total=3, accept_burst=100, hello_timeout_s=4.0)
    async with running_pair(limits) as p:
        a, b = p.a, p.b
        writers, closed = await flood(b.address, 8)
        assert sum(closed) == 5, "three connections without a hello are held, no more"
        assert b.transport.refused["pending-limit"] == 5
        for w in writers:
            w.close()
        await flows(a, b, 1, 5, tag=4)
        assert b.opener.reconnects == 1


# --- (d) a peer that stops reading -----------------------------------------------------------


async def test_a_peer_that_stops_reading_does_not_wedge_the_sender() -> None:
    connections: list[asyncio.StreamWriter] = []
    arrived = asyncio.Event()

    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(HELLO.size)
        connections.append(writer)
        arrived.set()

    server = await asyncio.start_server(never_reads, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    limits = TransportLimits(write_timeout_s=0.5, keepalive_s=0.5, idle_timeout_s=2.0)
    try:
        async with running_pair(limits, b_address=f"127.0.0.1:{port}") as p:
            a = p.a
            await wait_until(lambda: len(connections) == 1)
            st = a.transport.stats[1]

            # One megabyte at a time, each taken by the sender before the next is queued,
            # until the socket buffers are full and a write can no longer drain.
            def taken_or_reconnected(sent: int) -> Callable[[], bool]:
                return lambda: st.messages_sent > sent or len(connections) >= 2

            for i in range(64):
                sent = st.messages_sent
                a.transport.send(1, payload(1024 * 1024, i))
                await wait_until(taken_or_reconnected(sent), timeout=5)
                if len(connections) >= 2:
                    break
            await wait_until(lambda: len(connections) >= 2, timeout=5)
            assert st.rejected["conn-write-timeout"] >= 1
            assert st.connects >= 2
    finally:
        for w in connections:
            w.transport.abort()
        server.close()
        await server.wait_closed()


# --- (e) a quiet link stays up on keepalives; a silent verified peer is dropped ----------------


async def test_idle_link_stays_up_on_keepalives_under_short_idle_timeouts() -> None:
    limits = TransportLimits(keepalive_s=0.1, idle_timeout_s=1.0)
    async with running_pair(limits) as p:
        a, b = p.a, p.b
        await wait_until(
            lambda: a.transport.stats[1].keepalives >= 15 and b.transport.stats[0].keepalives >= 15,
            timeout=10,
        )
        for n, peer in ((a, 1), (b, 0)):
            st = n.transport.stats[peer]
            assert st.handshakes == 1 and st.connects == 1, "the link was never re-made"
            assert st.rejected["conn-idle-timeout"] == 0
            assert not st.rejected
        assert a.received == [] and b.received == [], "keepalives deliver nothing"
        await flows(a, b, 1, 3, tag=9)
        await flows(b, a, 0, 3, tag=19)


async def test_a_verified_connection_that_goes_silent_is_closed_after_the_idle_timeout() -> None:
    limits = TransportLimits(keepalive_s=0.2, idle_timeout_s=0.8)
    async with running_pair(limits) as p:
        a, b = p.a, p.b
        await a.transport.stop()
        # Validator 0 comes back (its sequence numbers come from its lease, so above the
        # old ones) over a connection whose genuine first frame takes the link over ...
        sender = p.restarted_sender(first_seq=a.sealer.inner.next_seq + 100)
        frame = await sender.seal(encode_body([payload(4, 77)]))
        reader, writer = await raw_hello(b.address, 0)
        writer.write(LEN.pack(len(frame)) + frame)
        await writer.drain()
        await wait_until(lambda: b.received == [payload(4, 77)])
        assert b.opener.reconnects == 2
        # ... then falls silent, sending no keepalive: the slot is freed.
        assert await closed_by_peer(reader, 3.0)
        writer.close()
        assert b.transport.stats[0].rejected["conn-idle-timeout"] == 1
        assert b.transport.stats[0].handshakes == 2
        await sender.pool.close()


# --- (f) frames packed by bytes ------------------------------------------------------------------


async def test_a_backlog_larger_than_one_frame_goes_out_in_several_frames() -> None:
    max_body = 10_000
    async with running_pair(
        TransportLimits(), max_body=max_body, frame_limits=FrameLimits(max_body=max_body)
    ) as p:
        a, b = p.a, p.b
        a.transport.send(1, payload(max_body, 0))
        for i in range(50):
            a.transport.send(1, payload(1000, i))
        await wait_until(lambda: len(b.received) >= 50, timeout=5)
        assert [e.payload[0] for e in b.received] == list(range(50))
        assert a.transport.stats[1].rejected == {"oversized-envelope": 1}
        assert max(a.sealer.bodies) <= max_body
        assert sum(1 for n in a.sealer.bodies if n > 1000) >= 5
        assert not b.transport.stats[0].rejected


@pytest.mark.parametrize("count", [0, 1, 15, 16, 17])
@pytest.mark.parametrize("size", [0, 255, 256, 65535, 65536])
def test_body_size_is_the_length_of_the_encoding(count: int, size: int) -> None:
    envelopes = [payload(size, i) for i in range(count)]
    body = encode_body(envelopes)
    assert body_size(count, sum(envelope_size(e) for e in envelopes)) == len(body)
    assert decode_body(body) == envelopes


async def test_every_link_socket_has_tcp_keepalive_on() -> None:
    """Dead peers are found by the kernel's probes, which cost no QKD keys."""
    async with running_pair(TransportLimits()) as p:
        a, b = p.a, p.b
        await flows(a, b, 1, 1, tag=5)
        socks = [
            w.get_extra_info("socket")
            for t in (a.transport, b.transport)
            for w in [*t._connections, *(o.writer for o in t._out.values())]
            if w is not None
        ]
        assert len(socks) >= 2
        for sock in socks:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == TCP_KEEPIDLE_S


async def test_frames_whose_keys_are_lost_reset_the_link_and_it_recovers() -> None:
    """The sender spends keys the receiver's KME no longer has: after a run of unknown-key
    rejections the receiver closes the link, the sender reconnects and announces fresh
    keys, and messages flow again."""
    limits = TransportLimits(unknown_key_reset=4)
    async with running_pair(limits) as p:
        a, b = p.a, p.b
        await flows(a, b, 1, 2, tag=1)
        st = b.transport.stats[0]
        assert st.handshakes == 1
        b.opener.lose_next = 3
        for i in range(3):
            a.transport.send(1, payload(16, 40 + i))
            await wait_until(lambda n=i: st.rejected["unknown-key"] >= n + 1, timeout=5)
        # Three in a row is below the limit: the link stays and the next frame is taken.
        assert st.rejected["conn-key-reset"] == 0
        await flows(a, b, 1, 1, tag=50)
        b.opener.lose_next = 4
        for i in range(4):
            a.transport.send(1, payload(16, 60 + i))
            await wait_until(lambda n=i: st.rejected["unknown-key"] >= 3 + n + 1, timeout=5)
        await wait_until(lambda: st.rejected["conn-key-reset"] == 1, timeout=5)
        await wait_until(lambda: st.handshakes == 2, timeout=10)
        await flows(a, b, 1, 3, tag=70)


# --- lazy envelopes: forwarded batches ride with the next frame -----------------------------


async def test_a_lazy_envelope_rides_in_the_next_frame_that_goes_anyway() -> None:
    async with running_pair(TransportLimits()) as pair:
        a, b = pair.a, pair.b
        await flows(a, b, 1, 1, tag=1)
        sealed = len(a.sealer.bodies)
        a.transport.send(1, payload(32, 50), lazy_s=30.0)
        a.transport.send(1, payload(32, 51), lazy_s=30.0)
        await asyncio.sleep(0.2)
        assert len(b.received) == 1, "a lazy envelope alone waits for its time"
        assert len(a.sealer.bodies) == sealed, "and costs no frame"
        a.transport.send(1, payload(32, 52))
        await wait_until(lambda: len(b.received) == 4, timeout=5)
        assert len(a.sealer.bodies) == sealed + 1, "all three in one frame (one key)"
        assert sorted(e.payload[0] for e in b.received[1:]) == [50, 51, 52]


async def test_a_lazy_envelope_goes_alone_when_its_wait_is_over() -> None:
    async with running_pair(TransportLimits()) as pair:
        a, b = pair.a, pair.b
        await flows(a, b, 1, 1, tag=1)
        a.transport.send(1, payload(32, 60), lazy_s=0.05)
        await wait_until(lambda: len(b.received) == 2, timeout=5)
        assert b.received[1].payload[0] == 60


async def test_lazy_envelopes_count_against_the_queue_bound() -> None:
    async with running_pair(TransportLimits()) as pair:
        a = pair.a
        out = a.transport._out[1]
        for i in range(out.limit + 5):
            a.transport.send(1, payload(8, i), lazy_s=30.0)
        assert len(out.lazy) == out.limit
        assert a.transport.stats[1].queue_dropped == 5


async def test_a_restarted_peer_is_dialled_back_without_waiting_out_the_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Validator 1 stops while validator 0's backoff is long; when 1 comes back and its
    connection to 0 verifies, 0 dials 1 at once instead of waiting out the backoff (which
    would hold 1's catch-up: its peers' replies come on their links to it)."""
    monkeypatch.setattr(node_transport, "BACKOFF_MIN_S", 120.0)
    monkeypatch.setattr(node_transport, "BACKOFF_MAX_S", 120.0)
    async with running_pair(TransportLimits()) as pair:
        a, b = pair.a, pair.b
        await b.transport.stop()
        await wait_until(lambda: a.transport.connected_peers() == [], timeout=10)
        b2 = Transport(
            1,
            b.address,
            {0: a.address},
            {0: b.sealer},
            {0: b.opener},
            collector(b.received),
            limits=TransportLimits(),
        )
        await b2.start()
        try:
            await wait_until(lambda: b2.connected_peers() == [0], timeout=15)
            assert a.transport.connected_peers() == [1]
            await flows(a, Node(b2, b.sealer, b.opener, b.address, b.received), 1, 3, 7)
        finally:
            await b2.stop()
