"""The commit batch of a height, written off the event loop (pipelined heights).

A decided block is executed on the event loop; its commit batch (block, receipts, state,
indexes: one synced LevelDB write) then goes to one writer thread, while the loop starts
the next height (CONSENSUS.md §3.3, Revision 1.13). `CommitWriter` holds at most one batch
in flight and runs its continuation (`on_durable`: everything that announces the height)
on the loop once the write returned: nothing of the height is announced before it is
durable.

`wait` is the commit barrier (§2.6): it blocks until the batch in flight is durable and
runs its continuation at once. The driver calls it before a durable batch that records a
decision or deletes a record (`consensus.driver.waits_for_commit`), the committer before
the next commit (batches reach the disk in height order), the node before it closes the
store.

A store that cannot take a write from another thread while the loop reads it (the
in-memory store; `KVStore.concurrent_writes` false) is written inline: the batch is durable
when `write` returns, as before heights were pipelined. A store of the whole-network
simulator, which runs every node on one virtual-time loop and no thread, states a write
latency instead (`KVStore.write_latency_s`): the batch is applied that much later on the
loop, or at once at the barrier, and a crash in between loses it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable

from qchain.errors import QChainError
from qchain.store.kv import Batch, KVStore

log = logging.getLogger("qchain.node")


class CommitWriter:
    """Commit batches, one in flight at a time, written in the order they are given."""

    def __init__(self, store: KVStore, fail: Callable[[str], None]) -> None:
        """fail: halts the node (a commit batch that cannot be written is fatal)."""
        self.store = store
        self.fail = fail
        self._pool = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="qchain-commit")
            if store.concurrent_writes
            else None
        )
        self._inflight: concurrent.futures.Future[None] | None = None
        self._height = 0
        self._on_durable: Callable[[], None] | None = None
        self._later: tuple[Batch, asyncio.TimerHandle] | None = None
        """A batch applied on the loop after the store's write latency, and its timer."""

    @property
    def in_flight(self) -> int | None:
        """The height whose batch is being written, if any."""
        return self._height if self._inflight is not None else None

    def write(self, height: int, batch: Batch, on_durable: Callable[[], None]) -> None:
        """Write the commit batch of height; call on_durable on the loop once it is
        durable (at once for an inline store)."""
        self.wait()
        latency = self.store.write_latency_s
        if self._pool is None and latency is None:
            self.store.write(batch, sync=True)
            on_durable()
            return
        loop = asyncio.get_running_loop()
        if self._pool is None:
            fut: concurrent.futures.Future[None] = concurrent.futures.Future()
            self._later = (batch, loop.call_later(latency or 0.0, self._apply, fut, batch))
        else:
            fut = self._pool.submit(self._write_synced, batch)
            fut.add_done_callback(lambda f: loop.call_soon_threadsafe(self._settle, f))
        self._inflight, self._height, self._on_durable = fut, height, on_durable

    def wait(self) -> None:
        """The commit barrier: block until the batch in flight is durable, then run its
        continuation."""
        fut = self._inflight
        if fut is None:
            return
        if self._later is not None:
            batch, handle = self._later
            handle.cancel()
            self._apply(fut, batch)
            return
        concurrent.futures.wait([fut])
        self._settle(fut)

    def close(self) -> None:
        """Let the batch in flight reach the disk (its continuation does not run: the
        node is stopping), and stop the writer thread."""
        fut, self._inflight, self._on_durable = self._inflight, None, None
        if fut is not None and self._later is not None:
            batch, handle = self._later
            handle.cancel()
            self._later = None
            self._write_into(fut, batch)
        if fut is not None:
            concurrent.futures.wait([fut])
            if fut.exception() is not None:
                log.error("commit batch of height %d failed: %s", self._height, fut.exception())
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _write_synced(self, batch: Batch) -> None:
        self.store.write(batch, sync=True)

    def _write_into(self, fut: concurrent.futures.Future[None], batch: Batch) -> None:
        try:
            self.store.write(batch, sync=True)
        except QChainError as e:
            fut.set_exception(e)
            return
        fut.set_result(None)

    def _apply(self, fut: concurrent.futures.Future[None], batch: Batch) -> None:
        """A batch of a store with a write latency: applied now, on the loop."""
        if self._later is None or fut.done():
            return
        self._later = None
        self._write_into(fut, batch)
        self._settle(fut)

    def _settle(self, fut: concurrent.futures.Future[None]) -> None:
        """The batch of fut returned: run its continuation once (the barrier or the
        loop's callback, whichever comes first)."""
        if self._inflight is not fut:
            return
        on_durable, self._inflight, self._on_durable = self._on_durable, None, None
        err = fut.exception()
        if err is not None:
            detail = err.message if isinstance(err, QChainError) else repr(err)
            self.fail(f"commit batch of height {self._height} failed: {detail}")
            return
        if on_durable is not None:
            on_durable()
