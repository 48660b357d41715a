"""The devnet under Docker Compose: the key manager and N validators as containers of one
image (`qchain:dev`, built by `devnet/docker/build.sh`), on a private compose network.

`qchain devnet init --docker` writes the same files as a local devnet, flavoured for
containers, plus the compose file:

    DIR/
      network.json, genesis.json, accounts/, nodes/nodeI/, kms/, ca/   (as `init`)
      docker.json           compose project, host base port, image
      docker-compose.yml    kms + node0..nodeN-1

Inside the network, services reach each other by name: a validator listens on
0.0.0.0:7000 (P2P), :8000 (API) and :9000 (admin), its peers are `nodeJ:7000`, the key
manager is `https://kms:6000` (its TLS certificate names `kms`, `localhost` and
127.0.0.1). DIR is mounted read-only at /devnet in every container; each validator keeps
its chain in a named volume mounted at /var/lib/qchain. With `--kme-per-node` the single
`kms` service is replaced by one `kme-nodeI` service per validator (ETSI API on 6000,
relay on 6002, reached by name on the compose network; not published on the host), and
node I asks `https://kme-nodeI:6000`. Ports are published on 127.0.0.1
only: the key manager on BASE, node I's API on BASE+100+I and its admin API on BASE+200+I
(BASE = 28000 by default, so a local devnet on 27000 can run beside it). The key manager's
admin endpoint binds to the container's loopback only (the key manager insists), so it is
reached with `docker exec`, not from the host.

The containers run as uid 10001, so `init --docker` makes the devnet's key files readable
by others: these are the published, insecure dev keys.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from devnet.network import (
    DEV_ACCOUNTS,
    NetworkPlan,
    NodePlan,
    account_key,
    load_plan,
    node_config_toml,
    write_network,
)
from qchain.errors import ConfigError

DEFAULT_PROJECT = "qchain-devnet"
DEFAULT_IMAGE = "qchain:dev"
DEFAULT_BASE_PORT = 28000
KMS_SERVICE = "kms"
KMS_PORT = 6000
KMS_ADMIN_PORT = 6001
KME_RELAY_PORT = 6002
P2P_PORT = 7000
API_PORT = 8000
ADMIN_PORT = 9000
MOUNT = "/devnet"
DATA_DIR = "/var/lib/qchain"
COMPOSE_FILE = "docker-compose.yml"
SETTINGS_FILE = "docker.json"
BUILD_SCRIPT = Path(__file__).resolve().parent / "docker" / "build.sh"
STOP_GRACE_S = 20


@dataclass(frozen=True)
class DockerSettings:
    """What the compose file needs beyond the network plan."""

    project: str = DEFAULT_PROJECT
    base_port: int = DEFAULT_BASE_PORT
    image: str = DEFAULT_IMAGE

    def __post_init__(self) -> None:
        if not 1024 <= self.base_port <= 65535 - 300:
            raise ConfigError("base_port", "must leave room for the devnet's ports")
        ok = self.project and all(c.isalnum() or c in "-_" for c in self.project)
        if not ok or not self.project[0].isalnum() or self.project != self.project.lower():
            raise ConfigError("project", "lower-case letters, digits, - and _")

    @property
    def kms_host_port(self) -> int:
        return self.base_port

    def api_host_port(self, index: int) -> int:
        return self.base_port + 100 + index

    def admin_host_port(self, index: int) -> int:
        return self.base_port + 200 + index


# --- plan and files ----------------------------------------------------------------------


def plan_docker_network(
    *,
    validators: int = 4,
    chain_id: str = "qchain-devnet",
    profile: str = "test",
    scheme: str = "ml-dsa-65",
    kms_rate: str = "lab",
    heartbeat_ms: int | None = 1000,
    byzantine: bool = True,
    sae_ids: str | None = None,
    kme_mode: str = "shared",
    relay_delay_ms: int = 0,
) -> NetworkPlan:
    """The network as seen from inside the compose network: node I is `nodeI` with fixed
    container ports, the key manager is `kms` (or, one per node, `kme-nodeI`)."""
    from devnet.network import plan_network

    if kme_mode == "external":
        raise ConfigError(
            "--external-kme", "not with --docker: the containers see only the devnet directory"
        )
    base = plan_network(
        validators=validators,
        chain_id=chain_id,
        profile=profile,
        scheme=scheme,
        kms_rate=kms_rate,
        heartbeat_ms=heartbeat_ms,
        byzantine=byzantine,
        sae_ids=sae_ids,
        kme_mode=kme_mode,
        relay_delay_ms=relay_delay_ms,
    )
    per_node = base.kme_mode == "per-node"
    nodes = tuple(
        NodePlan(
            index=n.index,
            name=n.name,
            sae_id=n.sae_id,
            host=n.name,
            p2p_port=P2P_PORT,
            api_port=API_PORT,
            admin_port=ADMIN_PORT,
            kme_port=KMS_PORT if per_node else 0,
            kme_admin_port=KMS_ADMIN_PORT if per_node else 0,
            kme_relay_port=KME_RELAY_PORT if per_node else 0,
            kme_host=f"kme-{n.name}" if per_node else "",
        )
        for n in base.nodes
    )
    return NetworkPlan(
        chain_id=base.chain_id,
        validators=base.validators,
        profile=base.profile,
        scheme=base.scheme,
        kms_rate=base.kms_rate,
        host=KMS_SERVICE,
        kms_port=KMS_PORT,
        kms_admin_port=KMS_ADMIN_PORT,
        nodes=nodes,
        heartbeat_ms=base.heartbeat_ms,
        byzantine=base.byzantine,
        kme_mode=base.kme_mode,
        relay_delay_ms=base.relay_delay_ms,
    )


def kms_services(plan: NetworkPlan) -> list[str]:
    """The key manager services of a Docker devnet, named as their config files."""
    from devnet.kms import kms_config_files

    return [
        KMS_SERVICE if node is None else file.removesuffix(".toml")
        for file, node in kms_config_files(plan).items()
    ]


def write_docker_network(
    directory: Path, plan: NetworkPlan, settings: DockerSettings, *, force: bool = False
) -> bool:
    """Write the devnet files for containers and the compose file. Returns False if the
    same network was already there (the compose file and settings are rewritten anyway)."""
    from devnet.kms import kms_config_files, kms_config_toml, write_kms_files

    written = write_network(directory, plan, force=force)
    if written:
        hosts = (*kms_services(plan), "localhost", "127.0.0.1")
        write_kms_files(directory, plan, hosts=hosts)
        for file, node in kms_config_files(plan).items():
            toml = kms_config_toml(plan, listen_host="0.0.0.0", node=node)
            (directory / "kms" / file).write_text(toml)
        for node in plan.nodes:
            cfg = node_config_toml(plan, node, listen_host="0.0.0.0", data_dir=f"{DATA_DIR}/data")
            (directory / "nodes" / node.name / "config.toml").write_text(cfg)
        _share_with_container(directory)
    (directory / SETTINGS_FILE).write_text(json.dumps(asdict(settings), indent=2) + "\n")
    (directory / COMPOSE_FILE).write_text(compose_yaml(plan, settings))
    return written


def _share_with_container(directory: Path) -> None:
    """Let the container user (uid 10001) read every file of the devnet directory and
    enter every folder of it (the directory itself included: it is the mount's root)."""
    for p in [directory, *directory.rglob("*")]:
        if p.is_symlink():
            continue
        mode = stat.S_IMODE(p.stat().st_mode)
        if p.is_dir():
            p.chmod(mode | 0o055)
        elif p.is_file():
            p.chmod(mode | 0o044)


def compose_yaml(plan: NetworkPlan, settings: DockerSettings, config_dir: str = ".") -> str:
    """The compose file; config_dir (relative to the file, or ${VAR} syntax) is the devnet
    directory mounted read-only at /devnet."""
    kms_probe = f"import socket; socket.create_connection(('127.0.0.1', {KMS_PORT}), 2).close()"
    node_probe = (
        "import urllib.request; "
        f"urllib.request.urlopen('http://127.0.0.1:{API_PORT}/readyz', timeout=2)"
    )
    lines = [
        f"# qchain devnet: key manager + {len(plan.nodes)} validators "
        "(generated by `qchain devnet init --docker`).",
        f"#   docker compose -p {settings.project} -f docker-compose.yml up -d   "
        "(or: qchain devnet up --docker)",
        "# The image comes from devnet/docker/build.sh; nothing is pulled.",
        "x-qchain: &qchain",
        f"  image: {settings.image}",
        "  init: true",
        "  cap_add: [NET_ADMIN]",
        f"  stop_grace_period: {STOP_GRACE_S}s",
        '  restart: "no"',
        "  networks: [devnet]",
        "",
        "services:",
    ]
    kmes = kms_services(plan)
    for kme in kmes:
        lines += [
            f"  {kme}:",
            "    <<: *qchain",
            f"    hostname: {kme}",
            f'    command: ["kms", "--config", "{MOUNT}/kms/{kme}.toml"]',
            "    volumes:",
            f"      - {config_dir}:{MOUNT}:ro",
        ]
        if kme == KMS_SERVICE:
            lines += ["    ports:", f'      - "127.0.0.1:{settings.kms_host_port}:{KMS_PORT}"']
        lines += [
            "    healthcheck:",
            f'      test: ["CMD", "python3", "-c", "{kms_probe}"]',
            "      interval: 1s",
            "      timeout: 3s",
            "      retries: 30",
            "      start_period: 10s",
        ]
    for n in plan.nodes:
        lines += [
            f"  {n.name}:",
            "    <<: *qchain",
            f"    hostname: {n.name}",
            f'    command: ["node", "run", "--config", "{MOUNT}/nodes/{n.name}/config.toml"]',
            "    environment:",
            f'      QCHAIN_API_PORT: "{API_PORT}"',
            "    volumes:",
            f"      - {config_dir}:{MOUNT}:ro",
            f"      - {n.name}-data:{DATA_DIR}",
            "    ports:",
            f'      - "127.0.0.1:{settings.api_host_port(n.index)}:{API_PORT}"',
            f'      - "127.0.0.1:{settings.admin_host_port(n.index)}:{ADMIN_PORT}"',
            "    healthcheck:",
            f'      test: ["CMD", "python3", "-c", "{node_probe}"]',
            "      interval: 3s",
            "      timeout: 3s",
            "      retries: 5",
            "      start_period: 60s",
            "    depends_on:",
        ]
        for kme in kmes:
            lines += [f"      {kme}:", "        condition: service_healthy"]
    lines += ["", "volumes:"]
    lines += [f"  {n.name}-data: {{}}" for n in plan.nodes]
    lines += ["", "networks:", "  devnet: {}", ""]
    return "\n".join(lines)


def reference_compose_yaml() -> str:
    """The ready-made compose file kept in devnet/docker/ for 4 validators: it mounts
    $QCHAIN_DEVNET_DIR (default ./devnet-docker at the repository root), which
    `qchain devnet init --docker --dir devnet-docker` fills."""
    plan = plan_docker_network(kme_mode="per-node")
    header = (
        "# Reference copy for 4 validators, kept in devnet/docker/ and regenerated with\n"
        "# `python -m devnet.dockernet > devnet/docker/docker-compose.yml`. It mounts\n"
        "# $QCHAIN_DEVNET_DIR (default: devnet-docker/ at the repository root), so first run\n"
        "# `qchain devnet init --docker --dir devnet-docker`, then, from the repository root:\n"
        "#   docker compose -p qchain-devnet -f devnet/docker/docker-compose.yml up -d\n"
    )
    return header + compose_yaml(
        plan, DockerSettings(), config_dir="${QCHAIN_DEVNET_DIR:-../../devnet-docker}"
    )


# --- running -----------------------------------------------------------------------------


@functools.cache
def compose_command() -> tuple[str, ...]:
    """`docker compose` (v2 plugin) if present, else `docker-compose` (v1)."""
    try:
        r = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, timeout=30, check=False
        )
        if r.returncode == 0:
            return ("docker", "compose")
    except (OSError, subprocess.TimeoutExpired):
        pass
    if shutil.which("docker-compose"):
        return ("docker-compose",)
    raise ConfigError("docker", "neither `docker compose` nor `docker-compose` is installed")


