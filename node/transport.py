"""Authenticated full-mesh transport between validators.

Each directed link i -> j is one TCP connection that i dials to j's P2P listener. The
dialer first sends a hello (`QCH1`, its validator index); after that the stream is a
sequence of length-prefixed frames (4-byte big-endian length, then the frame), each
carrying a one-time MAC under a key only i and j hold (`qchain.qkd.frame`). The receiver
never writes on the connection.

Handshake. The hello is not trusted: it only names the link whose opener checks the
frames. An accepted connection is *unverified* until its first frame has verified
through that link's `LinkOpener` (which spends a one-time key from the pair's key
manager). The dialer makes that first frame right away: what is queued, or an empty
batch. Only a verified connection becomes the inbound connection of its index, and only
then does it replace (close) an older verified one, which is how a restarted peer takes
its link back; the opener's `reconnected()` is called at that moment and at no other.
An unverified connection never closes nor displaces anything, and it gets one try: if
its first frame fails to verify (any `QChainError`, or a length above `max_frame_bytes`)
it is closed. (A frame dropped by an inbound fault rule is as if it never came.)

The sender also notices the peer closing the connection (end of stream on a socket the
peer never writes to). Before each new connection it waits a jittered backoff that
doubles from `BACKOFF_MIN_S` up to `BACKOFF_MAX_S` while connections end within
`keepalive_s` of being made, and starts again from `BACKOFF_MIN_S` after one that lasted.
A backoff ends early when a connection from that peer verifies (its first frame opened
under the link's key, so only the peer can cause it): a peer that restarted is dialled
back at once, and its replies do not wait out a backoff grown while it was down.

Sending: `send(peer, envelope)` queues; a per-peer task packs what is queued into one
frame body (`node.wire`) by encoded size, at most `max_body` bytes (the sealer's limit,
`FrameLimits.max_body`) and `MAX_FRAME_ENVELOPES` envelopes, so a large backlog goes out
in several frames. An envelope that alone exceeds `max_body` is dropped by `send` and
counted (`oversized-envelope`). The frame is sealed with the link's `LinkSealer` (which
may wait for keys: back-pressure, never an unauthenticated frame) and written. Queues
are bounded by message count; a full queue drops the new message and counts it
(consensus retransmits). After each new outbound connection the sealer is told, so it can
re-announce what the peer may have missed. `send(peer, envelope, lazy_s=S)` queues an
envelope that may wait up to S seconds for a frame that goes anyway (forwarded
transactions ride with the next consensus frame instead of costing a key of their own,
`node.keypacing`).

Receiving: frames are read in order per connection and handed to the link's `LinkOpener`;
on a verified connection a rejected frame is dropped and counted by reason, never raised.
Bodies that do not decode are dropped and counted too.

The timeouts, bounds on connection attempts, counters and fault rules are described in
`node.transport_limits`, which defines them; its public names are importable from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections import Counter, deque
from collections.abc import Callable, Mapping

from node.streamnet import TCP, Listening, StreamNet
from node.transport_limits import (
    BACKOFF_MAX_S,
    BACKOFF_MIN_S,
    CONNECT_TIMEOUT_S,
    DEFAULT_TRANSPORT_LIMITS,
    HELLO,
    HELLO_MAGIC,
    LENGTH,
    MAX_FRAME_ENVELOPES,
    MAX_TRACKED_SOURCES,
    TCP_KEEPIDLE_S,
    FaultRules,
    LinkOpener,
    LinkSealer,
    PeerStats,
    TransportLimits,
    tcp_keepalive,
)
from node.wire import Envelope, body_size, decode_body, encode_body, envelope_size
from qchain import clock
from qchain.config import split_address
from qchain.errors import CodecError, QChainError
from qchain.qkd.frame import DEFAULT_FRAME_LIMITS
from qchain.ratelimit import TokenBuckets

__all__ = [
    "DEFAULT_TRANSPORT_LIMITS",
    "HELLO_MAGIC",
    "MAX_FRAME_ENVELOPES",
    "TCP",
    "TCP_KEEPIDLE_S",
    "FaultRules",
    "LinkOpener",
    "LinkSealer",
    "PeerStats",
    "StreamNet",
    "Transport",
    "TransportLimits",
]

log = logging.getLogger(__name__)


class _PeerOut:
    def __init__(self, index: int, address: str, sealer: LinkSealer, limit: int) -> None:
        self.index = index
        self.address = address
        self.sealer = sealer
        self.queue: deque[Envelope] = deque()
        self.lazy: deque[Envelope] = deque()
        """Envelopes that wait for a frame that goes anyway, until `lazy_due` (loop time)."""
        self.lazy_due = math.inf
        self.limit = limit
        self.wakeup = asyncio.Event()
        self.lost = asyncio.Event()
        """Set when the peer closed the current connection."""
        self.redial = asyncio.Event()
        """Set when the peer proved itself up (a verified connection from it): a backoff
        before dialling it again ends at once."""
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None
        self.connected = False


class Transport:
    def __init__(
        self,
        me: int,
        listen: str,
        peers: Mapping[int, str],
        sealers: Mapping[int, LinkSealer],
        openers: Mapping[int, LinkOpener],
        on_envelope: Callable[[int, Envelope], None],
        *,
        max_frame_bytes: int = 16 * 1024 * 1024,
        max_body: int = DEFAULT_FRAME_LIMITS.max_body,
        queue_limit: int = 1024,
        limits: TransportLimits = DEFAULT_TRANSPORT_LIMITS,
        rng: random.Random | None = None,
        net: StreamNet = TCP,
    ) -> None:
        self.me = me
        self.net = net
        self.listen = listen
        self._on_envelope = on_envelope
        self._openers = dict(openers)
        self.max_frame_bytes = max_frame_bytes
        self.max_body = max_body
        self.limits = limits
        self._queue_limit = queue_limit
        self._out = {
            j: _PeerOut(j, addr, sealers[j], queue_limit) for j, addr in sorted(peers.items())
        }
        self.stats: dict[int, PeerStats] = {j: PeerStats() for j in peers}
        self.refused: Counter[str] = Counter()
        """Connections refused before they named a known peer, by reason."""
        self.out_rules = FaultRules()
        self.in_rules = FaultRules()
        self._rng = rng or clock.new_rng("transport")
        self._server: Listening | None = None
        self._inbound: dict[int, asyncio.StreamWriter] = {}
        self._connections: set[asyncio.StreamWriter] = set()
        self._pending_total = 0
        self._pending: Counter[int] = Counter()
        self._limiter = TokenBuckets[str](
            limits.accept_rate_per_s, limits.accept_burst, max_keys=MAX_TRACKED_SOURCES
        )
        self._reader_tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        host, port = split_address(self.listen)
        self._server = await self.net.start_server(self._accept, host, port)
        for peer in self._out.values():
            peer.task = asyncio.create_task(self._sender(peer), name=f"send-{peer.index}")

    async def stop(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for peer in self._out.values():
            if peer.task is not None:
                peer.task.cancel()
        for w in list(self._connections):
            w.close()
        tasks = [p.task for p in self._out.values() if p.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        # Closed connections end their readers; a reader stuck elsewhere is cancelled.
        readers = list(self._reader_tasks)
        if readers:
            _, stuck = await asyncio.wait(readers, timeout=1.0)
            for t in stuck:
                t.cancel()
        for peer in self._out.values():
            if peer.writer is not None:
                peer.writer.transport.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    def add_peer(self, j: int, address: str, sealer: LinkSealer, opener: LinkOpener) -> None:
        """A peer that joins (CONSENSUS.md §10.6): dialled and accepted from now on."""
        if j == self.me or j in self._out:
            return
        peer = self._out[j] = _PeerOut(j, address, sealer, self._queue_limit)
        self._openers[j], self.stats[j] = opener, self.stats.get(j, PeerStats())
        if self._server is not None and not self._stopping:
            peer.task = asyncio.create_task(self._sender(peer), name=f"send-{j}")

    async def remove_peer(self, j: int) -> None:
        """A peer that left (§10.6): its connections closed, refused at its hello."""
        peer, inbound = self._out.pop(j, None), self._inbound.pop(j, None)
        self._openers.pop(j, None)
        if inbound is not None:
            inbound.close()
        if peer is not None and peer.task is not None:
            peer.task.cancel()
            await asyncio.gather(peer.task, return_exceptions=True)
        if peer is not None and peer.writer is not None:
            peer.writer.transport.abort()

    def connected_peers(self) -> list[int]:
        """Peers with a live outgoing and a verified incoming connection."""
        return [j for j, p in self._out.items() if p.connected and j in self._inbound]

    # --- sending -----------------------------------------------------------------------

    def send(self, peer: int, envelope: Envelope, lazy_s: float = 0.0) -> None:
        """Queue envelope for peer; with `lazy_s` > 0 it may wait that long for a frame
        that something else makes go."""
        out = self._out.get(peer)
        if out is None:
            return
        if body_size(1, envelope_size(envelope)) > self.max_body:
            self.stats[peer].rejected["oversized-envelope"] += 1
            return
        if len(out.queue) + len(out.lazy) >= out.limit:
            self.stats[peer].queue_dropped += 1
            return
        if lazy_s > 0:
            out.lazy.append(envelope)
            out.lazy_due = min(out.lazy_due, asyncio.get_running_loop().time() + lazy_s)
        else:
            out.queue.append(envelope)
        out.wakeup.set()

    async def _connect(self, peer: _PeerOut) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        backoff = BACKOFF_MIN_S
        host, port = split_address(peer.address)
        while True:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    reader, writer = await self.net.open_connection(host, port)
                    tcp_keepalive(writer)
            except (OSError, TimeoutError):
                pass
            else:
                try:
                    writer.write(HELLO.pack(HELLO_MAGIC, self.me))
                    await self._drain(writer)
                except (OSError, TimeoutError):
                    writer.transport.abort()
                else:
                    self.stats[peer.index].connects += 1
                    return reader, writer
            await self._backoff(peer, backoff * (0.5 + self._rng.random()))
            backoff = min(BACKOFF_MAX_S, backoff * 2)

    @staticmethod
    async def _backoff(peer: _PeerOut, delay: float) -> None:
        """Wait delay seconds before dialling peer again, or until the peer proves itself
        up (`redial`): a restarted peer is dialled back as soon as its own connection to
        us verifies, not when a backoff grown while it was down runs out. Each such
        connection ends one backoff (one that verified while a dial was failing ends
        the next)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(peer.redial.wait(), delay)
        peer.redial.clear()

    async def _sender(self, peer: _PeerOut) -> None:
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_MIN_S
        while not self._stopping:
            reader, writer = await self._connect(peer)
            began = loop.time()
            peer.writer = writer
            peer.lost.clear()
            watcher = asyncio.create_task(self._watch(reader, peer), name=f"watch-{peer.index}")
            peer.sealer.reconnected()
            try:
                await self._send_frames(peer, writer)
            except TimeoutError:
                log.info(
                    "link to %d: peer did not read for %.1f s",
                    peer.index,
                    self.limits.write_timeout_s,
                )
                self.stats[peer.index].rejected["conn-write-timeout"] += 1
            except (OSError, ConnectionError) as e:
                log.info("link to %d lost: %s", peer.index, e)
            except QChainError as e:
                log.warning("link to %d: cannot seal: %s", peer.index, e.message)
            finally:
                watcher.cancel()
                peer.connected = False
                peer.writer = None
                writer.transport.abort()
            if loop.time() - began >= self.limits.keepalive_s:
                backoff = BACKOFF_MIN_S
            await self._backoff(peer, backoff * (0.5 + self._rng.random()))
            backoff = min(BACKOFF_MAX_S, backoff * 2)

    @staticmethod
    async def _watch(reader: asyncio.StreamReader, peer: _PeerOut) -> None:
        """The peer never writes: any end of the stream means it closed the connection."""
        with contextlib.suppress(OSError, ConnectionError):
            await reader.read(1)
        peer.lost.set()
        peer.wakeup.set()

    async def _send_frames(self, peer: _PeerOut, writer: asyncio.StreamWriter) -> None:
        """Send until the connection fails. The first frame goes out at once (the peer
        verifies the connection with it), later ones when something is queued or, as a
        keepalive, when nothing was sent for `keepalive_s`."""
        loop = asyncio.get_running_loop()
        st = self.stats[peer.index]
        due = loop.time()
        while not self._stopping:
            await self._wait_for_work(peer, due)
            if peer.lost.is_set():
                raise ConnectionError("closed by the peer")
            batch = self._pack(peer)
            due = loop.time() + self.limits.keepalive_s
            rules = self.out_rules
            if peer.index in rules.blocked:
                st.fault_dropped += 1
                continue
            frame = await peer.sealer.seal(encode_body(batch))
            st.frames_sent += 1
            st.messages_sent += len(batch)
            st.bytes_sent += len(frame)
            if not batch:
                st.keepalives += 1
            await self._emit(writer, frame, rules, st)
            peer.connected = True
            due = loop.time() + self.limits.keepalive_s

    async def _wait_for_work(self, peer: _PeerOut, due: float) -> None:
        """Until something is queued (a lazy envelope: until its time), the connection is
        lost, or `due` (loop time)."""
        loop = asyncio.get_running_loop()
        while not peer.queue and not peer.lost.is_set():
            if peer.lazy:
                due = min(due, peer.lazy_due)
            left = due - loop.time()
            if left <= 0:
                return
            peer.wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await peer.wakeup.wait()

    def _pack(self, peer: _PeerOut) -> list[Envelope]:
        """Take from the queue the envelopes whose encoded body fits in `max_body`."""
        batch: list[Envelope] = []
        total = 0
        for queue in (peer.queue, peer.lazy):
            while queue and len(batch) < MAX_FRAME_ENVELOPES:
                size = envelope_size(queue[0])
                if body_size(len(batch) + 1, total + size) > self.max_body:
                    break
                batch.append(queue.popleft())
                total += size
        if not peer.lazy:
            peer.lazy_due = math.inf
        return batch

    async def _emit(
        self, writer: asyncio.StreamWriter, frame: bytes, rules: FaultRules, st: PeerStats
    ) -> None:
        if not rules.active():
            writer.write(LENGTH.pack(len(frame)) + frame)
            await self._drain(writer)
            return
        rng = self._rng
        if rng.random() * 100 < rules.drop_pct:
            st.fault_dropped += 1
            return
        if rng.random() * 100 < rules.corrupt_pct:
            bit = rng.randrange(len(frame) * 8)
            mutable = bytearray(frame)
            mutable[bit // 8] ^= 1 << (bit % 8)
            frame = bytes(mutable)
        copies = 2 if rng.random() * 100 < rules.duplicate_pct else 1
        data = (LENGTH.pack(len(frame)) + frame) * copies
        delay = rules.delay_ms + (rng.uniform(0, rules.jitter_ms) if rules.jitter_ms else 0)
        if delay > 0:
            loop = asyncio.get_running_loop()
            loop.call_later(delay / 1000, self._late_write, writer, data)
            return
        writer.write(data)
        await self._drain(writer)

    async def _drain(self, writer: asyncio.StreamWriter) -> None:
        """Wait until the peer has taken what was written; `TimeoutError` after
        `write_timeout_s`."""
        async with asyncio.timeout(self.limits.write_timeout_s):
            await writer.drain()

    @staticmethod
    def _late_write(writer: asyncio.StreamWriter, data: bytes) -> None:
        if not writer.is_closing():
            writer.write(data)

    # --- receiving ---------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._reader_tasks.add(task)
        self._connections.add(writer)
        tcp_keepalive(writer)
        try:
            await self._serve(reader, writer)
        except (OSError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            return
        finally:
            if task is not None:
                self._reader_tasks.discard(task)
            self._connections.discard(writer)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        accepted_at = loop.time()
        peername = writer.get_extra_info("peername")
        source = str(peername[0]) if isinstance(peername, tuple) and peername else "?"
        if not self._limiter.take(source):
            self.refused["rate-limited"] += 1
            return
        if self._pending_total >= self.limits.max_pending_total:
            self.refused["pending-limit"] += 1
            return
        self._pending_total += 1
        try:
            verified = await self._handshake(reader, accepted_at)
        finally:
            self._pending_total -= 1
        if verified is None or self._stopping:
            return
        sender, envelopes = verified
        if sender not in self._openers:  # removed while its first frame was verified
            return
        old = self._inbound.get(sender)
        if old is not None:
            old.close()
        self._inbound[sender] = writer
        self.stats[sender].handshakes += 1
        opener = self._openers[sender]
        opener.reconnected()
        out = self._out.get(sender)
        if out is not None and not out.connected:
            out.redial.set()
        try:
            for env in envelopes:
                self._on_envelope(sender, env)
            await self._read_frames(sender, opener, reader)
        finally:
            if self._inbound.get(sender) is writer:
                del self._inbound[sender]

    async def _handshake(
        self, reader: asyncio.StreamReader, accepted_at: float
    ) -> tuple[int, list[Envelope]] | None:
        """The sender and envelopes of the connection's first frame, once it verified;
        None (counted) if it did not in time."""
        limits = self.limits
        try:
            async with asyncio.timeout_at(accepted_at + limits.hello_timeout_s):
                hello = await reader.readexactly(HELLO.size)
        except TimeoutError:
            self.refused["hello-timeout"] += 1
            return None
        magic, sender = HELLO.unpack(hello)
        if magic != HELLO_MAGIC or sender not in self._openers:
            self.refused["bad-hello"] += 1
            return None
        st = self.stats[sender]
        if self._pending[sender] >= limits.max_pending_per_peer:
            st.rejected["conn-pending-limit"] += 1
            return None
        self._pending[sender] += 1
        opener = self._openers[sender]
        try:
            async with asyncio.timeout_at(accepted_at + limits.handshake_timeout_s):
                while True:
                    frame = await self._read_frame(reader, st)
                    if frame is None:
                        break
                    if self._fault_dropped(sender):
                        continue
                    body = await self._open(opener, frame, st)
                    if body is None:
                        break
                    return sender, self._decode(frame, body, st)
            st.rejected["conn-handshake-failed"] += 1
            return None
        except TimeoutError:
            st.rejected["conn-handshake-timeout"] += 1
            return None
        finally:
            self._pending[sender] -= 1
            if not self._pending[sender]:
                del self._pending[sender]

    async def _read_frames(
        self, sender: int, opener: LinkOpener, reader: asyncio.StreamReader
    ) -> None:
        st = self.stats[sender]
        unknown_run = 0
        while True:
            try:
                async with asyncio.timeout(self.limits.idle_timeout_s):
                    frame = await self._read_frame(reader, st)
            except TimeoutError:
                log.info("link from %d idle for %.1f s: closed", sender, self.limits.idle_timeout_s)
                st.rejected["conn-idle-timeout"] += 1
                return
            if frame is None:
                return
            if self._fault_dropped(sender):
                continue
            unknown = st.rejected["unknown-key"]
            body = await self._open(opener, frame, st)
            if body is None:
                unknown_run = unknown_run + 1 if st.rejected["unknown-key"] > unknown else 0
                if unknown_run >= self.limits.unknown_key_reset:
                    # The sender spends keys this side can never get (its KME lost them):
                    # closing makes it reconnect, drop what it announced and announce anew.
                    log.warning(
                        "link from %d: %d frames in a row with unknown keys: reset",
                        sender,
                        unknown_run,
                    )
                    st.rejected["conn-key-reset"] += 1
                    return
                continue
            unknown_run = 0
            for env in self._decode(frame, body, st):
                self._on_envelope(sender, env)

    async def _read_frame(self, reader: asyncio.StreamReader, st: PeerStats) -> bytes | None:
        """The next frame, or None (counted) if its length is above `max_frame_bytes`."""
        (length,) = LENGTH.unpack(await reader.readexactly(LENGTH.size))
        if length > self.max_frame_bytes:
            st.rejected["oversized"] += 1
            return None
        return await reader.readexactly(length)

    def _fault_dropped(self, sender: int) -> bool:
        rules = self.in_rules
        if rules.active() and (
            sender in rules.blocked or self._rng.random() * 100 < rules.drop_pct
        ):
            self.stats[sender].fault_dropped += 1
            return True
        return False

    @staticmethod
    async def _open(opener: LinkOpener, frame: bytes, st: PeerStats) -> bytes | None:
        """The verified body, or None (counted by reason) if the opener rejects it."""
        try:
            return await opener.open(frame)
        except QChainError as e:
            st.rejected[getattr(e, "reason", None) or e.code] += 1
            return None

    @staticmethod
    def _decode(frame: bytes, body: bytes, st: PeerStats) -> list[Envelope]:
        st.frames_received += 1
        st.bytes_received += len(frame)
        try:
            return decode_body(body)
        except CodecError:
            st.rejected["bad-body"] += 1
            return []
