"""Joining a long chain: time to be in consensus with state sync against a full replay.

    .venv/bin/python -m devnet.bench.statesync [--height 1000] [--interval 100] [--json]

Starts a devnet of four local validator processes whose genesis commits to the state
every `interval` heights, and lets it commit empty blocks (heartbeat) up to `height`.
Then, twice, it stops node3, moves its store aside (`qchain node rebuild`, which keeps the
QKD leases), and starts it again: once with `[node] state_sync_after = 1` (it syncs the
state from its peers' latest snapshot, then catches up the blocks after it) and once with
`state_sync_after = 0` (it replays every block from genesis). Each time is measured from
the start of the process to the moment it has reached the height the others had when it
started and answers ready (`/readyz`): in consensus. Reports both times and their ratio.
A measurement, not a test: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

from devnet.local import LocalNetwork, running_network
from devnet.network import plan_network
from devnet.testing import run_qchain, until
from qchain.client import Client

VICTIM, OTHER = "node3", "node0"


def _height(net: LocalNetwork, node: str) -> int:
    st = net.node_status(node)
    return -1 if st is None else int(st["height"])


def _ready(net: LocalNetwork, node: str) -> bool:
    try:
        with Client(net.api_url(node), timeout_s=2) as c:
            return c.ready()[0]
    except Exception:  # the node is still starting: not ready
        return False


def join(net: LocalNetwork, after: int, timeout: float) -> dict[str, object]:
    """Rebuild the victim and time its join with `state_sync_after = after`."""
    config = net.dir / "nodes" / VICTIM / "config.toml"
    net.stop([VICTIM])
    moved = run_qchain("node", "rebuild", "--config", str(config), timeout=120)
    if moved.returncode != 0:
        raise RuntimeError(moved.stdout + moved.stderr)
    text = re.sub(r"\nstate_sync_after = \d+\n", "\n", config.read_text())
    config.write_text(text.replace("\n[p2p]\n", f"\nstate_sync_after = {after}\n\n[p2p]\n", 1))
    target = _height(net, OTHER)
    started = time.monotonic()
    net.start(VICTIM)
    until(
        f"{VICTIM} to reach {target} and be ready",
        lambda: _height(net, VICTIM) >= target and _ready(net, VICTIM),
        timeout,
    )
    elapsed = time.monotonic() - started
    log = net.log_file(VICTIM).read_text()
    synced = re.findall(r"state synced at height (\d+)", log)
    return {
        "state_sync_after": after,
        "target_height": target,
        "seconds": round(elapsed, 3),
        "synced_at": int(synced[-1]) if after and synced else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--height", type=int, default=1000, help="join at this height or above")
    ap.add_argument("--interval", type=int, default=100, help="the genesis state_root_interval")
    ap.add_argument("--heartbeat-ms", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--dir", type=Path, help="devnet directory (default: a temporary one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    plan = plan_network(
        base_port=None,
        scheme="ed25519",
        heartbeat_ms=args.heartbeat_ms,
        state_root_interval=args.interval,
    )
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.dir or Path(tmp) / "devnet"
        with running_network(directory, plan, min_height=2) as net:
            until(
                f"the chain to reach {args.height}",
                lambda: _height(net, OTHER) >= args.height,
                args.timeout,
            )
            synced = join(net, 1, args.timeout)
            replayed = join(net, 0, args.timeout)
    out = {
        "state_sync": synced,
        "replay": replayed,
        "ratio": round(float(str(synced["seconds"])) / float(str(replayed["seconds"])), 4),
    }
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print(
        f"state sync: {synced['seconds']} s to height {synced['target_height']} "
        f"(snapshot of {synced['synced_at']})"
    )
    print(f"replay:     {replayed['seconds']} s to height {replayed['target_height']}")
    print(f"ratio:      {out['ratio']}")


if __name__ == "__main__":
    main()
