"""Node configuration: a TOML file, validated when loaded.

Every section is a frozen dataclass; `load_config` rejects unknown keys, wrong types and
out-of-range values with a `ConfigError` that names the field (`section.key`) and the
reason. Timing comes from a named profile (`default` for wide-area links, `lan` for
validators on one site, `test` for local devnets and CI; CONSENSUS.md §4) that a
`[timing]` section can override field by field.

Relative paths in the file are resolved against the file's directory.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from qchain.errors import ConfigError
from qchain.limits import MAX_BLOCK_TX_BYTES, MAX_FRAME, TX_BATCH_MAX_TXS, check_node_sizes

MAX_ADMISSION_BOUND_MS = 600_000
MAX_BATCH_DELAY_MS = 5_000
"""A batch held longer would wait past a round's timeout."""
"""Longest admission bound a node accepts (ten minutes: beyond, the bound is no bound)."""
MAX_VERIFY_WORKERS = 256
"""Most signature-verification worker processes a node accepts."""


@dataclass(frozen=True)
class TimingConfig:
    """Consensus timers in milliseconds (CONSENSUS.md §4). The round timeout they give is
    computed in one place, `consensus.params.Params.timeout_ms`, from the fields the node
    copies into its `Params`."""

    base_ms: int
    backoff: float
    cap_ms: int
    propose_wait_min_ms: int
    propose_wait_max_ms: int | None
    """Heartbeat: an idle leader proposes an empty block after this long; None = never."""
    sync_interval_ms: int
    inclusion_timeout_ms: int
    """A known transaction not included after this long makes the node suspect the leader."""
    clock_precision_ms: int = 1000
    """Proposer-based timestamps (CONSENSUS.md §3.7): how far two validators' clocks may
    differ. A fresh proposal whose time is later than local + precision is not voted for."""
    message_delay_ms: int = 15_000
    """Proposer-based timestamps: how late a proposal may be validated after it was built.
    A fresh proposal older than local - precision - delay (the delay grows by 10% a round)
    is not voted for."""

    def timely(self, block_ms: int, local_ms: int, rnd: int) -> bool:
        """Whether a fresh proposal of round `rnd` with time block_ms is timely at local_ms."""
        delay = self.message_delay_ms * 1.1 ** min(rnd, 100)
        low = local_ms - self.clock_precision_ms - delay
        return low <= block_ms <= local_ms + self.clock_precision_ms


PROFILES: dict[str, TimingConfig] = {
    "default": TimingConfig(
        base_ms=2000,
        backoff=2.0,
        cap_ms=60_000,
        propose_wait_min_ms=200,
        propose_wait_max_ms=1000,
        sync_interval_ms=1000,
        inclusion_timeout_ms=30_000,
    ),
    "lan": TimingConfig(
        base_ms=500,
        backoff=2.0,
        cap_ms=20_000,
        propose_wait_min_ms=50,
        propose_wait_max_ms=1000,
        sync_interval_ms=500,
        inclusion_timeout_ms=30_000,
    ),
    "test": TimingConfig(
        base_ms=100,
        backoff=1.5,
        cap_ms=2000,
        propose_wait_min_ms=0,
        propose_wait_max_ms=1000,
        sync_interval_ms=50,
        inclusion_timeout_ms=5000,
    ),
}


@dataclass(frozen=True)
class PeerConfig:
    index: int
    address: str
    """host:port of the peer's P2P listener."""
    api: str = ""
    """The peer's public API (`http://host:port`), asked for snapshots by state sync;
    empty: its directory record's, or the genesis's `api` hint."""


IGNORED_KEYS: dict[type, frozenset[str]] = {PeerConfig: frozenset({"sae_id"})}
"""Keys that configs written by older devnets carry and the loader accepts without use: a
peer's `sae_id` (every validator's SAE id comes from the genesis)."""


MAX_SNAPSHOT_KEEP = 16
"""Each kept snapshot is a copy of the state in the store."""


