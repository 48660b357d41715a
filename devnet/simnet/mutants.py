"""Bugs the live fault kit found in the first wave, put back on demand (`--mutant NAME`)
to measure what the simulator finds. Each mutant patches the real code for one run and
restores it after; none is reachable outside the simulator.

- `no-resync`: after a reconnection the sender keeps the keys it had already announced,
  so a restarted receiver (which never fetched them) cannot read the link again
  (fixed in "QKD: after a reconnection the sender drops keys it already announced").
- `no-recover`: a receiver never looks up a key whose announcement was lost with a
  dropped or corrupted frame, so the link stalls on unknown keys.
- `empty-spin`: a leader counts nonce gaps as transactions ready to propose and builds
  empty blocks as fast as it can (fixed in "a leader whose mempool holds only nonce gaps
  waits for the heartbeat").
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from node.mempool import Mempool
from qchain.qkd.frame import LinkSender
from qchain.qkd.pool import ReceiveKeyPool


def _no_resync(self: LinkSender) -> None:
    return None


def _no_recover(self: ReceiveKeyPool, key_id: Any) -> bool:
    return False


def _any_pending(self: Mempool) -> bool:
    return len(self) > 0


PATCHES: dict[str, tuple[Any, str, Callable[..., Any]]] = {
    "no-resync": (LinkSender, "resync", _no_resync),
    "no-recover": (ReceiveKeyPool, "recover", _no_recover),
    "empty-spin": (Mempool, "has_ready", _any_pending),
}
MUTANTS = tuple(PATCHES)


@contextlib.contextmanager
def mutant(name: str | None) -> Iterator[None]:
    if name is None:
        yield
        return
    owner, attr, replacement = PATCHES[name]
    original = owner.__dict__[attr]
    setattr(owner, attr, replacement)
    try:
        yield
    finally:
        setattr(owner, attr, original)
