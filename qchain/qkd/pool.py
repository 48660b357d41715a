"""Key pools: one per directed link, so that sending a frame never waits on the key
manager in steady state.

`SendKeyPool` (me -> peer) holds keys taken with `enc_keys`, in batches. It reads the
link's `status` before its first fetch, after every failed call and every
`status_every` seconds, and sizes everything from it: a batch is
`min(batch_size, max_key_per_request, max_key_count)` keys (fewer right after a failure
when the status says fewer are stored), the low-water mark is at most one batch, and a
link that cannot give the 256-bit keys frames need is a configuration error. When fewer
than the low-water mark remain it fetches the next batch in the background. If it runs
dry, `take` waits (back-pressure, counted in `counters.waits` and `counters.wait_ms`)
until keys come; nothing is ever handed out twice and a key is never replaced by "no
key".

No answer of the key manager closes a link. `qchain.qkd.errors.classify` sorts each
failure: a transient one (no keys yet, 404/409/429/5xx, timeout, a short batch, ...) is
retried with capped, jittered exponential backoff, and the keys that did arrive are
used; a configuration error (401, TLS) is retried every `config_retry` seconds and
logged at ERROR once per change. `LinkHealth` (in `stats`) says whether the link is
`ok`, `degraded` or in `config-error`, since when, and what the last error was; the
pool goes back to `ok` as soon as keys come again.

Each batch remembers whether its ids were announced to the peer: `take` returns, with
the key, the ids the sender must announce in that frame (see `qchain.qkd.frame` for
the protocol), and `resync` drops the announced keys after a reconnection (the peer may
have restarted and can no longer resolve them).

`ReceiveKeyPool` (peer -> me) resolves announced ids with one `dec_keys` call per
announced batch and holds the keys until their frame arrives; `take(key_id)` hands a
key out once, waiting (counted) only if its fetch is still running. A lookup that fails
transiently (the key has not reached this site's key manager yet, answered 400 or 404)
is retried with backoff for at most `resolve_for` seconds before the ids count as
unknown. Ids that anyone could have named (a frame not verified yet: the first frame of
a link, or `recover` after a lost announcement) are retried for `resolve_unverified_for`
only, and each retry spends the same per-link budget as a `recover` lookup, so a forger
still cannot make us call the key manager more than `RECOVER_PER_S` times a second
after the burst, nor hold a frame for long.

Both pools wipe every key they drop and count keys and bytes per link.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import asdict, dataclass

from qchain.clock import new_rng
from qchain.qkd.clock import Clock, SystemClock
from qchain.qkd.errors import (
    ErrorClass,
    KeyConfigError,
    KeySourceError,
    KeyUnavailable,
    LinkClosed,
    classify,
)
from qchain.qkd.source import MAC_KEY_BITS, Key, KeyId, KeySource, LinkStatus, key_id_str
from qchain.ratelimit import TokenBuckets

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
    """First backoff, in seconds, after a transient error; doubles up to retry_max, and
    each wait is drawn from [half, all] of it (jitter)."""
    retry_max: float = 2.0
    config_retry: float = 30.0
    """Seconds between tries while the key manager reports a configuration error."""
    status_every: float = 60.0
    """The send pool re-reads the link's status at least this often."""
    resolve_for: float = 5.0
    """How long the receive pool retries a transient `dec_keys` failure before the ids
    count as unknown (covers a relay delay between the two sites' key managers)."""
    resolve_unverified_for: float = 1.0
    """The same for ids named by a frame not yet verified (the first frame of a link, a
    lost announcement): anyone can name those, so they are retried only briefly."""

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be in [1, {MAX_BATCH}]")
        if not 1 <= self.low_water <= self.batch_size:
            raise ValueError("low_water must be in [1, batch_size]")
        if self.key_bits != MAC_KEY_BITS:
            raise ValueError(f"frames need {MAC_KEY_BITS}-bit keys")
        if not 0 < self.retry_initial <= self.retry_max:
            raise ValueError("need 0 < retry_initial <= retry_max")
        if self.config_retry <= 0 or self.status_every <= 0:
            raise ValueError("config_retry and status_every must be > 0")
        if self.resolve_for < 0 or self.resolve_unverified_for < 0:
            raise ValueError("resolve_for and resolve_unverified_for must be >= 0")


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
    wait_ms: int = 0
    """Milliseconds frames spent waiting for keys, summed."""
    short_batches: int = 0
    """Answers with fewer keys than asked for (the keys that came were used)."""
    recovered: int = 0
    """Keys looked up one by one because their announcement was lost."""


