"""Where the validators get their keys: `--sae-ids`, the external-KME map and one KME per
node, written by `qchain devnet init` (no process is started here). Also the Docker
flavour of one KME per node."""

from __future__ import annotations

import argparse
import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from devnet.cli import add_arguments, run
from devnet.dockernet.files import write_docker_network
from devnet.dockernet.network import ComposeNetwork
from devnet.dockernet.plan import DockerSettings, plan_docker_network
from devnet.kme import load_kme_map, sae_ids_from
from devnet.local import LocalNetwork
from devnet.network import load_plan
from qchain.config import load_config
from qchain.errors import ConfigError
from qchain.qkd.certs import write_kms_certs
from qchain.qkd.kms_config import load_kms_config


def init(directory: Path, *extra: str) -> int:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["init", "--dir", str(directory), "--base-port", "31000", *extra])
    return run(args)


def written_sae_ids(d: Path) -> dict[str, list[str]]:
    """The SAE ids as each written file sees them, per node index."""
    genesis = json.loads((d / "genesis.json").read_text())
    manifest = json.loads((d / "network.json").read_text())
    out: dict[str, list[str]] = {
        "genesis": [v["sae_id"] for v in genesis["validators"]],
        "network.json": [n["sae_id"] for n in manifest["nodes"]],
    }
    configs = [load_config(d / "nodes" / f"node{i}" / "config.toml") for i in range(4)]
    out["node config"] = [c.qkd.sae_id for c in configs]
    return out


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("1,2,3,4", ["1", "2", "3", "4"]),
        ("site-{i}", ["site-0", "site-1", "site-2", "site-3"]),
        ("100{i}", ["1000", "1001", "1002", "1003"]),
    ],
)
def test_sae_ids_flow_into_genesis_configs_and_kms(
    tmp_path: Path, spec: str, expected: list[str]
) -> None:
    d = tmp_path / "net"
    assert init(d, "--sae-ids", spec) == 0
    for where, ids in written_sae_ids(d).items():
        assert ids == expected, where
    kms = load_kms_config(d / "kms" / "kms.toml")
    assert sorted(kms.kme_ids) == sorted(expected)
    for sid in expected:
        assert (d / "ca" / f"sae-{sid}.pem").is_file()
        cfg = load_config(d / "nodes" / f"node{expected.index(sid)}" / "config.toml")
        assert cfg.qkd.client_cert is not None
        assert cfg.qkd.client_cert.resolve() == (d / "ca" / f"sae-{sid}.pem").resolve()
    assert init(d, "--sae-ids", spec) == 0  # idempotent: the same network


@pytest.mark.parametrize(
    ("spec", "problem"),
    [("1,2,3", "3 ids for 4"), ("a,a,b,c", "distinct"), ("x y{i}", "is not"), ("{i},x", "both")],
)
def test_bad_sae_ids_are_refused(spec: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        sae_ids_from(spec, 4)


def kme_map(tmp_path: Path) -> Path:
    tls = tmp_path / "tls"
    write_kms_certs(tls, ["7", "8", "9"], ("127.0.0.1",))
    nodes = {
        f"node{i}": {
            "kme_url": "https://127.0.0.1:9443",
            "sae_id": sid,
            "client_cert": f"tls/sae-{sid}.pem",
            "client_key": f"tls/sae-{sid}.key",
            "ca_cert": "tls/ca.pem",
        }
        for i, sid in enumerate(["7", "8", "9"])
    }
    nodes["node3"] = {"kme_url": "http://127.0.0.1:9500", "sae_id": 10, "insecure_dev_header": True}
    path = tmp_path / "kmes.json"
    path.write_text(json.dumps({"nodes": nodes}))
    return path


def test_external_kme_map_configures_nodes_and_no_kms(tmp_path: Path) -> None:
    d = tmp_path / "net"
    assert init(d, "--external-kme", str(kme_map(tmp_path))) == 0
    for where, ids in written_sae_ids(d).items():
        assert ids == ["7", "8", "9", "10"], where
    assert not (d / "kms").exists()
    c0 = load_config(d / "nodes" / "node0" / "config.toml")
    assert c0.qkd.kme_url == "https://127.0.0.1:9443"
    assert c0.qkd.ca_cert == (tmp_path / "tls" / "ca.pem").resolve()
    c3 = load_config(d / "nodes" / "node3" / "config.toml")
    assert c3.qkd.insecure_dev_header and c3.qkd.client_cert is None
    assert load_plan(d).kme_mode == "external"
    assert [s.name for s in LocalNetwork(d).services()] == [f"node{i}" for i in range(4)]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda n: n.pop("node2"), "nodes.node2"),
        (lambda n: n["node1"].pop("client_key"), "nodes.node1.client_key"),
        (lambda n: n["node1"].update(sae_id="7"), "nodes.node1.sae_id"),
        (lambda n: n["node0"].update(kme_url="ftp://x"), "nodes.node0.kme_url"),
        (lambda n: n["node0"].update(colour="red"), "nodes.node0.colour"),
        (lambda n: n["node0"].update(ca_cert="nope.pem"), "nodes.node0.ca_cert"),
        (lambda n: n["node3"].update(ca_cert="tls/ca.pem"), "nodes.node3.insecure_dev_header"),
        (lambda n: n.update(node9={}), "nodes.node9"),
    ],
)
def test_external_kme_map_errors_name_node_and_field(
    tmp_path: Path, change: Callable[[dict[str, Any]], object], field: str
) -> None:
    path = kme_map(tmp_path)
    doc = json.loads(path.read_text())
    change(doc["nodes"])
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as e:
        load_kme_map(path, [f"node{i}" for i in range(4)])
    assert e.value.field == field


