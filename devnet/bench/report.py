"""Turn what a benchmark run observed into figures, and write them down.

`point_figures` computes one load point (one offered rate) from the load generator's chunk
log, the commit listener's stamps, the /proc CPU readings and two QKD snapshots taken at
the edges of the measurement window. `idle_figures` does the same for a window without
load. `write_report` writes `report.json`, `report.md` and `throughput-latency.png`.

Key figures count what the *sender* of each directed link consumed: one key per frame,
so keys and frames match unless a frame waited or a key was discarded. Key bits are the
bytes consumed times eight (256-bit Poly1305 keys).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from devnet.bench.keyrate import verdict
from devnet.bench.observe import BlockSeen, LinkCounters, Snapshot
from qchain.qkd.keymanager import PROFILES

MAC_KEY_BITS = 256
REPORT_VERSION = 1


SPEC_FRAMES = 4
"""Good-case frames per directed link per height (docs/CONSENSUS.md §7)."""


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _r(x: float, digits: int = 3) -> float | None:
    return None if math.isnan(x) or math.isinf(x) else round(x, digits)


def qkd_figures(
    start: Snapshot, end: Snapshot, committed_txs: int, listener_node: int
) -> dict[str, Any]:
    """Key and frame use between two snapshots, over the links whose sender answered
    both times."""
    delta: dict[tuple[int, int], LinkCounters] = {
        k: v for k, v in end.minus(start).items() if k in start.links
    }
    dt = end.at - start.at
    heights = end.heights.get(listener_node, 0) - start.heights.get(listener_node, 0)
    links = len(delta)
    keys = sum(v.keys for v in delta.values())
    bits = sum(v.key_bytes for v in delta.values()) * 8
    frames = sum(v.frames for v in delta.values())
    sent = sum(v.bytes_sent for v in delta.values())
    waits = sum(v.waits for v in delta.values())

    def per(x: float, d: float) -> float | None:
        return _r(x / d) if d > 0 else None

    return {
        "window_s": _r(dt),
        "heights": heights,
        "directed_links": links,
        "keys": keys,
        "key_bits": bits,
        "frames": frames,
        "bytes_sent": sent,
        "key_waits": waits,
        "keys_per_block": per(keys, heights),
        "key_bits_per_block": per(bits, heights),
        "keys_per_tx": per(keys, committed_txs),
        "key_bits_per_tx": per(bits, committed_txs),
        "keys_per_link_per_s": per(keys, links * dt),
        "key_bits_per_link_per_s": per(bits, links * dt),
        "frames_per_link_per_height": per(frames, links * heights),
        "bytes_per_tx": per(sent, committed_txs),
        "blocks_per_s": per(heights, dt),
    }


def point_figures(
    *,
    offered_rate: float,
    load: Mapping[str, Any],
    hashes: Sequence[Sequence[str]],
    blocks: Sequence[BlockSeen],
    txs: Mapping[str, tuple[float, bool, str]],
    window: tuple[float, float],
    cpu: Mapping[str, tuple[float | None, float | None]],
    snaps: tuple[Snapshot, Snapshot],
    listener_node: int,
    ceiling_tx_s: float | None,
) -> dict[str, Any]:
    w0, w1 = window
    span = w1 - w0
    in_window = [b for b in blocks if w0 <= b.at <= w1]
    committed = sum(b.tx_count for b in in_window)
    latencies: list[float] = []
    """Of what the nodes accepted: from the scheduled time, or for a transaction
    accepted only when sent again, from that request."""
    offered_latencies: list[float] = []
    """From the first scheduled time, refusals and waits to send again included."""
    node_latencies: list[float] = []
    """Of what the nodes accepted: from the request that got it accepted (the load
    generator's own queue left out)."""
    posting_waits: list[float] = []
    """Per chunk: from its scheduled time until the request that carried it left."""
    submitted = accepted = lost = failed = resent = 0
    refused: dict[str, int] = {}
    for c in load["chunks"]:
        for code, k in c["refused"].items():
            refused[code] = refused.get(code, 0) + k
        submitted += c["count"]
        accepted += c["accepted"]
        resent += c.get("resent", 0)
        if not w0 <= c["scheduled"] <= w1:
            continue
        accepted_at = c.get("accepted_at", {})
        if c.get("posted"):
            posting_waits.append(c["posted"] - c["scheduled"])
        for pos, h in enumerate(hashes[c["node"]][c["offset"] : c["offset"] + c["count"]]):
            seen = txs.get(h)
            if seen is None:
                lost += 1
                continue
            if not seen[1]:
                failed += 1
            offered_latencies.append(seen[0] - c["scheduled"])
            latencies.append(seen[0] - accepted_at.get(str(pos), c["scheduled"]))
            node_latencies.append(
                seen[0] - accepted_at.get(str(pos), c.get("posted") or c["scheduled"])
            )
    latencies.sort()
    node_latencies.sort()
    posting_waits.sort()
    offered_latencies.sort()
    consensus = sorted(b.at - b.built for b in in_window)
    intervals = [b.at - a.at for a, b in itertools.pairwise(in_window)]
    rounds = [b.round for b in in_window]
    committed_tx_s = committed / span if span > 0 else 0.0
    cpu_per_tx: dict[str, float | None] = {}
    cpu_total: dict[str, float | None] = {}
    for name, (c0, c1) in cpu.items():
        used = None if c0 is None or c1 is None else c1 - c0
        cpu_total[name] = _r(used) if used is not None else None
        cpu_per_tx[name] = _r(used / committed * 1e3, 4) if used is not None and committed else None
    node_cpu = [v for k, v in cpu_total.items() if k.startswith("node") and v is not None]
    total_snap = qkd_figures(snaps[0], snaps[1], committed, listener_node)
    return {
        "offered_tx_s": offered_rate,
        "window_s": _r(span),
        "submitted": submitted,
        "accepted": accepted,
        "refused": refused,
        "resent": resent,
        "committed_txs": committed,
        "committed_tx_s": _r(committed_tx_s, 1),
        "failed_in_window": failed,
        "not_committed_in_window": lost,
        "latency_ms": {
            "samples": len(latencies),
            "p50": _r(percentile(latencies, 50) * 1e3, 1),
            "p95": _r(percentile(latencies, 95) * 1e3, 1),
            "p99": _r(percentile(latencies, 99) * 1e3, 1),
            "max": _r(latencies[-1] * 1e3, 1) if latencies else None,
        },
        "node_latency_ms": {
            "p50": _r(percentile(node_latencies, 50) * 1e3, 1),
            "p99": _r(percentile(node_latencies, 99) * 1e3, 1),
        },
        "posting_wait_ms": {
            "p50": _r(percentile(posting_waits, 50) * 1e3, 1),
            "p99": _r(percentile(posting_waits, 99) * 1e3, 1),
        },
        "offered_latency_ms": {
            "p50": _r(percentile(offered_latencies, 50) * 1e3, 1),
            "p99": _r(percentile(offered_latencies, 99) * 1e3, 1),
        },
        "consensus_latency_ms": {
            "samples": len(consensus),
            "p50": _r(percentile(consensus, 50) * 1e3, 1),
            "p99": _r(percentile(consensus, 99) * 1e3, 1),
        },
        "blocks": len(in_window),
        "block_interval_ms": _r(sum(intervals) / len(intervals) * 1e3, 1) if intervals else None,
        "txs_per_block": _r(committed / len(in_window), 1) if in_window else None,
        "rounds_above_0": sum(1 for r in rounds if r > 0),
        "cpu_s": cpu_total,
        "cpu_ms_per_tx": cpu_per_tx,
        "node_cpu_utilisation": _r(sum(node_cpu) / span, 3) if span > 0 else None,
        "qkd": total_snap,
        "fraction_of_ceiling": _r(committed_tx_s / ceiling_tx_s, 3) if ceiling_tx_s else None,
    }


def idle_figures(start: Snapshot, end: Snapshot, listener_node: int) -> dict[str, Any]:
    q = qkd_figures(start, end, 0, listener_node)
    return {
        "window_s": q["window_s"],
        "heights": q["heights"],
        "blocks_per_s": q["blocks_per_s"],
        "keys": q["keys"],
        "keys_per_link_per_s": q["keys_per_link_per_s"],
        "key_bits_per_link_per_s": q["key_bits_per_link_per_s"],
        "frames_per_link_per_height": q["frames_per_link_per_height"],
    }


def profile_limits(frames_per_link_per_height: float | None) -> dict[str, Any]:
    """Highest block rate each key-rate profile sustains. A link's key pool is shared by
    its two directions, so one height costs 2 x F keys of 256 bits on each pair."""
    f = frames_per_link_per_height
    out: dict[str, Any] = {}
    for name, bps in PROFILES.items():
        out[name] = {
            "bits_per_second": bps,
            "max_blocks_per_s": _r(bps / (2 * f * MAC_KEY_BITS), 3) if f else None,
            "max_blocks_per_s_at_spec_frames": _r(bps / (2 * SPEC_FRAMES * MAC_KEY_BITS), 3),
        }
    return out


# --- writing ---------------------------------------------------------------------------


def fmt(x: object) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.3f}".rstrip("0").rstrip(".") if abs(x) < 100 else f"{x:,.0f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def point_row(p: Mapping[str, Any]) -> list[str]:
    lat = p["latency_ms"]
    q = p["qkd"]
    node_cpu = [v for k, v in p["cpu_ms_per_tx"].items() if k.startswith("node") and v]
    cpu = sum(node_cpu) / len(node_cpu) if node_cpu else None
    return [
        fmt(p["offered_tx_s"]),
        fmt(p["committed_tx_s"]),
        fmt(lat["p50"]),
        fmt(lat["p95"]),
        fmt(lat["p99"]),
        fmt(p.get("consensus_latency_ms", {}).get("p50")),
        fmt(p["block_interval_ms"]),
        fmt(p["txs_per_block"]),
        fmt(cpu),
        fmt(q["keys_per_block"]),
        fmt(q["keys_per_tx"]),
        fmt(q["keys_per_link_per_s"]),
        fmt(q["frames_per_link_per_height"]),
        fmt(p["fraction_of_ceiling"]),
    ]


POINT_HEADER = [
    "offered tx/s",
    "committed tx/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "consensus p50 ms",
    "block interval ms",
    "txs/block",
    "CPU ms/tx/node",
    "keys/block",
    "keys/tx",
    "keys/s/link",
    "frames/link/height",
    "of ceiling",
]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


KEY_RATE_HEADER = [
    "offered tx/s",
    "committed tx/s",
    "blocks/s",
    "keys/s/pair consumed (max)",
    "keys/s/pair produced",
    "rate used",
    "key waits",
    "keys/tx",
    "stock at start",
    "stock at end",
    "window",
]


def key_rate_row(p: Mapping[str, Any]) -> list[str]:
    k = p["key_rate"]

    def stock(s: Mapping[str, Any]) -> str:
        kms = "–" if s["kms"] is None else f"{s['kms']:,}"
        return f"{kms} + {s['pools']:,} in pools"

    return [
        fmt(p["offered_tx_s"]),
        fmt(k["committed_tx_s"]),
        fmt(k["blocks_per_s"]),
        fmt(k["consumed_keys_per_s_per_pair"]["max"]),
        fmt(k["produced_keys_per_s_per_pair"]),
        fmt(k["rate_used"]),
        fmt(k["key_waits"]),
        fmt(k["keys_per_tx"]),
        stock(k["stock_start"]),
        stock(k["stock_end"]),
        verdict(k),
    ]


def key_rate_section(report: Mapping[str, Any]) -> list[str]:
    """Steady state or stock: what each window spent against what the profile makes."""
    pts = [p for p in report["points"] if "key_rate" in p]
    if not pts:
        return []
    cfg = report["config"]
    return [
        f"## Key rate: profile `{cfg['kms_rate']}`, stock {cfg.get('kms_stock', 'full')}",
        "",
        "A link's two directions draw on one pool at the key manager: consumed counts both, "
        "per pair, against the profile's rate. Stock: keys stored at the key manager + "
        "keys in the nodes' send pools.",
        "",
        table(KEY_RATE_HEADER, [key_rate_row(p) for p in pts]),
        "",
    ]


def markdown(report: Mapping[str, Any]) -> str:
    cfg = report["config"]
    lim = report["limit"]
    m = report["machine"]
    out = [
        f"# qchain benchmark: {cfg['validators']} validators, {cfg['scheme']}, "
        f"{cfg['tx']} transactions",
        "",
        f"Machine: {m['cpu']} × {m['cores']} cores, Python {m['python']}, {m['platform']}. "
        f"Timing profile `{cfg.get('profile', 'test')}`, key rate profile `{cfg['kms_rate']}`, "
        f"heartbeat {cfg['heartbeat_ms'] or 'off'}, "
        f"{cfg['faults']} crashed validator(s), warm-up {cfg['warmup_s']} s, "
        f"window {cfg['duration_s']} s per point"
        + (", **BASELINE: fixed insecure MAC key, no key manager**" if cfg["baseline"] else "")
        + ".",
        "",
        "## Load points",
        "",
        table(POINT_HEADER, [point_row(p) for p in report["points"]]),
        "",
    ]
    sat = report.get("saturation")
    if sat:
        out += [
            f"Saturation: **{fmt(sat['committed_tx_s'])} committed tx/s** at "
            f"{fmt(sat['offered_tx_s'])} offered; "
            f"{fmt(sat['fraction_of_ceiling'])} of the CPU-bound ceiling.",
            "",
        ]
    out += key_rate_section(report)
    out += [
        "## The limit beside the result",
        "",
        f"- verify one {cfg['scheme']} signature: {fmt(lim['verify_us'])} µs",
        f"- execute one {cfg['tx']} transaction (signature cached): {fmt(lim['execute_us'])} µs",
        f"- CPU per transaction per validator (verify + execute): {fmt(lim['per_tx_us'])} µs",
        f"- CPU-bound ceiling: {lim['cores']} cores ÷ ({cfg['validators']} validators × "
        f"{fmt(lim['per_tx_us'])} µs) = **{fmt(lim['ceiling_tx_s'])} tx/s**",
        "",
        "## QKD key budget",
        "",
    ]
    idle = report["idle"]
    out += [
        table(
            ["window", "blocks/s", "keys/s/link", "key bits/s/link", "frames/link/height"],
            [
                [
                    name,
                    fmt(i["blocks_per_s"]),
                    fmt(i["keys_per_link_per_s"]),
                    fmt(i["key_bits_per_link_per_s"]),
                    fmt(i["frames_per_link_per_height"]),
                ]
                for name, i in idle.items()
            ],
        ),
        "",
        "Highest block rate per key-rate profile (the pair's pool feeds both directions: "
        "2 × frames/link/height × 256 bits per height):",
        "",
        table(
            [
                "profile",
                "bits/s",
                "max blocks/s (measured frames)",
                f"max blocks/s ({SPEC_FRAMES} frames)",
            ],
            [
                [
                    name,
                    fmt(v["bits_per_second"]),
                    fmt(v["max_blocks_per_s"]),
                    fmt(v["max_blocks_per_s_at_spec_frames"]),
                ]
                for name, v in report["profiles"].items()
            ],
        ),
        "",
    ]
    if report.get("notes"):
        out += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    return "\n".join(out)


def plot(report: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = sorted(report["points"], key=lambda p: p["offered_tx_s"])
    offered = [p["offered_tx_s"] for p in pts]
    committed = [p["committed_tx_s"] or 0 for p in pts]
    p50 = [p["latency_ms"]["p50"] or math.nan for p in pts]
    p99 = [p["latency_ms"]["p99"] or math.nan for p in pts]
    kpb = [p["qkd"]["keys_per_block"] or 0 for p in pts]
    cfg = report["config"]
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.5))
    a.plot(offered, committed, "o-", label="committed")
    top = max([*offered, *committed, 1])
    a.plot([0, top], [0, top], ":", color="grey", label="offered = committed")
    ceiling = report["limit"]["ceiling_tx_s"]
    if ceiling:
        a.axhline(ceiling, color="red", linestyle="--", label="CPU-bound ceiling")
    a.set_xlabel("offered tx/s")
    a.set_ylabel("committed tx/s")
    a.set_title("throughput")
    a.legend()
    b.plot(committed, p50, "o-", label="p50")
    b.plot(committed, p99, "s-", label="p99")
    b.set_xlabel("committed tx/s")
    b.set_ylabel("commit latency (ms)")
    b.set_yscale("log")
    b.set_title("latency")
    b.legend()
    c.bar([str(int(o)) for o in offered], kpb, label="keys per block")
    bound = SPEC_FRAMES * cfg["validators"] * (cfg["validators"] - 1)
    c.axhline(bound, color="red", linestyle="--", label=f"{SPEC_FRAMES}·n·(n−1)")
    c.set_xlabel("offered tx/s")
    c.set_ylabel("QKD keys per block")
    c.set_title("key use")
    c.legend()
    fig.suptitle(
        f"qchain: n={cfg['validators']}, {cfg['scheme']}, {cfg['tx']}, "
        f"kms {cfg['kms_rate']}" + (" (BASELINE fixed key)" if cfg["baseline"] else "")
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(report: Mapping[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown(report))
    plot(report, out / "throughput-latency.png")