@dataclass(frozen=True)
class NodeSection:
    name: str
    index: int
    data_dir: Path
    genesis: Path
    signing_key: Path
    """The validator's ML-DSA-65 key file, used to sign commit certificates."""
    profile: Literal["default", "lan", "test"] = "default"
    log_format: Literal["text", "json"] = "text"
    admission_bound_ms: int = 1000
    """Admission control: a client's transaction is accepted only while this node's
    pending client transactions drain within this many milliseconds at the measured
    commit rate (`node/backlog.py`); beyond, 503 `overloaded` with `Retry-After`. 0
    turns the bound off (the pool's static limits only)."""
    batch_delay_ms: int = 250
    """The longest this node's outgoing batch of its clients' transactions waits to fill
    while the next build is known to come after a commit (the current height's proposal
    is out, or a busy leader built already; the batch leaves at the commit at the
    latest); otherwise it waits a few milliseconds (`node/forwarding.py`). 0: every
    batch leaves at once."""
    batch_max_txs: int = 256
    """A batch of this many transactions (or of a batch's bytes) leaves at once."""
    verify_workers: int | None = None
    """Processes that verify incoming transactions' signatures off the event loop
    (`node/verifypool.py`); 0 verifies inline. None (the default) chooses from the
    machine: cores - 1, and 0 on a machine of two cores or fewer, where one worker
    competes with the event loop (and the other validators of a devnet) for the same
    cores (docs/BENCHMARKS.md has the measurement)."""
    snapshot_keep: int = 2
    """State snapshots kept and served: those of the newest this many checkpoint heights
    (a chain whose genesis sets `state_root_interval`); 0 keeps none."""
    state_sync_after: int = 1000
    """A node whose store holds no block syncs its state from a snapshot when its peers
    keep one at least this high, instead of replaying every block; 0 only with
    `qchain node run --state-sync`."""


@dataclass(frozen=True)
class P2PSection:
    listen: str
    peers: tuple[PeerConfig, ...] = ()
    max_frame_bytes: int = MAX_FRAME
    """Longest frame read from a peer; at least the largest frame a peer sends."""
    queue_frames: int = 1024


@dataclass(frozen=True)
class ApiSection:
    listen: str = "127.0.0.1:8000"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    rate_limit_per_s: int = 2000
    """Requests per second per client address (token bucket); 0 disables the limit."""


@dataclass(frozen=True)
class AdminSection:
    listen: str = "127.0.0.1:9000"
    token_file: Path | None = None
    byzantine: bool = False
    """Test-only Byzantine behaviours; only devnets set this."""


@dataclass(frozen=True)
class QkdSection:
    kme_url: str
    sae_id: str
    client_cert: Path | None = None
    client_key: Path | None = None
    ca_cert: Path | None = None
    insecure_dev_header: bool = False
    """Identify to the simulated key manager by header instead of a client certificate."""
    batch_keys: int = 64
    low_water: int = 64


@dataclass(frozen=True)
class MempoolSection:
    max_txs: int = 10_000
    max_bytes: int = 256 * 1024 * 1024
    max_per_sender: int = 256
    max_block_txs: int = 5000
    max_block_bytes: int = MAX_BLOCK_TX_BYTES
    """Bytes of transactions in a block this node builds; at most what fits one frame as a
    proposal (`qchain.limits`). A transaction larger than this is refused."""


@dataclass(frozen=True)
class NodeConfig:
    node: NodeSection
    p2p: P2PSection
    qkd: QkdSection
    api: ApiSection = field(default_factory=ApiSection)
    admin: AdminSection = field(default_factory=AdminSection)
    mempool: MempoolSection = field(default_factory=MempoolSection)
    timing: TimingConfig = field(default_factory=lambda: PROFILES["default"])
    path: Path | None = None


