"""`qchain bench` smoke: a tiny load on a fresh 4-validator devnet produces a well-formed
report. The figures themselves depend on the machine and are not checked here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from devnet.bench.profile import summarise
from devnet.bench.report import percentile

POINT_KEYS = {
    "offered_tx_s",
    "committed_tx_s",
    "latency_ms",
    "consensus_latency_ms",
    "block_interval_ms",
    "txs_per_block",
    "cpu_ms_per_tx",
    "qkd",
    "fraction_of_ceiling",
}
QKD_KEYS = {
    "keys_per_block",
    "key_bits_per_block",
    "keys_per_tx",
    "keys_per_link_per_s",
    "frames_per_link_per_height",
}


def test_bench_smoke_writes_a_well_formed_report(tmp_path: Path) -> None:
    out = tmp_path / "report"
    env = dict(os.environ, QCHAIN_BENCH_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "qchain.cli", "bench", "--rate", "20", "--duration", "5"]
    cmd += ["--warmup", "2", "--idle", "2", "--senders", "8", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=110, env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads((out / "report.json").read_text())
    assert report["config"]["validators"] == 4
    assert {"cores", "verify_us", "execute_us", "per_tx_us", "ceiling_tx_s"} <= set(report["limit"])
    assert len(report["points"]) == 1
    point = report["points"][0]
    assert set(point) >= POINT_KEYS
    assert set(point["qkd"]) >= QKD_KEYS
    assert {"p50", "p95", "p99", "samples"} <= set(point["latency_ms"])
    assert set(point["cpu_ms_per_tx"]) >= {"node0", "node1", "node2", "node3"}
    assert report["idle"] and all("keys_per_link_per_s" in v for v in report["idle"].values())
    assert set(report["profiles"]) == {"lab", "metro", "long-haul", "constrained"}
    assert report["config"]["kms_stock"].startswith("full")
    key_rate = point["key_rate"]
    assert {"produced_keys_per_s_per_pair", "rate_used", "key_waits", "steady_state"} <= set(
        key_rate
    )
    assert {"kms", "pools"} <= set(key_rate["stock_start"])

    md = (out / "report.md").read_text()
    assert "| offered tx/s |" in md and "CPU-bound ceiling" in md and "## Key rate" in md
    assert (out / "throughput-latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([7.0], 99) == 7.0


def test_profile_summary_ranks_own_and_inclusive_time() -> None:
    collapsed = "\n".join(
        [
            "main (a/run.py:1);step (b/engine.py:10);verify (c/keys.py:5) 6",
            "main (a/run.py:1);step (b/engine.py:12) 3",
            "main (a/run.py:1);idle (a/loop.py:3) 1",
        ]
    )
    text = summarise(collapsed)
    own = text.split("own time:")[1].split("inclusive time:")[0]
    assert own.strip().splitlines()[0].endswith("verify (c/keys.py)")
    assert "100.0%  main (a/run.py)" in text
    assert " 90.0%  step (b/engine.py)" in text
