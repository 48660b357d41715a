"""Kubernetes manifests for ONE validator site, written from its site directory.

A pilot network has one validator per partner site, and each site's operator applies only
its own manifests on its own cluster. This script reads what `qchain validator init` and
`qchain node config --secrets-dir /run/secrets/qchain --data-dir /var/lib/qchain` left in
the site directory and writes, for that validator:

- `namespace.yaml`: the namespace, with the `restricted` Pod Security level enforced;
- `statefulset.yaml`: one replica of `qchain node run --config /etc/qchain/node.toml`,
  non-root, read-only root filesystem, a volume claim for `/var/lib/qchain`, probes on
  `/healthz` and `/readyz`;
- `service-p2p.yaml`: the P2P service, named by the validator's `p2p` hint;
- `service-api.yaml`: the public API service, named by the validator's `api` hint;
- `networkpolicy.yaml`: P2P only from the other validators, the API from anywhere;
- `poddisruptionbudget.yaml`: a drain never takes the validator down unasked.

The Secret (`validator.key`, `api.key`, `admin.token`, `kme-client.key`) and the ConfigMap
(`node.toml`, `genesis.json`, `api.crt`, `kme-ca.crt`, `kme-client.crt`) are NOT written:
the operator creates them from the site directory with `kubectl create ... --from-file`
(the script prints the two commands), so no private key is ever copied into a manifest.

It imports nothing from qchain (only the standard library and PyYAML, which qchain itself
depends on), so a site can read it in one sitting. Run it with `--help`.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import re
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml

CONFIG_DIR = PurePosixPath("/etc/qchain")
SECRETS_DIR = PurePosixPath("/run/secrets/qchain")
DATA_DIR = PurePosixPath("/var/lib/qchain")
SECRETS_SOURCE_DIR = PurePosixPath("/run/secrets/qchain-source")
CONFIG_FILES = ("node.toml", "genesis.json", "api.crt", "kme-ca.crt", "kme-client.crt")
"""The ConfigMap's keys: public files the pod reads from CONFIG_DIR."""
SECRET_FILES = ("validator.key", "api.key", "admin.token", "kme-client.key")
"""The Secret's keys: the site's secret files, which the pod reads from SECRETS_DIR."""
PUBLIC_PATHS = {
    ("node", "genesis"): "genesis.json",
    ("api", "tls_cert"): "api.crt",
    ("qkd", "ca_cert"): "kme-ca.crt",
    ("qkd", "client_cert"): "kme-client.crt",
}
"""node.toml fields naming a public file, and the file each must name."""
SECRET_PATHS = {
    ("node", "signing_key"): "validator.key",
    ("api", "tls_key"): "api.key",
    ("admin", "token_file"): "admin.token",
    ("qkd", "client_key"): "kme-client.key",
}
"""node.toml fields naming a secret file, and the file each must name."""
UID = 10001
"""The `qchain` user and group of the image (devnet/docker/Dockerfile)."""
APP = "qchain-validator"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
IN_CLUSTER = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)(\.([a-z0-9]([-a-z0-9]*[a-z0-9])?))?"
    r"(\.svc(\.cluster\.local)?)?$"
)
"""A host name that is a Service of this cluster: `NAME`, `NAME.NAMESPACE`,
`NAME.NAMESPACE.svc` or `NAME.NAMESPACE.svc.cluster.local`."""
RESOURCES = {
    "requests": {"cpu": "1", "memory": "768Mi"},
    "limits": {"cpu": "2", "memory": "1536Mi"},
}
"""Sized in deploy/kubernetes/README.md ("Resources") from docs/BENCHMARKS.md and the
node's configured memory bounds."""


class SiteError(Exception):
    """A site directory, or an option, that cannot make manifests; the message names the
    file and field and says what to do."""


