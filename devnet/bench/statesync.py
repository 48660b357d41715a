"""Joining a long chain: time to be in consensus with state sync against a full replay.

    .venv/bin/python -m devnet.bench.statesync [--height 1000] [--interval 100]
        [--load-rate 100 | --empty] [--json]

Starts a devnet of four local validator processes whose genesis commits to the state
every `interval` heights, and builds a chain of at least `height` heights. By default the
chain is built under a steady load from the open-loop load generator
(`devnet.bench.load`): `load-rate` notary anchors a second from `senders` genesis
members, signed in advance, offered to node0..node2, so that the chain holds real blocks
and a state that grows with every anchor, and replaying it means verifying and executing
every transaction again. The load stops when the chain reaches `height`. `--empty`
builds the chain of empty heartbeat blocks instead, with a state of a few entries.

Then, twice, it stops node3, moves its store aside (`qchain node rebuild`, which keeps the
QKD leases), and starts it again: once with `[node] state_sync_after = 1` (it syncs the
state from its peers' latest snapshot, then catches up the blocks after it) and once with
`state_sync_after = 0` (it replays every block from genesis). Each join is timed from the
start of the process to the moment it has reached the height the others had when it
started and answers ready (`/readyz`): in consensus. Each time is split into

- `contact`: to the first peer contact: the peers' snapshot lists answered (state sync,
  from the node's log), or the node's status first listing a connected peer (replay);
- `fetch`: then to holding the state of the checkpoint s the sync takes (the highest
  checkpoint at or below the target): the snapshot fetched and checked (state sync, from
  the log), or the blocks up to s fetched and executed (replay, from the status);
- `catch_up`: then to the target height;
- `ready`: then to `/readyz` answering 200.

The node's status and readiness are polled every `POLL_S`, so each mark is late by up to
that. Reports both times, their split and their ratio. A measurement, not a test: run it
on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack

from devnet.bench import workload
from devnet.bench.load import command as load_command
from devnet.local import LocalNetwork, create_network
from devnet.network import NetworkPlan, plan_network
from devnet.testing import run_qchain, until
from qchain.client import Client

VICTIM, OTHER = "node3", "node0"
LOADED = ("node0", "node1", "node2")
"""The nodes the load is offered to (node3 is the one that joins again)."""
POLL_S = 0.05
TRACE_POINTS = 40
"""About how many (seconds, height) points of a join's progress are reported."""
PHASES = ("contact", "fetch", "catch_up", "ready")
LOG_STAMP = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d\d\d) ")


def _height(net: LocalNetwork, node: str) -> int:
    st = net.node_status(node)
    return -1 if st is None else int(st["height"])


def _log_offset(line: str, started_wall: float) -> float | None:
    """Seconds from started_wall to a node log line's local time stamp."""
    m = LOG_STAMP.match(line)
    if m is None:
        return None
    h, mi, s, ms = (int(x) for x in m.groups())
    t = time.localtime(started_wall)
    start = t.tm_hour * 3600 + t.tm_min * 60 + t.tm_sec + (started_wall % 1)
    delta = h * 3600 + mi * 60 + s + ms / 1000 - start
    return (delta + 43_200) % 86_400 - 43_200


def _first_in_log(lines: list[str], pattern: str, started_wall: float) -> float | None:
    for line in lines:
        if re.search(pattern, line):
            return _log_offset(line, started_wall)
    return None


def _poll(
    url: str, target: int, checkpoint: int, timeout: float, heights: list[tuple[float, int]]
) -> dict[str, float]:
    """Marks (seconds since the call) from polling the node: first peer listed, height at
    the checkpoint, at the target, and ready there; heights gets (seconds, height) at
    each height change."""
    marks: dict[str, float] = {}
    started = time.monotonic()
    with Client(url, timeout_s=2) as c:
        while "ready" not in marks:
            now = time.monotonic() - started
            if now > timeout:
                raise AssertionError(f"{VICTIM} did not reach {target} and readiness: {marks}")
            try:
                st = c.status()
                height = int(st["height"])
                if not heights or heights[-1][1] != height:
                    heights.append((round(now, 3), height))
                if st.get("peers"):
                    marks.setdefault("peer", now)
                if height >= checkpoint:
                    marks.setdefault("checkpoint", now)
                if height >= target:
                    marks.setdefault("target", now)
                    if c.ready()[0]:
                        marks["ready"] = time.monotonic() - started
            except Exception:  # the node is still starting: not answering
                pass
            time.sleep(POLL_S)
    return marks


