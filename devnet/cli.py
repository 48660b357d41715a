"""`qchain devnet init|up|down|status|reset|logs|add-validator|remove-validator`: a local
network in one command.

`init` writes the network (genesis, keys, configs, key manager config and TLS material)
into a directory and is idempotent. `--sae-ids` names the SAEs (a list or a `{i}`
pattern), `--external-kme FILE` points every node at a KME the devnet does not start
(format in `devnet.kme`), `--kme-per-node` runs one simulated KME per validator that relay
keys to each other after `--relay-delay-ms`. `up` starts the key manager(s) and the validators as
background processes, waits for the first decided block, prints the endpoint table and the
dev accounts and writes `endpoints.json`; `--foreground` stays attached and stops the
network on Ctrl-C. `down` stops everything, `reset` also wipes chain data (configuration
and keys stay), `status` shows each node's height, round, leader, peers and key pools, and
`logs` prints (or follows) a service's log. `init --reconfiguration` makes a genesis that
enables validator-set changes, and `add-validator` / `remove-validator NODE` then change
the running devnet's set (`devnet.joining`). `rehearse` plays a pilot network of four
sites in containers (`devnet.rehearsal`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qchain.errors import ConfigError
from qchain.keys import Scheme

if TYPE_CHECKING:
    from devnet.local import LocalNetwork
    from devnet.running import Network

DEFAULT_DIR = Path("devnet-data")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from devnet.network import DEVNET_STATE_ROOT_INTERVAL

    sub = p.add_subparsers(dest="devnet_cmd", metavar="VERB", required=True)
    init = sub.add_parser("init", help="write a devnet's genesis, keys and configs")
    _dir(init)
    init.add_argument("--validators", type=int, default=4, help="n = 3f+1 (default 4)")
    init.add_argument("--profile", choices=["test", "lan", "default"], default="test")
    init.add_argument("--kms-rate", default="lab", help="lab|metro|long-haul|constrained")
    init.add_argument(
        "--scheme",
        choices=[s.value for s in Scheme],
        default="ml-dsa-65",
        help="the dev accounts' signature scheme",
    )
    init.add_argument("--chain-id", default="qchain-devnet")
    init.add_argument(
        "--base-port", type=int, default=None, help="first host port (27000; 28000 with --docker)"
    )
    init.add_argument(
        "--heartbeat-ms",
        type=int,
        default=1000,
        help="empty block interval when idle; 0 = no empty blocks",
    )
    init.add_argument(
        "--sae-ids",
        default=None,
        help="SAE ids: a comma-separated list (one per validator) or a pattern with {i}, "
        "e.g. site-{i} or 100{i} (default SAE-node{i})",
    )
    kme = init.add_mutually_exclusive_group()
    kme.add_argument(
        "--external-kme",
        type=Path,
        default=None,
        metavar="FILE",
        help="TOML or JSON map of every node's KME (URL, SAE id, TLS files or dev header); "
        "up then starts no key manager",
    )
    kme.add_argument(
        "--kme-per-node",
        action="store_true",
        help="one simulated KME per validator, relaying keys to each other "
        "(the default with --docker)",
    )
    kme.add_argument(
        "--shared-kms",
        action="store_true",
        help="one simulated key manager for every validator (the default without --docker)",
    )
    init.add_argument(
        "--relay-delay-ms",
        type=int,
        default=0,
        help="with --kme-per-node: time for a key to reach the slave's KME; 0 (default): "
        "the master's KME answers once the slave's KME holds the key",
    )
    init.add_argument(
        "--state-root-interval",
        type=int,
        default=DEVNET_STATE_ROOT_INTERVAL,
        help="the genesis commits to the whole state every this many heights, for state "
        f"sync (default {DEVNET_STATE_ROOT_INTERVAL}; 0: never, as devnets made before it)",
    )
    init.add_argument(
        "--reconfiguration",
        action="store_true",
        help="the genesis enables validator-set changes (operators from the dev accounts; "
        "add-validator and remove-validator then work)",
    )
    init.add_argument("--force", action="store_true", help="overwrite a different network")
    init.add_argument("--project", default="qchain-devnet", help="compose project (--docker)")
    init.add_argument("--image", default="qchain:dev", help="image to run (--docker)")
    up = sub.add_parser("up", help="start the devnet as local processes")
    _dir(up)
    up.add_argument("--foreground", action="store_true", help="stay attached; Ctrl-C stops")
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for ready")
    up.add_argument("--json", action="store_true", help="print endpoints as JSON")
    up.add_argument("--build", action="store_true", help="(re)build the image first (--docker)")
    add = sub.add_parser(
        "add-validator", help="a new validator joins the running devnet (--reconfiguration)"
    )
    _dir(add)
    add.add_argument("--via", default="node0", help="the node whose API governance goes to")
    add.add_argument("--timeout", type=float, default=120.0, help="seconds for each wait")
    rm = sub.add_parser(
        "remove-validator", help="a validator leaves the running devnet (--reconfiguration)"
    )
    _dir(rm)
    rm.add_argument("node", help="the node that leaves, e.g. node1")
    rm.add_argument("--via", default="node0", help="the node whose API governance goes to")
    rm.add_argument("--timeout", type=float, default=120.0, help="seconds for each wait")
    down = sub.add_parser("down", help="stop every devnet process")
    _dir(down)
    down.add_argument("--volumes", action="store_true", help="also remove chain volumes (--docker)")
    st = sub.add_parser("status", help="height, round, leader, peers and key pools per node")
    _dir(st)
    st.add_argument("--json", action="store_true")
    st.add_argument("--watch", action="store_true", help="live view (rich) until Ctrl-C")
    reset = sub.add_parser("reset", help="stop and wipe chain data, keep configuration")
    _dir(reset)
    logs = sub.add_parser("logs", help="print a service's log")
    _dir(logs)
    logs.add_argument("service", nargs="?", default=None, help="kms, node0, ... (default all)")
    logs.add_argument("--follow", "-f", action="store_true")
    logs.add_argument("--lines", "-n", type=int, default=50)
    rh = sub.add_parser(
        "rehearse",
        help="four partner sites in containers: separate site directories, a genesis "
        "ceremony, one KME per site, WAN delay, a partner's receipt checked offline",
    )
    rh.add_argument("--dir", type=Path, default=Path("devnet-rehearsal"), help="an empty directory")
    rh.add_argument(
        "--delay-ms", type=int, default=40, help="WAN delay of each site's traffic (default 40)"
    )
    rh.add_argument("--keep", action="store_true", help="leave the containers running")
    rh.add_argument("--down", action="store_true", help="only remove a kept rehearsal's containers")
    rh.add_argument(
        "--subnet", default="172.29.17.0/24", help="the bridge network's subnet (sites at .11-.14)"
    )
    rh.add_argument("--image", default="qchain:dev", help="image to run")
    rh.add_argument("--build", action="store_true", help="(re)build the image first")


def _dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="devnet directory")
    p.add_argument(
        "--docker", action="store_true", help="the Docker Compose flavour (devnet.dockernet)"
    )


def run(args: argparse.Namespace) -> int:
    cmd = args.devnet_cmd
    if cmd == "rehearse":
        from devnet import rehearsal

        return rehearsal.main(args)
    if args.docker:
        from devnet.dockernet import cli as docker_cli

        return docker_cli.run(args)
    if (args.dir / "docker.json").exists():
        print(f"{args.dir} holds a Docker devnet: add --docker", file=sys.stderr)
        return 2
    if cmd == "init":
        return _init(args)
    from devnet.local import LocalNetwork

    net = LocalNetwork(args.dir)
    if cmd == "up":
        return _up(net, args)
    if cmd == "add-validator":
        from devnet.joining import add_validator

        node = asyncio.run(add_validator(net, args.via, args.timeout))
        print(f"{node.name} is a validator: API {node.api_url}")
        return 0
    if cmd == "remove-validator":
        from devnet.joining import remove_validator

        asyncio.run(remove_validator(net, args.node, args.via, args.timeout))
        return 0
    if cmd == "down":
        stopped = net.stop()
        print(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
        return 0
    if cmd == "status" and args.watch:
        from devnet.watch import watch

        return watch(net)
    if cmd == "status":
        return _status(net, args.json)
    if cmd == "reset":
        return _reset(net)
    return _logs(net, args)


def _reset(net: LocalNetwork) -> int:
    """Stop, wipe chain data and logs; keep configuration. The chain starts again from
    its genesis: on a devnet whose set changes, the sites added later are dropped and the
    removed ones of the genesis are validators again (`devnet.joining.reset_sites`)."""
    from devnet.joining import reset_sites
    from devnet.network import load_plan

    net.stop()
    dropped = reset_sites(net.dir) if net.plan.reconfiguration else []
    net.plan = load_plan(net.dir)
    for n in net.plan.nodes:
        data = net.dir / "nodes" / n.name / "data"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
    shutil.rmtree(net.log_dir, ignore_errors=True)
    print(f"wiped chain data of {len(net.plan.nodes)} nodes; configuration kept")
    if dropped:
        print(f"dropped the sites added after the genesis: {', '.join(dropped)}")
    return 0


def _init(args: argparse.Namespace) -> int:
    from devnet.kme import load_kme_map
    from devnet.kms import write_kms_files
    from devnet.network import plan_network, write_network

    external = None
    if args.external_kme is not None:
        names = [f"node{i}" for i in range(args.validators)]
        external = load_kme_map(args.external_kme, names)
    plan = plan_network(
        validators=args.validators,
        chain_id=args.chain_id,
        profile=args.profile,
        scheme=args.scheme,
        kms_rate=args.kms_rate,
        base_port=27000 if args.base_port is None else args.base_port,
        heartbeat_ms=args.heartbeat_ms or None,
        sae_ids=args.sae_ids,
        kme_mode="per-node" if args.kme_per_node else "shared",
        external_kmes=external,
        relay_delay_ms=args.relay_delay_ms,
        state_root_interval=args.state_root_interval,
        reconfiguration=args.reconfiguration,
    )
    if args.reconfiguration and not args.heartbeat_ms:
        raise ConfigError(
            "--heartbeat-ms",
            "a devnet whose set changes needs a heartbeat (the node refuses one without)",
        )
    written = write_network(args.dir, plan, force=args.force)
    if written:
        write_kms_files(args.dir, plan)
        kmes = {
            "shared": "one simulated KMS",
            "per-node": "one simulated KME per node",
            "external": "external KMEs",
        }[plan.kme_mode]
        print(f"initialised a {plan.validators}-validator devnet in {args.dir} ({kmes})")
    else:
        print(f"{args.dir} already holds this devnet; nothing to do")
    return 0


def _up(net: LocalNetwork, args: argparse.Namespace) -> int:
    from devnet.endpoints import local_endpoints, print_table

    started = time.monotonic()
    try:
        # Without heartbeat blocks nothing is decided until a transaction arrives: then
        # ready means every validator answers.
        net.start_all(min_height=1 if net.plan.heartbeat_ms else 0, timeout=args.timeout)
    except (TimeoutError, RuntimeError) as e:
        print(f"devnet did not become ready: {e}", file=sys.stderr)
        print(f"logs: {net.log_dir}", file=sys.stderr)
        if args.foreground:
            net.stop()
        return 1
    elapsed = time.monotonic() - started
    doc = local_endpoints(net)
    (net.dir / "endpoints.json").write_text(json.dumps(doc, indent=2) + "\n")
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print_table(doc)
        if net.plan.heartbeat_ms:
            print(f"first block decided {elapsed:.1f}s after start")
        else:
            print(f"ready {elapsed:.1f}s after start (no heartbeat: blocks come with transactions)")
    if not args.foreground:
        return 0
    print("running in the foreground; press Ctrl-C to stop the network")
    stop = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stop:
        time.sleep(0.2)
        dead = [s.name for s in net.services() if net.pid(s.name) is None]
        if dead:
            print(f"{', '.join(dead)} exited; stopping the network", file=sys.stderr)
            break
    stopped = net.stop()
    print(f"stopped {', '.join(stopped)}")
    return 0


def _status(net: Network, as_json: bool) -> int:
    from devnet.nodeapi import node_qkd

    rows: list[dict[str, Any]] = []
    for n in net.plan.nodes:
        if n.removed:
            # Left the set (`remove-validator`): not started, not asked.
            pid = net.pid(n.name)
            rows.append({"node": n.name, "pid": pid, "status": None, "qkd": None, "removed": True})
            continue
        st = net.node_status(n.name)
        qkd = node_qkd(net.api_url(n.name)) if st is not None else None
        rows.append(
            {"node": n.name, "pid": net.pid(n.name), "status": st, "qkd": qkd, "removed": False}
        )
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'node':<7} {'pid':>7} {'height':>7} {'round':>5} {'leader':>6} {'peers':<9} key pools")
    for r in rows:
        st = r["status"]
        if st is None:
            state = "removed" if r["removed"] else "down"
            print(f"{r['node']:<7} {r['pid'] or '-':>7} {state:>7}")
            continue
        pools = []
        for sae, link in (r["qkd"] or {}).get("links", {}).items():
            send = link.get("send", {})
            pools.append(f"{sae.removeprefix('SAE-')}:{send.get('level', '?')}")
        peers = ",".join(str(p) for p in st.get("peers", []))
        print(
            f"{r['node']:<7} {r['pid'] or '-':>7} {st.get('height', '?'):>7} "
            f"{st.get('round', '-')!s:>5} {st.get('leader', '-')!s:>6} {peers:<9} "
            f"{' '.join(pools)}"
        )
    return 0


def _logs(net: LocalNetwork, args: argparse.Namespace) -> int:
    names = [args.service] if args.service else [s.name for s in net.services()]
    files = [net.log_file(n) for n in names]
    for f in files:
        if not f.exists():
            continue
        lines = f.read_text(errors="replace").splitlines()[-args.lines :]
        for line in lines:
            print(f"{f.stem:<6} | {line}" if len(files) > 1 else line)
    if not args.follow:
        return 0
    offsets = {f: f.stat().st_size if f.exists() else 0 for f in files}
    try:
        while True:
            for f in files:
                if not f.exists():
                    continue
                size = f.stat().st_size
                if size > offsets[f]:
                    with open(f, errors="replace") as fh:
                        fh.seek(offsets[f])
                        for line in fh.read().splitlines():
                            print(f"{f.stem:<6} | {line}" if len(files) > 1 else line)
                    offsets[f] = size
            time.sleep(0.2)
    except KeyboardInterrupt:
        return 0