@dataclass(frozen=True)
class Endpoint:
    """Where a Service answers: its name and namespace in this cluster, the port clients
    use, and whether it must be reachable from outside the cluster."""

    host: str
    name: str
    namespace: str | None
    port: int
    external: bool


@dataclass(frozen=True)
class Peer:
    name: str
    p2p: str
    source: dict[str, Any]
    """One NetworkPolicy `from` entry: the addresses this peer connects from."""


@dataclass(frozen=True)
class Site:
    name: str
    """The validator's name as the genesis lists it."""
    slug: str
    """The name as a DNS label, for Kubernetes object names and labels."""
    namespace: str
    image: str
    p2p: Endpoint
    api: Endpoint
    p2p_port: int
    """Port the node listens on for P2P (node.toml [p2p] listen)."""
    api_port: int
    peers: tuple[Peer, ...]
    storage_size: str
    storage_class: str | None
    site_dir: Path


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except OSError as e:
        raise SiteError(f"{path}: cannot read ({e.strerror})") from e
    except tomllib.TOMLDecodeError as e:
        raise SiteError(f"{path}: not valid TOML ({e})") from e


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise SiteError(f"{path}: cannot read ({e.strerror})") from e
    except ValueError as e:
        raise SiteError(f"{path}: not valid JSON ({e})") from e


