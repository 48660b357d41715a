"""Authenticated frames: every frame on a validator link carries a one-time MAC.

Wire layout (the transport adds its own length prefix around it)::

    header_len  u16, big-endian
    header      canonical msgpack array: FrameHeader
    body        the rest, up to the tag
    tag         16 bytes: Poly1305 over every byte before it (header_len, header, body)

The Poly1305 key is a fresh 256-bit QKD key used for this one frame and then wiped, so
the tag is information-theoretically secure: a forger succeeds with probability about
8·L/2^106 for an L-byte frame, whatever their computing power. No hash is applied first.

`FrameHeader` holds version, chain id, sender, receiver, the link sequence number (per
directed link, starting at 1 and strictly increasing), the key id, and `announce`.

Key announcement (how the receiver knows which ids are coming)
---------------------------------------------------------------
The sender takes keys from the key manager in batches (`enc_keys`, up to 128 at a time)
and spends them in order. The first frame it seals after a batch arrives lists the ids of
that batch (every id of the batch not yet spent) in `announce`. After a reconnection the
transport calls `LinkSender.resync()`: the sender drops every key it already announced
(the peer may have restarted and lost them, and the key manager delivers a key to the
slave only once) and goes on with keys it has not announced, which the next frame
announces. The receiver reacts to an announcement in one of two ways:

- *prefetch*: once the frame carrying the announcement has verified, the receiver starts
  one `dec_keys` call per announced batch in the background. The send pool fetches its
  next batch when `low_water` keys are left and announces it at once, so in steady state
  the receiver resolves a batch while the sender still spends `low_water` keys of the
  previous one, and no frame waits on the key manager on either side.
- *bootstrap*: if a frame's own key id is unknown but listed in its own announcement
  (the first frame on a link, or after a resync), the receiver fetches the announced
  batch first and then verifies the frame. The announcement itself is covered by the tag.

Frames get lost or corrupted, and with them an announcement. A frame whose key id the
receiver neither holds nor is fetching is *recovered*: the receiver looks that one id up
with `dec_keys` (the key manager still holds it, since nobody fetched it), within a budget
of lookups per link and second (`ReceiveKeyPool.recover`), so a lost announcement costs
one key-manager call per frame of that batch instead of stalling the link for good.

A frame whose own key is in its own announcement shows, once its tag verifies, that
the sender announced afresh: after a reconnection (`resync`) or with its pool run dry, it
holds no key it announced earlier. The receiver then drops every key it holds from that
sender outside the new announcement (`ReceiveKeyPool.keep_only`). Without that, the keys
a dead incarnation announced (the rest of its batch, the next batch) stayed held; held
keys are capped, so after a few restarts, or a twin and its original taking turns, the
pool was full, the next announcement found no room and every connection's first frame
was refused as `unknown-key`, for good. A bootstrap that finds no room looks its own key
up alone (the recovery path), so it can verify and make the room.

Announcements are never trusted before the tag verifies, except for that one bootstrap
fetch, which costs a forger one key-manager call that fails (unknown ids) or hands the
receiver keys it will need anyway (ids copied from a genuine frame). A key id that is
neither held, nor being fetched, nor bootstrapped is rejected as `UnknownKey`.

Verification order (`LinkReceiver.open`)
----------------------------------------
size limits and layout, version, chain id, receiver is me, sender is a known peer,
sequence number above the last accepted one on that link, key id never used on that link,
key resolved, tag (constant-time). The key is wiped after its one verification, whether
the tag matched or not: a key id that failed once is burnt, and the genuine frame, if it
comes later, is rejected as `KeyReused` (an attacker on the path can drop it anyway).
Only an accepted frame moves the sequence number. Every rejection is a `FrameRejected`
subclass, counted by reason and by sender; nothing else escapes `open`.

After a restart, a sender must start above its last sequence number: give `LinkSender`
a `Lease` (persisted, see `qchain.qkd.lease`) and it draws sequence numbers from it. A
receiver that restarts forgets its last sequence number, but a replayed frame still
fails: its key was handed to the receiver once and the key manager forgot it.

A lease remembers what *this* store drew, not what the identity drew: a node restarted
from an older copy of its store (a disk snapshot put back, a twin that ran with a copy)
would number its frames below what its peers accepted and be refused as stale for as
long as it takes to draw past them. So at every (re)connection `resync` also raises the
lease to the clock term `clock_floor(now_ms)` = `now_ms`·2^16 + 2^40: a link draws far
fewer than 2^16 numbers a millisecond, so every number any process of this identity drew
before that moment (on any copy of the store, with a clock that agrees to within the
time since) is below it, and the connection's first frame is accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.poly1305 import Poly1305

from qchain.clock import wall_ms
from qchain.codec import U8, U64, Len, Limits, Struct
from qchain.errors import CodecError, StorageError
from qchain.qkd.errors import (
    BadTag,
    FrameMalformed,
    FrameRejected,
    FrameTooLarge,
    KeyReused,
    StaleSequence,
    UnknownKey,
    UnknownSender,
    WrongChain,
    WrongReceiver,
    WrongVersion,
)
from qchain.qkd.lease import Lease, clock_floor
from qchain.qkd.pool import MAX_BATCH, ReceiveKeyPool, SendKeyPool
from qchain.qkd.source import KEY_ID_LEN, MAC_KEY_BYTES, KeyId

FRAME_VERSION = 1
TAG_LEN = 16
MAX_NAME = 64
MAX_ANNOUNCE = 2 * MAX_BATCH
"""A send pool holds at most the rest of one batch and the next one."""

Name = Annotated[str, Len(1, MAX_NAME)]
KeyIdField = Annotated[bytes, Len(KEY_ID_LEN, KEY_ID_LEN)]

_LEN = struct.Struct(">H")


@dataclass(frozen=True)
class FrameHeader(Struct):
    """What the tag binds to the body."""

    version: U8
    chain_id: Name
    sender: Name
    receiver: Name
    seq: U64
    """Link sequence number, per directed link, from 1, strictly increasing."""
    key_id: KeyIdField
    """The id of the one-time key of this frame's tag."""
    announce: Annotated[tuple[KeyIdField, ...], Len(0, MAX_ANNOUNCE)]
    """Ids of keys the sender will use next (see the module docstring)."""


