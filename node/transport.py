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

Timeouts (`TransportLimits`, defaults in brackets):

- the hello must arrive within `hello_timeout_s` of the accept [2 s];
- the first frame must have verified within `handshake_timeout_s` of the accept [5 s];
- every socket has TCP keepalive on (`TCP_KEEPIDLE_S` 10 s, then `TCP_KEEPCNT` 3 probes
  `TCP_KEEPINTVL_S` 5 s apart): the kernel ends a connection whose peer died or whose
  path dropped it within about 25 s, at no cost in QKD keys;
- a verified inbound connection on which no whole frame arrives for `idle_timeout_s` is
  closed [90 s], so a half-open socket never holds the slot for long;
- the sender sends a keepalive, an empty batch, when it has sent nothing for
  `keepalive_s` [30 s], so a quiet link (idle mode, no heartbeat blocks) stays up; this
  costs one key per `keepalive_s` on each idle directed link (n·(n−1)/30 keys a second
  for an idle chain without heartbeat blocks);
- a hello or frame that the peer does not drain within `write_timeout_s` [10 s] closes
  the outbound connection (aborted, unsent bytes dropped), which is then made again;
- a verified inbound connection on which `unknown_key_reset` [8] frames in a row fail for
  unknown keys is closed (`conn-key-reset`): the sender is spending keys this side can
  never get (this site's KME lost them, e.g. it was down when they were relayed), and
  reconnecting makes it drop everything it announced and announce fresh keys.

The sender also notices the peer closing the connection (end of stream on a socket the
peer never writes to). Before each new connection it waits a jittered backoff that
doubles from `BACKOFF_MIN_S` up to `BACKOFF_MAX_S` while connections end within
`keepalive_s` of being made, and starts again from `BACKOFF_MIN_S` after one that lasted.

Bounds on connection attempts, checked in this order; a connection past a bound is
closed at once and counted:

- accepts per source address: a token bucket of `accept_rate_per_s` [2/s] with a burst of
  `accept_burst` [8] (at most `MAX_TRACKED_SOURCES` addresses are remembered);
- unverified connections in all: `max_pending_total` [16];
- unverified connections claiming one index: `max_pending_per_peer` [2].

An attacker can still fill the unverified slots, which only delays a peer that has to
make a new connection (after a restart) while they are full; verified links are never
affected.

Counters. Refusals that name no peer are in `Transport.refused` by reason:
`rate-limited`, `pending-limit`, `hello-timeout`, `bad-hello`. Everything refused on
the link of peer j is in `stats[j].rejected` by reason: the frame rejections of the
opener (`bad-tag`, `unknown-key`, ...), `oversized` (a length above `max_frame_bytes`,
which also closes the connection), `bad-body`, and for connections and envelopes
`conn-pending-limit`, `conn-handshake-timeout`, `conn-handshake-failed` (the first frame
did not verify; its own reason is counted too), `conn-idle-timeout`,
`conn-write-timeout`, and `oversized-envelope`. `stats[j].handshakes` counts inbound
connections that verified and `stats[j].keepalives` the empty batches sent.

Sending: `send(peer, envelope)` queues; a per-peer task packs what is queued into one
frame body (`node.wire`) by encoded size, at most `max_body` bytes (the sealer's limit,
`FrameLimits.max_body`) and `MAX_FRAME_ENVELOPES` envelopes, so a large backlog goes out
in several frames. An envelope that alone exceeds `max_body` is dropped by `send` and
counted (`oversized-envelope`). The frame is sealed with the link's `LinkSealer` (which
may wait for keys: back-pressure, never an unauthenticated frame) and written. Queues
are bounded by message count; a full queue drops the new message and counts it
(consensus retransmits). After each new outbound connection the sealer is told, so it can
re-announce what the peer may have missed.

Receiving: frames are read in order per connection and handed to the link's `LinkOpener`;
on a verified connection a rejected frame is dropped and counted by reason, never raised.
Bodies that do not decode are dropped and counted too.

Fault rules (for testing, set through the admin API) apply per direction: drop, delay with
jitter, duplicate (a replay of the same frame bytes), corrupt (one flipped bit), and a set
of blocked peers (partition). They apply to handshake frames and keepalives as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from node.wire import Envelope, body_size, decode_body, encode_body, envelope_size
from qchain.errors import CodecError, QChainError
from qchain.qkd.frame import DEFAULT_FRAME_LIMITS
from qchain.ratelimit import TokenBuckets

log = logging.getLogger(__name__)