def _text(doc: dict[str, Any], key: str, where: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise SiteError(f"{where}: {key} must be a non-empty string")
    return value


def _host_port(value: str, where: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SiteError(f"{where}: {value!r} is not HOST:PORT")
    return host, int(port)


def slug(name: str) -> str:
    """`name` as a DNS label (lower case, letters, digits and dashes, at most 40 characters,
    so that `qchain-<slug>-p2p` stays a valid Service name)."""
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-")
    if not s:
        raise SiteError(f"validator name {name!r} has no letter or digit to name objects by")
    return s


def endpoint(host: str, port: int, default_name: str, namespace: str | None) -> Endpoint:
    """The Service behind an advertised `host:port`: a Service of this cluster when the
    host is one (its name and namespace come from the host), else an external one."""
    host = host.lower()
    m = IN_CLUSTER.match(host)
    if m and (m.group(3) is None or m.group(6) is not None):
        return Endpoint(host, m.group(1), m.group(4) or namespace, port, external=False)
    return Endpoint(host, default_name, namespace, port, external=True)


def _field(node: dict[str, Any], table: str, key: str, path: Path) -> Any:
    section = node.get(table, {})
    if not isinstance(section, dict):
        raise SiteError(f"{path} [{table}]: must be a table")
    return section.get(key)


def _listen(node: dict[str, Any], table: str, path: Path, default: str = "") -> tuple[str, int]:
    value = _field(node, table, "listen", path) or default
    return _host_port(str(value), f"{path} [{table}] listen")


@dataclass(frozen=True)
class Runtime:
    """Where a platform mounts a validator's files, and the words its errors use."""

    secrets_dir: PurePosixPath
    holder: str
    """What mounts the files and keeps the store: "pod", "service"."""
    box: str
    """What the process runs in: "pod", "container"."""
    reach: str
    """How an operator reaches the admin API inside it."""


POD = Runtime(SECRETS_DIR, "pod", "pod", "kubectl port-forward")


def check_node_toml(node: dict[str, Any], path: Path, rt: Runtime = POD) -> tuple[int, int]:
    """The P2P and API listen ports; refuses a node.toml whose files are not where the
    runtime mounts them, whose store is elsewhere, or whose admin API is not on loopback."""
    for (table, key), want in {**PUBLIC_PATHS, **SECRET_PATHS}.items():
        value = _field(node, table, key, path)
        where = f"{path} [{table}] {key}"
        if not isinstance(value, str):
            raise SiteError(
                f"{where}: missing; the {rt.holder} needs {want} (the API serves TLS, and a "
                "pilot site's key manager uses mutual TLS: validator init --kme-cert "
                "--kme-key --kme-ca)"
            )
        base = rt.secrets_dir if (table, key) in SECRET_PATHS else CONFIG_DIR
        got = PurePosixPath(value)
        if (got if got.is_absolute() else CONFIG_DIR / got) != base / want:
            raise SiteError(
                f"{where} = {value!r}: in the {rt.box} this file is {base / want}; write "
                f"node.toml with `qchain node config --secrets-dir {rt.secrets_dir} "
                f"--data-dir {DATA_DIR}`"
            )
    data_dir = _field(node, "node", "data_dir", path)
    if data_dir != str(DATA_DIR):
        raise SiteError(
            f"{path} [node] data_dir = {data_dir!r}: the {rt.holder} keeps its store at "
            f"{DATA_DIR}; write node.toml with `qchain node config ... --data-dir {DATA_DIR}`"
        )
    admin_host, _ = _listen(node, "admin", path, "127.0.0.1:9000")
    if admin_host not in LOOPBACK:
        raise SiteError(
            f"{path} [admin] listen: {admin_host} is not loopback; the admin API must stay "
            f"inside the {rt.box} (reach it with {rt.reach})"
        )
    ports = []
    for table in ("p2p", "api"):
        host, port = _listen(node, table, path)
        if host in LOOPBACK:
            raise SiteError(
                f"{path} [{table}] listen: {host} is loopback; the {rt.box} must listen on "
                f"0.0.0.0 (validator init --{table}-listen)"
            )
        ports.append(port)
    return ports[0], ports[1]


def _peer_source(name: str, hint: Endpoint, cidrs: dict[str, str]) -> dict[str, Any]:
    if name in cidrs:
        return {"ipBlock": {"cidr": cidrs[name]}}
    if hint.external:
        raise SiteError(
            f"validator {name!r}: its p2p hint {hint.host}:{hint.port} is outside this "
            f"cluster; give --peer-cidr '{name}=CIDR' (the addresses it "
            "connects from)"
        )
    source: dict[str, Any] = {
        "podSelector": {
            "matchLabels": {"app.kubernetes.io/name": APP, "qchain.io/validator": slug(name)}
        }
    }
    if hint.namespace is not None:
        source["namespaceSelector"] = {
            "matchLabels": {"kubernetes.io/metadata.name": hint.namespace}
        }
    return source


def _https_host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    try:
        port = parts.port or 443
    except ValueError:
        port = 0
    if parts.scheme != "https" or not parts.hostname or not port:
        raise SiteError(f"site.toml api = {url!r}: must be an https:// URL")
    return parts.hostname, port


def _validators(genesis: Any, path: Path) -> list[tuple[str, str]]:
    if not isinstance(genesis, dict) or not isinstance(genesis.get("validators"), list):
        raise SiteError(f"{path}: validators must be a list")
    out = []
    for i, v in enumerate(genesis["validators"]):
        where = f"{path} validators[{i}]"
        if not isinstance(v, dict):
            raise SiteError(f"{where}: must be an object")
        out.append((_text(v, "name", where), _text(v, "p2p", where)))
    return out


def load_site(
    site_dir: Path,
    image: str,
    namespace: str | None = None,
    peer_cidrs: dict[str, str] | None = None,
    storage_size: str = "20Gi",
    storage_class: str | None = None,
) -> Site:
    """Everything the manifests need, read and checked from a site directory."""
    if not image or any(c.isspace() for c in image):
        raise SiteError(f"--image {image!r}: must name an image, e.g. registry/qchain:0.1.0")
    for f in CONFIG_FILES + SECRET_FILES + ("site.toml",):
        if not (site_dir / f).is_file():
            raise SiteError(
                f"{site_dir / f}: missing; run `qchain validator init` and "
                "`qchain node config` in this site directory first"
            )
    site = _read_toml(site_dir / "site.toml")
    name = _text(site, "name", f"{site_dir / 'site.toml'}")
    p2p_port, api_port = check_node_toml(_read_toml(site_dir / "node.toml"), site_dir / "node.toml")
    own = slug(name)
    p2p = endpoint(
        *_host_port(_text(site, "p2p", "site.toml"), "site.toml p2p"),
        f"qchain-{own}-p2p",
        namespace,
    )
    api = endpoint(
        *_https_host_port(_text(site, "api", "site.toml")), f"qchain-{own}-api", namespace
    )
    ns = namespace or p2p.namespace or api.namespace or "qchain"
    for what, ep in (("p2p", p2p), ("api", api)):
        if ep.namespace not in (None, ns):
            raise SiteError(
                f"site.toml {what} = {ep.host!r} names namespace "
                f"{ep.namespace!r}, but the manifests go to {ns!r}"
            )
    cidrs = dict(peer_cidrs or {})
    for peer_name, cidr in cidrs.items():
        try:
            ipaddress.ip_network(cidr)
        except ValueError as e:
            raise SiteError(f"--peer-cidr {peer_name}={cidr}: {e}") from e
    validators = _validators(_read_json(site_dir / "genesis.json"), site_dir / "genesis.json")
    names = [n for n, _ in validators]
    slugs = [slug(n) for n in names]
    for i, label in enumerate(slugs):
        if label in slugs[:i]:
            raise SiteError(
                f"genesis.json validators {names[slugs.index(label)]!r} and "
                f"{names[i]!r} both become {label!r} in Kubernetes names"
            )
    if name not in names:
        raise SiteError(
            f"site.toml name {name!r} is not a validator of genesis.json ({', '.join(names)})"
        )
    unknown = sorted(set(cidrs) - set(names) | ({name} & set(cidrs)))
    if unknown:
        raise SiteError(
            f"--peer-cidr names {', '.join(unknown)}: not another validator of the genesis"
        )
    peers = []
    for peer_name, hint in validators:
        if peer_name == name:
            continue
        ep = endpoint(*_host_port(hint, f"genesis.json {peer_name} p2p"), "", ns)
        peers.append(Peer(peer_name, hint, _peer_source(peer_name, ep, cidrs)))
    return Site(
        name=name,
        slug=own,
        namespace=ns,
        image=image,
        p2p=dataclasses.replace(p2p, namespace=ns),
        api=dataclasses.replace(api, namespace=ns),
        p2p_port=p2p_port,
        api_port=api_port,
        peers=tuple(peers),
        storage_size=storage_size,
        storage_class=storage_class,
        site_dir=site_dir,
    )


def _labels(site: Site) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "qchain.io/validator": site.slug}


def _all_labels(site: Site) -> dict[str, str]:
    return {**_labels(site), "app.kubernetes.io/part-of": "qchain"}


def _meta(site: Site, name: str) -> dict[str, Any]:
    return {"name": name, "namespace": site.namespace, "labels": _all_labels(site)}


def namespace(site: Site) -> dict[str, Any]:
    levels = {f"pod-security.kubernetes.io/{k}": "restricted" for k in ("enforce", "warn")}
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": site.namespace, "labels": levels},
    }