@dataclass(frozen=True)
class FrameLimits:
    max_body: int = 4 * 1024 * 1024
    max_header: int = 8 * 1024

    @property
    def max_frame(self) -> int:
        return _LEN.size + self.max_header + self.max_body + TAG_LEN


DEFAULT_FRAME_LIMITS = FrameLimits()
_HEADER_LIMITS = Limits(
    max_size=DEFAULT_FRAME_LIMITS.max_header,
    max_depth=2,
    max_bytes_len=KEY_ID_LEN,
    max_str_len=MAX_NAME,
    max_array_len=MAX_ANNOUNCE,
)


@dataclass(frozen=True)
class OpenedFrame:
    sender: str
    seq: int
    body: bytes


def encode_frame(header: FrameHeader, body: bytes, key: bytearray) -> bytes:
    """The frame bytes, tagged with `key` (32 bytes). The caller wipes the key."""
    if len(key) != MAC_KEY_BYTES:
        raise ValueError(f"a frame key is {MAC_KEY_BYTES} bytes")
    head = header.encode()
    prefix = _LEN.pack(len(head))
    mac = Poly1305(key)
    mac.update(prefix)
    mac.update(head)
    mac.update(body)
    return b"".join((prefix, head, body, mac.finalize()))


def decode_frame(
    frame: bytes, limits: FrameLimits = DEFAULT_FRAME_LIMITS
) -> tuple[FrameHeader, memoryview, memoryview, bytes]:
    """(header, authenticated part, body, tag) of a frame, checking layout and limits but
    not the tag. Raises only `FrameMalformed` or `FrameTooLarge`."""
    if not isinstance(frame, bytes | bytearray | memoryview):
        raise FrameMalformed("a frame is bytes")
    n = len(frame)
    if n > limits.max_frame:
        raise FrameTooLarge(f"frame of {n} bytes exceeds {limits.max_frame}")
    if n < _LEN.size + TAG_LEN + 1:
        raise FrameMalformed(f"frame of {n} bytes is too short")
    view = memoryview(frame)
    (head_len,) = _LEN.unpack_from(view, 0)
    if head_len > limits.max_header:
        raise FrameTooLarge(f"header of {head_len} bytes exceeds {limits.max_header}")
    body_start = _LEN.size + head_len
    if body_start > n - TAG_LEN:
        raise FrameMalformed("header runs into the tag")
    if n - TAG_LEN - body_start > limits.max_body:
        raise FrameTooLarge(f"body exceeds {limits.max_body} bytes")
    try:
        header = FrameHeader.decode(bytes(view[_LEN.size : body_start]), _HEADER_LIMITS)
    except CodecError as e:
        raise FrameMalformed(f"header: {e.message}") from e
    return header, view[: n - TAG_LEN], view[body_start : n - TAG_LEN], bytes(view[n - TAG_LEN :])