def _convert(tp: Any, value: Any, name: str, base: Path) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (value is None or value == "none"):
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, name, base)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(name, f"must be one of {', '.join(map(str, allowed))}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(name, "must be a list")
        item = typing.get_args(tp)[0]
        return tuple(_convert(item, v, f"{name}[{i}]", base) for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ConfigError(name, "must be a table")
        return _build(tp, value, name, base)
    if tp is bool:
        if type(value) is not bool:
            raise ConfigError(name, "must be true or false")
        return value
    if tp is int:
        if type(value) is not int:
            raise ConfigError(name, "must be an integer")
        if value < 0:
            raise ConfigError(name, "must not be negative")
        return value
    if tp is float:
        if type(value) not in (int, float):
            raise ConfigError(name, "must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(name, "must be a string")
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(name, "must be a non-empty path")
        p = Path(value)
        return p if p.is_absolute() else base / p
    raise ConfigError(name, f"unsupported type {tp}")


def _build(cls: type[Any], data: dict[str, Any], prefix: str, base: Path) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    ignored = IGNORED_KEYS.get(cls, frozenset())
    for key in data:
        if key in ignored:
            continue
        if key not in names or key == "path":
            raise ConfigError(f"{prefix}.{key}" if prefix else key, "unknown field")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{prefix}.{f.name}" if prefix else f.name, "missing")
            continue
        name = f"{prefix}.{f.name}" if prefix else f.name
        kwargs[f.name] = _convert(hints[f.name], data[f.name], name, base)
    return cls(**kwargs)


def split_address(value: str) -> tuple[str, int]:
    """(host, port) of "host:port", where host is a name, an IPv4 address or a bracketed
    IPv6 address (returned without its brackets); `ValueError` if it is not one."""
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port")
    return host, int(port)


def _check_address(name: str, value: str) -> None:
    try:
        split_address(value)
    except ValueError as e:
        raise ConfigError(name, str(e)) from None


def validate(cfg: NodeConfig) -> None:
    """Cross-field checks that one field alone cannot express."""
    _check_address("p2p.listen", cfg.p2p.listen)
    _check_address("api.listen", cfg.api.listen)
    _check_address("admin.listen", cfg.admin.listen)
    seen = {cfg.node.index}
    for i, p in enumerate(cfg.p2p.peers):
        _check_address(f"p2p.peers[{i}].address", p.address)
        if p.api and (not p.api.startswith(("http://", "https://")) or len(p.api) > 256):
            raise ConfigError(f"p2p.peers[{i}].api", "must be an http:// or https:// URL")
        if p.index in seen:
            raise ConfigError(f"p2p.peers[{i}].index", f"validator {p.index} listed twice")
        seen.add(p.index)
    t = cfg.timing
    if t.base_ms < 1:
        raise ConfigError("timing.base_ms", "must be at least 1")
    if t.backoff < 1.0:
        raise ConfigError("timing.backoff", "must be at least 1.0")
    # Liveness needs the cap above one full round (CONSENSUS.md §4, §9.6).
    if t.cap_ms < 2 * t.base_ms:
        raise ConfigError("timing.cap_ms", "must be at least twice base_ms")
    if t.clock_precision_ms < 0:
        raise ConfigError("timing.clock_precision_ms", "must not be negative")
    if t.message_delay_ms < t.base_ms:
        raise ConfigError("timing.message_delay_ms", "must be at least base_ms")
    if (cfg.api.tls_cert is None) != (cfg.api.tls_key is None):
        raise ConfigError("api.tls_cert", "tls_cert and tls_key go together")
    if not cfg.qkd.kme_url.startswith(("http://", "https://")):
        raise ConfigError("qkd.kme_url", "must be an http:// or https:// URL")
    if cfg.node.admission_bound_ms > MAX_ADMISSION_BOUND_MS:
        raise ConfigError(
            "node.admission_bound_ms",
            f"must be at most {MAX_ADMISSION_BOUND_MS} (0 turns the bound off)",
        )
    if cfg.node.batch_delay_ms > MAX_BATCH_DELAY_MS:
        raise ConfigError("node.batch_delay_ms", f"must be at most {MAX_BATCH_DELAY_MS}")
    if not 1 <= cfg.node.batch_max_txs <= TX_BATCH_MAX_TXS:
        raise ConfigError("node.batch_max_txs", f"must be between 1 and {TX_BATCH_MAX_TXS}")
    workers = cfg.node.verify_workers
    if workers is not None and workers > MAX_VERIFY_WORKERS:
        raise ConfigError(
            "node.verify_workers",
            f"must be at most {MAX_VERIFY_WORKERS} (0 verifies inline; leave it out to "
            "choose from the machine's cores)",
        )
    if cfg.qkd.batch_keys < 1:
        raise ConfigError("qkd.batch_keys", "must be at least 1")
    if cfg.node.state_sync_after < 0:
        raise ConfigError("node.state_sync_after", "must not be negative")
    if not 0 <= cfg.node.snapshot_keep <= MAX_SNAPSHOT_KEEP:
        raise ConfigError("node.snapshot_keep", f"must be between 0 and {MAX_SNAPSHOT_KEEP}")
    check_node_sizes(
        cfg.mempool.max_block_bytes, cfg.mempool.max_block_txs, cfg.p2p.max_frame_bytes
    )


def parse_config(data: dict[str, Any], base: Path) -> NodeConfig:
    data = dict(data)
    node = data.get("node")
    profile = node.get("profile", "default") if isinstance(node, dict) else "default"
    if not isinstance(profile, str) or profile not in PROFILES:
        raise ConfigError("node.profile", f"must be one of {', '.join(PROFILES)}")
    timing_over = data.pop("timing", {})
    if not isinstance(timing_over, dict):
        raise ConfigError("timing", "must be a table")
    timing_doc = {**dataclasses.asdict(PROFILES[profile]), **timing_over}
    if timing_doc.get("propose_wait_max_ms") is None:
        timing_doc.pop("propose_wait_max_ms")
        timing_doc["propose_wait_max_ms"] = "none"
    cfg: NodeConfig = _build(NodeConfig, data, "", base)
    timing = _build(TimingConfig, timing_doc, "timing", base)
    cfg = dataclasses.replace(cfg, timing=timing)
    validate(cfg)
    return cfg


def load_toml(p: Path) -> dict[str, Any]:
    """The TOML document in a config file; a `ConfigError` naming the file if it cannot be
    read or is not TOML."""
    try:
        return tomllib.loads(p.read_text())
    except OSError as e:
        raise ConfigError(str(p), f"cannot read: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(p), f"not valid TOML: {e}") from e


def load_config(path: str | Path) -> NodeConfig:
    p = Path(path)
    cfg = parse_config(load_toml(p), p.parent.resolve())
    return dataclasses.replace(cfg, path=p.resolve())
