"""Which pending transactions expire at a height, without walking the pool."""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import Generic, TypeVar

T = TypeVar("T")

SLACK = 1024
"""Entries of departed transactions tolerated beyond twice the pool before a rebuild."""


class ExpiryIndex(Generic[T]):
    """(expiry height, hash) of pending transactions, as a heap. A transaction that left
    the pool keeps its entry until it comes up (skipped then) or until the entries
    outnumber twice the pool, when those of departed transactions are dropped. (A commit
    used to walk the whole pool for expired transactions: thousands of checks per block
    under load.)"""

    def __init__(self) -> None:
        self._heap: list[tuple[int, bytes]] = []

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, expiry_height: int, tx_hash: bytes) -> None:
        """A pending transaction that expires after `expiry_height` (0: never)."""
        if expiry_height:
            heapq.heappush(self._heap, (expiry_height, tx_hash))

    def due(self, height: int, pending: Mapping[bytes, T]) -> list[T]:
        """The transactions of `pending` (the pool, by hash) whose expiry height is at
        most `height`, each once."""
        out: dict[bytes, T] = {}
        heap = self._heap
        while heap and heap[0][0] <= height:
            h = heapq.heappop(heap)[1]
            p = pending.get(h)
            if p is not None:
                out[h] = p
        if len(heap) > 2 * len(pending) + SLACK:
            heap[:] = [e for e in heap if e[1] in pending]
            heapq.heapify(heap)
        return list(out.values())