HELLO_MAGIC = b"QCH1"
_HELLO = struct.Struct(">4sH")
_LEN = struct.Struct(">I")
MAX_FRAME_ENVELOPES = 4096
CONNECT_TIMEOUT_S = 2.0
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 2.0
HELLO_TIMEOUT_S = 2.0
HANDSHAKE_TIMEOUT_S = 5.0
IDLE_TIMEOUT_S = 90.0
KEEPALIVE_S = 30.0
UNKNOWN_KEY_RESET = 8
TCP_KEEPIDLE_S = 10
TCP_KEEPINTVL_S = 5
TCP_KEEPCNT = 3
WRITE_TIMEOUT_S = 10.0
MAX_PENDING_PER_PEER = 2
MAX_PENDING_TOTAL = 16
ACCEPT_RATE_PER_S = 2.0
ACCEPT_BURST = 8
MAX_TRACKED_SOURCES = 4096
"""Source addresses the accept rate limiter remembers; past that it forgets full buckets
first, then the oldest."""


class LinkSealer(Protocol):
    """Authenticates frames on the link me -> peer."""

    async def seal(self, body: bytes) -> bytes: ...

    def reconnected(self) -> None: ...


class LinkOpener(Protocol):
    """Verifies frames on the link peer -> me; raises a `QChainError` to reject."""

    async def open(self, frame: bytes) -> bytes: ...

    def reconnected(self) -> None: ...