def docker_available(timeout: float = 10.0) -> str | None:
    """None if a Docker daemon answers and Compose exists, else why not."""
    if shutil.which("docker") is None:
        return "the docker command is not installed"
    try:
        r = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"docker info failed: {e}"
    if r.returncode != 0:
        return f"no Docker daemon reachable: {r.stderr.strip() or r.stdout.strip()}"
    try:
        compose_command()
    except ConfigError as e:
        return e.message
    return None


def image_exists(image: str) -> bool:
    r = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    return r.returncode == 0


def build_image(base: str | None = None, tag: str = DEFAULT_IMAGE) -> None:
    """Run devnet/docker/build.sh (local base without a registry unless base is given)."""
    if not BUILD_SCRIPT.exists():
        raise ConfigError(str(BUILD_SCRIPT), "missing: build the image from a source checkout")
    argv = [str(BUILD_SCRIPT), "--tag", tag]
    if base is not None:
        argv += ["--base", base]
    subprocess.run(argv, check=True)


class ComposeNetwork:
    """A devnet directory written by `init --docker`, driven with docker compose."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory.resolve()
        self.plan = load_plan(self.dir)
        path = self.dir / SETTINGS_FILE
        try:
            self.settings = DockerSettings(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as e:
            raise ConfigError(str(path), f"not a Docker devnet; run init --docker ({e})") from e
        self.compose_file = self.dir / COMPOSE_FILE

    def compose(
        self, *args: str, capture: bool = False, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        argv = [
            *compose_command(),
            "-p",
            self.settings.project,
            "-f",
            str(self.compose_file),
            *args,
        ]
        r = subprocess.run(
            argv, capture_output=capture, text=True, timeout=timeout, check=False, cwd=self.dir
        )
        if check and r.returncode != 0:
            detail = (r.stderr or "").strip()[-2000:] if capture else ""
            raise RuntimeError(f"{' '.join(argv)} exited with {r.returncode}: {detail}")
        return r

    def services(self) -> list[str]:
        return [*kms_services(self.plan), *(n.name for n in self.plan.nodes)]

    def api_url(self, name: str) -> str:
        node = self._node(name)
        return f"http://127.0.0.1:{self.settings.api_host_port(node.index)}"

    def admin_url(self, name: str) -> str:
        node = self._node(name)
        return f"http://127.0.0.1:{self.settings.admin_host_port(node.index)}"

    @property
    def kms_url(self) -> str:
        return f"https://127.0.0.1:{self.settings.kms_host_port}"

    def _node(self, name: str) -> NodePlan:
        for n in self.plan.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node {name!r} in this devnet")

    def up(self, services: list[str] | None = None) -> None:
        if not image_exists(self.settings.image):
            raise ConfigError(
                "image",
                f"{self.settings.image} is not built: run devnet/docker/build.sh "
                "(or qchain devnet up --docker --build)",
            )
        self.compose("up", "-d", "--no-build", *(services or []))

    def down(self, volumes: bool = False) -> None:
        args = ["down", "--remove-orphans", "--timeout", str(STOP_GRACE_S)]
        if volumes:
            args.append("--volumes")
        self.compose(*args)

    def container_id(self, service: str) -> str | None:
        r = self.compose("ps", "-q", service, capture=True, check=False)
        cid = r.stdout.strip().splitlines()
        return cid[0] if r.returncode == 0 and cid else None

    def state(self, service: str) -> tuple[str, str]:
        """(status, health) of a service's container: ('running', 'healthy'), ('exited',
        ''), ('missing', '') ..."""
        cid = self.container_id(service)
        if cid is None:
            return ("missing", "")
        r = subprocess.run(
            [
                "docker",
                "inspect",
                "-f",
                "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
                cid,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if r.returncode != 0:
            return ("missing", "")
        status, _, health = r.stdout.strip().partition(" ")
        return (status, health)

    def kill(self, service: str) -> None:
        """SIGKILL a service's container (a crash); its volume stays."""
        self.compose("kill", "-s", "SIGKILL", service)

    def start(self, service: str) -> None:
        self.compose("start", service)

    def node_status(self, name: str, timeout: float = 2.0) -> dict[str, Any] | None:
        from devnet.local import http_json

        try:
            doc = http_json(f"{self.api_url(name)}/v1/status", timeout)
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def wait_ready(
        self, min_height: int = 1, timeout: float = 120.0, names: list[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Wait until every named node (default all) answers on its published API port
        with height >= min_height. Raises RuntimeError if a container exited,
        TimeoutError naming the nodes that are not there."""
        from devnet.local import poll_ready

        wanted = [n.name for n in self.plan.nodes] if names is None else list(names)
        checked_at = 0.0

        def dead(missing: list[str]) -> str | None:
            # Asking Docker for container states is slow: every 3 s at most.
            nonlocal checked_at
            if time.monotonic() - checked_at <= 3:
                return None
            checked_at = time.monotonic()
            kmes = kms_services(self.plan)
            gone = [s for s in [*kmes, *missing] if self.state(s)[0] != "running"]
            if not gone:
                return None
            return (
                f"{', '.join(gone)} not running; see `qchain devnet logs --docker --dir {self.dir}`"
            )

        return poll_ready(wanted, self.node_status, min_height, timeout, dead, 0.25)

    def _tls_client_files(self, name: str) -> dict[str, str]:
        """Host paths of a node's key-manager client certificate and key (its config
        names them under /devnet)."""
        qkd = tomllib.loads((self.dir / "nodes" / name / "config.toml").read_text())["qkd"]
        cfg_dir = Path(MOUNT) / "nodes" / name
        out = {}
        for field in ("client_cert", "client_key"):
            inside = Path(os.path.normpath(cfg_dir / qkd[field]))
            out[f"tls_{field}"] = str(self.dir / inside.relative_to(MOUNT))
        return out

    def endpoints(self) -> dict[str, Any]:
        d = self.dir
        return {
            "chain_id": self.plan.chain_id,
            "directory": str(d),
            "docker": {
                "project": self.settings.project,
                "compose_file": str(self.compose_file),
                "image": self.settings.image,
            },
            "genesis": str(d / "genesis.json"),
            "ca": str(d / "ca" / "ca.pem"),
            "kms": {
                "mode": self.plan.kme_mode,
                "url": self.kms_url if self.plan.kme_mode == "shared" else None,
                "in_network_url": self.plan.kms_url,
                "admin_url": f"{self.plan.kms_admin_url} inside the kms container",
                "services": kms_services(self.plan),
                "admin_token_file": str(d / "kms" / "admin.token"),
            },
            "nodes": [
                {
                    "name": n.name,
                    "index": n.index,
                    "service": n.name,
                    "api": self.api_url(n.name),
                    "p2p": n.p2p,
                    "admin": self.admin_url(n.name),
                    "admin_token_file": str(d / "nodes" / n.name / "admin.token"),
                    "metrics": f"{self.api_url(n.name)}/metrics",
                    "explorer": f"{self.api_url(n.name)}/",
                    "sae_id": n.sae_id,
                    "kms": self.plan.kme_url(n),
                    **self._tls_client_files(n.name),
                    "config": str(d / "nodes" / n.name / "config.toml"),
                    "volume": f"{self.settings.project}_{n.name}-data",
                }
                for n in self.plan.nodes
            ],
            "accounts": [
                {
                    "name": role,
                    "organisation": org,
                    "roles": list(roles),
                    "address": account_key(role, self.plan.scheme).address.hex(),
                    "scheme": self.plan.scheme,
                    "key_file": str(d / "accounts" / f"{role}.json"),
                }
                for role, org, roles in DEV_ACCOUNTS
            ],
            "insecure_dev_keys": True,
        }


# --- the `qchain devnet ... --docker` verbs ----------------------------------------------


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
    if args.build or not image_exists(net.settings.image):
        if not args.build:
            print(f"{net.settings.image} not found; building it (devnet/docker/build.sh)")
        build_image(tag=net.settings.image)
    started = time.monotonic()
    net.up()
    try:
        # Without heartbeat blocks nothing is decided before a transaction.
        net.wait_ready(min_height=1 if net.plan.heartbeat_ms else 0, timeout=args.timeout)
    except (TimeoutError, RuntimeError) as e:
        print(f"devnet did not become ready: {e}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    doc = net.endpoints()
    (net.dir / "endpoints.json").write_text(json.dumps(doc, indent=2) + "\n")
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    from devnet.cli import print_table

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


if __name__ == "__main__":
    sys.stdout.write(reference_compose_yaml())
