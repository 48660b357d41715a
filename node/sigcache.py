"""The node's signature verifier for block execution: a bounded memo of the signatures
that verified, shared by mempool admission and block execution so a transaction checked
on admission is not checked again, and a running measure of what one check costs here.

Contracts take any `contracts.execution.Verifier`; this one is the node's, since it reads
the clock to time the checks it makes.
"""

from __future__ import annotations

from collections import OrderedDict

from qchain import clock
from qchain.types import Transaction


class SignatureCache:
    """A bounded memo of signatures that verified, keyed by transaction hash and key.
    Only successes are remembered, so using it never changes a result."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._ok: OrderedDict[tuple[bytes, bytes], None] = OrderedDict()
        self.verify_s = 0.0
        """Moving average of the seconds one signature check takes on this machine (0
        until the first): a proposer uses it to price the checks its peers still have to
        make when they validate its block."""

    def known(self, tx: Transaction, public_key: bytes) -> bool:
        """Whether tx's signature under public_key is remembered as verified."""
        return (tx.hash, public_key) in self._ok

    def remember(self, tx: Transaction, public_key: bytes) -> None:
        """Record that tx's signature verified under public_key, checked elsewhere with
        the same code (`node.verifypool` workers); the timing is not touched."""
        self._ok[(tx.hash, public_key)] = None
        if len(self._ok) > self.capacity:
            self._ok.popitem(last=False)

    def __call__(self, tx: Transaction, public_key: bytes) -> None:
        key = (tx.hash, public_key)
        if key in self._ok:
            self._ok.move_to_end(key)
            return
        started = clock.perf()
        tx.verify_signature(public_key)
        took = clock.perf() - started
        self.verify_s += (took - self.verify_s) * (1.0 if self.verify_s == 0.0 else 0.01)
        self._ok[key] = None
        if len(self._ok) > self.capacity:
            self._ok.popitem(last=False)