def _restricted(read_only_root: bool = True) -> dict[str, Any]:
    """The container security context of the `restricted` Pod Security level."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only_root,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _probe(path: str, period_s: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "api", "scheme": "HTTPS"},
        "periodSeconds": period_s,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def _copy_secrets(image: str) -> dict[str, Any]:
    """The init container that copies the Secret's files into the in-memory volume the node
    reads, owned by the node's user with mode 0400 (README: why)."""
    copy = " && ".join(
        f"install -m 0400 {SECRETS_SOURCE_DIR / f} {SECRETS_DIR / f}" for f in SECRET_FILES
    )
    return {
        "name": "secrets",
        "image": image,
        "command": ["/bin/sh", "-c", f"set -eu; {copy}"],
        "securityContext": _restricted(),
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"cpu": "100m", "memory": "32Mi"},
        },
        "volumeMounts": [
            {"name": "secret-source", "mountPath": str(SECRETS_SOURCE_DIR), "readOnly": True},
            {"name": "secrets", "mountPath": str(SECRETS_DIR)},
        ],
    }


def _validator_container(site: Site) -> dict[str, Any]:
    return {
        "name": "validator",
        "image": site.image,
        "command": ["qchain", "node", "run", "--config", str(CONFIG_DIR / "node.toml")],
        "ports": [
            {"name": "p2p", "containerPort": site.p2p_port, "protocol": "TCP"},
            {"name": "api", "containerPort": site.api_port, "protocol": "TCP"},
        ],
        "securityContext": _restricted(),
        "resources": RESOURCES,
        # The startup check of the store runs before the API listens: up to 5 minutes.
        "startupProbe": _probe("/healthz", 5, 60),
        "livenessProbe": _probe("/healthz", 10, 3),
        "readinessProbe": _probe("/readyz", 5, 2),
        "volumeMounts": [
            {"name": "config", "mountPath": str(CONFIG_DIR), "readOnly": True},
            {"name": "secrets", "mountPath": str(SECRETS_DIR), "readOnly": True},
            {"name": "data", "mountPath": str(DATA_DIR)},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def configmap_name(site: Site) -> str:
    return f"qchain-{site.slug}-config"


def secret_name(site: Site) -> str:
    return f"qchain-{site.slug}-secrets"


def _volumes(site: Site) -> list[dict[str, Any]]:
    return [
        {
            "name": "config",
            "configMap": {
                "name": configmap_name(site),
                "defaultMode": 0o444,
                "items": [{"key": f, "path": f} for f in CONFIG_FILES],
            },
        },
        # 0440, not 0400: kubelet adds group read for the pod's fsGroup anyway, and the
        # files belong to root, so the init container reads them through that group.
        {
            "name": "secret-source",
            "secret": {
                "secretName": secret_name(site),
                "defaultMode": 0o440,
                "items": [{"key": f, "path": f} for f in SECRET_FILES],
            },
        },
        {"name": "secrets", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]


def statefulset(site: Site) -> dict[str, Any]:
    claim: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": site.storage_size}},
    }
    if site.storage_class is not None:
        claim["storageClassName"] = site.storage_class
    pod = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {
            "runAsUser": UID,
            "runAsGroup": UID,
            "runAsNonRoot": True,
            "fsGroup": UID,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [_copy_secrets(site.image)],
        "containers": [_validator_container(site)],
        "volumes": _volumes(site),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(site, f"qchain-{site.slug}"),
        "spec": {
            "replicas": 1,
            "serviceName": site.p2p.name,
            "selector": {"matchLabels": _labels(site)},
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain",
                "whenScaled": "Retain",
            },
            "template": {"metadata": {"labels": _all_labels(site)}, "spec": pod},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": claim}],
        },
    }


def service(site: Site, ep: Endpoint, port_name: str, ready_only: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": _labels(site),
        "ports": [{"name": port_name, "port": ep.port, "targetPort": port_name, "protocol": "TCP"}],
        "publishNotReadyAddresses": not ready_only,
    }
    meta = _meta(site, ep.name)
    if ep.external:
        # Local: clients' own addresses reach the pod, so the NetworkPolicy can see them.
        spec |= {"type": "LoadBalancer", "externalTrafficPolicy": "Local"}
        meta["annotations"] = {"external-dns.alpha.kubernetes.io/hostname": ep.host}
    else:
        spec["type"] = "ClusterIP"
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


def network_policy(site: Site) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(site, f"qchain-{site.slug}"),
        "spec": {
            "podSelector": {"matchLabels": _labels(site)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"ports": [{"port": "api", "protocol": "TCP"}]},
                {
                    "from": [p.source for p in site.peers],
                    "ports": [{"port": "p2p", "protocol": "TCP"}],
                },
            ],
        },
    }


