"""The Kubernetes manifests of deploy/kubernetes/, checked offline.

Every manifest (the committed 4-site example, and what the generator writes for sites in one
cluster) validates against the Kubernetes schemas of K8S_VERSION with `kubernetes-validate`,
strictly (an unknown field is an error); a mutated manifest is rejected. Then what the
schemas cannot see: every ConfigMap and Secret key a pod mounts is one that the documented
`kubectl create ... --from-file` commands create; the probes hit `/healthz` and `/readyz`
on the API port; the secrets reach the node read-only with mode 0400; every container has an
image, runs as non-root on a read-only root filesystem; nothing exposes the admin API.

The example is regenerated with
    QCHAIN_REGEN_VECTORS=1 .venv/bin/pytest tests/deploy/test_kubernetes.py
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version, major_minor

from devnet.sites import SiteKms, init_validator, qchain, run_ceremony, write_members
from qchain.config import parse_config

from .generators import load_generator

REPO = Path(__file__).resolve().parents[2]
K8S_DIR = REPO / "deploy" / "kubernetes"
EXAMPLE = K8S_DIR / "example"
K8S_VERSION = "1.37"
"""The newest Kubernetes version whose schemas the pinned kubernetes-validate bundles."""


gen = load_generator("qchain_k8s_generate", K8S_DIR / "generate.py")

PILOT = {
    # name: (p2p hint, api URL, the address it connects to peers from)
    "partner-a": (
        "validator.partner-a.example:7000",
        "https://api.partner-a.example:8443",
        "192.0.2.10/32",
    ),
    "partner-b": (
        "validator.partner-b.example:7000",
        "https://api.partner-b.example:8443",
        "198.51.100.20/32",
    ),
    "partner-c": (
        "validator.partner-c.example:7000",
        "https://api.partner-c.example:8443",
        "203.0.113.30/32",
    ),
    "partner-d": (
        "validator.partner-d.example:7000",
        "https://api.partner-d.example:8443",
        "192.0.2.40/32",
    ),
}
"""The example pilot: four partner sites, each on its own cluster."""
IN_CLUSTER = {
    name: (
        f"qchain-p2p.{name}.svc.cluster.local:7000",
        f"https://qchain-api.{name}.svc.cluster.local:8443",
        "",
    )
    for name in ("site-1", "site-2", "site-3", "site-4")
}
"""A rehearsal: four sites as namespaces of one cluster, found by Service names."""


def node_toml(name: str, index: int, peers: list[tuple[int, str]]) -> str:
    """node.toml as `qchain node config --secrets-dir /run/secrets/qchain --data-dir
    /var/lib/qchain` writes it: public files beside it, secrets in the secrets dir."""
    s = "/run/secrets/qchain"
    peer_lines = ", ".join(f'{{ index = {i}, address = "{a}" }}' for i, a in peers)
    return f"""[node]
name = "{name}"
index = {index}
data_dir = "/var/lib/qchain"
genesis = "genesis.json"
signing_key = "{s}/validator.key"

[p2p]
listen = "0.0.0.0:7000"
peers = [{peer_lines}]

[api]
listen = "0.0.0.0:8443"
tls_cert = "api.crt"
tls_key = "{s}/api.key"

[admin]
listen = "127.0.0.1:9000"
token_file = "{s}/admin.token"

