"""The Rust client (`clients/rust/`, binary `qchain-anchor`), written from
`docs/TRANSACTIONS.md` alone, against a real devnet.

- its copy of `tests/vectors/core/transactions.json` is unchanged, and `cargo test`
  rebuilds the vectors byte for byte (ML-DSA-65's randomized signature is verified);
- `cargo build --release --locked` into a target directory of the user's cache named by
  a digest of the crate's sources (`build_dir`; `CARGO_TARGET_DIR` overrides it), so a
  second run, and a fresh clone of the same client (what CI runs), reuse the build and
  its compiled dependencies, and a changed client builds apart;
- on a 4-validator devnet it anchors a document with a dev account's Ed25519 seed, the
  transaction commits, its hash is the one the Python SDK computes for the same anchor,
  the notary holds the anchor, and `qchain receipt get` + `qchain receipt verify
  --genesis` check the receipt offline; anchoring the same document again fails with the
  notary's `duplicate` in a committed receipt, and the client says so;
- an SM3 digest given as hex with a Chinese title is stored as given, and a new key
  (`--create-key`) that is not a member is told so;
- on a devnet whose members hold ML-DSA-65 keys, an anchor signed by the client's
  ML-DSA-65 commits and its receipt verifies.

Skipped, with the reason, only where `cargo` is not installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from devnet.local import LocalNetwork, running_network
from devnet.network import plan_network
from devnet.nodeapi import http_json
from devnet.testing import anchor_tx
from qchain.keys import SigningKey

ROOT = Path(__file__).resolve().parents[2]
CRATE = ROOT / "clients" / "rust"
VECTORS = ROOT / "tests" / "vectors" / "core" / "transactions.json"
CARGO = shutil.which("cargo")
BUILD_TIMEOUT_S = 600

pytestmark = [pytest.mark.slow, pytest.mark.timeout(BUILD_TIMEOUT_S + 300)]
needs_cargo = pytest.mark.skipif(
    CARGO is None, reason="cargo is not installed: the Rust client (clients/rust) is not built"
)


def build_dir() -> Path:
    """`$XDG_CACHE_HOME/qchain/cargo-target/<digest>` (`~/.cache` without it): the digest
    covers `Cargo.toml`, `Cargo.lock`, `src/` and `tests/`, so one directory only ever
    holds builds of the same sources, whichever clone they came from."""
    h = hashlib.sha256()
    sources = [CRATE / "Cargo.toml", CRATE / "Cargo.lock"]
    sources += [p for d in ("src", "tests") for p in (CRATE / d).rglob("*") if p.is_file()]
    for path in sorted(sources):
        h.update(str(path.relative_to(CRATE)).encode() + b"\x00" + path.read_bytes() + b"\x00")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "qchain" / "cargo-target" / h.hexdigest()[:16]


def cargo_env() -> dict[str, str]:
    """The environment for cargo: the build goes to `CARGO_TARGET_DIR` if set, else to
    `build_dir()`, where a second run finds it."""
    target = os.environ.get("CARGO_TARGET_DIR") or str(build_dir())
    return {**os.environ, "CARGO_TARGET_DIR": target}


def cargo(*args: str) -> subprocess.CompletedProcess[str]:
    assert CARGO is not None
    run = subprocess.run(
        [CARGO, *args, "--release", "--locked"],
        cwd=CRATE,
        env=cargo_env(),
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    assert run.returncode == 0, f"cargo {' '.join(args)} failed:\n{run.stdout}\n{run.stderr}"
    return run


@pytest.fixture(scope="module")
def binary() -> Path:
    t0 = time.monotonic()
    cargo("build")
    print(f"cargo build --release --locked: {time.monotonic() - t0:.1f} s")
    return Path(cargo_env()["CARGO_TARGET_DIR"]) / "release" / "qchain-anchor"


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    directory = tmp_path_factory.mktemp("devnet")
    with running_network(directory, plan_network(base_port=None, scheme="ed25519")) as net:
        yield net


def test_the_crate_copies_the_vectors_unchanged() -> None:
    assert (CRATE / "tests" / "transactions.json").read_bytes() == VECTORS.read_bytes()


@needs_cargo
def test_cargo_test_rebuilds_the_vectors(binary: Path) -> None:
    run = cargo("test")
    assert "the_vectors_are_rebuilt_byte_for_byte ... ok" in run.stdout
    assert "FAILED" not in run.stdout


def anchor(binary: Path, api: str, key: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs the client against the node at api with the key file key."""
    return subprocess.run(
        [str(binary), "--node", api, "--key", str(key), *args],
        capture_output=True,
        text=True,
        timeout=90,
    )