def disruption_budget(site: Site) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(site, f"qchain-{site.slug}"),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": _labels(site)}},
    }


def manifests(site: Site) -> dict[str, dict[str, Any]]:
    """Every manifest of a site, by file name."""
    return {
        "namespace.yaml": namespace(site),
        "statefulset.yaml": statefulset(site),
        # P2P answers before the pod is ready: readiness needs a quorum of connected peers.
        "service-p2p.yaml": service(site, site.p2p, "p2p", ready_only=False),
        "service-api.yaml": service(site, site.api, "api", ready_only=True),
        "networkpolicy.yaml": network_policy(site),
        "poddisruptionbudget.yaml": disruption_budget(site),
    }


def kubectl_commands(site: Site) -> list[list[str]]:
    """The commands that create the Secret and the ConfigMap from the site directory."""

    def from_files(files: tuple[str, ...]) -> list[str]:
        return [f"--from-file={f}={site.site_dir / f}" for f in files]

    ns = ["--namespace", site.namespace]
    return [
        [
            "kubectl",
            "create",
            "secret",
            "generic",
            secret_name(site),
            *ns,
            *from_files(SECRET_FILES),
        ],
        ["kubectl", "create", "configmap", configmap_name(site), *ns, *from_files(CONFIG_FILES)],
    ]