[qkd]
kme_url = "https://kme.{name}.example:443"
sae_id = "sae-{name}"
client_cert = "kme-client.crt"
client_key = "{s}/kme-client.key"
ca_cert = "kme-ca.crt"
"""


def make_sites(root: Path, network: dict[str, tuple[str, str, str]]) -> dict[str, Path]:
    """One site directory per validator, as `validator init` and `node config` leave it
    (key files hold placeholders: the generator never reads them)."""
    names = sorted(network)
    genesis = {
        "chain_id": "qchain-pilot-example",
        "validators": [
            {
                "index": i,
                "name": n,
                "sae_id": f"sae-{n}",
                "p2p": network[n][0],
                "api": network[n][1],
            }
            for i, n in enumerate(names)
        ],
    }
    sites = {}
    for i, name in enumerate(names):
        site = root / name
        site.mkdir(parents=True)
        p2p, api, _ = network[name]
        (site / "site.toml").write_text(
            f'name = "{name}"\np2p = "{p2p}"\napi = "{api}"\np2p_listen = "0.0.0.0:7000"\n'
            'api_listen = "0.0.0.0:8443"\nadmin_listen = "127.0.0.1:9000"\n'
        )
        peers = [(j, network[n][0]) for j, n in enumerate(names) if n != name]
        (site / "node.toml").write_text(node_toml(name, i, peers))
        (site / "genesis.json").write_text(json.dumps(genesis, indent=2))
        for f in ("api.crt", "kme-ca.crt", "kme-client.crt"):
            (site / f).write_text("-----BEGIN CERTIFICATE-----\n")
        for f in gen.SECRET_FILES:
            (site / f).write_text(f"PRIVATE {name} {f}\n")
            (site / f).chmod(0o600)
        sites[name] = site
    return sites


def generate(
    root: Path, network: dict[str, tuple[str, str, str]], cidrs: bool
) -> dict[str, tuple[Any, dict[str, str]]]:
    """Each site's Site and its manifests' text by file name."""
    out = {}
    for name, site_dir in make_sites(root, network).items():
        peer_cidrs = {n: v[2] for n, v in network.items() if n != name} if cidrs else {}
        image = f"registry.{name}.example/qchain:0.1.0"
        site = gen.load_site(site_dir, image, peer_cidrs=peer_cidrs)
        texts = {f: gen.render(site, f, doc) for f, doc in gen.manifests(site).items()}
        out[name] = (site, texts)
    return out


def docs_of(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def example_files() -> list[Path]:
    return sorted(EXAMPLE.glob("*/*.yaml"))


# --- what the schemas cannot see ---------------------------------------------------------


def created_keys(commands: list[list[str]]) -> dict[tuple[str, str], set[str]]:
    """(kind, name) -> the keys `kubectl create secret|configmap ... --from-file` makes."""
    out: dict[tuple[str, str], set[str]] = {}
    for cmd in commands:
        kind = "Secret" if cmd[2] == "secret" else "ConfigMap"
        name = cmd[4] if kind == "Secret" else cmd[3]
        keys = {a.split("=", 2)[1] for a in cmd if a.startswith("--from-file=")}
        out[(kind, name)] = keys
    return out


def _probe_problems(c: dict[str, Any], ports: set[str]) -> list[str]:
    out = []
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        get = c.get(probe, {}).get("httpGet")
        if not get or get.get("path") != path or get.get("port") != "api":
            out.append(f"{c['name']}: {probe} must GET {path} on the api port, not {get}")
        elif "api" not in ports:
            out.append(f"{c['name']}: {probe} names port api, which it does not declare")
    return out


def _container_problems(c: dict[str, Any]) -> list[str]:
    out = []
    if not c.get("image"):
        out.append(f"container {c['name']}: no image")
    sc = c.get("securityContext", {})
    if sc.get("readOnlyRootFilesystem") is not True or sc.get("runAsNonRoot") is not True:
        out.append(f"container {c['name']}: must run as non-root on a read-only root fs")
    if sc.get("allowPrivilegeEscalation") is not False:
        out.append(f"container {c['name']}: must not allow privilege escalation")
    return out


def _volume_problems(pod: dict[str, Any], created: dict[tuple[str, str], set[str]]) -> list[str]:
    out = []
    for v in pod["volumes"]:
        for kind, field, name_field in (
            ("ConfigMap", "configMap", "name"),
            ("Secret", "secret", "secretName"),
        ):
            if field not in v:
                continue
            src = v[field]
            have = created.get((kind, src[name_field]))
            if have is None:
                out.append(f"volume {v['name']}: no {kind} {src[name_field]} is created")
                continue
            for item in src.get("items", []):
                if item["key"] not in have:
                    out.append(
                        f"volume {v['name']}: {kind} {src[name_field]} has no key {item['key']!r}"
                    )
    return out


def _secret_problems(pod: dict[str, Any]) -> list[str]:
    """The node reads its secrets from /run/secrets/qchain: a read-only mount of an
    in-memory volume that the init container filled with mode 0400 copies."""
    out = []
    volumes = {v["name"]: v for v in pod["volumes"]}
    node = pod["containers"][0]
    mounts = {m["mountPath"]: m for m in node["volumeMounts"]}
    m = mounts.get(str(gen.SECRETS_DIR))
    if m is None or m.get("readOnly") is not True:
        out.append(f"{node['name']}: {gen.SECRETS_DIR} must be mounted read-only")
    elif volumes[m["name"]].get("emptyDir", {}).get("medium") != "Memory":
        out.append(f"{node['name']}: {gen.SECRETS_DIR} must be an in-memory volume")
    if any("secret" in volumes.get(x["name"], {}) for x in node["volumeMounts"]):
        out.append(f"{node['name']}: mounts the Secret itself (root-owned, group-readable)")
    script = " ".join(pod["initContainers"][0]["command"])
    for f in gen.SECRET_FILES:
        if f"install -m 0400 {gen.SECRETS_SOURCE_DIR / f} {gen.SECRETS_DIR / f}" not in script:
            out.append(f"init container: does not copy {f} with mode 0400")
    return out


def problems(docs: list[dict[str, Any]], commands: list[list[str]]) -> list[str]:
    """Everything wrong with one site's manifests that a schema cannot see."""
    by_kind = {d["kind"]: d for d in docs}
    sts = by_kind["StatefulSet"]
    pod = sts["spec"]["template"]["spec"]
    out = []
    for c in pod.get("initContainers", []) + pod["containers"]:
        out += _container_problems(c)
    node = pod["containers"][0]
    ports = {p["name"] for p in node.get("ports", [])}
    out += _probe_problems(node, ports)
    out += _volume_problems(pod, created_keys(commands))
    out += _secret_problems(pod)
    if ports != {"p2p", "api"}:
        out.append(f"{node['name']}: must expose exactly p2p and api, not {sorted(ports)}")
    labels = sts["spec"]["template"]["metadata"]["labels"]
    for d in docs:
        if d["kind"] != "Service":
            continue
        if any(labels.get(k) != v for k, v in d["spec"]["selector"].items()):
            out.append(f"Service {d['metadata']['name']}: selects no validator pod")
        for p in d["spec"]["ports"]:
            if p["targetPort"] not in ports:
                out.append(f"Service {d['metadata']['name']}: port {p['targetPort']} unknown")
    rules = by_kind["NetworkPolicy"]["spec"]["ingress"]
    p2p_rules = [r for r in rules if any(p["port"] == "p2p" for p in r["ports"])]
    if len(p2p_rules) != 1 or not p2p_rules[0].get("from"):
        out.append("NetworkPolicy: P2P must be open only to the other validators")
    return out


