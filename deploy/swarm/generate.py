"""A Docker Swarm stack for a pilot network, written from its validators' site directories.

Each site directory is what `qchain validator init` and `qchain node config --secrets-dir
/run/secrets --data-dir /var/lib/qchain` left. For every site given, the stack has:

- one service named after the validator (and aliased to its `p2p` hint's host on the
  stack's overlay network, so peers find it by the name the genesis gives them), running
  `qchain node run --config /etc/qchain/node.toml`, placed on swarm nodes labelled
  `qchain.site=<site>`, restarted whenever it stops, updated stop-first (a validator is one
  identity: two tasks at once would sign twice);
- Docker secrets for `validator.key`, `api.key`, `admin.token`, `kme-client.key`, mounted in
  `/run/secrets` owned by the image's `qchain` user with mode 0400 (what `qchain node run`
  demands of secret files), and Docker configs for `node.toml`, `genesis.json`, `api.crt`,
  `kme-ca.crt`, `kme-client.crt` in `/etc/qchain`; both are named after a digest of their
  content, because swarm secrets and configs cannot change: a changed file is a new
  object, and the next `docker stack deploy` rolls the service onto it;
- a named volume for `/var/lib/qchain`, the API port published on the swarm node that runs
  the task, the admin API left on the container's loopback, a healthcheck on `/healthz`
  over HTTPS trusting the site's own certificate (not `/readyz`: see HEALTHCHECK).

With `--kme-dir` (rehearsals), each site also gets its simulated key manager as a service
beside its validator, aliased to the host of the site's `kme_url` (devnet/sites.py
`write_site_kmes` writes what it needs).

The stack never contains a secret: it names the files, and `docker stack deploy`, run where
the site directories are, reads them. Parsing and checking of the site directory are the
Kubernetes generator's (`deploy/kubernetes/generate.py`), loaded from beside this file. It
imports nothing from qchain (standard library and PyYAML only). Run it with `--help`.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import yaml


def _kubernetes_generator() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "kubernetes" / "generate.py"
    spec = importlib.util.spec_from_file_location("qchain_k8s_generate", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path}: cannot load the Kubernetes generator")
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up by name
        spec.loader.exec_module(module)
    return module


k8s = _kubernetes_generator()
SiteError = k8s.SiteError

CONFIG_DIR = PurePosixPath("/etc/qchain")
SECRETS_DIR = PurePosixPath("/run/secrets")
"""Where swarm mounts a service's secrets (a target is a file name under it)."""
DATA_DIR = PurePosixPath("/var/lib/qchain")
KME_CONFIG_DIR = PurePosixPath("/etc/qchain-kme")
CONFIG_FILES: tuple[str, ...] = k8s.CONFIG_FILES
SECRET_FILES: tuple[str, ...] = k8s.SECRET_FILES
KME_CONFIG_FILES = ("kme.toml", "ca.pem", "kms.pem")
KME_SECRET_FILES = ("kms.key", "relay.secret", "admin.token")
UID = str(k8s.UID)
SWARM = k8s.Runtime(SECRETS_DIR, "service", "container", "docker exec")
LABEL = "qchain.site"
"""The swarm node label that says which site's services a node runs."""
NETWORK = "qchain"
COMPOSE_VERSION = "3.8"
HEALTHCHECK = {"interval": "10s", "timeout": "3s", "retries": 3, "start_period": "5m"}
"""On `/healthz`, not `/readyz`: swarm leaves a task out of its service's DNS name until
the task is healthy, and a validator is ready only once a quorum of peers reached it, so a
healthcheck on `/readyz` would keep every validator of a new network unreachable. The
start period covers the node's startup check of its store (up to 5 minutes)."""


class Octal(int):
    """A file mode, written as `0400` (the YAML 1.1 octal that `docker stack` reads)."""


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # every service spelled out, no YAML anchors


_Dumper.add_representer(
    Octal, lambda d, v: d.represent_scalar("tag:yaml.org,2002:int", f"0{int(v):o}")
)


@dataclass(frozen=True)
class SwarmSite:
    name: str
    slug: str
    """The name as a DNS label: the service's name."""
    site_dir: Path
    p2p_host: str
    """The host of the `p2p` hint: the service's alias on the overlay network."""
    p2p_port: int
    """The hint's port, which peers dial (published with --publish-p2p)."""
    p2p_listen: int
    api_port: int
    """The API URL's port, which partners dial: published on the swarm node."""
    api_listen: int
    sae_id: str
    kme_host: str
    kme_port: int
    placement: str
    """The value of the node label `qchain.site` where this site's services run."""
    genesis_digest: str


