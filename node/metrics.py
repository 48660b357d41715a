"""Every Prometheus metric of a node, defined in this one place.

Each node owns a `NodeMetrics` with its own `CollectorRegistry` (never the process-global
one), so several nodes in one process (tests, the simulator) do not collide. Names follow
`qchain_<subsystem>_<name>_<unit>`; counters end in `_total`, durations are in seconds and
sizes in bytes. A gauge whose name already says what it counts (height, round, keys, txs)
has no further unit suffix.

The runtime updates the metrics through the small methods below (or the metric objects
directly); the HTTP API records its own requests through `observe_api_request`, and
`TimedKeySource` times every key manager call for `qchain_qkd_key_manager_latency_seconds`;
`MetricsSync` copies the running totals of the transport, key pools and mempool in.

`DOCUMENTED` lists every metric family name, as scraped (a counter's samples carry `_total`,
a histogram's `_bucket`, `_sum` and `_count`); `devnet/monitoring/README.md` describes them
and the live metrics test checks a node exposes each one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from qchain import clock
from qchain.qkd.source import Key, KeyId, KeySource, LinkStatus

if TYPE_CHECKING:
    from node.certbackfill import CertificateBackfill
    from node.forwarding import Forwarder
    from node.links import Links
    from node.mempool import Mempool

__all__ = ["CONTENT_TYPE_LATEST", "DOCUMENTED", "MetricsSync", "NodeMetrics", "TimedKeySource"]

DOCUMENTED: tuple[str, ...] = (
    "qchain_consensus_height",
    "qchain_consensus_round",
    "qchain_consensus_round_changes_total",
    "qchain_consensus_block_interval_seconds",
    "qchain_consensus_decided_txs_total",
    "qchain_mempool_txs",
    "qchain_mempool_size_bytes",
    "qchain_mempool_rejections_total",
    "qchain_mempool_oldest_local_age_seconds",
    "qchain_tx_stage_seconds",
    "qchain_forward_batches_total",
    "qchain_forward_resent_txs_total",
    "qchain_forward_refused_txs_total",
    "qchain_cert_backfill_total",
    "qchain_cert_backfill_pending",
    "qchain_transport_frames_total",
    "qchain_transport_bytes_total",
    "qchain_transport_rejections_total",
    "qchain_qkd_keys_consumed_total",
    "qchain_qkd_pool_keys",
    "qchain_qkd_waits_total",
    "qchain_qkd_key_manager_latency_seconds",
    "qchain_execution_block_duration_seconds",
    "qchain_commit_write_duration_seconds",
    "qchain_commit_barrier_waits_total",
    "qchain_api_requests_total",
    "qchain_api_request_duration_seconds",
    "qchain_api_rate_limited_total",
)
"""Every metric family a node exports, by the name it is scraped under."""

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_INTERVAL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
_STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)
STAGES = ("forward", "admit_queue", "pool_local", "pool_peer")
"""The stages of `qchain_tx_stage_seconds`: a client's transaction from its admission
here until its batch left (`forward`); a peer's transaction from its batch's arrival
until it was admitted (`admit_queue`); from admission into this node's pool until a
committed block took it out, for a client's transaction (`pool_local`) and a peer's
(`pool_peer`)."""


class NodeMetrics:
    """The metrics of one node, on a registry of its own."""

    def __init__(self, node: str = "") -> None:
        self.node = node
        r = self.registry = CollectorRegistry(auto_describe=True)
        self._consensus(r)
        self._mempool_and_transport(r)
        self._qkd(r)
        self._execution_and_api(r)

    def _consensus(self, r: CollectorRegistry) -> None:
        self.consensus_height = Gauge(
            "qchain_consensus_height", "Height of the last committed block.", registry=r
        )
        self.consensus_round = Gauge(
            "qchain_consensus_round", "Current consensus round at the next height.", registry=r
        )
        self.consensus_round_changes = Counter(
            "qchain_consensus_round_changes_total",
            "Rounds abandoned without a decision (timeouts, ABORTs).",
            registry=r,
        )
        self.consensus_block_interval = Histogram(
            "qchain_consensus_block_interval_seconds",
            "Time between two consecutive commits seen by this node.",
            buckets=_INTERVAL_BUCKETS,
            registry=r,
        )
        self.consensus_decided_txs = Counter(
            "qchain_consensus_decided_txs_total",
            "Transactions in decided blocks.",
            registry=r,
        )
        self.cert_backfill = Counter(
            "qchain_cert_backfill_total",
            "Commit certificates asked of peers' APIs (`node.certbackfill`), by outcome "
            "(stored; refused: a peer's did not check; unavailable: a peer had none or "
            "did not answer; dropped: a height dropped from a full queue).",
            ["outcome"],
            registry=r,
        )
        self.cert_backfill_pending = Gauge(
            "qchain_cert_backfill_pending",
            "Committed heights this node holds no certificate of, waiting to be asked of peers.",
            registry=r,
        )

    def _mempool_and_transport(self, r: CollectorRegistry) -> None:
        self.mempool_txs = Gauge(
            "qchain_mempool_txs", "Transactions waiting in the mempool.", registry=r
        )
        self.mempool_size = Gauge(
            "qchain_mempool_size_bytes", "Encoded size of the mempool's transactions.", registry=r
        )
        self.mempool_rejections = Counter(
            "qchain_mempool_rejections_total",
            "Transactions refused by the mempool, by reason (problem type slug).",
            ["reason"],
            registry=r,
        )
        self.mempool_oldest_local = Gauge(
            "qchain_mempool_oldest_local_age_seconds",
            "Age of the oldest pending transaction a client submitted to this node.",
            registry=r,
        )
        self.tx_stage = Histogram(
            "qchain_tx_stage_seconds",
            "Time a transaction spent in one stage of its path, by stage: forward (client's, "
            "admitted here until its batch left), admit_queue (peer's, received until "
            "admitted), pool_local and pool_peer (admitted until committed).",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        for stage in STAGES:
            self.tx_stage.labels(stage)
        self.forward_batches = Counter(
            "qchain_forward_batches_total",
            "Batches of this node's clients' transactions sent to every peer.",
            registry=r,
        )
        self.forward_resent = Counter(
            "qchain_forward_resent_txs_total",
            "Transactions sent again, by reason: this node's clients' (late: past the "
            "inclusion timeout; leader: to a new leader; ready: after a nonce gap filled; "
            "asked: a client submitted it again) and, of any origin, a sender's next nonce "
            "held past the inclusion timeout with the run after it (stalled).",
            ["reason"],
            registry=r,
        )
        self.forward_refused = Counter(
            "qchain_forward_refused_txs_total",
            "Peers' transactions not taken into this node's pool, by reason (queue: no "
            "room or budget to queue them; else the mempool's problem type slug).",
            ["reason"],
            registry=r,
        )

        self.transport_frames = Counter(
            "qchain_transport_frames_total",
            "Authenticated frames, by peer and direction (in, out).",
            ["peer", "direction"],
            registry=r,
        )
        self.transport_bytes = Counter(
            "qchain_transport_bytes_total",
            "Frame bytes on the wire, by peer and direction (in, out).",
            ["peer", "direction"],
            registry=r,
        )
        self.transport_rejections = Counter(
            "qchain_transport_rejections_total",
            "Frames, connections and envelopes refused, by peer (unknown: none named) and reason.",
            ["peer", "reason"],
            registry=r,
        )

    def _qkd(self, r: CollectorRegistry) -> None:
        self.qkd_keys_consumed = Counter(
            "qchain_qkd_keys_consumed_total",
            "One-time keys spent on frames, by directed link.",
            ["link"],
            registry=r,
        )
        self.qkd_pool_keys = Gauge(
            "qchain_qkd_pool_keys",
            "Keys ready in the pool, by directed link.",
            ["link"],
            registry=r,
        )
        self.qkd_waits = Counter(
            "qchain_qkd_waits_total",
            "Sends that had to wait for a key, by directed link.",
            ["link"],
            registry=r,
        )
        self.qkd_key_manager_latency = Histogram(
            "qchain_qkd_key_manager_latency_seconds",
            "Latency of key manager requests (get key, get key with ids, status), by directed "
            "link (me->peer for keys this node sends with, peer->me for keys it receives with).",
            ["link"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

    def _execution_and_api(self, r: CollectorRegistry) -> None:
        self.execution_block_duration = Histogram(
            "qchain_execution_block_duration_seconds",
            "Time to execute a block's transactions (proposal building or validation).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.commit_write_duration = Histogram(
            "qchain_commit_write_duration_seconds",
            "Time a commit's synced batch was in flight: from the block's execution (the "
            "next height starts) until the node knew it durable.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.commit_barrier_waits = Counter(
            "qchain_commit_barrier_waits_total",
            "Decisions whose durable batch waited for the commit batch still in flight.",
            registry=r,
        )

        self.api_requests = Counter(
            "qchain_api_requests_total",
            "HTTP API requests, by route template, method and status code.",
            ["route", "method", "status"],
            registry=r,
        )
        self.api_request_duration = Histogram(
            "qchain_api_request_duration_seconds",
            "HTTP API request handling time, by route template (streams excluded).",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.api_rate_limited = Counter(
            "qchain_api_rate_limited_total",
            "HTTP API requests refused with 429 by the per-client rate limit.",
            registry=r,
        )

    # --- updates used by the runtime ---------------------------------------------------

    def observe_commit(self, height: int, tx_count: int, interval_s: float | None) -> None:
        """A block was committed; interval_s is the time since the previous commit."""
        self.consensus_height.set(height)
        self.consensus_decided_txs.inc(tx_count)
        if interval_s is not None:
            self.consensus_block_interval.observe(interval_s)

    def observe_round(self, round_: int, changed: bool) -> None:
        """The engine entered round_; changed is True when a round was abandoned."""
        self.consensus_round.set(round_)
        if changed:
            self.consensus_round_changes.inc()

    def observe_mempool(self, txs: int, size_bytes: int) -> None:
        self.mempool_txs.set(txs)
        self.mempool_size.set(size_bytes)

    def observe_frame(self, peer: str, direction: str, size_bytes: int) -> None:
        self.transport_frames.labels(peer, direction).inc()
        self.transport_bytes.labels(peer, direction).inc(size_bytes)

    def observe_api_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.api_requests.labels(route, method, str(status)).inc()
        self.api_request_duration.labels(route).observe(seconds)

    # --- exposition ----------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format (`CONTENT_TYPE_LATEST`)."""
        return generate_latest(self.registry)