def check(docs: list[dict[str, Any]], commands: list[list[str]]) -> list[str]:
    """Schema errors and project problems of one site's manifests, as messages."""
    out = []
    for d in docs:
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            out.append(f"{d['kind']} {d['metadata']['name']}: {where}: {e.message}")
    return out + problems(docs, commands)


# --- tests ----------------------------------------------------------------------------------


def test_the_pinned_version_is_the_newest_the_package_bundles() -> None:
    assert major_minor(latest_version()) == K8S_VERSION


def test_the_example_is_what_the_generator_writes(tmp_path: Path) -> None:
    written = generate(tmp_path, PILOT, cidrs=True)
    if os.environ.get("QCHAIN_REGEN_VECTORS"):
        for name, (_, texts) in written.items():
            (EXAMPLE / name).mkdir(parents=True, exist_ok=True)
            for f, text in texts.items():
                (EXAMPLE / name / f).write_text(text)
    expected = {f"{name}/{f}": t for name, (_, texts) in written.items() for f, t in texts.items()}
    committed = {p.relative_to(EXAMPLE).as_posix(): p.read_text() for p in example_files()}
    assert committed == expected


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.relative_to(EXAMPLE).as_posix())
def test_every_example_manifest_validates(path: Path) -> None:
    docs = docs_of(path.read_text())
    assert docs
    for d in docs:
        assert kubernetes_validate.validate(d, K8S_VERSION, strict=True) == K8S_VERSION


@pytest.mark.parametrize("network", [PILOT, IN_CLUSTER], ids=["pilot", "one-cluster"])
def test_each_site_passes_every_check(tmp_path: Path, network: dict[str, Any]) -> None:
    for name, (site, texts) in generate(tmp_path, network, cidrs=network is PILOT).items():
        docs = [d for t in texts.values() for d in docs_of(t)]
        assert check(docs, gen.kubectl_commands(site)) == [], name