@dataclass
class LinkHealth:
    """Why a directed link has or lacks keys, for `/v1/qkd` and the logs."""

    state: str = "ok"
    """"ok", "degraded" (transient errors, retrying with backoff) or "config-error"."""
    error_class: str | None = None
    """The class (`ErrorClass`) of the last error, kept after the link recovers."""
    http_status: int | None = None
    message: str | None = None
    since: float | None = None
    """Clock time of the first error of the current run of errors (None when ok)."""
    last_error_at: float | None = None
    errors_in_row: int = 0
    retry_in: float | None = None
    """The backoff chosen after the last error, in seconds."""
    key_size: int | None = None
    """From the last status read (bits); the send pool only."""
    max_key_per_request: int | None = None
    max_key_count: int | None = None
    stored_key_count: int | None = None
    bits_per_second: int | None = None
    """The link's key rate, when the key manager reports it (qchain's does)."""
    batch_size: int | None = None
    """The batch and low-water mark in force, derived from the status."""
    low_water: int | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class _Tracker:
    """The health record and backoff of one pool: what happened, what to wait next."""

    def __init__(
        self, peer: str, direction: str, config: PoolConfig, clock: Clock, rng: random.Random
    ) -> None:
        self.peer = peer
        self.direction = direction
        self.config = config
        self.clock = clock
        self.rng = rng
        self.health = LinkHealth()
        self._delay = config.retry_initial
        self._logged: tuple[str, int | None, str] | None = None

    def failed(self, error: KeySourceError) -> float:
        """Record an error; the seconds to wait before the next try."""
        cls = classify(error)
        h = self.health
        now = self.clock.now()
        if h.since is None:
            h.since = now
        h.state = "config-error" if cls is ErrorClass.CONFIG else "degraded"
        h.error_class = cls.value
        h.http_status = error.http_status
        h.message = error.message
        h.last_error_at = now
        h.errors_in_row += 1
        if cls is ErrorClass.CONFIG:
            delay = self.config.config_retry
        else:
            delay = self._delay * (0.5 + self.rng.random() / 2)
            self._delay = min(self.config.retry_max, self._delay * 2)
        h.retry_in = delay
        what = (cls.value, error.http_status, type(error).__name__)
        if cls is ErrorClass.CONFIG and what != self._logged:
            log.error(
                "key manager configuration error on %s %s (HTTP %s): %s; retrying every %.0fs",
                self.direction,
                self.peer,
                error.http_status,
                error.message,
                delay,
            )
        else:
            log.info(
                "key manager %s error on %s %s (HTTP %s): %s; retry in %.2fs",
                cls.value,
                self.direction,
                self.peer,
                error.http_status,
                error.message,
                delay,
            )
        self._logged = what
        return delay

    def succeeded(self) -> None:
        """Keys came: the link is healthy again; the last error stays visible."""
        h = self.health
        if h.state != "ok" and h.since is not None:
            log.info(
                "keys %s %s again after %.1fs of %s errors",
                self.direction,
                self.peer,
                self.clock.now() - h.since,
                h.error_class,
            )
        h.state = "ok"
        h.since = None
        h.errors_in_row = 0
        h.retry_in = None
        self._delay = self.config.retry_initial
        self._logged = None


class _Batch:
    __slots__ = ("announced", "keys")

    def __init__(self, keys: Sequence[Key]) -> None:
        self.keys: deque[Key] = deque(keys)
        self.announced = False


class _LinkPool:
    """What both pools share: the key source, the peer, the link's health and backoff,
    the counters, and counting and wiping the keys they hand out or drop."""

    def __init__(
        self,
        source: KeySource,
        peer: str,
        direction: str,
        config: PoolConfig | None,
        clock: Clock | None,
        rng: random.Random | None,
    ) -> None:
        self.source = source
        self.peer = peer
        self.config = config or PoolConfig()
        self.clock: Clock = clock or SystemClock()
        self.counters = PoolCounters()
        self._tracker = _Tracker(
            peer, direction, self.config, self.clock, rng or new_rng(f"pool-{direction}-{peer}")
        )
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def health(self) -> LinkHealth:
        return self._tracker.health

    def _consumed(self, key: Key) -> None:
        self.counters.keys_consumed += 1
        self.counters.bytes_consumed += key.size_bytes

    def _discard(self, keys: Collection[Key]) -> None:
        """Wipe keys dropped unused, and count them."""
        self.counters.keys_discarded += len(keys)
        _wipe_all(keys)


