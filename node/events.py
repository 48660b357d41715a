"""The node's event bus: what `/v1/events` streams to partners as server-sent events.

The runtime publishes one `block` event per committed block and one `tx` event per
transaction result, in commit order. Every event gets the next id (ids increase by one,
never repeat within a run), and the last `capacity` events are kept in a ring buffer, so a
client that reconnects with `Last-Event-ID` gets what it missed if it is still kept. A
client can tell it missed events that were no longer kept: the first id it receives is not
its last id plus one.

Publishing never waits. Each subscriber has a bounded queue (by default room for more
than a full block's events: a block holds at most 10,000 transactions); a subscriber that
falls `queue_size` events behind is dropped (its stream ends) instead of slowing the node down,
and it resumes by reconnecting with its last id.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from node.service import ChainEvent
from qchain.jsonform import receipt_outcome_to_json
from qchain.types import Block, Receipt


class _Subscriber:
    """One open stream: a bounded queue, and a flag set when it must end."""

    def __init__(self, queue_size: int) -> None:
        self.queue: asyncio.Queue[ChainEvent | None] = asyncio.Queue(queue_size)
        self.dropped = False


class EventBus:
    """In-memory publish/subscribe of `ChainEvent`s with a bounded replay buffer."""

    def __init__(self, capacity: int = 16_384, queue_size: int = 16_384, first_id: int = 1) -> None:
        if capacity < 1 or queue_size < 1 or first_id < 1:
            raise ValueError("capacity, queue_size and first_id must be positive")
        self._ring: deque[ChainEvent] = deque(maxlen=capacity)
        self._queue_size = queue_size
        self._next_id = first_id
        self._subscribers: set[_Subscriber] = set()
        self._closed = False
        self.dropped_subscribers = 0
        """How many subscribers were dropped for falling behind (for metrics)."""

    @property
    def last_id(self) -> int:
        """Id of the last published event (first_id − 1 before any)."""
        return self._next_id - 1

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def publish(self, kind: Literal["block", "tx"], data: Mapping[str, Any]) -> ChainEvent:
        """Append an event and hand it to every subscriber without waiting."""
        event = ChainEvent(self._next_id, kind, data)
        self._next_id += 1
        self._ring.append(event)
        for sub in list(self._subscribers):
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                self._drop(sub)
        return event

    def publish_commit(self, block: Block, receipts: Sequence[Receipt]) -> list[ChainEvent]:
        """The events of one committed block: the block, then each transaction result."""
        events = [self.publish("block", block_event_data(block))]
        events.extend(self.publish("tx", tx_event_data(r)) for r in receipts)
        return events

    def _drop(self, sub: _Subscriber) -> None:
        sub.dropped = True
        self._subscribers.discard(sub)
        self.dropped_subscribers += 1
        # Make room for the end marker so a waiting reader wakes up at once.
        while not sub.queue.empty():
            sub.queue.get_nowait()
        sub.queue.put_nowait(None)

    def close(self) -> None:
        """End every stream (node shutdown); later subscriptions end at once."""
        self._closed = True
        for sub in list(self._subscribers):
            self._subscribers.discard(sub)
            while not sub.queue.empty():
                sub.queue.get_nowait()
            sub.queue.put_nowait(None)

    def subscribe(self, last_event_id: int | None = None) -> Subscription:
        """Kept events with ids above last_event_id (none if None), then live ones.
        The subscription is registered when this is called, so no event published
        afterwards is missed, even before the first `__anext__`.
        """
        backlog = [] if last_event_id is None else [e for e in self._ring if e.id > last_event_id]
        sub = _Subscriber(self._queue_size)
        if self._closed:
            sub.queue.put_nowait(None)
        else:
            self._subscribers.add(sub)
        return Subscription(self, sub, backlog)


class Subscription:
    """One subscriber's stream of events: an async iterator, plus `ready()` to take
    what is already queued without waiting (a streaming response writes a committed
    block's events in one write instead of one per event)."""

    def __init__(self, bus: EventBus, sub: _Subscriber, backlog: list[ChainEvent]) -> None:
        self._bus = bus
        self._sub = sub
        self._backlog = deque(backlog)
        self._last = backlog[-1].id if backlog else 0
        self._ended = False

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> ChainEvent:
        while True:
            if self._backlog:
                return self._backlog.popleft()
            if self._ended:
                raise StopAsyncIteration
            item = await self._sub.queue.get()
            if self._accept(item):
                assert item is not None
                return item

    def _accept(self, item: ChainEvent | None) -> bool:
        if item is None:
            self._end()
            return False
        return item.id > self._last

    def ready(self, limit: int = 4096) -> list[ChainEvent]:
        """Events available now, at most limit, without waiting."""
        out: list[ChainEvent] = []
        while self._backlog and len(out) < limit:
            out.append(self._backlog.popleft())
        while not self._ended and len(out) < limit and not self._sub.queue.empty():
            item = self._sub.queue.get_nowait()
            if self._accept(item):
                assert item is not None
                out.append(item)
        return out

    def _end(self) -> None:
        self._ended = True
        self._bus._subscribers.discard(self._sub)

    async def aclose(self) -> None:
        """Stop receiving (the bus forgets this subscriber)."""
        self._backlog.clear()
        self._end()


def block_event_data(block: Block) -> dict[str, Any]:
    """Data of a `block` event: a summary, the full block is at /v1/blocks/{height}."""
    h = block.header
    return {
        "height": h.height,
        "hash": block.hash.hex(),
        "round": h.round,
        "time": h.time,
        "proposer": h.proposer,
        "tx_count": len(block.txs),
        "app_hash": h.app_hash.hex(),
    }


def tx_event_data(receipt: Receipt) -> dict[str, Any]:
    """Data of a `tx` event: the transaction's result as committed."""
    return receipt_outcome_to_json(receipt)