def test_sites_in_one_cluster_find_each_other_by_service_name(tmp_path: Path) -> None:
    _, texts = generate(tmp_path, IN_CLUSTER, cidrs=False)["site-2"]
    p2p = docs_of(texts["service-p2p.yaml"])[0]
    assert (p2p["metadata"]["name"], p2p["metadata"]["namespace"]) == ("qchain-p2p", "site-2")
    assert p2p["spec"]["type"] == "ClusterIP" and p2p["spec"]["publishNotReadyAddresses"]
    peers = docs_of(texts["networkpolicy.yaml"])[0]["spec"]["ingress"][1]["from"]
    assert [p["namespaceSelector"]["matchLabels"] for p in peers] == [
        {"kubernetes.io/metadata.name": n} for n in ("site-1", "site-3", "site-4")
    ]


def test_the_example_node_toml_is_one_the_node_accepts(tmp_path: Path) -> None:
    site_dir = make_sites(tmp_path, PILOT)["partner-b"]
    cfg = parse_config(tomllib.loads((site_dir / "node.toml").read_text()), Path("/etc/qchain"))
    assert str(cfg.node.signing_key) == "/run/secrets/qchain/validator.key"
    assert str(cfg.api.tls_cert) == "/etc/qchain/api.crt"


def _site_docs(tmp_path: Path) -> tuple[list[dict[str, Any]], list[list[str]]]:
    site, texts = generate(tmp_path, PILOT, cidrs=True)["partner-a"]
    return [d for t in texts.values() for d in docs_of(t)], gen.kubectl_commands(site)


def _pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "StatefulSet")["spec"]["template"]["spec"]


def _break_replicas(docs: list[dict[str, Any]]) -> None:
    next(d for d in docs if d["kind"] == "StatefulSet")["spec"]["replicas"] = "four"


def _misspell_field(docs: list[dict[str, Any]]) -> None:
    c = _pod(docs)["containers"][0]
    c["securityContext"]["readOnlyRootFileSystem"] = c["securityContext"].pop(
        "readOnlyRootFilesystem"
    )


def _drop_image(docs: list[dict[str, Any]]) -> None:
    del _pod(docs)["containers"][0]["image"]


def _probe_status(docs: list[dict[str, Any]]) -> None:
    _pod(docs)["containers"][0]["readinessProbe"]["httpGet"]["path"] = "/v1/status"


def _writable_secrets(docs: list[dict[str, Any]]) -> None:
    for m in _pod(docs)["containers"][0]["volumeMounts"]:
        m.pop("readOnly", None)


def _mount_unknown_key(docs: list[dict[str, Any]]) -> None:
    _pod(docs)["volumes"][1]["secret"]["items"].append({"key": "admin.tok", "path": "x"})


def _group_readable_copy(docs: list[dict[str, Any]]) -> None:
    init = _pod(docs)["initContainers"][0]
    init["command"][-1] = init["command"][-1].replace("0400", "0440")


def _expose_admin(docs: list[dict[str, Any]]) -> None:
    _pod(docs)["containers"][0]["ports"].append({"name": "admin", "containerPort": 9000})


def _open_p2p(docs: list[dict[str, Any]]) -> None:
    next(d for d in docs if d["kind"] == "NetworkPolicy")["spec"]["ingress"][1].pop("from")


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_break_replicas, "spec.replicas: 'four' is not of type 'integer'"),
        (_misspell_field, "'readOnlyRootFileSystem' was unexpected"),
        # The schema lets a container go without an image (controllers may fill it in).
        (_drop_image, "container validator: no image"),
        (_probe_status, "readinessProbe must GET /readyz on the api port"),
        (_writable_secrets, "/run/secrets/qchain must be mounted read-only"),
        (_mount_unknown_key, "has no key 'admin.tok'"),
        (_group_readable_copy, "does not copy validator.key with mode 0400"),
        (_expose_admin, "must expose exactly p2p and api"),
        (_open_p2p, "P2P must be open only to the other validators"),
    ],
)
def test_a_mutated_manifest_is_rejected(tmp_path: Path, mutate: Any, expected: str) -> None:
    docs, commands = _site_docs(tmp_path)
    assert check(docs, commands) == []
    broken = copy.deepcopy(docs)
    mutate(broken)
    found = check(broken, commands)
    assert any(expected in msg for msg in found), found