@dataclass(frozen=True)
class TransportLimits:
    """Timeouts (seconds) and bounds on connections; see the module docstring."""

    hello_timeout_s: float = HELLO_TIMEOUT_S
    """From the accept until the hello has arrived."""
    handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S
    """From the accept until the first frame has verified."""
    idle_timeout_s: float = IDLE_TIMEOUT_S
    """Longest wait for the next frame on a verified inbound connection."""
    keepalive_s: float = KEEPALIVE_S
    """The sender sends an empty batch after this long without sending anything."""
    write_timeout_s: float = WRITE_TIMEOUT_S
    """Longest wait for the peer to drain what was written to it."""
    max_pending_per_peer: int = MAX_PENDING_PER_PEER
    """Unverified connections at once whose hello names one index."""
    max_pending_total: int = MAX_PENDING_TOTAL
    """Unverified connections at once, hello read or not."""
    accept_rate_per_s: float = ACCEPT_RATE_PER_S
    """Accepted connections per second and source address, after the burst."""
    accept_burst: int = ACCEPT_BURST
    unknown_key_reset: int = UNKNOWN_KEY_RESET
    """Frames in a row rejected for unknown keys after which a verified inbound connection
    is closed, so that the sender reconnects and announces fresh keys."""

    def __post_init__(self) -> None:
        for name in (
            "hello_timeout_s",
            "handshake_timeout_s",
            "idle_timeout_s",
            "keepalive_s",
            "write_timeout_s",
            "accept_rate_per_s",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.hello_timeout_s > self.handshake_timeout_s:
            raise ValueError("hello_timeout_s must not exceed handshake_timeout_s")
        if self.idle_timeout_s < 2 * self.keepalive_s:
            raise ValueError("idle_timeout_s must be at least twice keepalive_s")
        counts = (
            self.max_pending_per_peer,
            self.max_pending_total,
            self.accept_burst,
            self.unknown_key_reset,
        )
        if min(counts) < 1:
            raise ValueError(
                "max_pending_per_peer, max_pending_total, accept_burst, unknown_key_reset "
                "must be >= 1"
            )


DEFAULT_TRANSPORT_LIMITS = TransportLimits()


@dataclass
class FaultRules:
    """Perturbations of one direction of traffic (percentages are 0..100)."""

    drop_pct: float = 0.0
    delay_ms: int = 0
    jitter_ms: int = 0
    duplicate_pct: float = 0.0
    corrupt_pct: float = 0.0
    blocked: frozenset[int] = frozenset()

    def active(self) -> bool:
        return bool(
            self.drop_pct
            or self.delay_ms
            or self.jitter_ms
            or self.duplicate_pct
            or self.corrupt_pct
            or self.blocked
        )


@dataclass
class PeerStats:
    frames_sent: int = 0
    bytes_sent: int = 0
    messages_sent: int = 0
    frames_received: int = 0
    bytes_received: int = 0
    queue_dropped: int = 0
    connects: int = 0
    """Outbound connections made."""
    handshakes: int = 0
    """Inbound connections whose first frame verified."""
    keepalives: int = 0
    """Empty batches sent on a quiet link."""
    rejected: Counter[str] = field(default_factory=Counter)
    """Frames, connections and envelopes refused on this link, by reason."""
    fault_dropped: int = 0


class _PeerOut:
    def __init__(self, index: int, address: str, sealer: LinkSealer, limit: int) -> None:
        self.index = index
        self.address = address
        self.sealer = sealer
        self.queue: deque[Envelope] = deque()
        self.limit = limit
        self.wakeup = asyncio.Event()
        self.lost = asyncio.Event()
        """Set when the peer closed the current connection."""
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
    ) -> None:
        self.me = me
        self.listen = listen
        self._on_envelope = on_envelope
        self._openers = dict(openers)
        self.max_frame_bytes = max_frame_bytes
        self.max_body = max_body
        self.limits = limits
        self._out = {
            j: _PeerOut(j, addr, sealers[j], queue_limit) for j, addr in sorted(peers.items())
        }
        self.stats: dict[int, PeerStats] = {j: PeerStats() for j in peers}
        self.refused: Counter[str] = Counter()
        """Connections refused before they named a known peer, by reason."""
        self.out_rules = FaultRules()
        self.in_rules = FaultRules()
        self._rng = rng or random.Random()
        self._server: asyncio.Server | None = None
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
        host, _, port = self.listen.rpartition(":")
        self._server = await asyncio.start_server(self._accept, host, int(port))
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

    def connected_peers(self) -> list[int]:
        """Peers with a live outgoing and a verified incoming connection."""
        return [j for j, p in self._out.items() if p.connected and j in self._inbound]

    # --- sending -----------------------------------------------------------------------

    def send(self, peer: int, envelope: Envelope) -> None:
        out = self._out.get(peer)
        if out is None:
            return
        if body_size(1, envelope_size(envelope)) > self.max_body:
            self.stats[peer].rejected["oversized-envelope"] += 1
            return
        if len(out.queue) >= out.limit:
            self.stats[peer].queue_dropped += 1
            return
        out.queue.append(envelope)
        out.wakeup.set()

    async def _connect(self, peer: _PeerOut) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        backoff = BACKOFF_MIN_S
        host, _, port = peer.address.rpartition(":")
        while True:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    reader, writer = await asyncio.open_connection(host, int(port))
                    _tcp_keepalive(writer)
            except (OSError, TimeoutError):
                pass
            else:
                try:
                    writer.write(_HELLO.pack(HELLO_MAGIC, self.me))
                    await self._drain(writer)
                except (OSError, TimeoutError):
                    writer.transport.abort()
                else:
                    self.stats[peer.index].connects += 1
                    return reader, writer
            await asyncio.sleep(backoff * (0.5 + self._rng.random()))
            backoff = min(BACKOFF_MAX_S, backoff * 2)

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
            await asyncio.sleep(backoff * (0.5 + self._rng.random()))
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
        """Until something is queued, the connection is lost, or `due` (loop time)."""
        loop = asyncio.get_running_loop()
        while not peer.queue and not peer.lost.is_set():
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
        queue = peer.queue
        while queue and len(batch) < MAX_FRAME_ENVELOPES:
            size = envelope_size(queue[0])
            if body_size(len(batch) + 1, total + size) > self.max_body:
                break
            batch.append(queue.popleft())
            total += size
        return batch

    async def _emit(
        self, writer: asyncio.StreamWriter, frame: bytes, rules: FaultRules, st: PeerStats
    ) -> None:
        if not rules.active():
            writer.write(_LEN.pack(len(frame)) + frame)
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
        data = (_LEN.pack(len(frame)) + frame) * copies
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
        _tcp_keepalive(writer)
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
        old = self._inbound.get(sender)
        if old is not None:
            old.close()
        self._inbound[sender] = writer
        self.stats[sender].handshakes += 1
        opener = self._openers[sender]
        opener.reconnected()
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
                hello = await reader.readexactly(_HELLO.size)
        except TimeoutError:
            self.refused["hello-timeout"] += 1
            return None
        magic, sender = _HELLO.unpack(hello)
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
        (length,) = _LEN.unpack(await reader.readexactly(_LEN.size))
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


def _tcp_keepalive(writer: asyncio.StreamWriter) -> None:
    """Let the kernel probe an idle connection and end it when the peer is gone."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, TCP_KEEPIDLE_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, TCP_KEEPINTVL_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, TCP_KEEPCNT)
