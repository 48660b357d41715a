"""Describe and write a devnet: genesis, validator keys, dev accounts and node configs.

`plan_network` turns a few choices (size, chain id, timing profile, signature scheme, ports)
into a `NetworkPlan`; `write_network` writes it under a directory:

    DIR/
      network.json          what was asked for (so `init` is idempotent)
      genesis.json
      accounts/ROLE.json    dev account keys (INSECURE: derived from the published dev seed)
      nodes/nodeI/          config.toml, validator.key, admin.token, data/
      kms/                  the simulated key managers' configs and admin token
      ca/                   private CA and the key manager's and SAEs' TLS material

Where the validators get their keys is the plan's `kme_mode`:

- `shared` (default): one simulated KMS serves every SAE;
- `per-node`: one simulated KME per validator, serving only its own SAE, the KMEs relay
  key material to each other as trusted nodes do (`qchain.qkd.relay`);
- `external`: the devnet starts no KMS; each node's `kme` says where its KME is
  (`devnet.kme`, from `qchain devnet init --external-kme FILE`).

SAE ids are `SAE-node{i}` unless `sae_ids` names them (`devnet.kme.sae_ids_from`); they go
into the genesis, every node config, `network.json` and the KMS configs alike.

Validator and account keys are derived from `qchain.keys.DEV_SEED` (`dev_validator_key`,
`dev_account_key`), so every devnet has the same addresses: good for documentation and
scripts, and insecure by construction. A devnet's chain id starts with
`qchain.keys.DEVNET_CHAIN_PREFIX`; `qchain node run` refuses dev-seed keys on any other
chain.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from contracts.genesis import Genesis, parse_genesis
from devnet.kme import KmeEndpoint, sae_ids_from
from node.genesis_file import load_genesis, save_genesis
from qchain.config import PROFILES
from qchain.errors import ConfigError
from qchain.keys import (
    DEVNET_CHAIN_PREFIX,
    Scheme,
    SigningKey,
    dev_account_key,
    dev_validator_key,
    is_devnet_chain,
)

KME_MODES = ("shared", "per-node", "external")

DEV_ACCOUNTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("admin", "Platform Operator (dev)", ("admin",)),
    ("partner1", "Qingdao Partner One (dev)", ("partner",)),
    ("partner2", "Qingdao Partner Two (dev)", ("partner",)),
    ("issuer", "Innovation Voucher Office (dev)", ("issuer",)),
    ("provider", "Service Provider (dev)", ("provider",)),
    ("auditor", "Auditor (dev)", ("auditor",)),
)
"""Role label, organisation name and roles of each dev account; the labels are
`qchain.keys.DEV_ACCOUNT_ROLES` (a test keeps the two equal)."""


@dataclass(frozen=True)
class NodePlan:
    index: int
    name: str
    sae_id: str
    host: str
    p2p_port: int
    api_port: int
    admin_port: int
    kme_port: int = 0
    """Per-node KME mode: this node's simulated KME (ETSI API, admin, relay ports)."""
    kme_admin_port: int = 0
    kme_relay_port: int = 0
    kme_host: str = ""
    """Per-node KME mode: the KME's host name if not the plan's host (a container)."""
    kme: KmeEndpoint | None = None
    """External KME mode: where this node's KME is and how the node proves who it is."""
    removed: bool = False
    """`qchain devnet remove-validator` took it out of the set: the devnet does not start
    it again (`devnet.joining.mark_removed`; a reset, which starts the chain again from
    its genesis, clears it)."""

    @property
    def p2p(self) -> str:
        return f"{self.host}:{self.p2p_port}"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self.admin_port}"


DEVNET_STATE_ROOT_INTERVAL = 100
"""New devnets commit to their state every this many heights, so a node can state-sync."""


