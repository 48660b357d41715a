"""`qchain notary` on a real devnet of four validator processes, through the CLI.

Two files are anchored, one with SHA-256 and one with SM3, by two members; each is
verified offline with only the genesis file and the saved evidence. A modified file, the
evidence of the other anchor, evidence whose transaction is not the receipt's, and
evidence whose block time was changed (backdating) are refused with a message naming what
failed. A second anchor of the same digest is refused naming the first, and the lookup by
digest answers the same anchor over the API and the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devnet.local import LocalNetwork, running_network
from devnet.network import account_key, plan_network
from node.notary_evidence import load_evidence
from qchain.client import Client

pytestmark = pytest.mark.slow
SCHEME = "ed25519"


@dataclasses.dataclass(frozen=True)
class Anchored:
    file: Path
    evidence: Path
    doc: dict[str, Any]


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    plan = plan_network(base_port=None, scheme=SCHEME, heartbeat_ms=300)
    with running_network(tmp_path_factory.mktemp("devnet"), plan) as net:
        yield net


def qchain(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qchain.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def anchor(net: LocalNetwork, who: str, file: Path, algorithm: str, node: int) -> Anchored:
    evidence = file.with_suffix(".evidence")
    done = qchain(
        "notary",
        "anchor",
        file,
        "--algorithm",
        algorithm,
        "--title",
        f"{file.name} ({algorithm})",
        "--category",
        "contract",
        "--key",
        net.dir / "accounts" / f"{who}.json",
        "--node",
        net.plan.nodes[node].api_url,
        "--receipt-out",
        evidence,
        "--json",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return Anchored(file, evidence, json.loads(done.stdout))


def verify(net: LocalNetwork, file: Path, evidence: Path) -> subprocess.CompletedProcess[str]:
    return qchain(
        "notary", "verify", file, "--receipt", evidence, "--genesis", net.dir / "genesis.json"
    )


@pytest.fixture(scope="module")
def anchors(devnet: LocalNetwork, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Anchored]:
    work = tmp_path_factory.mktemp("files")
    one, two = work / "contract.pdf", work / "scan.bin"
    one.write_bytes(b"%PDF-1.7 contract 2026-118 " * 1000)
    two.write_bytes(bytes(range(256)) * 5000 + b"tail")
    return {
        "sha256": anchor(devnet, "partner1", one, "sha256", 0),
        "sm3": anchor(devnet, "partner2", two, "sm3", 2),
    }


def test_anchor_prints_digest_tx_and_height(
    devnet: LocalNetwork, anchors: dict[str, Anchored]
) -> None:
    for algorithm, a in anchors.items():
        assert a.doc["algorithm"] == algorithm and a.doc["status"] == "committed"
        assert len(bytes.fromhex(a.doc["digest"])) == 32
        assert a.doc["height"] >= 1 and a.doc["time"].endswith("Z")
        with Client(devnet.plan.nodes[1].api_url) as c:
            found = c.notary_lookup(a.doc["digest"])
        assert found is not None
        assert (found["tx_hash"], found["height"], found["algorithm"], found["category"]) == (
            a.doc["tx_hash"],
            a.doc["height"],
            algorithm,
            "contract",
        )


def test_both_verify_offline_with_only_the_genesis(
    devnet: LocalNetwork, anchors: dict[str, Anchored]
) -> None:
    members = {"sha256": "partner1", "sm3": "partner2"}
    for algorithm, a in anchors.items():
        done = verify(devnet, a.file, a.evidence)
        assert done.returncode == 0, done.stdout + done.stderr
        member = account_key(members[algorithm], SCHEME).address.hex()
        line = done.stdout.splitlines()[1]
        assert line.startswith(f"anchored at height {a.doc['height']}, block time ")
        assert f"UTC, by member {member} (Qingdao Partner " in line
        assert f"{algorithm}:{a.doc['digest']}" in done.stdout


def test_a_modified_file_fails(devnet: LocalNetwork, anchors: dict[str, Anchored]) -> None:
    a = anchors["sm3"]
    changed = a.file.with_name("scan-changed.bin")
    data = bytearray(a.file.read_bytes())
    data[len(data) // 2] ^= 1
    changed.write_bytes(bytes(data))
    done = verify(devnet, changed, a.evidence)
    assert done.returncode == 1
    assert done.stderr.startswith("error: file: its digest sm3:")
    assert "not the anchored document, or it was modified" in done.stderr


def test_the_evidence_of_another_anchor_fails(
    devnet: LocalNetwork, anchors: dict[str, Anchored]
) -> None:
    done = verify(devnet, anchors["sha256"].file, anchors["sm3"].evidence)
    assert done.returncode == 1
    assert done.stderr.startswith("error: file: its digest sm3:")
    assert f"(sm3:{anchors['sm3'].doc['digest']})" in done.stderr


def test_a_receipt_of_another_transaction_fails(
    devnet: LocalNetwork, anchors: dict[str, Anchored], tmp_path: Path
) -> None:
    one, two = (load_evidence(anchors[k].evidence) for k in ("sha256", "sm3"))
    mixed = tmp_path / "mixed.evidence"
    mixed.write_bytes(dataclasses.replace(one, transaction=two.transaction).encode())
    done = verify(devnet, anchors["sha256"].file, mixed)
    assert done.returncode == 1
    assert done.stderr.startswith(
        f"error: transaction: the receipt is for transaction {anchors['sha256'].doc['tx_hash']}"
    )


def test_a_backdated_block_time_fails_the_certificate(
    devnet: LocalNetwork, anchors: dict[str, Anchored], tmp_path: Path
) -> None:
    ev = load_evidence(anchors["sha256"].evidence)
    header = dataclasses.replace(ev.proof.header, time=ev.proof.header.time - 86_400_000)
    forged = dataclasses.replace(ev, proof=dataclasses.replace(ev.proof, header=header))
    path = tmp_path / "backdated.evidence"
    path.write_bytes(forged.encode())
    done = verify(devnet, anchors["sha256"].file, path)
    assert done.returncode == 1
    assert done.stderr.startswith("error: certificate: the receipt proof does not verify")


def test_a_bare_receipt_proof_says_how_to_get_evidence(
    devnet: LocalNetwork, anchors: dict[str, Anchored], tmp_path: Path
) -> None:
    a = anchors["sha256"]
    bare = tmp_path / "receipt.bin"
    fetched = qchain(
        "receipt", "get", a.doc["tx_hash"], "--out", bare, "--node", devnet.plan.nodes[3].api_url
    )
    assert fetched.returncode == 0, fetched.stderr
    done = verify(devnet, a.file, bare)
    assert done.returncode == 1 and "qchain notary evidence TX_HASH" in done.stderr
    rebuilt = tmp_path / "rebuilt.evidence"
    made = qchain(
        "notary",
        "evidence",
        a.doc["tx_hash"],
        "--out",
        rebuilt,
        "--node",
        devnet.plan.nodes[3].api_url,
    )
    assert made.returncode == 0, made.stderr
    assert verify(devnet, a.file, rebuilt).returncode == 0


def test_a_second_anchor_of_the_same_digest_names_the_first(
    devnet: LocalNetwork, anchors: dict[str, Anchored]
) -> None:
    a = anchors["sha256"]
    again = qchain(
        "notary",
        "anchor",
        a.file,
        "--key",
        devnet.dir / "accounts" / "partner2.json",
        "--node",
        devnet.plan.nodes[1].api_url,
        "--wait",
    )
    assert again.returncode == 3, again.stdout + again.stderr
    assert "not anchored: duplicate" in again.stdout
    assert f"first anchored at height {a.doc['height']}" in again.stdout
    lookup = qchain(
        "notary", "lookup", "--file", a.file, "--node", devnet.plan.nodes[1].api_url, "--json"
    )
    assert lookup.returncode == 0, lookup.stderr
    assert json.loads(lookup.stdout)["tx_hash"] == a.doc["tx_hash"]
