"""A virtual-time asyncio event loop, and which simulated node owns each task and timer.

`VirtualLoop` is asyncio's selector loop with a selector that never waits: when nothing
is ready, asyncio asks it to wait until the next timer, and it moves virtual time there
instead. `loop.time()`, `asyncio.sleep`, timeouts and `qchain.clock` (through the loop's
`virtual_clock`) all read that time, so a run of many virtual seconds takes only the CPU
time of what happens in it. Nothing may wait on a real file descriptor or a thread (an
executor's result would never be noticed): the simulated network is in memory, and the
loop raises `Stalled` if it would have to wait for ever.

Each task and timer is tagged with the node whose code created it (a context variable
that the simulator sets while it starts a node), so a crash cancels everything of one
node and nothing else.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import random
import selectors
from collections.abc import Callable, Coroutine
from typing import Any

OWNER: contextvars.ContextVar[int | None] = contextvars.ContextVar("simnet_owner", default=None)
"""The simulated node whose code is running (None: the simulator itself)."""

EPOCH_S = 1_767_225_600.0
"""Virtual wall clock at virtual time 0 (2026-01-01 UTC): after any genesis time."""


class Stalled(RuntimeError):
    """Nothing is ready and no timer is set: the simulation would wait for ever."""


class _NoWaitSelector(selectors.BaseSelector):
    def __init__(self) -> None:
        self._map: dict[Any, selectors.SelectorKey] = {}
        self.clock: VirtualClockState | None = None

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = selectors.SelectorKey(fileobj, _fd(fileobj), events, data)
        self._map[fileobj] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._map.pop(fileobj)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise Stalled("nothing is ready and no timer is set")
        if timeout > 0 and self.clock is not None:
            self.clock.now += timeout
        return []

    def get_map(self) -> Any:
        return self._map

    def close(self) -> None:
        self._map.clear()


def _fd(fileobj: Any) -> int:
    return fileobj if isinstance(fileobj, int) else int(fileobj.fileno())


class VirtualClockState:
    """Virtual time, and the generators handed to the node code (`qchain.clock`)."""

    def __init__(self, seed: int) -> None:
        self.now = 0.0
        self.seed = seed
        self._made = 0

    def wall(self) -> float:
        return EPOCH_S + self.now

    def rng(self, label: str) -> random.Random:
        self._made += 1
        material = f"{self.seed}/{label}/{self._made}".encode()
        return random.Random(int.from_bytes(hashlib.sha256(material).digest()[:8], "big"))


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, seed: int) -> None:
        selector = _NoWaitSelector()
        super().__init__(selector)
        self.virtual_clock = VirtualClockState(seed)
        selector.clock = self.virtual_clock
        self.tasks: dict[int, dict[asyncio.Task[Any], int]] = {}
        """node -> its live tasks, each with its creation number (the order a crash
        cancels them in: names would not do, their counter is the process's)."""
        self._made = 0
        self.timers: dict[int, set[asyncio.TimerHandle]] = {}
        self.set_task_factory(self._make_task)  # type: ignore[arg-type]

    def time(self) -> float:
        return self.virtual_clock.now

    def _make_task(
        self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kw: Any
    ) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, **kw)
        context = kw.get("context")
        owner = context.run(OWNER.get) if context is not None else OWNER.get()
        if owner is not None:
            self._made += 1
            owned = self.tasks.setdefault(owner, {})
            owned[task] = self._made
            task.add_done_callback(lambda t: owned.pop(t, None))
        return task

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        handle = super().call_at(when, callback, *args, context=context)
        owner = context.run(OWNER.get) if context is not None else OWNER.get()
        if owner is not None:
            owned = self.timers.setdefault(owner, set())
            owned.add(handle)
            if len(owned) > 4096:
                owned.difference_update([h for h in owned if h.cancelled()])
        return handle

    def kill(self, owner: int) -> int:
        """Cancel every task and timer of one node (a crash); how many tasks."""
        tasks = self.tasks.pop(owner, {})
        for t in sorted(tasks, key=tasks.__getitem__):
            t.cancel()
        for h in self.timers.pop(owner, set()):
            h.cancel()
        return len(tasks)
