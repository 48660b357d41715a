"""What a scenario run recorded, as plain data the checkers read.

- `Op`: one client operation (a transaction): when it was submitted, whether and when a
  node acknowledged it (HTTP 202/200 into a mempool), and when a node reported it
  committed, at which height. Times are seconds since load started.
- `BlockView`: one block as one node serves it (hash, app hash, transaction hashes).
- `StatusSample`: one node's `/v1/status` at a moment (height, alerts, halted) and how
  long the request took.
- `ReadySample`: one node's `/readyz` at a moment (ready or not, and its reasons).
- `QkdSample`: one node's `/v1/qkd` per-peer counters at a moment.
- `KmsSample`: the key manager's per-link counters at a moment.

Everything round-trips through JSON, so a report can be re-checked offline.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Op:
    op_id: int
    kind: str
    """anchor or pay."""
    sender: str
    nonce: int
    tx_hash: str
    submitted_at: float
    node: str = ""
    """The node that acknowledged it (or was last tried)."""
    acked_at: float | None = None
    committed_at: float | None = None
    height: int | None = None
    """Commit height as the client was told."""
    attempts: int = 0
    error: str = ""

    @property
    def committed(self) -> bool:
        return self.height is not None


@dataclass(frozen=True)
class BlockView:
    height: int
    hash: str
    app_hash: str
    txs: tuple[str, ...]


ChainViews = dict[str, dict[int, BlockView]]
"""node name -> height -> block as that node serves it."""


@dataclass(frozen=True)
class StatusSample:
    t: float
    node: str
    height: int | None
    """None: the node did not answer."""
    alerts: dict[str, int] = field(default_factory=dict)
    halted: str | None = None
    latency_s: float | None = None
    """How long the request took (up to the client's timeout when it did not answer)."""
    uptime_s: float | None = None
    """The node process's uptime as it reported it (a restart makes it drop)."""


@dataclass(frozen=True)
class ReadySample:
    t: float
    node: str
    ready: bool | None
    """None: the node did not answer."""
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class LinkCounters:
    """One node's view of its link to one peer (from `/v1/qkd`)."""

    send_level: int
    send_frames: int
    kms_errors: int
    waits: int
    keys_fetched: int
    receive_frames: int
    rejected: dict[str, int]
    """Transport rejections of frames from that peer, by reason."""


@dataclass(frozen=True)
class QkdSample:
    t: float
    node: str
    links: dict[str, LinkCounters]
    """peer node name -> counters."""


@dataclass(frozen=True)
class KmsSample:
    t: float
    links: dict[str, dict[str, int]]
    """link name "SAE-a~SAE-b" -> the key manager's counters and stored_key_count."""


@dataclass
class History:
    ops: list[Op] = field(default_factory=list)
    statuses: list[StatusSample] = field(default_factory=list)
    qkd: list[QkdSample] = field(default_factory=list)
    kms: list[KmsSample] = field(default_factory=list)
    readiness: list[ReadySample] = field(default_factory=list)
    bad_blocks: dict[str, list[str]] = field(default_factory=dict)
    """node -> blocks it served that do not verify against their own header."""
    events: list[dict[str, Any]] = field(default_factory=list)
    """The timeline as it happened: {t, action, detail}."""
    kme_at_stop: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    """A KME's counters read just before a step stopped it (its restart starts them at
    zero; the observer carries these over)."""

    def event(self, t: float, action: str, **detail: Any) -> None:
        self.events.append({"t": round(t, 3), "action": action, **detail})

    def to_json(self) -> dict[str, Any]:
        return {
            "ops": [asdict(o) for o in self.ops],
            "statuses": [asdict(s) for s in self.statuses],
            "qkd": [asdict(q) for q in self.qkd],
            "kms": [asdict(k) for k in self.kms],
            "readiness": [asdict(r) for r in self.readiness],
            "bad_blocks": self.bad_blocks,
            "events": self.events,
        }


def link_counters_from_qkd(
    doc: dict[str, Any], sae_to_node: dict[str, str]
) -> dict[str, LinkCounters]:
    """Per-peer counters out of a node's `/v1/qkd` document."""
    out: dict[str, LinkCounters] = {}
    for sae, link in doc.get("links", {}).items():
        peer = sae_to_node.get(sae, sae)
        send = link.get("send", {})
        receive = link.get("receive", {})
        transport = link.get("transport") or {}
        rejected: dict[str, int] = {}
        for source in (receive.get("rejected", {}), transport.get("rejected", {})):
            for reason, n in source.items():
                rejected[reason] = max(rejected.get(reason, 0), int(n))
        out[peer] = LinkCounters(
            send_level=int(send.get("level", 0)),
            send_frames=int(send.get("frames", 0)),
            kms_errors=int(send.get("kms_errors", 0)),
            waits=int(send.get("waits", 0)),
            keys_fetched=int(send.get("keys_fetched", 0)),
            receive_frames=int(receive.get("frames", 0)),
            rejected=rejected,
        )
    return out
