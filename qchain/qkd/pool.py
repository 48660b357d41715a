"""Key pools: one per directed link, so that sending a frame never waits on the key
manager in steady state.

`SendKeyPool` (me -> peer) holds keys taken with `enc_keys`, in batches of up to
`batch_size` keys (capped by the link's `max_key_per_request`, read once from `status`).
When fewer than `low_water` keys remain it fetches the next batch in the background.
If it runs dry, `take` waits (back-pressure, counted in `counters.waits`) until keys
come; nothing is ever handed out twice and a key is never replaced by "no key". While the
key manager answers "unavailable" the pool retries with exponential backoff; an
"unauthorised" or "bad request" answer is permanent and makes every `take` raise
`LinkClosed`.

Each batch remembers whether its ids were announced to the peer: `take` returns, with
the key, the ids the sender must announce in that frame (see `qchain.qkd.frame` for
the protocol), and `resync` drops the announced keys after a reconnection (the peer may
have restarted and can no longer resolve them).

`ReceiveKeyPool` (peer -> me) resolves announced ids with one `dec_keys` call per
announced batch and holds the keys until their frame arrives; `take(key_id)` hands a
key out once, waiting (counted) only if its fetch is still running.

Both pools wipe every key they drop and count keys and bytes per link.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from qchain.qkd.clock import Clock, SystemClock
from qchain.qkd.errors import KeySourceError, KeyUnavailable, LinkClosed
from qchain.qkd.source import MAC_KEY_BITS, Key, KeyId, KeySource, key_id_str

log = logging.getLogger(__name__)

MAX_BATCH = 128
"""The most keys a pool takes per key-manager call, whatever the link allows."""
RECOVER_PER_S = 50
RECOVER_BURST = 64
"""Budget of single-key lookups per link (`ReceiveKeyPool.recover`)."""


@dataclass(frozen=True)
class PoolConfig:
    batch_size: int = MAX_BATCH
    """Keys per key-manager call (further capped by the link's max_key_per_request)."""
    low_water: int = 64
    """The send pool fetches the next batch when fewer keys than this remain."""
    key_bits: int = MAC_KEY_BITS
    retry_initial: float = 0.05
    """First backoff, in seconds, after an "unavailable" answer; doubles up to retry_max."""
    retry_max: float = 2.0

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be in [1, {MAX_BATCH}]")
        if not 1 <= self.low_water <= self.batch_size:
            raise ValueError("low_water must be in [1, batch_size]")
        if self.key_bits != MAC_KEY_BITS:
            raise ValueError(f"frames need {MAC_KEY_BITS}-bit keys")
        if not 0 < self.retry_initial <= self.retry_max:
            raise ValueError("need 0 < retry_initial <= retry_max")


@dataclass
class PoolCounters:
    """Per-link figures; the node exports them as metrics."""

    kms_calls: int = 0
    kms_errors: int = 0
    keys_fetched: int = 0
    keys_consumed: int = 0
    bytes_consumed: int = 0
    keys_discarded: int = 0
    """Keys wiped unused (pool closed, fetch answered for a frame that never came)."""
    waits: int = 0
    """Times a frame had to wait for the key manager."""
    recovered: int = 0
    """Keys looked up one by one because their announcement was lost."""


class _Batch:
    __slots__ = ("announced", "keys")

    def __init__(self, keys: Sequence[Key]) -> None:
        self.keys: deque[Key] = deque(keys)
        self.announced = False


class _Backoff:
    def __init__(self, config: PoolConfig, clock: Clock) -> None:
        self._delay = config.retry_initial
        self._max = config.retry_max
        self._clock = clock

    async def wait(self) -> None:
        await self._clock.sleep(self._delay)
        self._delay = min(self._max, self._delay * 2)


class SendKeyPool:
    """Keys for frames me -> peer."""

    def __init__(
        self,
        source: KeySource,
        peer: str,
        config: PoolConfig | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.source = source
        self.peer = peer
        self.config = config or PoolConfig()
        self.clock: Clock = clock or SystemClock()
        self.counters = PoolCounters()
        self._batch_size = self.config.batch_size
        self._sized = False
        self._batches: deque[_Batch] = deque()
        self._changed = asyncio.Event()
        self._refill: asyncio.Task[None] | None = None
        self._fatal: KeySourceError | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def level(self) -> int:
        """Keys in hand."""
        return sum(len(b.keys) for b in self._batches)

    def start(self) -> None:
        """Begin fetching the first batch (call from a running event loop)."""
        self._maybe_refill()

    def _maybe_refill(self) -> None:
        if self._closed or self._fatal is not None:
            return
        if self._refill is None and self.level < self.config.low_water:
            self._refill = asyncio.get_running_loop().create_task(self._refill_loop())

    async def _refill_loop(self) -> None:
        backoff = _Backoff(self.config, self.clock)
        try:
            while not self._closed and self.level < self.config.low_water:
                try:
                    if not self._sized:
                        self.counters.kms_calls += 1
                        status = await self.source.status(self.peer)
                        self._batch_size = min(self._batch_size, status.max_key_per_request)
                        self._sized = True
                    self.counters.kms_calls += 1
                    keys = await self.source.enc_keys(
                        self.peer, self._batch_size, self.config.key_bits
                    )
                except KeyUnavailable as e:
                    self.counters.kms_errors += 1
                    log.info("key manager unavailable for %s: %s", self.peer, e.message)
                    await backoff.wait()
                    continue
                except KeySourceError as e:
                    self.counters.kms_errors += 1
                    log.error("link to %s failed for good: %s", self.peer, e.message)
                    self._fatal = e
                    break
                if self.closed:
                    _wipe_all(keys)
                    break
                self._batches.append(_Batch(keys))
                self.counters.keys_fetched += len(keys)
                self._changed.set()
        finally:
            self._refill = None
            self._changed.set()

    async def take(self) -> tuple[Key, tuple[KeyId, ...]]:
        """The next key, and the key ids this frame must announce. Waits if the pool is
        empty; raises `LinkClosed` if the pool is closed or the link failed for good."""
        if not self._batches:
            self.counters.waits += 1
        while not self._batches:
            if self._closed:
                raise LinkClosed(f"key pool toward {self.peer} is closed")
            if self._fatal is not None:
                raise LinkClosed(f"link toward {self.peer} failed: {self._fatal.message}")
            self._maybe_refill()
            self._changed.clear()
            await self._changed.wait()
        announce: list[KeyId] = []
        for batch in self._batches:
            if not batch.announced:
                announce.extend(k.key_id for k in batch.keys)
                batch.announced = True
        first = self._batches[0]
        key = first.keys.popleft()
        if not first.keys:
            self._batches.popleft()
        self.counters.keys_consumed += 1
        self.counters.bytes_consumed += key.size_bytes
        self._maybe_refill()
        return key, tuple(announce)

    def resync(self) -> None:
        """After the connection to the peer was re-made: drop every key already announced.

        The peer may have restarted since, and the key manager delivers a key to the
        slave only once, so keys its earlier incarnation fetched can never be resolved
        again; keeping them would make every later frame fail as `unknown-key`. Keys not
        yet announced stay usable and are announced with the next frame. The cost is at
        most the announced batches held at a reconnection (counted as discarded)."""
        kept: deque[_Batch] = deque()
        for batch in self._batches:
            if batch.announced:
                self.counters.keys_discarded += len(batch.keys)
                _wipe_all(batch.keys)
            else:
                kept.append(batch)
        self._batches = kept
        self._maybe_refill()

    async def close(self) -> None:
        """Stop fetching and wipe every key held."""
        self._closed = True
        task = self._refill
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for batch in self._batches:
            self.counters.keys_discarded += len(batch.keys)
            _wipe_all(batch.keys)
        self._batches.clear()
        self._changed.set()


class ReceiveKeyPool:
    """Keys for frames peer -> me, resolved by the ids the peer announced."""

    def __init__(
        self,
        source: KeySource,
        peer: str,
        config: PoolConfig | None = None,
        clock: Clock | None = None,
        *,
        max_held: int = 4 * MAX_BATCH,
    ) -> None:
        self.source = source
        self.peer = peer
        self.config = config or PoolConfig()
        self.clock: Clock = clock or SystemClock()
        self.max_held = max_held
        self.counters = PoolCounters()
        self._keys: dict[KeyId, Key] = {}
        self._pending: dict[KeyId, asyncio.Task[None]] = {}
        self._closed = False
        self._recover_tokens = float(RECOVER_BURST)
        self._recover_at = self.clock.now()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def level(self) -> int:
        """Keys resolved and not yet used."""
        return len(self._keys)

    def knows(self, key_id: KeyId) -> bool:
        """Whether the key is resolved or being fetched."""
        return key_id in self._keys or key_id in self._pending

    def announce(self, key_ids: Sequence[KeyId]) -> None:
        """Start fetching the announced ids not yet known, one call per batch. Ids beyond
        `max_held` keys are ignored (an honest peer never announces that far ahead)."""
        if self._closed:
            return
        room = self.max_held - len(self._keys) - len(self._pending)
        new = list(dict.fromkeys(k for k in key_ids if not self.knows(k)))[: max(0, room)]
        step = self.config.batch_size
        loop = asyncio.get_running_loop()
        for i in range(0, len(new), step):
            chunk = new[i : i + step]
            task = loop.create_task(self._fetch(chunk))
            for k in chunk:
                self._pending[k] = task

    def recover(self, key_id: KeyId) -> bool:
        """Fetch one key whose announcement never arrived (the frame that carried it was
        lost or corrupted on the way). Rate-limited per link, since a forger can name any
        id: at most `RECOVER_PER_S` lookups a second after a burst of `RECOVER_BURST`.
        Returns False, fetching nothing, when the budget is spent."""
        if self._closed or self.knows(key_id):
            return not self._closed
        now = self.clock.now()
        self._recover_tokens = min(
            float(RECOVER_BURST),
            self._recover_tokens + (now - self._recover_at) * RECOVER_PER_S,
        )
        self._recover_at = now
        if self._recover_tokens < 1:
            return False
        self._recover_tokens -= 1
        self.counters.recovered += 1
        task = asyncio.get_running_loop().create_task(self._fetch([key_id]))
        self._pending[key_id] = task
        return True

    async def _fetch(self, key_ids: list[KeyId]) -> None:
        backoff = _Backoff(self.config, self.clock)
        try:
            while not self._closed:
                self.counters.kms_calls += 1
                try:
                    keys = await self.source.dec_keys(self.peer, key_ids)
                except KeyUnavailable as e:
                    self.counters.kms_errors += 1
                    log.info("key manager unavailable for %s: %s", self.peer, e.message)
                    await backoff.wait()
                    continue
                except KeySourceError as e:
                    self.counters.kms_errors += 1
                    log.warning(
                        "%d key ids announced by %s not resolved (first %s): %s",
                        len(key_ids),
                        self.peer,
                        key_id_str(key_ids[0]),
                        e.message,
                    )
                    return
                if self.closed:
                    _wipe_all(keys)
                    return
                self.counters.keys_fetched += len(keys)
                for key in keys:
                    self._keys[key.key_id] = key
                return
        finally:
            for k in key_ids:
                self._pending.pop(k, None)

    async def take(self, key_id: KeyId) -> Key | None:
        """The key with this id, once; None if it was never announced or not resolved."""
        task = self._pending.get(key_id)
        if task is not None:
            self.counters.waits += 1
            await asyncio.wait({task})
        key = self._keys.pop(key_id, None)
        if key is not None:
            self.counters.keys_consumed += 1
            self.counters.bytes_consumed += key.size_bytes
        return key

    async def close(self) -> None:
        """Stop fetching and wipe every key held."""
        self._closed = True
        tasks = set(self._pending.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.counters.keys_discarded += len(self._keys)
        _wipe_all(self._keys.values())
        self._keys.clear()


def _wipe_all(keys: Iterable[Key]) -> None:
    for key in keys:
        key.wipe()