@dataclass
class SenderCounters:
    frames: int = 0
    body_bytes: int = 0


class LinkSender:
    """Seals frames on the directed link me -> peer with keys from a `SendKeyPool`.

    Use it from one task per link (the transport's writer). Sequence numbers come from
    `seq_lease` when given (value + 1, so they survive a restart), else count up from
    `first_seq`."""

    def __init__(
        self,
        chain_id: str,
        me: str,
        peer: str,
        pool: SendKeyPool,
        *,
        first_seq: int = 1,
        seq_lease: Lease | None = None,
        limits: FrameLimits = DEFAULT_FRAME_LIMITS,
        now_ms: Callable[[], int] = wall_ms,
    ) -> None:
        """`now_ms`: the wall clock (ms since the Unix epoch) `resync` raises the lease
        to."""
        if first_seq < 1:
            raise ValueError("sequence numbers start at 1")
        self.chain_id = chain_id
        self.me = me
        self.peer = peer
        self.pool = pool
        self.next_seq = first_seq
        self.seq_lease = seq_lease
        self.limits = limits
        self.now_ms = now_ms
        self.counters = SenderCounters()

    async def seal(self, body: bytes) -> bytes:
        """An authenticated frame carrying `body`; waits if the key pool is empty.
        Raises `FrameTooLarge` for an oversized body, `LinkClosed` if no key will come."""
        if len(body) > self.limits.max_body:
            raise FrameTooLarge(f"body of {len(body)} bytes exceeds {self.limits.max_body}")
        key, announce = await self.pool.take()
        seq = self.next_seq if self.seq_lease is None else self.seq_lease.next() + 1
        try:
            header = FrameHeader(
                version=FRAME_VERSION,
                chain_id=self.chain_id,
                sender=self.me,
                receiver=self.peer,
                seq=seq,
                key_id=key.key_id,
                announce=announce,
            )
            frame = encode_frame(header, body, key.material)
        finally:
            key.wipe()
        self.next_seq = seq + 1
        self.counters.frames += 1
        self.counters.body_bytes += len(body)
        return frame

    def resync(self) -> None:
        """Drop the keys already announced; the next frame announces fresh ones; and with
        a lease, number the next frame at or above the clock term (above). Call at every
        connection, the first one too. A clock out of range (before 1970, past the year
        6400) leaves the numbers to the lease alone."""
        self.pool.resync()
        if self.seq_lease is not None:
            with contextlib.suppress(StorageError):
                self.seq_lease.advance(clock_floor(self.now_ms()))


