"""Commit certificates a node holds a block without, asked of its peers.

A validator gets the certificate of a height it signs from the commit-signature exchange
(`node.commit`). A node that does not sign a height never gets it that way: a validator
added by governance replays the heights before its activation as a learner (CONSENSUS.md
§10), and no member answers a node that sends no signature. `CertificateBackfill` asks
the peers' public APIs for what the exchange did not bring:

- every height this node commits is noted (`committed`); GRACE_S later, if the store
  still holds no certificate of it, the height is asked of peers, at most
  HEIGHTS_PER_TICK heights every TICK_S, one request at a time, of at most
  PEERS_PER_HEIGHT peers per attempt; a height no peer could give is asked again after
  RETRY_S (doubling, up to RETRY_MAX_S). At most MAX_PENDING heights wait; beyond that
  the ones due first are dropped and counted.
- A peer's answer is hostile: read up to MAX_CERT_BYTES, decoded, and checked exactly as
  the chain store checks a certificate it reads: of this height, naming the block this
  node committed, and carrying q(h) valid signatures of distinct members of V(h) (the
  genesis set on a chain without changes). Only then is it stored. A peer that sends a
  bad one is counted and not asked again for SHUN_S; one that cannot be reached, for
  UNREACHABLE_S.
- The peers are the other members of the latest set the node can read, at the addresses
  `node.peerapis` gives (the `[[p2p.peers]] api` setting, the directory record, the
  genesis hint), taken again every REFRESH_S while heights wait: a validator added since
  the start is asked, a removed one no longer.

`stats` counts what happened (`qchain_cert_backfill_total`, `node.metrics`).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from node.chainstore import ChainStore
from qchain import clock
from qchain.client import AsyncClient
from qchain.errors import ApiError, BadSignature, NodeUnavailable, QChainError
from qchain.types import CommitCertificate

log = logging.getLogger("qchain.node")

GRACE_S = 5.0
"""How long after its commit a height waits for the signature exchange to certify it."""
TICK_S = 0.5
HEIGHTS_PER_TICK = 8
"""Heights asked of peers per tick: at most 16 per second."""
PEERS_PER_HEIGHT = 2
"""Peers asked for one height per attempt."""
RETRY_S = 5.0
RETRY_MAX_S = 120.0
MAX_PENDING = 100_000
"""Heights waiting for a certificate; past this the oldest are dropped."""
MAX_CERT_BYTES = 1 << 20
"""The most read of one peer's answer (a certificate of 300 ML-DSA-65 signatures)."""
SHUN_S = 60.0
"""How long a peer that sent a bad certificate is not asked again."""
UNREACHABLE_S = 5.0
"""How long a peer that could not be reached or had no certificate is passed over."""
FETCH_TIMEOUT_S = 5.0
REFRESH_S = 30.0
"""How often the peers' addresses are taken again while heights wait."""


class CertificateSource(Protocol):
    """A peer that may hold certificates: `GET /v1/blocks/{height}/certificate`."""

    name: str

    async def certificate(self, height: int, max_bytes: int) -> bytes:
        """Canonical bytes of the peer's certificate of height; raises a `QChainError`
        when it has none or cannot be reached."""
        ...

    async def close(self) -> None: ...


