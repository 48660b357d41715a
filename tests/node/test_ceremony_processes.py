"""The whole genesis ceremony on real processes: four partner sites in separate
directories, a coordinator that only ever sees join files and public keys, a shared
simulated KMS, four `qchain node run` processes reaching each other by host name
(`localhost`), a partner anchoring a document over TLS with a key of its own, and a
receipt verified with nothing but the genesis."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from devnet.network import free_ports
from devnet.sites import (
    Process,
    SiteSpec,
    genesis_hash_of,
    init_site,
    qchain,
    start_kms,
    start_node,
    stop,
    wait_for,
    write_site_kms,
)
from devnet.spawn import qchain_argv
from qchain.client import Client, ssl_context_for

pytestmark = pytest.mark.timeout(240)
NAMES = ("alpha", "bravo", "charlie", "delta")


def height_of(site: Path, url: str) -> int:
    try:
        with Client(url, ssl_context=ssl_context_for(str(site / "api.crt")), timeout_s=2) as c:
            return int(c.status()["height"])
    except Exception:
        return -1


def test_ceremony_on_processes(tmp_path_factory: pytest.TempPathFactory) -> None:
    ports = free_ports(2 + 3 * len(NAMES))
    kms = write_site_kms(
        tmp_path_factory.mktemp("kme-vendor"),
        [f"sae-{n}" for n in NAMES],
        port=ports[0],
        admin_port=ports[1],
    )
    specs = [
        SiteSpec(n, f"sae-{n}", "localhost", *ports[2 + 3 * i : 5 + 3 * i])
        for i, n in enumerate(NAMES)
    ]
    sites = [tmp_path_factory.mktemp(f"site-{s.name}") / "site" for s in specs]
    coordinator = tmp_path_factory.mktemp("coordinator")
    partner = tmp_path_factory.mktemp("partner")
    for site, spec in zip(sites, specs, strict=True):
        init_site(site, spec, kms)
        shutil.copy(site / "join.json", coordinator / f"join-{spec.name}.json")
    keys = {}
    for who, scheme in (("operator", "ml-dsa-65"), ("partner", "ml-dsa-65")):
        out = qchain(
            "keys", "new", "--out", str(partner / f"{who}.key"), "--scheme", scheme, "--json"
        )
        keys[who] = json.loads(out)["public_key"]
    (coordinator / "members.toml").write_text(
        f'[[members]]\nname = "Operator"\nscheme = "ml-dsa-65"\npublic_key = "{keys["operator"]}"\n'
        'roles = ["admin"]\n\n'
        f'[[members]]\nname = "Partner"\nscheme = "ml-dsa-65"\npublic_key = "{keys["partner"]}"\n'
        'roles = ["partner"]\n'
    )
    joins = sorted(str(p) for p in coordinator.glob("join-*.json"))
    build = qchain(
        "genesis", "build", "--chain-id", "qingdao-pilot-test", "--validators", *joins,
        "--members", "members.toml", "--timing", "test", "--out", "genesis.json",
        cwd=coordinator,
    )  # fmt: skip
    announced = genesis_hash_of(build)
    for site in sites:
        shutil.copy(coordinator / "genesis.json", site.parent / "downloaded-genesis.json")
        got = site.parent / "downloaded-genesis.json"
        assert "ok:" in qchain("genesis", "verify", str(got), "--expect-hash", announced)
        qchain("node", "config", "--genesis", str(got), "--site", str(site))
        assert 'address = "localhost:' in (site / "node.toml").read_text()

    log_dir = tmp_path_factory.mktemp("logs")
    procs: list[Process] = [start_kms(kms, log_dir)]
    try:
        procs += [
            start_node(site, log_dir, spec.name) for site, spec in zip(sites, specs, strict=True)
        ]
        for site, spec in zip(sites, specs, strict=True):
            wait_for(
                f"{spec.name} to commit a block",
                lambda s=site, u=spec.api: height_of(s, u) >= 1,
                90,
                procs,
            )
        anchor_over_tls(sites[1], specs[1], partner, coordinator / "genesis.json")
    finally:
        stop(procs)


def anchor_over_tls(site: Path, spec: SiteSpec, partner: Path, genesis: Path) -> None:
    node = ["--node", spec.api]
    digest = hashlib.sha256(b"joint R&D contract v1").hexdigest()
    args = json.dumps([{"hex": digest}, "sha256", "Joint R&D contract", "contract", {"hex": ""}])
    send = ["tx", "send", "notary", "anchor", "--args", args, "--key", str(partner / "partner.key")]
    refused = subprocess.run(qchain_argv(*send, *node), capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "certificate" in (refused.stdout + refused.stderr).lower()
    ca = ["--ca-file", str(site / "api.crt")]
    out = qchain(*send, *node, *ca, "--json", timeout=90)
    sent = json.loads(out)
    assert sent["status"] == "committed" and sent["receipt"]["ok"], out
    tx_hash = sent["tx_hash"]
    receipt = partner / "receipt.bin"
    qchain("receipt", "get", tx_hash, *node, *ca, "--out", str(receipt))
    verified = json.loads(
        qchain("receipt", "verify", str(receipt), "--genesis", str(genesis), "--json")
    )
    assert verified["verified"] is True
    query = json.dumps({"digest": {"hex": digest}})
    found = json.loads(qchain("query", "notary", "get", query, *node, *ca, "--json"))
    assert "Joint R&D contract" in json.dumps(found)