def test_the_readme_creates_the_keys_the_pods_mount() -> None:
    readme = (K8S_DIR / "README.md").read_text()
    keys = set(re.findall(r"--from-file=([\w.-]+)=", readme))
    assert keys == set(gen.SECRET_FILES) | set(gen.CONFIG_FILES)


# --- the generator refuses what cannot work ---------------------------------------------


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (
            "node.toml",
            '"/run/secrets/qchain/api.key"',
            '"/srv/site/api.key"',
            "[api] tls_key = '/srv/site/api.key': in the pod this file is "
            "/run/secrets/qchain/api.key",
        ),
        (
            "node.toml",
            'genesis = "genesis.json"',
            'genesis = "/srv/site/genesis.json"',
            "in the pod this file is /etc/qchain/genesis.json",
        ),
        ("node.toml", '"/var/lib/qchain"', '"data"', "[node] data_dir = 'data'"),
        (
            "node.toml",
            'listen = "127.0.0.1:9000"',
            'listen = "0.0.0.0:9000"',
            "[admin] listen: 0.0.0.0 is not loopback",
        ),
        (
            "node.toml",
            'listen = "0.0.0.0:7000"',
            'listen = "127.0.0.1:7000"',
            "[p2p] listen: 127.0.0.1 is loopback",
        ),
        ("node.toml", 'client_cert = "kme-client.crt"\n', "", "[qkd] client_cert: missing"),
        ("node.toml", "[api]", "[[api]]", "[api]: must be a table"),
        (
            "site.toml",
            'name = "partner-a"',
            'name = "partner-z"',
            "site.toml name 'partner-z' is not a validator of genesis.json",
        ),
        ("site.toml", "https://api", "http://api", "must be an https:// URL"),
        ("site.toml", ":8443", ":99999", "must be an https:// URL"),
        (
            "genesis.json",
            '"name": "partner-b"',
            '"name": "Partner A"',
            "'partner-a' and 'Partner A' both become 'partner-a'",
        ),
        (
            "genesis.json",
            '"p2p": "validator.partner-c.example:7000",',
            "",
            "validators[2]: p2p must be a non-empty string",
        ),
    ],
)
def test_the_generator_refuses_a_site_that_cannot_run(
    tmp_path: Path, file: str, old: str, new: str, expected: str
) -> None:
    site_dir = make_sites(tmp_path, PILOT)["partner-a"]
    _edit(site_dir / file, old, new)
    cidrs = {n: v[2] for n, v in PILOT.items() if n != "partner-a"}
    with pytest.raises(gen.SiteError) as e:
        gen.load_site(site_dir, "qchain:dev", peer_cidrs=cidrs)
    assert expected in str(e.value)


