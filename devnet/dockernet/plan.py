"""What a Docker devnet is, as data: the network plan seen from inside the compose
network, the settings that are not part of the network (project, host ports, image), and
the compose project (services, their commands, ports, volumes, health checks and
dependencies). Nothing here touches Docker or the disk.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from devnet.network import NetworkPlan, plan_network
from qchain.errors import ConfigError

DEFAULT_PROJECT = "qchain-devnet"
DEFAULT_IMAGE = "qchain:dev"
DEFAULT_BASE_PORT = 28000
PORT_SPAN = 300
"""Host ports a devnet may use from its base port: the key manager on BASE, node I's API
on BASE+100+I and its admin API on BASE+200+I."""
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
STOP_GRACE_S = 20
NETWORK = "devnet"
"""The compose network every service joins (`PROJECT_devnet` to Docker)."""


@dataclass(frozen=True)
class DockerSettings:
    """What the compose file needs beyond the network plan."""

    project: str = DEFAULT_PROJECT
    base_port: int = DEFAULT_BASE_PORT
    image: str = DEFAULT_IMAGE

    def __post_init__(self) -> None:
        if not 1024 <= self.base_port <= 65535 - PORT_SPAN:
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


def host_port_offsets(validators: int) -> list[int]:
    """Every host port a devnet of this many validators publishes, as offsets from its
    base port (for `devnet.network.free_port_base`)."""
    layout = DockerSettings(base_port=1024)
    ports = [layout.kms_host_port]
    for i in range(validators):
        ports += [layout.api_host_port(i), layout.admin_host_port(i)]
    return [p - layout.base_port for p in ports]


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
        replace(
            n,
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
    return replace(
        base, host=KMS_SERVICE, kms_port=KMS_PORT, kms_admin_port=KMS_ADMIN_PORT, nodes=nodes
    )


def kms_services(plan: NetworkPlan) -> list[str]:
    """The key manager services of a Docker devnet, named as their config files."""
    from devnet.kms import kms_config_files

    return [
        KMS_SERVICE if node is None else file.removesuffix(".toml")
        for file, node in kms_config_files(plan).items()
    ]


# --- the compose project -----------------------------------------------------------------


@dataclass(frozen=True)
class Healthcheck:
    probe: str
    """Python code run in the container; the check passes if it does not raise."""
    interval_s: int
    timeout_s: int
    retries: int
    start_period_s: int


@dataclass(frozen=True)
class Port:
    """A container port published on the host's loopback."""

    host_port: int
    container_port: int
    host_ip: str = "127.0.0.1"


@dataclass(frozen=True)
class ComposeService:
    name: str
    command: tuple[str, ...]
    """The image's entry point arguments (`qchain ...`)."""
    volumes: tuple[str, ...]
    """`SOURCE:TARGET[:ro]`: the devnet directory, a node's chain volume."""
    healthcheck: Healthcheck
    environment: tuple[tuple[str, str], ...] = ()
    ports: tuple[Port, ...] = ()
    depends_on: tuple[str, ...] = ()
    """Services that must be healthy before this one starts."""


@dataclass(frozen=True)
class ComposeProject:
    project: str
    image: str
    validators: int
    services: tuple[ComposeService, ...]
    volumes: tuple[str, ...]
    """Named volumes (a validator's chain data each)."""
    stop_grace_s: int = STOP_GRACE_S
    network: str = NETWORK


KMS_PROBE = f"import socket; socket.create_connection(('127.0.0.1', {KMS_PORT}), 2).close()"
NODE_PROBE = (
    "import urllib.request; "
    f"urllib.request.urlopen('http://127.0.0.1:{API_PORT}/readyz', timeout=2)"
)


def compose_project(
    plan: NetworkPlan, settings: DockerSettings, config_dir: str = "."
) -> ComposeProject:
    """The compose project of a Docker devnet; config_dir (relative to the compose file,
    or ${VAR} syntax) is the devnet directory, mounted read-only at /devnet."""
    config = f"{config_dir}:{MOUNT}:ro"
    kmes = kms_services(plan)
    services = [
        ComposeService(
            name=kme,
            command=("kms", "--config", f"{MOUNT}/kms/{kme}.toml"),
            volumes=(config,),
            ports=(Port(settings.kms_host_port, KMS_PORT),) if kme == KMS_SERVICE else (),
            healthcheck=Healthcheck(KMS_PROBE, 1, 3, 30, 10),
        )
        for kme in kmes
    ]
    services += [
        ComposeService(
            name=n.name,
            command=("node", "run", "--config", f"{MOUNT}/nodes/{n.name}/config.toml"),
            environment=(("QCHAIN_API_PORT", str(API_PORT)),),
            volumes=(config, f"{n.name}-data:{DATA_DIR}"),
            ports=(
                Port(settings.api_host_port(n.index), API_PORT),
                Port(settings.admin_host_port(n.index), ADMIN_PORT),
            ),
            healthcheck=Healthcheck(NODE_PROBE, 3, 3, 5, 60),
            depends_on=tuple(kmes),
        )
        for n in plan.nodes
    ]
    return ComposeProject(
        project=settings.project,
        image=settings.image,
        validators=len(plan.nodes),
        services=tuple(services),
        volumes=tuple(f"{n.name}-data" for n in plan.nodes),
    )
