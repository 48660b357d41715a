"""Authenticated full-mesh transport between validators.

Each directed link i -> j is one TCP connection that i dials to j's P2P listener. The
dialer first sends a hello (`QCH1`, its validator index); after that the stream is a
sequence of length-prefixed frames (4-byte big-endian length, then the frame). The hello is
not trusted: it only picks which link's verifier checks the frames, and every frame carries
a one-time MAC under a key only i and j hold, so a frame on the wrong connection fails.

Sending: `send(peer, envelope)` queues; a per-peer task takes everything queued, packs it
into one frame body (`node.wire`), seals it with the link's `LinkSealer` (which may wait
for keys: back-pressure, never an unauthenticated frame) and writes it. Queues are bounded
by message count; a full queue drops the new message and counts it (consensus retransmits).
After a reconnection the sealer is told, so it can re-announce what the peer may have missed.

Receiving: frames are read in order per connection and handed to the link's `LinkOpener`;
a rejected frame is dropped and counted by reason, never raised. Bodies that do not decode
are dropped and counted too.

Fault rules (for testing, set through the admin API) apply per direction: drop, delay with
jitter, duplicate (a replay of the same frame bytes), corrupt (one flipped bit), and a set
of blocked peers (partition).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from node.wire import Envelope, decode_body, encode_body
from qchain.errors import CodecError, QChainError

log = logging.getLogger(__name__)

HELLO_MAGIC = b"QCH1"
_HELLO = struct.Struct(">4sH")
_LEN = struct.Struct(">I")
MAX_FRAME_ENVELOPES = 4096
CONNECT_TIMEOUT_S = 2.0
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 2.0


class LinkSealer(Protocol):
    """Authenticates frames on the link me -> peer."""

    async def seal(self, body: bytes) -> bytes: ...

    def reconnected(self) -> None: ...


class LinkOpener(Protocol):
    """Verifies frames on the link peer -> me; raises a `QChainError` to reject."""

    async def open(self, frame: bytes) -> bytes: ...

    def reconnected(self) -> None: ...


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
    rejected: Counter[str] = field(default_factory=Counter)
    fault_dropped: int = 0


class _PeerOut:
    def __init__(self, index: int, address: str, sealer: LinkSealer, limit: int) -> None:
        self.index = index
        self.address = address
        self.sealer = sealer
        self.queue: deque[Envelope] = deque()
        self.limit = limit
        self.wakeup = asyncio.Event()
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
        queue_limit: int = 1024,
        rng: random.Random | None = None,
    ) -> None:
        self.me = me
        self.listen = listen
        self._on_envelope = on_envelope
        self._openers = dict(openers)
        self.max_frame_bytes = max_frame_bytes
        self._out = {
            j: _PeerOut(j, addr, sealers[j], queue_limit) for j, addr in sorted(peers.items())
        }
        self.stats: dict[int, PeerStats] = {j: PeerStats() for j in peers}
        self.out_rules = FaultRules()
        self.in_rules = FaultRules()
        self._rng = rng or random.Random()
        self._server: asyncio.Server | None = None
        self._inbound: dict[int, asyncio.StreamWriter] = {}
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
        for w in list(self._inbound.values()):
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
                peer.writer.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    def connected_peers(self) -> list[int]:
        """Peers with a live outgoing and incoming connection."""
        return [j for j, p in self._out.items() if p.connected and j in self._inbound]

    # --- sending -----------------------------------------------------------------------

    def send(self, peer: int, envelope: Envelope) -> None:
        out = self._out.get(peer)
        if out is None:
            return
        if len(out.queue) >= out.limit:
            self.stats[peer].queue_dropped += 1
            return
        out.queue.append(envelope)
        out.wakeup.set()

    async def _connect(self, peer: _PeerOut) -> asyncio.StreamWriter:
        backoff = BACKOFF_MIN_S
        host, _, port = peer.address.rpartition(":")
        while True:
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, int(port)), CONNECT_TIMEOUT_S
                )
                writer.write(_HELLO.pack(HELLO_MAGIC, self.me))
                await writer.drain()
                self.stats[peer.index].connects += 1
                return writer
            except (OSError, TimeoutError):
                await asyncio.sleep(backoff * (0.5 + self._rng.random()))
                backoff = min(BACKOFF_MAX_S, backoff * 2)

    async def _sender(self, peer: _PeerOut) -> None:
        while not self._stopping:
            writer = await self._connect(peer)
            peer.writer = writer
            peer.connected = True
            peer.sealer.reconnected()
            try:
                while True:
                    if not peer.queue:
                        peer.wakeup.clear()
                        await peer.wakeup.wait()
                    batch: list[Envelope] = []
                    while peer.queue and len(batch) < MAX_FRAME_ENVELOPES:
                        batch.append(peer.queue.popleft())
                    rules = self.out_rules
                    if peer.index in rules.blocked:
                        self.stats[peer.index].fault_dropped += 1
                        continue
                    frame = await peer.sealer.seal(encode_body(batch))
                    st = self.stats[peer.index]
                    st.frames_sent += 1
                    st.messages_sent += len(batch)
                    st.bytes_sent += len(frame)
                    await self._emit(writer, frame, rules, st)
            except (OSError, ConnectionError, asyncio.IncompleteReadError) as e:
                log.info("link to %d lost: %s", peer.index, e)
            except QChainError as e:
                log.warning("link to %d: cannot seal: %s", peer.index, e.message)
                await asyncio.sleep(BACKOFF_MAX_S)
            finally:
                peer.connected = False
                peer.writer = None
                writer.close()

    async def _emit(
        self, writer: asyncio.StreamWriter, frame: bytes, rules: FaultRules, st: PeerStats
    ) -> None:
        if not rules.active():
            writer.write(_LEN.pack(len(frame)) + frame)
            await writer.drain()
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
        try:
            hello = await asyncio.wait_for(reader.readexactly(_HELLO.size), CONNECT_TIMEOUT_S)
            magic, sender = _HELLO.unpack(hello)
            if magic != HELLO_MAGIC or sender not in self._openers:
                return
            old = self._inbound.get(sender)
            if old is not None:
                old.close()
            self._inbound[sender] = writer
            opener = self._openers[sender]
            opener.reconnected()
            await self._read_frames(sender, opener, reader)
        except (OSError, ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            writer.close()
            return
        finally:
            if task is not None:
                self._reader_tasks.discard(task)
            writer.close()

    async def _read_frames(
        self, sender: int, opener: LinkOpener, reader: asyncio.StreamReader
    ) -> None:
        st = self.stats[sender]
        while True:
            (length,) = _LEN.unpack(await reader.readexactly(_LEN.size))
            if length > self.max_frame_bytes:
                st.rejected["oversized"] += 1
                return
            frame = await reader.readexactly(length)
            rules = self.in_rules
            if rules.active() and (
                sender in rules.blocked or self._rng.random() * 100 < rules.drop_pct
            ):
                st.fault_dropped += 1
                continue
            try:
                body = await opener.open(frame)
            except QChainError as e:
                st.rejected[getattr(e, "reason", None) or e.code] += 1
                continue
            st.frames_received += 1
            st.bytes_received += len(frame)
            try:
                envelopes = decode_body(body)
            except CodecError:
                st.rejected["bad-body"] += 1
                continue
            for env in envelopes:
                self._on_envelope(sender, env)