class ApiCertificates:
    """A peer's public API as a `CertificateSource`."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.client = AsyncClient(url, timeout_s=FETCH_TIMEOUT_S)

    async def certificate(self, height: int, max_bytes: int) -> bytes:
        return await self.client.certificate_bytes(height, max_bytes)

    async def close(self) -> None:
        await self.client.close()


@dataclass
class BackfillStats:
    stored: int = 0
    """Certificates taken from peers and stored."""
    refused: int = 0
    """Certificates peers sent that did not check."""
    unavailable: int = 0
    """Requests a peer did not answer with a certificate."""
    dropped: int = 0
    """Heights dropped because MAX_PENDING were waiting."""


class CertificateBackfill:
    """The heights of one node waiting for a certificate, and the task that asks for them."""

    def __init__(
        self,
        chain: ChainStore,
        sources: Sequence[CertificateSource] = (),
        addresses: Callable[[], Mapping[int, tuple[str, str]]] | None = None,
    ) -> None:
        """sources: fixed peers; addresses: the peers' names and API addresses by id
        (`node.peerapis.source_addresses`), read at the start and every REFRESH_S while
        heights wait, each asked through its API (`ApiCertificates`)."""
        self.chain = chain
        self.sources: list[CertificateSource] = list(sources)
        self.addresses = addresses
        self._refreshed_at: float | None = None
        self.pending: list[tuple[float, int, int]] = []
        """A heap of (due, height, attempts)."""
        self.waiting: set[int] = set()
        self.passed_over: dict[str, float] = {}
        """Peer -> until when it is not asked."""
        self.bad: dict[str, int] = {}
        """Peer -> bad certificates it sent."""
        self.stats = BackfillStats()
        self._next_peer = 0

    def committed(self, height: int) -> None:
        """This node committed height: ask for its certificate if none is stored by
        GRACE_S from now."""
        if (not self.sources and self.addresses is None) or height in self.waiting:
            return
        self._queue(clock.monotonic() + GRACE_S, height, 0)

    def _queue(self, due: float, height: int, attempts: int) -> None:
        while len(self.pending) >= MAX_PENDING:
            _, old, _ = heapq.heappop(self.pending)
            self.waiting.discard(old)
            self.stats.dropped += 1
        heapq.heappush(self.pending, (due, height, attempts))
        self.waiting.add(height)

    async def run(self) -> None:
        """Ask for the due heights every TICK_S until cancelled; at once done without
        peers to ask. The peers' clients close when it ends."""
        if not self.sources and self.addresses is None:
            return
        try:
            while True:
                await asyncio.sleep(TICK_S)
                try:
                    await self.tick()
                except QChainError as e:
                    log.warning("certificate backfill: %s", e)
        finally:
            await self.close()

    async def tick(self) -> None:
        """Ask for up to HEIGHTS_PER_TICK due heights, one after the other."""
        if self.pending and self.pending[0][0] <= clock.monotonic():
            await self.refresh()
        retry: list[tuple[int, int]] = []
        asked = 0
        while self.pending and asked < HEIGHTS_PER_TICK:
            due, height, attempts = self.pending[0]
            if due > clock.monotonic():
                break
            heapq.heappop(self.pending)
            self.waiting.discard(height)
            if self.chain.has_certificate(height) or height < self.chain.base_height():
                continue
            asked += 1
            if not await self._fetch(height):
                retry.append((height, attempts + 1))
        now = clock.monotonic()
        for height, attempts in retry:
            if height not in self.waiting and not self.chain.has_certificate(height):
                wait = min(RETRY_MAX_S, RETRY_S * 2 ** min(attempts - 1, 10))
                self._queue(now + wait, height, attempts)

    async def refresh(self) -> None:
        """Take the peers' addresses again if REFRESH_S passed since the last time: a
        peer no longer named is closed and not asked, a new one is."""
        now = clock.monotonic()
        if self.addresses is None:
            return
        if self._refreshed_at is not None and now - self._refreshed_at < REFRESH_S:
            return
        self._refreshed_at = now
        try:
            wanted = {(name, url) for name, url in self.addresses().values()}
        except QChainError as e:
            log.warning("certificate backfill: the peers' addresses: %s", e)
            return
        kept: list[CertificateSource] = []
        for source in self.sources:
            key = (source.name, getattr(source, "url", ""))
            if key in wanted:
                wanted.discard(key)
                kept.append(source)
            else:
                await source.close()
        kept.extend(ApiCertificates(name, url) for name, url in sorted(wanted))
        self.sources = kept

    async def _fetch(self, height: int) -> bool:
        """Ask up to PEERS_PER_HEIGHT peers; whether a good certificate was stored."""
        for source in self._peers():
            cert = await self._ask(source, height)
            if cert is None:
                continue
            if self.chain.has_certificate(height):
                return True  # the exchange stored one meanwhile
            self.chain.put_certificate(cert)
            self.stats.stored += 1
            return True
        return False

    def _peers(self) -> list[CertificateSource]:
        now = clock.monotonic()
        n = len(self.sources)
        if n == 0:
            return []
        order = [self.sources[(self._next_peer + k) % n] for k in range(n)]
        self._next_peer = (self._next_peer + 1) % n
        return [s for s in order if self.passed_over.get(s.name, 0.0) <= now][:PEERS_PER_HEIGHT]

    async def _ask(self, source: CertificateSource, height: int) -> CommitCertificate | None:
        try:
            raw = await source.certificate(height, MAX_CERT_BYTES)
        except (ApiError, NodeUnavailable):
            self.stats.unavailable += 1
            self.passed_over[source.name] = clock.monotonic() + UNREACHABLE_S
            return None
        except QChainError as e:  # an answer over MAX_CERT_BYTES
            self._refused(source, height, e)
            return None
        try:
            return self.check(height, raw)
        except QChainError as e:
            self._refused(source, height, e)
            return None

    def _refused(self, source: CertificateSource, height: int, e: QChainError) -> None:
        self.stats.refused += 1
        self.bad[source.name] = self.bad.get(source.name, 0) + 1
        self.passed_over[source.name] = clock.monotonic() + SHUN_S
        log.warning("%s sent a bad certificate of height %d: %s", source.name, height, e)

    def check(self, height: int, raw: bytes) -> CommitCertificate:
        """The certificate in raw if it is one this node may store for height, checked as
        `ChainStore.certificate` checks a stored one; else a `QChainError`."""
        if len(raw) > MAX_CERT_BYTES:
            raise BadSignature(f"{len(raw)} bytes, at most {MAX_CERT_BYTES}")
        cert = CommitCertificate.decode(raw)
        if cert.height != height:
            raise BadSignature(f"of height {cert.height}")
        if cert.block_hash != self.chain.block_hash(height):
            raise BadSignature("names another block")
        ids = [s.validator for s in cert.signatures]
        if len(set(ids)) != len(ids):
            raise BadSignature("names a validator twice")
        if self.chain.cert_check is not None:
            self.chain.cert_check(cert)
        return cert

    async def close(self) -> None:
        for s in self.sources:
            await s.close()
