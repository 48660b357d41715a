"""Signature verification of incoming transactions on the machine's other cores.

Checking signatures is most of what admitting a transaction costs (an Ed25519 check is
about 45 µs, an ML-DSA-65 one several times that), and on the event loop it competes with
consensus. `VerifyPool` runs the checks of a batch (an HTTP batch, or a slice of what a
peer forwarded) in `[node] verify_workers` processes, one task per chunk of transactions
so that pickling stays small beside the work, and puts the signatures that verified into
the node's `SignatureCache`. Admission then runs as always, on the event loop: it finds
those signatures checked and skips them. The pool never decides anything itself: a
signature it could not confirm (forged, malformed, or a chunk whose worker died twice) is
simply not cached, and admission checks it inline and refuses it as before. So the
decisions are the inline ones by construction.

A worker checks exactly as admission does: it decodes the transaction's canonical bytes
and calls `Transaction.verify_signature` with the sender's registered key.

A worker that dies (killed, out of memory) breaks the process pool: the pool is replaced
and the chunks that were in flight are verified again, once; what still has no answer is
left to the inline check. Workers are spawned (not forked from a process running an
event loop and threads), and `close` stops them and waits until they have exited.

`verify_workers` 0 means no pool: everything is checked inline, as it always was. The
default (None) is the machine's cores - 1, and 0 on two cores or fewer, where one worker
would compete with the event loop for the same cores; on a shared machine running several
validators the node cannot know better (`docs/BENCHMARKS.md` has the measurement).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from node.mempool import AccountView
from node.sigcache import SignatureCache
from qchain.config import NodeSection
from qchain.errors import QChainError
from qchain.types import Transaction, decode_transaction

log = logging.getLogger("qchain.node")

CHUNK_MIN = 32
"""Fewest transactions in one worker task (fewer: pickling outweighs the work)."""
CHUNK_MAX = 512
"""Most transactions in one worker task."""

Item = tuple[bytes, bytes]
"""A transaction's canonical bytes and the public key its signature must verify under."""


def verify_chunk(items: Sequence[Item]) -> list[bool]:
    """In a worker: whether each transaction's signature verifies, exactly as admission
    checks it."""
    out: list[bool] = []
    for raw, public_key in items:
        try:
            decode_transaction(raw).verify_signature(public_key)
        except QChainError:
            out.append(False)
        else:
            out.append(True)
    return out


def default_workers(cores: int | None = None) -> int:
    """The number of workers when the config names none: cores - 1, and 0 (inline) on a
    machine of two cores or fewer."""
    if cores is None:
        cores = len(os.sched_getaffinity(0))
    return cores - 1 if cores > 2 else 0


def verify_workers(cfg: NodeSection) -> int:
    """The workers a node configured with cfg runs: `verify_workers`, or the default."""
    return default_workers() if cfg.verify_workers is None else cfg.verify_workers


def chunks(items: Sequence[Item], workers: int) -> list[Sequence[Item]]:
    """items cut into one chunk per worker, each of CHUNK_MIN to CHUNK_MAX items."""
    size = max(CHUNK_MIN, min(CHUNK_MAX, -(-len(items) // max(1, workers))))
    return [items[i : i + size] for i in range(0, len(items), size)]


class VerifyPool:
    """`workers` processes that check signatures for a node's admission."""

    def __init__(
        self,
        workers: int,
        cache: SignatureCache,
        accounts: AccountView,
        task: Callable[[Sequence[Item]], list[bool]] = verify_chunk,
    ) -> None:
        """task: what a worker runs per chunk (`verify_chunk`; tests pass others)."""
        self.workers = workers
        self.cache = cache
        self.accounts = accounts
        self.task = task
        self._executor: ProcessPoolExecutor | None = None
        self._closed = False
        self.replaced = 0
        """Times a broken pool (a worker died) was replaced."""
        self.verified = 0
        """Signatures the workers confirmed."""

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn")
            )
        return self._executor

    def _items(self, txs: Sequence[Transaction]) -> list[tuple[Transaction, bytes]]:
        """The transactions worth checking off the loop: from a member whose registered
        key is of the transaction's scheme, not already in the cache."""
        out: list[tuple[Transaction, bytes]] = []
        for tx in txs:
            account = self.accounts.account(tx.sender)
            if account is None or account.scheme != tx.scheme:
                continue
            if not self.cache.known(tx, account.public_key):
                out.append((tx, account.public_key))
        return out

    async def prefetch(self, txs: Sequence[Transaction]) -> None:
        """Check txs' signatures in the workers and cache those that verify. Never
        raises for a transaction: what is not confirmed is left to the inline check."""
        if self.workers <= 0 or self._closed:
            return
        todo = self._items(txs)
        if not todo:
            return
        items = [(tx.encoded, key) for tx, key in todo]
        parts = chunks(items, self.workers)
        results = await asyncio.gather(*(self._run(part) for part in parts))
        ok = [r for part in results for r in part]
        for (tx, key), good in zip(todo, ok, strict=True):
            if good:
                self.cache.remember(tx, key)
                self.verified += 1

    async def _run(self, part: Sequence[Item]) -> list[bool]:
        """One chunk's results; after a broken pool, once more in a new one; all False
        (left to the inline check) when that fails too or the pool is closed."""
        for attempt in range(2):
            if self._closed:
                break
            executor = self._pool()
            try:
                future = asyncio.wrap_future(executor.submit(self.task, part))
                return await future
            except BrokenProcessPool:
                self._replace(executor)
                if attempt:
                    log.warning("a verify worker died twice on one chunk; checking it inline")
            except Exception:
                log.exception("a verify worker failed; checking its chunk inline")
                break
        return [False] * len(part)

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        """Drop a broken pool (the next chunk starts a new one)."""
        if self._executor is broken:
            self._executor = None
            self.replaced += 1
            log.warning("a verify worker died; replacing the pool")
        broken.shutdown(wait=False, cancel_futures=True)

    def worker_pids(self) -> list[int]:
        """The live workers' process ids (for tests and diagnostics)."""
        executor = self._executor
        processes = getattr(executor, "_processes", None) or {}
        return [p.pid for p in processes.values() if p.pid is not None]

    async def close(self) -> None:
        """Stop the workers and wait until they have exited."""
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
