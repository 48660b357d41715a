"""What the HTTP API needs from a running node, as one interface.

The API layer (`node.http`) depends only on `NodeService`; the validator runtime implements
it, and API unit tests can implement it over a plain store. Errors come from the one
exception tree (`qchain.errors`) and the API maps them to problem+json.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from contracts.setchain import SetChain
from node.chainstore import ChainStore
from qchain.errors import Overloaded
from qchain.types import Receipt, ReceiptProof, Transaction

TxState = Literal["pending", "committed"]


@dataclass(frozen=True)
class TxStatus:
    """Where a transaction is. `receipt` is set once committed (ok or failed)."""

    tx_hash: bytes
    state: TxState
    height: int | None = None
    index: int | None = None
    receipt: Receipt | None = None


@dataclass(frozen=True)
class ChainEvent:
    """One server-sent event: ids increase by one per event and never repeat in a run."""

    id: int
    kind: Literal["block", "tx"]
    data: Mapping[str, Any]


class EventStream(Protocol):
    """A subscription to the node's events."""

    def __aiter__(self) -> EventStream: ...

    async def __anext__(self) -> ChainEvent: ...

    def ready(self, limit: int = 4096) -> list[ChainEvent]:
        """Events already available, without waiting."""

    async def aclose(self) -> None: ...


class NodeService(Protocol):
    @property
    def chain_id(self) -> str: ...

    @property
    def node_name(self) -> str: ...

    @property
    def chain(self) -> ChainStore: ...

    def submit(self, raw: bytes) -> tuple[TxStatus, bool]:
        """Admit canonical transaction bytes: (status, True) if new, (current status,
        False) if these exact bytes were seen before. Raises `InvalidTransaction`
        subclasses or `CodecError`."""

    def submit_tx(self, tx: Transaction) -> tuple[TxStatus, bool]:
        """As `submit`, for an already decoded transaction (the JSON path)."""

    async def preverify(self, txs: Sequence[Transaction]) -> None:
        """Check txs' signatures off the event loop where the node has verify workers
        (`[node] verify_workers`), so that admitting them finds them checked; changes
        no decision (what is not confirmed is checked inline on admission)."""

    def admission_room(self) -> int:
        """How many more transactions of clients the node accepts now under its
        admission bound (a very large number when no bound applies); checked before a
        request's transactions are decoded, so an overloaded node refuses cheaply."""

    def overloaded(self) -> Overloaded:
        """The refusal, with its `Retry-After`, of a transaction beyond the room."""

    def tx_status(self, tx_hash: bytes) -> TxStatus | None: ...

    def transaction(self, tx_hash: bytes) -> Transaction | None:
        """A pending or committed transaction by hash."""

    async def wait_committed(self, tx_hash: bytes, timeout_s: float) -> TxStatus | None:
        """The status once committed, or None if the timeout passes first."""

    def receipt_proof(self, tx_hash: bytes) -> ReceiptProof | None: ...

    def set_chain(self, height: int) -> SetChain:
        """The set chain that proves the validator set of a committed height from genesis
        (docs/CONSENSUS.md §10.5, `node.setchains`). Raises `NotGoverned` on a chain whose
        set never changes, `NotFound` for a height not committed, `SetChainUnavailable`
        when the node cannot give it."""

    def account(self, address: bytes) -> Mapping[str, Any] | None:
        """Nonce, roles and membership facts of an address; None if unknown."""

    def query(self, contract: str, method: str, args: Mapping[str, Any]) -> object:
        """A read-only contract query on committed state, args by name: JSON values, with
        `{"hex": ...}` already turned into bytes (hex text is passed on as text).
        The result is a canonical value, a mapping or a contract result struct; the API
        writes byte strings in it as {"hex": ...} and structs as objects."""

    def status(self) -> Mapping[str, Any]:
        """node, chain_id, height, round, leader, peers, sync state."""

    def qkd_status(self) -> Mapping[str, Any]:
        """Per directed link: pool level, keys consumed, waits, rejections."""

    def events(self, last_event_id: int | None) -> EventStream:
        """Events after last_event_id (as far as still kept), then live ones."""

    def health(self) -> tuple[bool, Sequence[str]]:
        """(ready, reasons it is not ready) for /readyz."""

    def metrics_text(self) -> bytes:
        """Prometheus text exposition."""
