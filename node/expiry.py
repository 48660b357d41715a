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
    outnumber twice the pool, when they are rebuilt from it. (A commit used to walk the
    whole pool for expired transactions: thousands of checks per block under load.)"""

    def __init__(self) -> None:
        self._heap: list[tuple[int, bytes]] = []
        self._expiry: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, expiry_height: int, tx_hash: bytes) -> None:
        """A pending transaction that expires after `expiry_height` (0: never)."""
        if expiry_height:
            heapq.heappush(self._heap, (expiry_height, tx_hash))
            self._expiry[tx_hash] = expiry_height

    def due(self, height: int, pending: Mapping[bytes, T]) -> list[T]:
        """The transactions of `pending` (the pool, by hash) whose expiry height is at
        most `height`, each once."""
        out: dict[bytes, T] = {}
        heap = self._heap
        while heap and heap[0][0] <= height:
            h = heapq.heappop(heap)[1]
            self._expiry.pop(h, None)
            p = pending.get(h)
            if p is not None:
                out[h] = p
        if len(heap) > 2 * len(pending) + SLACK:
            self._expiry = {h: e for h, e in self._expiry.items() if h in pending}
            heap[:] = [(e, h) for h, e in self._expiry.items()]
            heapq.heapify(heap)
        return list(out.values())