def test_the_generator_needs_the_peers_addresses_and_every_file(tmp_path: Path) -> None:
    site_dir = make_sites(tmp_path, PILOT)["partner-a"]
    cidrs = {"partner-b": "198.51.100.20/32", "partner-c": "203.0.113.30/32"}
    with pytest.raises(gen.SiteError, match=r"'partner-d'.*--peer-cidr 'partner-d=CIDR'"):
        gen.load_site(site_dir, "qchain:dev", peer_cidrs=cidrs)
    with pytest.raises(gen.SiteError, match="partner-e: not another validator"):
        gen.load_site(site_dir, "qchain:dev", peer_cidrs={**cidrs, "partner-e": "192.0.2.1/32"})
    with pytest.raises(gen.SiteError, match=re.escape("--peer-cidr partner-d=10.0.0.300/32")):
        gen.load_site(site_dir, "qchain:dev", peer_cidrs={**cidrs, "partner-d": "10.0.0.300/32"})
    with pytest.raises(gen.SiteError, match="--image '': must name an image"):
        gen.load_site(site_dir, "", peer_cidrs=cidrs)
    (site_dir / "kme-client.key").unlink()
    with pytest.raises(gen.SiteError, match=re.escape("kme-client.key: missing")):
        gen.load_site(site_dir, "qchain:dev", peer_cidrs=cidrs)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(K8S_DIR / "generate.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_command_writes_the_manifests_and_says_what_to_run(tmp_path: Path) -> None:
    site_dir = make_sites(tmp_path / "sites", PILOT)["partner-c"]
    out = tmp_path / "manifests"
    peers = [f"--peer-cidr={n}={v[2]}" for n, v in PILOT.items() if n != "partner-c"]
    r = _run(
        "--site",
        str(site_dir),
        "--image",
        "registry.partner-c.example/qchain:0.1.0",
        "--out",
        str(out),
        *peers,
    )
    assert r.returncode == 0, r.stderr
    written = {p.name: p.read_text() for p in out.iterdir()}
    assert written == {p.name: p.read_text() for p in (EXAMPLE / "partner-c").iterdir()}
    assert f"--from-file=validator.key={site_dir / 'validator.key'}" in r.stdout
    assert "kubectl create configmap qchain-partner-c-config --namespace qchain" in r.stdout
    for f in gen.SECRET_FILES:
        assert (site_dir / f).read_text() not in "".join(written.values())


def test_the_command_names_the_field_it_refuses(tmp_path: Path) -> None:
    site_dir = make_sites(tmp_path, PILOT)["partner-a"]
    r = _run("--site", str(site_dir), "--image", "qchain:dev", "--out", str(tmp_path / "out"))
    assert r.returncode == 2
    assert (
        "validator 'partner-b': its p2p hint validator.partner-b.example:7000 is outside"
        in r.stderr
    )
    assert not (tmp_path / "out").exists()


# --- from a real ceremony ------------------------------------------------------------------


def test_sites_from_a_real_ceremony_pass_every_check(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Four sites through `validator init` (KME TLS files from `qchain kms certs`),
    `genesis build`, `genesis verify` and `node config --secrets-dir /run/secrets/qchain
    --data-dir /var/lib/qchain`; the generator's manifests of each pass every check."""
    vendor = tmp_path_factory.mktemp("kme-vendor")
    saes = [f"sae-{n}" for n in PILOT]
    hosts = [f"kme.{n}.example" for n in PILOT]
    qchain("kms", "certs", "--out", str(vendor), *[a for s in saes for a in ("--sae", s)],
           *[a for h in hosts for a in ("--host", h)])  # fmt: skip
    sites = []
    for n, (p2p, api, _) in PILOT.items():
        site = tmp_path_factory.mktemp(n) / "site"
        kms = SiteKms(
            Path(),
            f"https://kme.{n}.example",
            "",
            vendor / "ca.pem",
            {f"sae-{n}": vendor / f"sae-sae-{n}.pem"},
            {f"sae-{n}": vendor / f"sae-sae-{n}.key"},
        )
        init_validator(site, name=n, p2p=p2p, api=api, kms=kms, sae_id=f"sae-{n}")
        sites.append(site)
    partner = tmp_path_factory.mktemp("members")
    run_ceremony(
        sites,
        tmp_path_factory.mktemp("coordinator"),
        write_members(partner, {"operator": "admin"}),
        chain_id="qingdao-k8s-test",
        timing="default",
        node_config=("--secrets-dir", "/run/secrets/qchain", "--data-dir", "/var/lib/qchain"),
    )
    for site, (name, network) in zip(sites, PILOT.items(), strict=True):
        out = tmp_path_factory.mktemp(f"manifests-{name}")
        peers = {n: v[2] for n, v in PILOT.items() if n != name}
        cidrs = [f"--peer-cidr={n}={c}" for n, c in peers.items()]
        r = _run("--site", str(site), "--image", f"registry.{name}.example/qchain:0.1.0",
                 "--out", str(out), *cidrs)  # fmt: skip
        assert r.returncode == 0, r.stderr
        docs = [d for p in sorted(out.glob("*.yaml")) for d in docs_of(p.read_text())]
        loaded = gen.load_site(
            site, "qchain:dev", peer_cidrs=dict(c.split("=", 2)[1:] for c in cidrs)
        )
        assert check(docs, gen.kubectl_commands(loaded)) == [], name
        sts = next(d for d in docs if d["kind"] == "StatefulSet")
        assert sts["metadata"]["name"] == f"qchain-{name}"
        assert network[0].split(":")[0] in json.dumps(docs)