def qchain(*args: str) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "qchain.cli", *args], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


@needs_cargo
def test_anchor_a_document_and_verify_its_receipt(
    binary: Path, devnet: LocalNetwork, tmp_path: Path
) -> None:
    key = SigningKey.load(devnet.dir / "accounts" / "partner1.json")
    seed_file = tmp_path / "partner1.seed"
    seed_file.write_bytes(key.seed)
    doc = tmp_path / "contract-2026-117.pdf"
    doc.write_bytes("青岛 quantum pilot: contract 2026-117\n".encode() * 50)
    digest = hashlib.sha256(doc.read_bytes()).digest()
    api = devnet.plan.nodes[1].api_url

    run = anchor(binary, api, seed_file, "--file", str(doc), "--category", "contract", "--json")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["ok"] is True
    assert out["digest"] == digest.hex()
    assert out["sender"] == key.address.hex()

    # The same anchor built by the Python SDK has the same hash (Ed25519 is deterministic).
    py_tx = anchor_tx(
        key, devnet.plan.chain_id, out["nonce"], digest, title=doc.name, category="contract"
    )
    assert out["tx_hash"] == py_tx.hash.hex()

    query = urllib.parse.urlencode({"digest": json.dumps({"hex": digest.hex()})})
    stored = http_json(f"{api}/v1/contracts/notary/get?{query}")["result"]
    assert stored["member"] == {"hex": key.address.hex()}
    assert stored["title"] == doc.name
    assert stored["height"] == out["height"]

    proof = tmp_path / "receipt.bin"
    qchain("receipt", "get", out["tx_hash"], "--out", str(proof), "--node", api)
    verified = qchain(
        "receipt", "verify", str(proof), "--genesis", str(devnet.dir / "genesis.json")
    )
    assert f"verified: transaction {out['tx_hash']} ok at height {out['height']}" in verified

    key_file = devnet.dir / "accounts" / "partner1.json"
    again = anchor(binary, devnet.plan.nodes[2].api_url, key_file, "--file", str(doc))
    assert again.returncode == 1
    assert "committed but failed: duplicate" in again.stderr


@needs_cargo
def test_an_sm3_digest_and_a_key_that_is_not_a_member(
    binary: Path, devnet: LocalNetwork, tmp_path: Path
) -> None:
    api = devnet.plan.nodes[3].api_url
    digest = hashlib.sha256(b"stands in for an SM3 digest computed elsewhere").hexdigest()
    partner2 = devnet.dir / "accounts" / "partner2.json"
    title = "检验报告 2026-03"
    run = anchor(binary, api, partner2, "--digest", digest, "--algorithm", "sm3", "--title", title)
    assert run.returncode == 0, run.stderr
    query = urllib.parse.urlencode({"digest": json.dumps({"hex": digest})})
    stored = http_json(f"{api}/v1/contracts/notary/get?{query}")["result"]
    assert (stored["algorithm"], stored["title"]) == ("sm3", title)

    stranger = tmp_path / "stranger.json"
    made = subprocess.run(
        [str(binary), "--key", str(stranger), "--create-key"], capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    assert SigningKey.load(stranger).address.hex() in made.stdout
    refused = anchor(binary, api, stranger, "--file", str(stranger))
    assert refused.returncode == 1
    assert "is not a member of the chain" in refused.stderr


@needs_cargo
def test_an_ml_dsa_65_anchor(binary: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    directory = tmp_path_factory.mktemp("devnet-ml-dsa")
    with running_network(directory, plan_network(base_port=None)) as net:
        key_file = net.dir / "accounts" / "partner1.json"
        assert SigningKey.load(key_file).scheme == "ml-dsa-65"
        api = net.plan.nodes[0].api_url
        run = anchor(binary, api, key_file, "--digest", "ab" * 32, "--json")
        assert run.returncode == 0, run.stderr
        out = json.loads(run.stdout)
        proof = directory / "receipt.bin"
        qchain("receipt", "get", out["tx_hash"], "--out", str(proof), "--node", api)
        verified = qchain(
            "receipt", "verify", str(proof), "--genesis", str(net.dir / "genesis.json")
        )
        assert f"verified: transaction {out['tx_hash']} ok at height {out['height']}" in verified