@dataclass
class PeerState:
    """What the receiver remembers about one peer's link toward it."""

    pool: ReceiveKeyPool
    last_seq: int = 0
    used: OrderedDict[KeyId, None] = field(default_factory=OrderedDict)
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class LinkReceiver:
    """Verifies frames addressed to `me` from any of its peers (one `ReceiveKeyPool` each).

    `open` may be called from one reader task per peer concurrently; frames of one peer
    are verified one at a time."""

    def __init__(
        self,
        chain_id: str,
        me: str,
        pools: Mapping[str, ReceiveKeyPool],
        *,
        limits: FrameLimits = DEFAULT_FRAME_LIMITS,
        used_window: int = 1 << 16,
    ) -> None:
        self.chain_id = chain_id
        self.me = me
        self.limits = limits
        self.used_window = used_window
        self.peers: dict[str, PeerState] = {p: PeerState(pool) for p, pool in pools.items()}
        self.rejected: Counter[str] = Counter()
        """Rejections by reason, over all senders (unknown senders included)."""

    @property
    def accepted(self) -> int:
        return sum(p.accepted for p in self.peers.values())

    def _reject(self, err: FrameRejected, peer: PeerState | None) -> FrameRejected:
        self.rejected[err.reason] += 1
        if peer is not None:
            peer.rejected[err.reason] += 1
        return err

    async def open(self, frame: bytes) -> OpenedFrame:
        """Verify a frame and return its sender, sequence number and body. Raises only
        `FrameRejected` subclasses, each counted in `rejected`."""
        try:
            header, signed, body, tag = decode_frame(frame, self.limits)
            if header.version != FRAME_VERSION:
                raise WrongVersion(f"frame version {header.version}")
            if header.chain_id != self.chain_id:
                raise WrongChain(f"frame for chain {header.chain_id!r}")
            if header.receiver != self.me:
                raise WrongReceiver(f"frame for {header.receiver!r}")
            peer = self.peers.get(header.sender)
            if peer is None:
                raise UnknownSender(f"frame from unknown sender {header.sender!r}")
        except FrameRejected as e:
            raise self._reject(e, None) from None
        async with peer.lock:
            try:
                return await self._verify(peer, header, signed, body, tag)
            except FrameRejected as e:
                raise self._reject(e, peer) from None

    async def _verify(
        self, peer: PeerState, h: FrameHeader, signed: memoryview, body: memoryview, tag: bytes
    ) -> OpenedFrame:
        if h.seq <= peer.last_seq:
            raise StaleSequence(f"sequence {h.seq} after {peer.last_seq}")
        if h.key_id in peer.used:
            raise KeyReused("key id already used on this link")
        pool = peer.pool
        bootstrap = not pool.knows(h.key_id) and h.key_id in h.announce
        if bootstrap:
            pool.announce(h.announce, verified=False)
        if not pool.knows(h.key_id) and not pool.recover(h.key_id):
            # (A bootstrap whose announcement found no room lands here: its own key is
            # looked up alone, so that the frame can verify and free the room.)
            raise UnknownKey("key id unknown and the lookup budget is spent")
        key = await pool.take(h.key_id)
        if key is None:
            raise UnknownKey("key id not announced or not known to the key manager")
        self._mark_used(peer, h.key_id)
        try:
            Poly1305.verify_tag(key.material, signed, tag)
        except InvalidSignature:
            raise BadTag("tag does not match") from None
        finally:
            key.wipe()
        peer.last_seq = h.seq
        peer.accepted += 1
        if bootstrap:
            # The sender's own key is in its own announcement: it announced afresh
            # (a new connection, or its pool ran dry), so it holds no key it announced
            # before, and a frame sealed with one would be stale by now.
            pool.keep_only(h.announce)
        if h.announce:
            pool.announce([k for k in h.announce if k not in peer.used])
        return OpenedFrame(h.sender, h.seq, bytes(body))

    def _mark_used(self, peer: PeerState, key_id: KeyId) -> None:
        peer.used[key_id] = None
        if len(peer.used) > self.used_window:
            peer.used.popitem(last=False)