@dataclass(frozen=True)
class NetworkPlan:
    chain_id: str
    validators: int
    profile: str
    scheme: str
    kms_rate: str
    host: str
    kms_port: int
    kms_admin_port: int
    nodes: tuple[NodePlan, ...]
    heartbeat_ms: int | None = 1000
    byzantine: bool = True
    tenure: int = 64
    extra: dict[str, str] = field(default_factory=dict)
    kme_mode: str = "shared"
    relay_delay_ms: int = 0
    """Per-node KME mode: how long a key takes from the master's KME to the slave's."""
    state_root_interval: int = 0
    """The genesis's checkpoint interval (`contracts.snapshot`); 0 has none."""
    reconfiguration: bool = False
    """The genesis enables validator-set changes: each validator gets a dev account as
    its operator (`operator_role`) and `consensus.reconfiguration` is set. `nodes` may
    then hold more sites than `validators`: those added later (`devnet.joining`)."""

    @property
    def kms_url(self) -> str:
        return f"https://{self.host}:{self.kms_port}"

    def kme_url(self, node: NodePlan) -> str:
        """The ETSI GS QKD 014 endpoint that `node` asks for keys."""
        if node.kme is not None:
            return node.kme.kme_url
        if self.kme_mode == "per-node":
            return f"https://{node.kme_host or self.host}:{node.kme_port}"
        return self.kms_url

    @property
    def kms_admin_url(self) -> str:
        return f"http://{self.host}:{self.kms_admin_port}"

    def to_json(self) -> dict[str, object]:
        doc = asdict(self)
        doc["nodes"] = [asdict(n) for n in self.nodes]
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> NetworkPlan:
        raw_nodes = doc["nodes"]
        if not isinstance(raw_nodes, list):
            raise TypeError("nodes must be a list")
        nodes = tuple(
            NodePlan(**{**n, "kme": None if n.get("kme") is None else KmeEndpoint(**n["kme"])})
            for n in raw_nodes
        )
        rest: dict[str, Any] = {k: v for k, v in doc.items() if k != "nodes"}
        return cls(nodes=nodes, **rest)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports that were free a moment ago (for tests; a devnet uses fixed ports)."""
    return _bind_all([0] * count, host) or []


def free_port_base(offsets: Sequence[int], host: str = "127.0.0.1", tries: int = 50) -> int:
    """A base port B such that every B + offset was free a moment ago, for a layout of
    fixed offsets (a Docker devnet's host ports). Bases are drawn from the range below
    the kernel's ephemeral ports, where nothing binds unless asked to."""
    rng = random.Random()
    span = max(offsets)
    for _ in range(tries):
        base = rng.randrange(20000, 32768 - span)
        if _bind_all([base + o for o in offsets], host) is not None:
            return base
    raise OSError(f"no base port with {len(offsets)} free ports on {host} after {tries} tries")


def _bind_all(ports: Sequence[int], host: str) -> list[int] | None:
    """Bind every port at once (0: any free one), then let go; the ports bound, or None
    if one of them was taken."""
    socks = []
    try:
        for port in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            try:
                s.bind((host, port))
            except OSError:
                if port == 0:
                    raise
                return None
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def plan_network(
    *,
    validators: int = 4,
    chain_id: str = "qchain-devnet",
    profile: str = "test",
    scheme: str = Scheme.ML_DSA_65.value,
    kms_rate: str = "lab",
    host: str = "127.0.0.1",
    base_port: int | None = 27000,
    heartbeat_ms: int | None = 1000,
    byzantine: bool = True,
    sae_ids: str | None = None,
    kme_mode: str = "shared",
    external_kmes: dict[str, KmeEndpoint] | None = None,
    relay_delay_ms: int = 0,
    state_root_interval: int = DEVNET_STATE_ROOT_INTERVAL,
    reconfiguration: bool = False,
) -> NetworkPlan:
    """A network of `validators` nodes; base_port None picks free ports (tests).
    `sae_ids` is a list or `{i}` pattern (`devnet.kme.sae_ids_from`); `external_kmes`
    (every node's KME, `devnet.kme.load_kme_map`) implies kme_mode "external" and gives
    the SAE ids."""
    if external_kmes is not None:
        if sae_ids is not None:
            raise ConfigError("--sae-ids", "the external-KME map names the SAE ids")
        kme_mode = "external"
    if kme_mode not in KME_MODES:
        raise ConfigError("kme_mode", f"must be one of {', '.join(KME_MODES)}")
    if kme_mode == "external" and external_kmes is None:
        raise ConfigError("external_kmes", "the external mode needs every node's KME")
    if not is_devnet_chain(chain_id):
        raise ConfigError(
            "chain_id", f"a devnet's chain id starts with {DEVNET_CHAIN_PREFIX!r}, got {chain_id!r}"
        )
    if relay_delay_ms < 0:
        raise ConfigError("relay_delay_ms", "must not be negative")
    if validators < 1 or validators % 3 != 1:
        raise ConfigError("validators", "n = 3f+1 validators are needed (1, 4, 7, 10, 13, 16)")
    if profile not in PROFILES:
        raise ConfigError("profile", f"must be one of {', '.join(PROFILES)}")
    if scheme not in (s.value for s in Scheme):
        raise ConfigError("scheme", f"must be one of {', '.join(s.value for s in Scheme)}")
    count = 2 + 3 * validators
    if base_port is None:
        ports = free_ports(count + 3 * validators, host)
        kme_ports = ports[count:]
    else:
        if not 1024 <= base_port <= 65535 - 700:
            raise ConfigError("base_port", "must leave room for the devnet's ports")
        ports = [base_port, base_port + 1]
        ports += [base_port + 100 + i for i in range(validators)]
        ports += [base_port + 200 + i for i in range(validators)]
        ports += [base_port + 300 + i for i in range(validators)]
        # Reorder to the layout used below: p2p, api, admin per node.
        ports = ports[:2] + [
            p
            for i in range(validators)
            for p in (ports[2 + i], ports[2 + validators + i], ports[2 + 2 * validators + i])
        ]
        kme_ports = [base_port + k + i for i in range(validators) for k in (400, 500, 600)]
    per_node = kme_mode == "per-node"
    names = [f"node{i}" for i in range(validators)]
    if external_kmes is not None:
        kmes: list[KmeEndpoint | None] = [external_kmes[name] for name in names]
        saes = [external_kmes[name].sae_id for name in names]
    else:
        kmes = [None] * validators
        saes = sae_ids_from(sae_ids, validators)
    nodes = tuple(
        NodePlan(
            index=i,
            name=names[i],
            sae_id=saes[i],
            host=host,
            p2p_port=ports[2 + 3 * i],
            api_port=ports[3 + 3 * i],
            admin_port=ports[4 + 3 * i],
            kme_port=kme_ports[3 * i] if per_node else 0,
            kme_admin_port=kme_ports[3 * i + 1] if per_node else 0,
            kme_relay_port=kme_ports[3 * i + 2] if per_node else 0,
            kme=kmes[i],
        )
        for i in range(validators)
    )
    return NetworkPlan(
        chain_id=chain_id,
        validators=validators,
        profile=profile,
        scheme=scheme,
        kms_rate=kms_rate,
        host=host,
        kms_port=ports[0],
        kms_admin_port=ports[1],
        nodes=nodes,
        heartbeat_ms=heartbeat_ms,
        byzantine=byzantine,
        kme_mode=kme_mode,
        relay_delay_ms=relay_delay_ms if per_node else 0,
        state_root_interval=state_root_interval,
        reconfiguration=reconfiguration,
    )


OPERATOR_ROLES = ("admin", "partner2", "issuer", "provider", "auditor")
"""The dev accounts that operate the validators of a devnet whose set changes, in node
order, round (partner1 is left to send transactions of its own)."""


def operator_role(index: int) -> str:
    """The dev account that operates validator `index` (`OPERATOR_ROLES`)."""
    return OPERATOR_ROLES[index % len(OPERATOR_ROLES)]


def validator_key(index: int) -> SigningKey:
    """INSECURE dev key of validator `index` (ML-DSA-65: it signs certificates)."""
    return dev_validator_key(index)


def account_key(role: str, scheme: str) -> SigningKey:
    """INSECURE dev key of a dev account."""
    return dev_account_key(role, scheme)


def make_genesis(plan: NetworkPlan) -> Genesis:
    members = []
    issuers = []
    for role, name, roles in DEV_ACCOUNTS:
        key = account_key(role, plan.scheme)
        members.append(
            {
                "name": name,
                "scheme": key.scheme.value,
                "public_key": key.public_key.hex(),
                "roles": list(roles),
            }
        )
        if "issuer" in roles:
            issuers.append(key.address.hex())
    consensus: dict[str, object] = {
        "tenure": plan.tenure,
        "first_leader": 0,
        "timing": plan.profile,
    }
    if plan.reconfiguration:
        consensus["reconfiguration"] = True
    doc = {
        "chain_id": plan.chain_id,
        "genesis_time": 0,
        "consensus": consensus,
        "validators": [
            {
                "index": n.index,
                "name": n.name,
                "public_key": validator_key(n.index).public_key.hex(),
                "sae_id": n.sae_id,
                "p2p": n.p2p,
                "api": n.api_url,
                **(
                    {"operator": account_key(operator_role(n.index), plan.scheme).address.hex()}
                    if plan.reconfiguration
                    else {}
                ),
            }
            for n in plan.nodes[: plan.validators]
        ],
        "members": members,
        "voucher_issuers": issuers,
    }
    if plan.state_root_interval:
        doc["state_root_interval"] = plan.state_root_interval
    return parse_genesis(doc)


def node_config_toml(
    plan: NetworkPlan,
    node: NodePlan,
    *,
    tls_dir: str = "../../ca",
    listen_host: str | None = None,
    data_dir: str = "data",
) -> str:
    """The TOML config of one validator, paths relative to its directory. listen_host
    (default: the node's own host) is where its listeners bind, e.g. 0.0.0.0 in a
    container that peers reach by service name."""
    bind = node.host if listen_host is None else listen_host
    peers = "\n".join(
        f'[[p2p.peers]]\nindex = {p.index}\naddress = "{p.p2p}"\n'
        for p in plan.nodes
        if p.index != node.index
    )
    heartbeat = "none" if plan.heartbeat_ms is None else str(plan.heartbeat_ms)
    heartbeat_line = (
        f'propose_wait_max_ms = "{heartbeat}"'
        if plan.heartbeat_ms is None
        else f"propose_wait_max_ms = {heartbeat}"
    )
    return f"""# qchain validator {node.name} (generated by `qchain devnet init`)
[node]
name = "{node.name}"
index = {node.index}
data_dir = "{data_dir}"
genesis = "../../genesis.json"
signing_key = "validator.key"
profile = "{plan.profile}"
log_format = "text"

[p2p]
listen = "{bind}:{node.p2p_port}"

{peers}
[api]
listen = "{bind}:{node.api_port}"

[admin]
listen = "{bind}:{node.admin_port}"
token_file = "admin.token"
byzantine = {"true" if plan.byzantine else "false"}

{qkd_section(plan, node, tls_dir)}
[timing]
{heartbeat_line}
"""


def qkd_section(plan: NetworkPlan, node: NodePlan, tls_dir: str) -> str:
    """The node config's [qkd] table: the devnet's simulated KME and TLS material, or
    the node's external KME as the map gives it."""
    kme = node.kme
    if kme is None:
        kme = KmeEndpoint(
            kme_url=plan.kme_url(node),
            sae_id=node.sae_id,
            client_cert=f"{tls_dir}/sae-{node.sae_id}.pem",
            client_key=f"{tls_dir}/sae-{node.sae_id}.key",
            ca_cert=f"{tls_dir}/ca.pem",
        )
    lines = ["[qkd]", f'kme_url = "{kme.kme_url}"', f'sae_id = "{kme.sae_id}"']
    if kme.insecure_dev_header:
        lines.append("insecure_dev_header = true")
    else:
        lines += [
            f'client_cert = "{kme.client_cert}"',
            f'client_key = "{kme.client_key}"',
            f'ca_cert = "{kme.ca_cert}"',
        ]
    return "\n".join(lines) + "\n"


def _differences(there: object, here: dict[str, object]) -> str:
    """What differs between an existing manifest and the requested plan, for the refusal:
    the differing settings, with both values where they are short."""
    if not isinstance(there, dict):
        return "its network.json is not a network plan"
    keys = sorted(k for k in set(there) | set(here) if there.get(k) != here.get(k))
    parts = []
    for k in keys[:4]:
        a, b = there.get(k), here.get(k)
        short = all(x is None or isinstance(x, str | int | float | bool) for x in (a, b))
        parts.append(f"{k}: {a!r} there, {b!r} here" if short else k)
    return "; ".join(parts) + ("; ..." if len(keys) > 4 else "")


def write_network(directory: Path, plan: NetworkPlan, *, force: bool = False) -> bool:
    """Write the devnet files. Returns False if the same network is already there.
    Refuses (ConfigError) to overwrite a different network unless force."""
    manifest = directory / "network.json"
    if manifest.exists():
        existing = json.loads(manifest.read_text())
        # Through from_json, so a manifest written before a field existed reads with its
        # default and still names the same network.
        with contextlib.suppress(TypeError, KeyError, ValueError):
            existing = NetworkPlan.from_json(existing).to_json()
        if existing == plan.to_json():
            return False
        if not force:
            raise ConfigError(
                str(directory),
                f"holds a different network ({_differences(existing, plan.to_json())}); pass the"
                " options it was made with, or --force to overwrite it",
            )
    directory.mkdir(parents=True, exist_ok=True)
    genesis = make_genesis(plan)
    save_genesis(genesis, directory / "genesis.json")
    accounts = directory / "accounts"
    for role, _, _ in DEV_ACCOUNTS:
        account_key(role, plan.scheme).save(accounts / f"{role}.json")
    for node in plan.nodes[: plan.validators]:
        ndir = directory / "nodes" / node.name
        (ndir / "data").mkdir(parents=True, exist_ok=True)
        validator_key(node.index).save(ndir / "validator.key")
        (ndir / "config.toml").write_text(node_config_toml(plan, node))
        token = ndir / "admin.token"
        if not token.exists():
            fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(os.urandom(16).hex() + "\n")
    manifest.write_text(json.dumps(plan.to_json(), indent=2) + "\n")
    return True


def load_plan(directory: Path) -> NetworkPlan:
    manifest = directory / "network.json"
    try:
        return NetworkPlan.from_json(json.loads(manifest.read_text()))
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ConfigError(str(manifest), f"not a devnet directory ({e})") from e


def genesis_of(directory: Path) -> Genesis:
    return load_genesis(directory / "genesis.json")
