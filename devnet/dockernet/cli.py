"""The `qchain devnet init|up|down|status|reset|logs --docker` verbs (the options are
`devnet.cli`'s)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from devnet.dockernet import engine
from devnet.dockernet.files import write_docker_network
from devnet.dockernet.network import ComposeNetwork
from devnet.dockernet.plan import (
    COMPOSE_FILE,
    DEFAULT_BASE_PORT,
    DockerSettings,
    kms_services,
    plan_docker_network,
)
from devnet.endpoints import docker_endpoints, print_table


def run(args: argparse.Namespace) -> int:
    cmd = args.devnet_cmd
    if cmd == "init":
        return _init(args)
    net = ComposeNetwork(args.dir)
    try:
        if cmd == "up":
            return _up(net, args)
        if cmd == "down":
            net.down(volumes=args.volumes)
            gone = " and its volumes" if args.volumes else " (volumes kept)"
            print(f"stopped compose project {net.settings.project}{gone}")
            return 0
        if cmd == "reset":
            net.down(volumes=True)
            print(f"removed {net.settings.project}'s containers and chain volumes; config kept")
            return 0
        if cmd == "status":
            return _status(net, args.json)
        argv = ["logs", "--tail", str(args.lines)]
        if args.follow:
            argv.append("--follow")
        if args.service:
            argv.append(args.service)
        return net.compose(*argv, check=False, timeout=10**9).returncode
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        net.close()


def _init(args: argparse.Namespace) -> int:
    plan = plan_docker_network(
        validators=args.validators,
        chain_id=args.chain_id,
        profile=args.profile,
        scheme=args.scheme,
        kms_rate=args.kms_rate,
        heartbeat_ms=args.heartbeat_ms or None,
        sae_ids=args.sae_ids,
        # A Docker devnet is a site per container: one KME per node unless asked otherwise.
        kme_mode="external"
        if args.external_kme is not None
        else "shared"
        if args.shared_kms
        else "per-node",
        relay_delay_ms=args.relay_delay_ms,
    )
    settings = DockerSettings(
        project=args.project,
        base_port=DEFAULT_BASE_PORT if args.base_port is None else args.base_port,
        image=args.image,
    )
    written = write_docker_network(args.dir, plan, settings, force=args.force)
    what = "initialised" if written else "kept the existing"
    print(
        f"{what} {plan.validators}-validator Docker devnet in {args.dir}; "
        f"compose file {args.dir / COMPOSE_FILE} (project {settings.project})"
    )
    return 0


def _up(net: ComposeNetwork, args: argparse.Namespace) -> int:
    if args.build or not engine.image_exists(net.settings.image):
        if not args.build:
            print(f"{net.settings.image} not found; building it (devnet/docker/build.sh)")
        engine.build_image(tag=net.settings.image)
    started = time.monotonic()
    net.up()
    try:
        # Without heartbeat blocks nothing is decided before a transaction.
        net.wait_ready(min_height=1 if net.plan.heartbeat_ms else 0, timeout=args.timeout)
    except (TimeoutError, RuntimeError) as e:
        print(f"devnet did not become ready: {e}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    doc = docker_endpoints(net)
    (net.dir / "endpoints.json").write_text(json.dumps(doc, indent=2) + "\n")
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print_table(doc)
    print(f"compose project {net.settings.project}: first block decided {elapsed:.1f}s after up")
    print(f"stop: qchain devnet down --docker --dir {args.dir} [--volumes]")
    return 0


def _status(net: ComposeNetwork, as_json: bool) -> int:
    rows: list[dict[str, Any]] = []
    for s in net.services():
        status, health = net.state(s)
        st = net.node_status(s) if s not in kms_services(net.plan) else None
        rows.append({"service": s, "container": status, "health": health, "status": st})
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'service':<8} {'container':<10} {'health':<10} {'height':>7} {'round':>5} peers")
    for r in rows:
        st = r["status"] or {}
        peers = ",".join(str(p) for p in st.get("peers", []))
        print(
            f"{r['service']:<8} {r['container']:<10} {r['health'] or '-':<10} "
            f"{st.get('height', '-')!s:>7} {st.get('round', '-')!s:>5} {peers}"
        )
    return 0