def render(site: Site, file_name: str, doc: dict[str, Any]) -> str:
    header = (
        f"# {file_name} of validator {site.name!r}, written by "
        "deploy/kubernetes/generate.py from its site directory; do not edit by hand.\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def write(site: Site, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, doc in manifests(site).items():
        path = out / file_name
        path.write_text(render(site, file_name, doc))
        written.append(path)
    return written


def name_equals(what: str) -> Callable[[str], tuple[str, str]]:
    """An argparse type for an option given as NAME=<what>: the pair (NAME, value)."""

    def parse(value: str) -> tuple[str, str]:
        name, sep, rest = value.rpartition("=")
        if not sep or not name or not rest:
            raise argparse.ArgumentTypeError(f"{value!r} is not NAME={what}")
        return name, rest

    return parse


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="deploy/kubernetes/generate.py",
        description="Write the Kubernetes manifests of one validator from its site directory "
        "(after `qchain node config --secrets-dir /run/secrets/qchain --data-dir "
        "/var/lib/qchain`).",
    )
    ap.add_argument("--site", type=Path, required=True, help="the site directory")
    ap.add_argument(
        "--image",
        required=True,
        help="the node image in this site's registry, e.g. registry.example.org/qchain:0.1.0",
    )
    ap.add_argument("--out", type=Path, required=True, help="directory for the manifests")
    ap.add_argument(
        "--namespace",
        help="default: from the p2p hint when it is a Service of this cluster, else qchain",
    )
    ap.add_argument(
        "--peer-cidr",
        type=name_equals("CIDR"),
        action="append",
        default=[],
        metavar="NAME=CIDR",
        help="addresses validator NAME connects from; needed "
        "for every validator whose p2p hint is outside this cluster",
    )
    ap.add_argument("--storage-size", default="20Gi", help="size of the data volume")
    ap.add_argument(
        "--storage-class",
        help="storage class of the data volume (default: the cluster's default class)",
    )
    args = ap.parse_args(argv)
    try:
        site = load_site(
            args.site,
            args.image,
            args.namespace,
            dict(args.peer_cidr),
            args.storage_size,
            args.storage_class,
        )
    except SiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in write(site, args.out):
        print(f"wrote {path}")
    print("\nThen, with kubectl pointed at this site's cluster:")
    print(f"  kubectl apply -f {args.out / 'namespace.yaml'}")
    for cmd in kubectl_commands(site):
        print("  " + " ".join(cmd))
    print(f"  kubectl apply -f {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
