"""Clocks for the key layer: the real one and a virtual one for tests and simulation.

Everything in `qchain.qkd` that needs time (key generation rates, delivery latency,
retry backoff) takes a `Clock`, so tests run on `VirtualClock` and never sleep. A
virtual clock moves only when told: `advance(dt)` moves it by hand and wakes the
sleepers whose deadline passed; with `auto_advance=True`, `sleep(dt)` moves the clock
itself (time passes only while someone waits), which suits the deterministic simulator.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Protocol

from qchain.clock import monotonic


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale."""

    async def sleep(self, seconds: float) -> None:
        """Wait until `now()` has moved by at least `seconds`."""


class SystemClock:
    """The running loop's clock (`time.monotonic` on asyncio's own loop, virtual time in
    the simulator) and `asyncio.sleep`."""

    def now(self) -> float:
        return monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class VirtualClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 0.0, *, auto_advance: bool = False) -> None:
        self._now = start
        self.auto_advance = auto_advance
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward and wake every sleeper whose deadline has passed."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        if self.auto_advance:
            self.advance(seconds)
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), fut))
        await fut