def join(net: LocalNetwork, after: int, interval: int, timeout: float) -> dict[str, Any]:
    """Rebuild the victim and time its join with `state_sync_after = after`."""
    config = net.dir / "nodes" / VICTIM / "config.toml"
    net.stop([VICTIM])
    moved = run_qchain("node", "rebuild", "--config", str(config), timeout=120)
    if moved.returncode != 0:
        raise RuntimeError(moved.stdout + moved.stderr)
    text = re.sub(r"\nstate_sync_after = \d+\n", "\n", config.read_text())
    config.write_text(text.replace("\n[p2p]\n", f"\nstate_sync_after = {after}\n\n[p2p]\n", 1))
    log_file = net.log_file(VICTIM)
    seen = log_file.stat().st_size if log_file.exists() else 0
    target = _height(net, OTHER)
    checkpoint = target // interval * interval
    started_wall = time.time()
    net.start(VICTIM)
    heights: list[tuple[float, int]] = []
    marks = _poll(net.api_url(VICTIM), target, checkpoint, timeout, heights)
    with log_file.open("rb") as f:
        f.seek(seen)
        lines = f.read().decode(errors="replace").splitlines()
    synced = [
        (int(m.group(1)), int(m.group(2)), int(m.group(3)))
        for m in (
            re.search(r"state synced at height (\d+): (\d+) entries in (\d+) chunks", x)
            for x in lines
        )
        if m
    ]
    if after:
        contact = _first_in_log(lines, r"peers answered about snapshots", started_wall)
        fetched = _first_in_log(lines, r"state synced at height", started_wall)
    else:
        contact, fetched = marks.get("peer"), marks.get("checkpoint")
    ends = [contact, fetched, marks.get("target"), marks["ready"]]
    split: dict[str, float | None] = {}
    last = 0.0
    for name, end in zip(PHASES, ends, strict=True):
        split[name] = None if end is None else round(max(0.0, end - last), 3)
        last = last if end is None else max(last, end)
    return {
        "state_sync_after": after,
        "target_height": target,
        "checkpoint": checkpoint,
        "seconds": round(marks["ready"], 3),
        "phases": split,
        "synced_at": synced[-1][0] if after and synced else None,
        "state_entries": synced[-1][1] if after and synced else None,
        "chunks": synced[-1][2] if after and synced else None,
        "heights": heights[:: max(1, len(heights) // TRACE_POINTS)] + heights[-1:],
    }


def start_load(
    net: LocalNetwork, plan: NetworkPlan, work: Path, rate: float, seconds: float, senders: int
) -> subprocess.Popen[bytes]:
    """The load generator offering `rate` notary anchors a second to LOADED for at most
    `seconds`, each sender's stream to one node."""
    per_sender = math.ceil(rate * seconds / senders) + 1
    signed = workload.presign(
        plan.scheme, "notary", plan.chain_id, senders, [0] * senders, per_sender
    )
    streams = []
    for j, _ in enumerate(LOADED):
        stream = workload.interleave([signed[i] for i in range(senders) if i % len(LOADED) == j])
        path = work / f"stream-{j}.msgpack"
        path.write_bytes(msgpack.packb(stream, use_bin_type=True))
        streams.append(str(path))
    spec = {
        "nodes": [net.api_url(n) for n in LOADED],
        "streams": streams,
        "rate": rate,
        "duration_s": seconds,
        "drain_s": 5.0,
    }
    (work / "spec.json").write_text(json.dumps(spec))
    return subprocess.Popen(load_command(work), stdout=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def build(
    net: LocalNetwork, plan: NetworkPlan, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    """Grow the chain to args.height, under load unless args.empty; what was built."""
    load = None
    if not args.empty:
        budget = args.height * plan.heartbeat_ms / 1000 * 3 + 60 if plan.heartbeat_ms else 600
        load = start_load(net, plan, work, args.load_rate, budget, args.senders)
    try:
        until(
            f"the chain to reach {args.height}",
            lambda: _height(net, OTHER) >= args.height,
            args.timeout,
        )
    finally:
        if load is not None:
            _stop(load)
    st = net.node_status(OTHER) or {}
    return {
        "mode": "empty" if args.empty else "load",
        "load_rate": None if args.empty else args.load_rate,
        "senders": None if args.empty else args.senders,
        "height": st.get("height"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--height", type=int, default=1000, help="join at this height or above")
    ap.add_argument("--interval", type=int, default=100, help="the genesis state_root_interval")
    ap.add_argument("--heartbeat-ms", type=int, default=100)
    ap.add_argument("--load-rate", type=float, default=100.0, help="tx/s while building")
    ap.add_argument("--senders", type=int, default=12, help="genesis members sending the load")
    ap.add_argument("--empty", action="store_true", help="build empty heartbeat blocks only")
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--dir", type=Path, help="devnet directory (default: a temporary one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not args.empty and (args.load_rate <= 0 or args.senders < 1):
        ap.error("--load-rate must be positive and --senders at least 1 (or use --empty)")
    plan = plan_network(
        base_port=None,
        scheme="ed25519",
        heartbeat_ms=args.heartbeat_ms,
        state_root_interval=args.interval,
    )
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.dir or Path(tmp) / "devnet"
        net = create_network(directory, plan)
        if not args.empty:
            workload.add_bench_members(directory, plan, args.senders)
        try:
            net.start_all(min_height=2)
            chain = build(net, plan, args, Path(tmp))
            synced = join(net, 1, args.interval, args.timeout)
            replayed = join(net, 0, args.interval, args.timeout)
        finally:
            net.stop()
    out = {
        "chain": chain,
        "state_sync": synced,
        "replay": replayed,
        "ratio": round(float(synced["seconds"]) / float(replayed["seconds"]), 4),
    }
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print(f"chain:      {chain}")
    for name, leg in (("state sync", synced), ("replay", replayed)):
        phases = ", ".join(f"{k} {v}" for k, v in leg["phases"].items())
        print(f"{name + ':':11} {leg['seconds']} s to height {leg['target_height']} ({phases})")
    entries, chunks = synced["state_entries"], synced["chunks"]
    print(f"snapshot:   of {synced['synced_at']}, {entries} entries in {chunks} chunks")
    print(f"ratio:      {out['ratio']}")


if __name__ == "__main__":
    main()
