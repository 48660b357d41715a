"""The node's time and randomness, read through the running event loop.

Every read of the clock in the validator goes through this module, so one process can
run validators on asyncio's own loop (production: these are `time.monotonic`,
`time.time`, `time.perf_counter` and an OS-seeded `random.Random`) or on the whole-network
simulator's virtual-time loop (`devnet.simnet.loop`), where they are virtual time, a
virtual epoch, zero-cost work and generators derived from the run's seed.

A loop is virtual when it has a `virtual_clock` attribute (a `VirtualLoopClock`): the
simulator's loop does, asyncio's does not. `tests/test_architecture.py` checks that
nothing in `node/` reads the wall clock or makes an unseeded generator except here.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Protocol


class VirtualLoopClock(Protocol):
    def wall(self) -> float:
        """Seconds since the Unix epoch, in virtual time."""

    def rng(self, label: str) -> random.Random:
        """A generator derived from the run's seed and `label` (and how many were made)."""


def _virtual() -> VirtualLoopClock | None:
    loop = asyncio._get_running_loop()
    return getattr(loop, "virtual_clock", None) if loop is not None else None


def monotonic() -> float:
    """Seconds on a monotonic scale: the running loop's `time()` (which is
    `time.monotonic()` on asyncio's own loop), or `time.monotonic()` outside a loop."""
    loop = asyncio._get_running_loop()
    return loop.time() if loop is not None else time.monotonic()


def wall() -> float:
    """Seconds since the Unix epoch."""
    v = _virtual()
    return v.wall() if v is not None else time.time()


def wall_ms() -> int:
    return int(wall() * 1000)


def perf() -> float:
    """A high-resolution clock for measuring work; in a simulation work takes no time,
    so measured costs are zero and every decision built on them is a function of the
    seed."""
    v = _virtual()
    return monotonic() if v is not None else time.perf_counter()


def new_rng(label: str) -> random.Random:
    """A generator for jitter and random choices: OS-seeded, or seeded by the simulation."""
    v = _virtual()
    return v.rng(label) if v is not None else random.Random()