class TimedKeySource(KeySource):
    """A key source that observes the latency of each call to the key manager it wraps,
    per directed link, in a histogram labelled `link` (`qkd_key_manager_latency`).
    Failed calls are timed too: a slow "unavailable" is as much a latency as a slow key."""

    def __init__(self, inner: KeySource, histogram: Histogram) -> None:
        self.inner = inner
        self.sae_id = inner.sae_id
        self.histogram = histogram

    def _observe(self, link: str, started: float) -> None:
        self.histogram.labels(link).observe(clock.perf() - started)

    async def enc_keys(self, slave_sae_id: str, number: int, size: int | None = None) -> list[Key]:
        started = clock.perf()
        try:
            return await self.inner.enc_keys(slave_sae_id, number, size)
        finally:
            self._observe(f"{self.sae_id}->{slave_sae_id}", started)

    async def dec_keys(self, master_sae_id: str, key_ids: Sequence[KeyId]) -> list[Key]:
        started = clock.perf()
        try:
            return await self.inner.dec_keys(master_sae_id, key_ids)
        finally:
            self._observe(f"{master_sae_id}->{self.sae_id}", started)

    async def status(self, slave_sae_id: str) -> LinkStatus:
        started = clock.perf()
        try:
            return await self.inner.status(slave_sae_id)
        finally:
            self._observe(f"{self.sae_id}->{slave_sae_id}", started)

    async def close(self) -> None:
        await self.inner.close()