def check_node_toml(node: dict[str, Any], path: Path) -> tuple[int, int]:
    """The P2P and API listen ports; refuses a node.toml whose files are not where the
    service mounts them, whose store is elsewhere, or whose admin API is not on loopback."""
    ports: tuple[int, int] = k8s.check_node_toml(node, path, SWARM)
    return ports


def _kme(site: dict[str, Any], where: str) -> tuple[str, int]:
    url = k8s._text(site, "kme_url", where)
    parts = urlsplit(url)
    try:
        port = parts.port or 443
    except ValueError:
        port = 0
    if parts.scheme != "https" or not parts.hostname or not port:
        raise SiteError(f"{where} kme_url = {url!r}: must be an https:// URL")
    return parts.hostname, port


def load_site(site_dir: Path, placement: str | None = None) -> SwarmSite:
    """Everything the stack needs of one site, read and checked from its directory."""
    for f in CONFIG_FILES + SECRET_FILES + ("site.toml",):
        if not (site_dir / f).is_file():
            raise SiteError(
                f"{site_dir / f}: missing; run `qchain validator init` and "
                "`qchain node config` in this site directory first"
            )
    where = str(site_dir / "site.toml")
    site = k8s._read_toml(site_dir / "site.toml")
    name = k8s._text(site, "name", where)
    p2p_listen, api_listen = check_node_toml(
        k8s._read_toml(site_dir / "node.toml"), site_dir / "node.toml"
    )
    p2p_host, p2p_port = k8s._host_port(k8s._text(site, "p2p", where), f"{where} p2p")
    _, api_port = k8s._https_host_port(k8s._text(site, "api", where))
    kme_host, kme_port = _kme(site, where)
    genesis_path = site_dir / "genesis.json"
    validators = dict(k8s._validators(k8s._read_json(genesis_path), genesis_path))
    if validators.get(name) != f"{p2p_host}:{p2p_port}":
        raise SiteError(
            f"{where}: validator {name!r} with p2p {p2p_host}:{p2p_port} is not in "
            f"{genesis_path} ({', '.join(f'{n} {p}' for n, p in validators.items())})"
        )
    own = k8s.slug(name)
    label = own if placement is None else placement
    if not label or any(c.isspace() or c in "=!\"'" for c in label):
        raise SiteError(f"--site-label {name}={label!r}: must be a plain word")
    return SwarmSite(
        name=name,
        slug=own,
        site_dir=site_dir.resolve(),
        p2p_host=p2p_host.lower(),
        p2p_port=p2p_port,
        p2p_listen=p2p_listen,
        api_port=api_port,
        api_listen=api_listen,
        sae_id=k8s._text(site, "sae_id", where),
        kme_host=kme_host.lower(),
        kme_port=kme_port,
        placement=label,
        genesis_digest=hashlib.sha256(genesis_path.read_bytes()).hexdigest(),
    )


def check_network(sites: list[SwarmSite]) -> None:
    """Sites of one stack: one genesis, and names that do not collide as services."""
    if not sites:
        raise SiteError("no --site given")
    if len({s.genesis_digest for s in sites}) != 1:
        raise SiteError(
            "the sites' genesis.json files differ: "
            + ", ".join(f"{s.name} {s.genesis_digest[:12]}" for s in sites)
        )
    names: dict[str, str] = {}
    for s in sites:
        for n in {s.slug, s.p2p_host, f"kme-{s.slug}"}:
            if n in names and names[n] != s.name:
                raise SiteError(f"{s.name} and {names[n]} would both answer as {n!r}")
            names[n] = s.name