class SendKeyPool(_LinkPool):
    """Keys for frames me -> peer."""

    def __init__(
        self,
        source: KeySource,
        peer: str,
        config: PoolConfig | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(source, peer, "to", config, clock, rng)
        self._batch_size = self.config.batch_size
        self._low_water = self.config.low_water
        self._ask = self._batch_size
        self._status_at: float | None = None
        self._batches: deque[_Batch] = deque()
        self._changed = asyncio.Event()
        self._refill: asyncio.Task[None] | None = None

    @property
    def batch_size(self) -> int:
        """Keys asked for per call, as derived from the link's status."""
        return self._batch_size

    @property
    def low_water(self) -> int:
        return self._low_water

    @property
    def level(self) -> int:
        """Keys in hand."""
        return sum(len(b.keys) for b in self._batches)

    def start(self) -> None:
        """Begin fetching the first batch (call from a running event loop)."""
        self._maybe_refill()

    def _maybe_refill(self) -> None:
        if self._closed:
            return
        if self._refill is None and self.level < self._low_water:
            self._refill = asyncio.get_running_loop().create_task(self._refill_loop())

    async def _read_status(self) -> None:
        """Size batches and the low-water mark from the link's status."""
        self.counters.kms_calls += 1
        status = await self.source.status(self.peer)
        self._status_at = self.clock.now()
        self._apply_status(status)

    def _apply_status(self, status: LinkStatus) -> None:
        bits = self.config.key_bits
        if not status.min_key_size <= bits <= status.max_key_size:
            raise KeyConfigError(
                f"link to {self.peer} gives keys of {status.min_key_size}.."
                f"{status.max_key_size} bits; frames need {bits}-bit keys"
            )
        cap = min(self.config.batch_size, status.max_key_per_request, status.max_key_count)
        self._batch_size = max(1, cap)
        self._low_water = min(self.config.low_water, self._batch_size)
        stored = status.stored_key_count * status.key_size // bits
        self._ask = min(self._batch_size, stored) if stored > 0 else self._batch_size
        h = self.health
        h.key_size = status.key_size
        h.max_key_per_request = status.max_key_per_request
        h.max_key_count = status.max_key_count
        h.stored_key_count = status.stored_key_count
        h.bits_per_second = status.bits_per_second
        h.batch_size = self._batch_size
        h.low_water = self._low_water

    def _status_due(self) -> bool:
        at = self._status_at
        return at is None or self.clock.now() - at >= self.config.status_every

    async def _refill_loop(self) -> None:
        try:
            while not self._closed and self.level < self._low_water:
                try:
                    if self._status_due():
                        await self._read_status()
                    asked = self._ask
                    self.counters.kms_calls += 1
                    keys = await self.source.enc_keys(self.peer, asked, self.config.key_bits)
                except KeySourceError as e:
                    await self._failed(e)
                    continue
                if self.closed:
                    _wipe_all(keys)
                    break
                if keys:
                    self._batches.append(_Batch(keys))
                    self.counters.keys_fetched += len(keys)
                    self._changed.set()
                if len(keys) < asked:
                    self.counters.short_batches += 1
                    await self._failed(KeyUnavailable(f"asked for {asked} keys, got {len(keys)}"))
                    continue
                self._ask = self._batch_size
                self._tracker.succeeded()
        finally:
            self._refill = None
            self._changed.set()

    async def _failed(self, error: KeySourceError) -> None:
        """Count and log an error, make the next round re-read the status, back off."""
        self.counters.kms_errors += 1
        self._status_at = None
        await self.clock.sleep(self._tracker.failed(error))

    async def take(self) -> tuple[Key, tuple[KeyId, ...]]:
        """The next key, and the key ids this frame must announce. Waits as long as the
        pool is empty (the key manager's errors only delay it); raises `LinkClosed` if
        the pool is closed."""
        if not self._batches:
            self.counters.waits += 1
            started = self.clock.now()
            while not self._batches:
                if self._closed:
                    raise LinkClosed(f"key pool toward {self.peer} is closed")
                self._maybe_refill()
                self._changed.clear()
                await self._changed.wait()
            self.counters.wait_ms += int((self.clock.now() - started) * 1000)
        announce: list[KeyId] = []
        for batch in self._batches:
            if not batch.announced:
                announce.extend(k.key_id for k in batch.keys)
                batch.announced = True
        first = self._batches[0]
        key = first.keys.popleft()
        if not first.keys:
            self._batches.popleft()
        self._consumed(key)
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
                self._discard(batch.keys)
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
            self._discard(batch.keys)
        self._batches.clear()
        self._changed.set()


class ReceiveKeyPool(_LinkPool):
    """Keys for frames peer -> me, resolved by the ids the peer announced."""

    def __init__(
        self,
        source: KeySource,
        peer: str,
        config: PoolConfig | None = None,
        clock: Clock | None = None,
        *,
        max_held: int = 4 * MAX_BATCH,
        rng: random.Random | None = None,
        batch_size: Callable[[], int] | None = None,
    ) -> None:
        """`batch_size`, when given, tells the most ids to ask for per call (the link's
        `max_key_per_request`, as the send pool toward the same peer read it)."""
        super().__init__(source, peer, "from", config, clock, rng)
        self.max_held = max_held
        self._batch_size = batch_size or (lambda: self.config.batch_size)
        self._keys: dict[KeyId, Key] = {}
        self._pending: dict[KeyId, asyncio.Task[None]] = {}
        self._recover_budget = TokenBuckets[None](RECOVER_PER_S, RECOVER_BURST, self.clock.now)

    @property
    def level(self) -> int:
        """Keys resolved and not yet used."""
        return len(self._keys)

    def knows(self, key_id: KeyId) -> bool:
        """Whether the key is resolved or being fetched."""
        return key_id in self._keys or key_id in self._pending

    def announce(self, key_ids: Sequence[KeyId], *, verified: bool = True) -> None:
        """Start fetching the announced ids not yet known, one call per batch. Ids beyond
        `max_held` keys are ignored (an honest peer never announces that far ahead).
        `verified=False` for ids from a frame whose tag is not checked yet: their
        lookups are retried for `resolve_unverified_for` only, within the recovery
        budget."""
        if self._closed:
            return
        room = self.max_held - len(self._keys) - len(self._pending)
        new = list(dict.fromkeys(k for k in key_ids if not self.knows(k)))[: max(0, room)]
        step = max(1, min(self.config.batch_size, self._batch_size()))
        loop = asyncio.get_running_loop()
        for i in range(0, len(new), step):
            chunk = new[i : i + step]
            task = loop.create_task(self._fetch(chunk, verified=verified))
            for k in chunk:
                self._pending[k] = task

    def keep_only(self, key_ids: Sequence[KeyId]) -> None:
        """Wipe and drop every key held that is not in `key_ids`: the peer announced
        afresh in a verified frame and will never use the others (`qchain.qkd.frame`).
        Fetches under way are left to finish."""
        keep = set(key_ids)
        gone = [k for k in self._keys if k not in keep]
        self._discard([self._keys.pop(k) for k in gone])

    def recover(self, key_id: KeyId) -> bool:
        """Fetch one key whose announcement never arrived (the frame that carried it was
        lost or corrupted on the way). Rate-limited per link, since a forger can name any
        id: at most `RECOVER_PER_S` lookups a second after a burst of `RECOVER_BURST`.
        Returns False, fetching nothing, when the budget is spent."""
        if self._closed or self.knows(key_id):
            return not self._closed
        if not self._spend_recover_token():
            return False
        self.counters.recovered += 1
        task = asyncio.get_running_loop().create_task(self._fetch([key_id], verified=False))
        self._pending[key_id] = task
        return True

    def _spend_recover_token(self) -> bool:
        return self._recover_budget.take(None) == 1

    async def _fetch(self, key_ids: list[KeyId], *, verified: bool) -> None:
        """Resolve `key_ids`, retrying transient failures for `resolve_for` seconds (ids
        not from a verified frame: `resolve_unverified_for`, and only while the recovery
        budget lasts)."""
        cfg = self.config
        deadline = self.clock.now() + (cfg.resolve_for if verified else cfg.resolve_unverified_for)
        missing = list(key_ids)
        try:
            while not self._closed and missing:
                self.counters.kms_calls += 1
                try:
                    keys = await self.source.dec_keys(self.peer, missing)
                except KeySourceError as e:
                    error: KeySourceError = e
                else:
                    if self.closed:
                        _wipe_all(keys)
                        return
                    self.counters.keys_fetched += len(keys)
                    for key in keys:
                        self._keys[key.key_id] = key
                    got = {k.key_id for k in keys}
                    asked = len(missing)
                    missing = [k for k in missing if k not in got]
                    if not missing:
                        self._tracker.succeeded()
                        return
                    self.counters.short_batches += 1
                    error = KeyUnavailable(f"asked for {asked} keys, got {len(keys)}")
                self.counters.kms_errors += 1
                delay = self._tracker.failed(error)
                if (
                    classify(error) is ErrorClass.CONFIG
                    or self.clock.now() + delay > deadline
                    or (not verified and not self._spend_recover_token())
                ):
                    log.warning(
                        "%d key ids announced by %s not resolved (first %s): %s",
                        len(missing),
                        self.peer,
                        key_id_str(missing[0]),
                        error.message,
                    )
                    return
                await self.clock.sleep(delay)
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
            self._consumed(key)
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
        self._discard(self._keys.values())
        self._keys.clear()


def _wipe_all(keys: Iterable[Key]) -> None:
    for key in keys:
        key.wipe()