def test_external_kme_map_in_toml(tmp_path: Path) -> None:
    json_path = kme_map(tmp_path)
    nodes = json.loads(json_path.read_text())["nodes"]
    lines = []
    for name, t in nodes.items():
        lines.append(f"[nodes.{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in t.items()]
    path = tmp_path / "kmes.toml"
    path.write_text("\n".join(lines) + "\n")
    assert load_kme_map(path, [f"node{i}" for i in range(4)]) == load_kme_map(
        json_path, [f"node{i}" for i in range(4)]
    )


def test_kme_per_node_writes_one_kme_config_per_node(tmp_path: Path) -> None:
    d = tmp_path / "net"
    assert init(d, "--kme-per-node", "--sae-ids", "site-{i}", "--relay-delay-ms", "80") == 0
    assert not (d / "kms" / "kms.toml").exists()
    ports = set()
    for i in range(4):
        doc = tomllib.loads((d / "kms" / f"kme-node{i}.toml").read_text())
        assert doc["relay"]["local_sae"] == f"site-{i}"
        assert doc["relay"]["delay_ms"] == 80
        assert sorted(doc["relay"]["peers"]) == [f"site-{j}" for j in range(4) if j != i]
        cfg = load_config(d / "nodes" / f"node{i}" / "config.toml")
        assert cfg.qkd.kme_url == f"https://127.0.0.1:{doc['server']['port']}"
        ports |= {doc["server"]["port"], doc["admin"]["port"], doc["relay"]["port"]}
        load_kms_config(d / "kms" / f"kme-node{i}.toml")
    assert len(ports) == 12
    assert (d / "kms" / "relay.secret").stat().st_mode & 0o077 == 0


def test_docker_kme_per_node_writes_one_kme_service_per_node(tmp_path: Path) -> None:
    plan = plan_docker_network(kme_mode="per-node", sae_ids="100{i}")
    settings = DockerSettings(project="qchain-kme", base_port=29900)
    assert write_docker_network(tmp_path, plan, settings)
    for i in range(4):
        kme = tomllib.loads((tmp_path / "kms" / f"kme-node{i}.toml").read_text())
        assert kme["server"]["host"] == "0.0.0.0" and kme["relay"]["host"] == "0.0.0.0"
        assert kme["relay"]["local_sae"] == f"100{i}"
        assert kme["relay"]["peers"]["1000" if i else "1001"].startswith("http://kme-node")
        cfg = load_config(tmp_path / "nodes" / f"node{i}" / "config.toml")
        assert cfg.qkd.kme_url == f"https://kme-node{i}:6000"
        assert cfg.qkd.sae_id == f"100{i}"
    compose = (tmp_path / "docker-compose.yml").read_text()
    assert "  kms:" not in compose
    assert all(f"  kme-node{i}:" in compose for i in range(4))
    assert compose.count("condition: service_healthy") == 16  # every node waits for all KMEs
    cert = x509.load_pem_x509_certificate((tmp_path / "ca" / "kms.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kme-node3" in san.get_values_for_type(x509.DNSName)
    net = ComposeNetwork(tmp_path)
    assert net.services()[:4] == [f"kme-node{i}" for i in range(4)]


def test_docker_refuses_external_kmes() -> None:
    with pytest.raises(ConfigError, match="not with --docker"):
        plan_docker_network(kme_mode="external")


def test_a_manifest_from_before_the_kme_fields_is_the_same_network(tmp_path: Path) -> None:
    d = tmp_path / "net"
    assert init(d) == 0
    manifest = json.loads((d / "network.json").read_text())
    for n in manifest["nodes"]:
        for key in ("kme_port", "kme_admin_port", "kme_relay_port", "kme_host", "kme"):
            del n[key]
    del manifest["kme_mode"], manifest["relay_delay_ms"]
    (d / "network.json").write_text(json.dumps(manifest))
    assert init(d) == 0 and "kme_mode" not in (d / "network.json").read_text()
