"""Limits, counters and fault rules of the validator transport (`node.transport`).

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

Fault rules (for testing, set through the admin API) apply per direction: drop, delay with
jitter, duplicate (a replay of the same frame bytes), corrupt (one flipped bit), and a set
of blocked peers (partition). They apply to handshake frames and keepalives as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

HELLO_MAGIC = b"QCH1"
HELLO = struct.Struct(">4sH")
LENGTH = struct.Struct(">I")
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


def tcp_keepalive(writer: asyncio.StreamWriter) -> None:
    """Let the kernel probe an idle connection and end it when the peer is gone."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, TCP_KEEPIDLE_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, TCP_KEEPINTVL_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, TCP_KEEPCNT)