def load_kme(kme_dir: Path, site: SwarmSite) -> Path:
    """The directory of the site's simulated KME (kme_dir/SAE_ID), checked against the
    site: it serves the site's SAE on the port of its kme_url."""
    d = kme_dir / site.sae_id
    for f in KME_CONFIG_FILES + KME_SECRET_FILES:
        if not (d / f).is_file():
            raise SiteError(f"{d / f}: missing (devnet/sites.py write_site_kmes writes it)")
    try:
        kme = tomllib.loads((d / "kme.toml").read_text())
    except tomllib.TOMLDecodeError as e:
        raise SiteError(f"{d / 'kme.toml'}: not valid TOML ({e})") from e
    local = kme.get("relay", {}).get("local_sae")
    port = kme.get("server", {}).get("port")
    if local != site.sae_id or port != site.kme_port:
        raise SiteError(
            f"{d / 'kme.toml'}: serves SAE {local!r} on port {port!r}, but {site.name}'s "
            f"site.toml wants SAE {site.sae_id!r} on port {site.kme_port}"
        )
    return d


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _objects(owner: str, directory: Path, files: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Top-level secrets or configs: key `OWNER-FILE`, named with the content's digest."""
    return {
        f"{owner}-{f.replace('.', '-')}": {
            "name": f"qchain-{owner}-{f.replace('.', '-')}-{_digest(directory / f)}",
            "file": str(directory / f),
        }
        for f in files
    }


def _mounts(
    owner: str, files: tuple[str, ...], target_dir: PurePosixPath | None, mode: int
) -> list[dict[str, Any]]:
    return [
        {
            "source": f"{owner}-{f.replace('.', '-')}",
            "target": f if target_dir is None else str(target_dir / f),
            "uid": UID,
            "gid": UID,
            "mode": Octal(mode),
        }
        for f in files
    ]


def _https_probe(port: int, path: str) -> list[str]:
    """A healthcheck that GETs https://127.0.0.1:PORT/PATH trusting the site's own API
    certificate (its host names are not 127.0.0.1, so the name is not checked)."""
    code = (
        "import ssl, urllib.request; "
        f"c = ssl.create_default_context(cafile='{CONFIG_DIR / 'api.crt'}'); "
        "c.check_hostname = False; "
        f"urllib.request.urlopen('https://127.0.0.1:{port}{path}', context=c, timeout=2)"
    )
    return ["CMD", "python3", "-c", code]


def _hardened(image: str) -> dict[str, Any]:
    return {
        "image": image,
        "init": True,
        "user": f"{UID}:{UID}",
        "read_only": True,
        "cap_drop": ["ALL"],
        "stop_signal": "SIGTERM",
        "stop_grace_period": "30s",
    }


def _deploy(site: SwarmSite, resources: dict[str, Any] | None) -> dict[str, Any]:
    deploy: dict[str, Any] = {
        "mode": "replicated",
        "replicas": 1,
        "placement": {"constraints": [f"node.labels.{LABEL} == {site.placement}"]},
        "restart_policy": {"condition": "any", "delay": "5s", "window": "30s"},
        # Stop the old task before the new one starts: one identity, one store.
        "update_config": {"parallelism": 1, "order": "stop-first", "failure_action": "pause"},
        "rollback_config": {"parallelism": 1, "order": "stop-first"},
    }
    if resources is not None:
        deploy["resources"] = resources
    return deploy


def _port(published: int, target: int) -> dict[str, Any]:
    # host mode: the port opens on the swarm node that runs the task, not on every node.
    return {"target": target, "published": published, "protocol": "tcp", "mode": "host"}


def validator_service(
    site: SwarmSite, image: str, publish_p2p: bool, resources: dict[str, Any] | None
) -> dict[str, Any]:
    ports = [_port(site.api_port, site.api_listen)]
    if publish_p2p:
        ports.append(_port(site.p2p_port, site.p2p_listen))
    return {
        **_hardened(image),
        "command": ["node", "run", "--config", str(CONFIG_DIR / "node.toml")],
        "hostname": site.slug,
        "networks": {NETWORK: {"aliases": sorted({site.slug, site.p2p_host})}},
        "ports": ports,
        "volumes": [
            {"type": "volume", "source": f"{site.slug}-data", "target": str(DATA_DIR)},
            {"type": "tmpfs", "target": "/tmp", "tmpfs": {"size": 64 * 1024 * 1024}},
        ],
        "configs": _mounts(site.slug, CONFIG_FILES, CONFIG_DIR, 0o444),
        "secrets": _mounts(site.slug, SECRET_FILES, None, 0o400),
        "healthcheck": {"test": _https_probe(site.api_listen, "/healthz"), **HEALTHCHECK},
        "deploy": _deploy(site, resources),
    }


def kme_service(site: SwarmSite, image: str) -> dict[str, Any]:
    owner = f"kme-{site.slug}"
    probe = (
        "import socket; "
        f"socket.create_connection(('127.0.0.1', {site.kme_port}), timeout=2).close()"
    )
    return {
        **_hardened(image),
        "command": ["kms", "--config", str(KME_CONFIG_DIR / "kme.toml")],
        "hostname": owner,
        "networks": {NETWORK: {"aliases": sorted({owner, site.kme_host})}},
        "volumes": [{"type": "tmpfs", "target": "/tmp", "tmpfs": {"size": 16 * 1024 * 1024}}],
        "configs": _mounts(owner, KME_CONFIG_FILES, KME_CONFIG_DIR, 0o444),
        "secrets": _mounts(owner, KME_SECRET_FILES, None, 0o400),
        "healthcheck": {
            "test": ["CMD", "python3", "-c", probe],
            "interval": "5s",
            "timeout": "3s",
            "retries": 3,
            "start_period": "30s",
        },
        "deploy": _deploy(site, None),
    }


def stack(
    sites: list[SwarmSite],
    image: str,
    *,
    network: str | None = None,
    publish_p2p: bool = False,
    reservations: bool = True,
    kme_dirs: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """The stack file of these sites (kme_dirs: {site name: its simulated KME's directory})."""
    if not image or any(c.isspace() for c in image):
        raise SiteError(f"--image {image!r}: must name an image, e.g. registry/qchain:0.1.0")
    check_network(sites)
    resources = dict(k8s.RESOURCES) if reservations else {"limits": k8s.RESOURCES["limits"]}
    resources = {
        {"requests": "reservations"}.get(k, k): {
            "cpus": v["cpu"],
            "memory": v["memory"].replace("Mi", "M"),
        }
        for k, v in resources.items()
    }
    services: dict[str, Any] = {}
    secrets: dict[str, Any] = {}
    configs: dict[str, Any] = {}
    for site in sites:
        services[site.slug] = validator_service(site, image, publish_p2p, resources)
        secrets |= _objects(site.slug, site.site_dir, SECRET_FILES)
        configs |= _objects(site.slug, site.site_dir, CONFIG_FILES)
        kme_dir = (kme_dirs or {}).get(site.name)
        if kme_dir is not None:
            services[f"kme-{site.slug}"] = kme_service(site, image)
            secrets |= _objects(f"kme-{site.slug}", kme_dir.resolve(), KME_SECRET_FILES)
            configs |= _objects(f"kme-{site.slug}", kme_dir.resolve(), KME_CONFIG_FILES)
    net: dict[str, Any] = (
        {"external": True, "name": network}
        if network
        else {"driver": "overlay", "attachable": True}
    )
    return {
        "version": COMPOSE_VERSION,
        "services": services,
        "networks": {NETWORK: net},
        "volumes": {f"{s.slug}-data": {} for s in sites},
        "secrets": secrets,
        "configs": configs,
    }


def render(sites: list[SwarmSite], doc: dict[str, Any]) -> str:
    header = (
        f"# Docker Swarm stack of validator(s) {', '.join(s.name for s in sites)}, written by\n"
        "# deploy/swarm/generate.py from the site directories; do not edit by hand.\n"
        "# Secrets and configs are read from the files named below by `docker stack deploy`.\n"
    )
    return header + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def commands(sites: list[SwarmSite], out: Path, stack_name: str) -> list[str]:
    """What the operator runs next: label the nodes, deploy, watch."""
    lines = [
        f"docker node update --label-add {LABEL}={label} NODE"
        for label in dict.fromkeys(s.placement for s in sites)
    ]
    lines.append(f"docker stack deploy --compose-file {out} {stack_name}")
    lines.append(f"docker stack services {stack_name}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="deploy/swarm/generate.py",
        description="Write a Docker Swarm stack file for validators from their site "
        "directories (after `qchain node config --secrets-dir /run/secrets --data-dir "
        "/var/lib/qchain`).",
    )
    ap.add_argument(
        "--site", type=Path, action="append", required=True, help="a site directory (repeat)"
    )
    ap.add_argument(
        "--image", required=True, help="the node image, e.g. registry.example.org/qchain:0.1.0"
    )
    ap.add_argument("--out", type=Path, required=True, help="the stack file to write")
    ap.add_argument(
        "--site-label",
        type=k8s.name_equals("VALUE"),
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"validator NAME runs on swarm nodes labelled {LABEL}=VALUE (default: its name)",
    )
    ap.add_argument(
        "--network",
        help="an existing attachable overlay network to join (a consortium swarm where each "
        "site deploys its own stack); default: the stack creates its own",
    )
    ap.add_argument(
        "--publish-p2p",
        action="store_true",
        help="publish P2P on the swarm node too (peers outside this swarm)",
    )
    ap.add_argument(
        "--no-reservations",
        action="store_true",
        help="no CPU and memory reservations (a rehearsal on one small machine)",
    )
    ap.add_argument(
        "--kme-dir",
        type=Path,
        help="rehearsal: run each site's simulated KME from KME_DIR/<sae id>/",
    )
    ap.add_argument("--stack-name", default="qchain", help="for the printed commands")
    args = ap.parse_args(argv)
    labels = dict(args.site_label)
    try:
        sites = []
        for d in args.site:
            site = k8s._read_toml(d / "site.toml") if (d / "site.toml").is_file() else {}
            sites.append(load_site(d, labels.pop(str(site.get("name")), None)))
        if labels:
            raise SiteError(f"--site-label names {', '.join(sorted(labels))}: not a site given")
        kmes = {s.name: load_kme(args.kme_dir, s) for s in sites} if args.kme_dir else None
        doc = stack(
            sites,
            args.image,
            network=args.network,
            publish_p2p=args.publish_p2p,
            reservations=not args.no_reservations,
            kme_dirs=kmes,
        )
    except SiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(sites, doc))
    print(f"wrote {args.out}\n\nThen, on a manager of the swarm:")
    for line in commands(sites, args.out, args.stack_name):
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
