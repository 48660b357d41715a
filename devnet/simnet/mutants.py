"""Bugs the live fault kit found in the first wave, put back on demand (`--mutant NAME`)
to measure what the simulator finds. Each mutant patches the real code for one run and
restores it after; none is reachable outside the simulator.

- `no-resync`: after a reconnection the sender keeps the keys it had already announced,
  so a restarted receiver (which never fetched them) cannot read the link again
  (fixed in "QKD: after a reconnection the sender drops keys it already announced").
- `no-recover`: a receiver never looks up a key whose announcement was lost with a
  dropped or corrupted frame, so the link stalls on unknown keys (fixed in "receivers
  recover keys whose announcement was lost"). The later reset of a link whose frames
  keep failing on unknown keys also gets the link going again, so this mutant removes
  both, as the code was when the fault kit found the bug.
- `empty-spin`: a leader counts nonce gaps as transactions ready to propose and builds
  empty blocks as fast as it can (fixed in "a leader whose mempool holds only nonce gaps
  waits for the heartbeat").
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from node.mempool import Mempool
from node.transport_limits import DEFAULT_TRANSPORT_LIMITS
from qchain.qkd.frame import LinkSender
from qchain.qkd.pool import ReceiveKeyPool


def _no_resync(self: LinkSender) -> None:
    return None


def _no_recover(self: ReceiveKeyPool, key_id: Any) -> bool:
    return False


def _any_pending(self: Mempool) -> bool:
    return len(self) > 0


PATCHES: dict[str, tuple[tuple[Any, str, Any], ...]] = {
    "no-resync": ((LinkSender, "resync", _no_resync),),
    "no-recover": (
        (ReceiveKeyPool, "recover", _no_recover),
        (DEFAULT_TRANSPORT_LIMITS, "unknown_key_reset", 1 << 30),
    ),
    "empty-spin": ((Mempool, "has_ready", _any_pending),),
}
MUTANTS = tuple(PATCHES)


def _set(owner: Any, attr: str, value: Any) -> None:
    if isinstance(owner, type):
        setattr(owner, attr, value)
    else:  # a frozen dataclass instance (the transport's default limits)
        object.__setattr__(owner, attr, value)


@contextlib.contextmanager
def mutant(name: str | None) -> Iterator[None]:
    patches = PATCHES[name] if name is not None else ()
    originals = [(owner, attr, owner.__dict__[attr]) for owner, attr, _ in patches]
    for owner, attr, value in patches:
        _set(owner, attr, value)
    try:
        yield
    finally:
        for owner, attr, value in originals:
            _set(owner, attr, value)
