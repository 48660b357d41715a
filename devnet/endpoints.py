"""The endpoint table `qchain devnet up` prints and writes to `DIR/endpoints.json`: the
chain, the key manager(s), every node's URLs and files, and the dev accounts. One JSON
shape for both flavours (the Docker one adds the compose project, container names and
volumes).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from devnet.network import DEV_ACCOUNTS, NetworkPlan, account_key

if TYPE_CHECKING:
    from devnet.dockernet.network import ComposeNetwork
    from devnet.local import LocalNetwork


def accounts(plan: NetworkPlan, directory: Path) -> list[dict[str, Any]]:
    """The dev accounts (INSECURE: derived from the published dev seed)."""
    return [
        {
            "name": role,
            "organisation": org,
            "roles": list(roles),
            "address": account_key(role, plan.scheme).address.hex(),
            "scheme": plan.scheme,
            "key_file": str(directory / "accounts" / f"{role}.json"),
        }
        for role, org, roles in DEV_ACCOUNTS
    ]


def local_endpoints(net: LocalNetwork) -> dict[str, Any]:
    """The endpoint table of a local-process devnet."""
    d = net.dir
    plan = net.plan
    return {
        "chain_id": plan.chain_id,
        "directory": str(d),
        "genesis": str(d / "genesis.json"),
        "ca": str(d / "ca" / "ca.pem"),
        "kms": {
            "mode": plan.kme_mode,
            "url": plan.kms_url if plan.kme_mode == "shared" else None,
            "admin_url": plan.kms_admin_url if plan.kme_mode == "shared" else None,
            "admin_urls": net.kms_services(),
            "admin_token_file": str(d / "kms" / "admin.token"),
        },
        "nodes": [
            {
                "name": n.name,
                "index": n.index,
                "api": n.api_url,
                "p2p": n.p2p,
                "admin": n.admin_url,
                "admin_token_file": str(d / "nodes" / n.name / "admin.token"),
                "metrics": f"{n.api_url}/metrics",
                "explorer": f"{n.api_url}/",
                "sae_id": n.sae_id,
                "kms": plan.kme_url(n),
                "tls_client_cert": n.kme.client_cert
                if n.kme is not None
                else str(d / "ca" / f"sae-{n.sae_id}.pem"),
                "tls_client_key": n.kme.client_key
                if n.kme is not None
                else str(d / "ca" / f"sae-{n.sae_id}.key"),
                "config": str(d / "nodes" / n.name / "config.toml"),
                "log": str(net.log_file(n.name)),
                "removed": n.removed,
            }
            for n in plan.nodes
        ],
        "accounts": accounts(plan, d),
        "insecure_dev_keys": True,
    }


def docker_endpoints(net: ComposeNetwork) -> dict[str, Any]:
    """The endpoint table of a Docker devnet (URLs as published on the host)."""
    from devnet.dockernet.plan import kms_services

    d = net.dir
    plan = net.plan
    return {
        "chain_id": plan.chain_id,
        "directory": str(d),
        "docker": {
            "project": net.settings.project,
            "compose_file": str(net.compose_file),
            "image": net.settings.image,
        },
        "genesis": str(d / "genesis.json"),
        "ca": str(d / "ca" / "ca.pem"),
        "kms": {
            "mode": plan.kme_mode,
            "url": net.kms_url if plan.kme_mode == "shared" else None,
            "in_network_url": plan.kms_url,
            "admin_url": f"{plan.kms_admin_url} inside the kms container",
            "services": kms_services(plan),
            "admin_token_file": str(d / "kms" / "admin.token"),
        },
        "nodes": [
            {
                "name": n.name,
                "index": n.index,
                "service": n.name,
                "api": net.api_url(n.name),
                "p2p": n.p2p,
                "admin": net.admin_url(n.name),
                "admin_token_file": str(d / "nodes" / n.name / "admin.token"),
                "metrics": f"{net.api_url(n.name)}/metrics",
                "explorer": f"{net.api_url(n.name)}/",
                "sae_id": n.sae_id,
                "kms": plan.kme_url(n),
                **net.tls_client_files(n.name),
                "config": str(d / "nodes" / n.name / "config.toml"),
                "volume": f"{net.settings.project}_{n.name}-data",
            }
            for n in plan.nodes
        ],
        "accounts": accounts(plan, d),
        "insecure_dev_keys": True,
    }


def print_table(doc: dict[str, Any]) -> None:
    print(f"\nqchain devnet {doc['chain_id']} — {doc['directory']}")
    kms = doc["kms"]
    if kms["url"]:
        print(f"key manager  {kms['url']}  (admin {kms['admin_url']})\n")
    else:
        kmes = sorted({n["kms"] for n in doc["nodes"]})
        print(f"key managers ({kms['mode']})  {'  '.join(kmes)}\n")
    header = ("node", "API", "P2P", "admin", "metrics", "explorer")
    rows = [
        # A removed site (`remove-validator`) is not started: nothing listens there.
        (f"{n['name']} (removed)", "-", "-", "-", "-", "-")
        if n.get("removed")
        else (n["name"], n["api"], n["p2p"], n["admin"], n["metrics"], n["explorer"])
        for n in doc["nodes"]
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    print("\ndev accounts (INSECURE: derived from the published dev seed)")
    for a in doc["accounts"]:
        print(f"  {a['name']:<9} {a['address']}  {','.join(a['roles']):<8} {a['key_file']}")
    print(f"\nendpoints as JSON: {doc['directory']}/endpoints.json")