class MetricsSync:
    """Brings the counters kept by the transport, key pools, mempool and forwarder (and
    the forwarder's stage times) into the Prometheus registry (on scrape and
    periodically, never per frame)."""

    def __init__(
        self,
        metrics: NodeMetrics,
        mempool: Mempool,
        links: Links,
        forwarder: Forwarder | None = None,
        backfill: CertificateBackfill | None = None,
    ) -> None:
        self.metrics = metrics
        self.mempool = mempool
        self.links = links
        self.forwarder = forwarder
        self.backfill = backfill
        self._marks: dict[tuple[int, tuple[str, ...]], float] = {}

    def _inc_to(self, counter: Counter, labels: tuple[str, ...], total: float) -> None:
        """Advance a Prometheus counter to a running total kept elsewhere."""
        key = (id(counter), labels)
        delta = total - self._marks.get(key, 0.0)
        if delta > 0:
            (counter.labels(*labels) if labels else counter).inc(delta)
            self._marks[key] = total

    def sync(self) -> None:
        m = self.metrics
        for reason, count in self.mempool.rejections.items():
            self._inc_to(m.mempool_rejections, (reason,), count)
        m.observe_mempool(len(self.mempool), self.mempool.size_bytes)
        m.mempool_oldest_local.set(self.mempool.oldest_local_age(clock.monotonic()))
        f = self.forwarder
        if f is not None:
            while f.stages:
                stage, seconds = f.stages.popleft()
                m.tx_stage.labels(stage).observe(seconds)
            self._inc_to(m.forward_batches, (), f.flushes)
            for reason, count in f.resent.items():
                self._inc_to(m.forward_resent, (reason,), count)
            for reason, count in f.refused.items():
                self._inc_to(m.forward_refused, (reason,), count)
        b = self.backfill
        if b is not None:
            for outcome, count in dataclasses.asdict(b.stats).items():
                self._inc_to(m.cert_backfill, (outcome,), count)
            m.cert_backfill_pending.set(len(b.waiting))
        transport = self.links.transport
        if transport is not None:
            for j, st in transport.stats.items():
                peer = self.links.sae.get(j)
                if peer is None:
                    continue  # a peer that left the set (its counters stay in place)
                self._inc_to(m.transport_frames, (peer, "out"), st.frames_sent)
                self._inc_to(m.transport_frames, (peer, "in"), st.frames_received)
                self._inc_to(m.transport_bytes, (peer, "out"), st.bytes_sent)
                self._inc_to(m.transport_bytes, (peer, "in"), st.bytes_received)
                for reason, count in st.rejected.items():
                    self._inc_to(m.transport_rejections, (peer, reason), count)
            for reason, count in transport.refused.items():
                self._inc_to(m.transport_rejections, ("unknown", reason), count)
        endpoint = self.links.endpoint
        if endpoint is None:
            return
        me = self.links.sae[self.links.me]
        for peer, link_stats in endpoint.stats().items():
            send = link_stats["send"]
            if not isinstance(send, dict):
                continue
            link = f"{me}->{peer}"
            m.qkd_pool_keys.labels(link).set(float(send.get("level", 0)))
            self._inc_to(m.qkd_keys_consumed, (link,), float(send.get("keys_consumed", 0)))
            self._inc_to(m.qkd_waits, (link,), float(send.get("waits", 0)))
