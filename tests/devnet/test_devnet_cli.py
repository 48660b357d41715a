"""The devnet as a user drives it: `qchain devnet init`, `up`, a transaction sent with the
CLI from a dev key, `status`, `down` — all through the console script, as processes."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from devnet.nodeapi import http_json

pytestmark = pytest.mark.slow


def qchain(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "qchain.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert run.returncode == 0, f"qchain {' '.join(args)} failed:\n{run.stdout}\n{run.stderr}"
    return run.stdout


def _base_port(nodes: int = 4) -> int:
    """A base port below the ephemeral range whose devnet ports (of `nodes` validators)
    are all free now."""
    rng = random.Random()
    for _ in range(100):
        base = rng.randrange(20, 32) * 1000 + rng.randrange(0, 10) * 50
        ports = [base, base + 1] + [base + k + i for k in (100, 200, 300) for i in range(nodes)]
        if all(_free(p) for p in ports):
            return base
    raise RuntimeError("no free port range for a devnet")


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.timeout(300)
def test_init_up_send_status_down(tmp_path: Path) -> None:
    d = tmp_path / "net"
    base = _base_port()
    out = qchain("devnet", "init", "--dir", str(d), "--base-port", str(base))
    assert "initialised a 4-validator devnet" in out
    assert "nothing to do" in qchain("devnet", "init", "--dir", str(d), "--base-port", str(base))
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "qchain.cli",
            "devnet",
            "init",
            "--dir",
            str(d),
            "--validators",
            "7",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert "validators" in refused.stderr or "nodes" in refused.stderr, refused.stderr
    try:
        out = qchain("devnet", "up", "--dir", str(d))
        assert "node3" in out and "partner1" in out and "first block decided" in out
        endpoints = json.loads((d / "endpoints.json").read_text())
        assert [n["name"] for n in endpoints["nodes"]] == ["node0", "node1", "node2", "node3"]
        api = endpoints["nodes"][2]["api"]
        digest = os.urandom(32).hex()
        args = json.dumps([{"hex": digest}, "sha256", "devnet cli test", "test", {"hex": ""}])
        key = str(d / "accounts" / "partner1.json")
        sent = qchain(
            "tx",
            "send",
            "notary",
            "anchor",
            "--key",
            key,
            "--args",
            args,
            "--json",
            env={"QCHAIN_NODE": api},
        )
        doc = json.loads(sent)
        assert doc["status"] == "committed"
        tx_hash, height = doc["tx_hash"], doc["height"]
        for n in endpoints["nodes"]:
            st = http_json(f"{n['api']}/v1/txs/{tx_hash}")
            assert st["status"] == "committed" and st["height"] == height
        status = json.loads(qchain("devnet", "status", "--dir", str(d), "--json"))
        assert len(status) == 4
        assert all(r["status"] is not None and r["status"]["height"] >= height for r in status)
        pids = [int(p.read_text()) for p in (d / "run").glob("*.pid")]
        assert len(pids) == 5
    finally:
        out = qchain("devnet", "down", "--dir", str(d))
    assert "stopped" in out
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"process {pid} survived"
    assert not list((d / "run").glob("*.pid"))


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


@pytest.mark.timeout(300)
def test_add_validator_on_a_running_devnet(tmp_path: Path) -> None:
    """`qchain devnet init --reconfiguration`, `up`, `add-validator`: a fifth validator
    joins the running chain and is a member of its set; `down` stops it with the rest."""
    d = tmp_path / "net"
    base = _base_port()
    out = qchain(
        "devnet",
        "init",
        "--dir",
        str(d),
        "--base-port",
        str(base),
        "--reconfiguration",
        "--heartbeat-ms",
        "300",
        "--scheme",
        "ed25519",
    )
    assert "initialised a 4-validator devnet" in out
    try:
        qchain("devnet", "up", "--dir", str(d))
        out = qchain("devnet", "add-validator", "--dir", str(d), timeout=240)
        assert "node4 is a validator" in out, out
        node4 = json.loads((d / "network.json").read_text())["nodes"][4]
        api = f"http://127.0.0.1:{node4['api_port']}"
        height = http_json(f"{api}/v1/status")["height"]
        query = f"{api}/v1/contracts/validators/set?height={height}"
        ids = [r["id"] for r in http_json(query)["result"]["records"]]
        assert ids == [0, 1, 2, 3, 4]
        status = json.loads(qchain("devnet", "status", "--dir", str(d), "--json"))
        assert len(status) == 5 and all(r["status"] is not None for r in status)
    finally:
        out = qchain("devnet", "down", "--dir", str(d))
    assert "node4" in out


@pytest.mark.timeout(300)
def test_a_removed_validator_stays_down_across_down_and_up(tmp_path: Path) -> None:
    """Seven validators, `remove-validator node1` (n stays at least 4), then `down` and
    `up`: node1 is not started again (it would run as a learner), `status` and the
    endpoint table show it as removed, and the other six decide on; `reset` makes it a
    validator of the new chain again."""
    d = tmp_path / "net"
    base = _base_port(7)
    qchain(
        "devnet",
        "init",
        "--dir",
        str(d),
        "--base-port",
        str(base),
        "--validators",
        "7",
        "--reconfiguration",
        "--heartbeat-ms",
        "300",
        "--scheme",
        "ed25519",
    )
    try:
        qchain("devnet", "up", "--dir", str(d))
        out = qchain("devnet", "remove-validator", "node1", "--dir", str(d), timeout=240)
        assert "the devnet no longer starts it" in out, out
        qchain("devnet", "down", "--dir", str(d))
        doc = json.loads(qchain("devnet", "up", "--dir", str(d), "--json"))
        assert [n["name"] for n in doc["nodes"] if n["removed"]] == ["node1"]
        status = {
            r["node"]: r for r in json.loads(qchain("devnet", "status", "--dir", str(d), "--json"))
        }
        assert status["node1"]["removed"] and status["node1"]["pid"] is None
        assert all(status[f"node{i}"]["status"] is not None for i in (0, 2, 3, 4, 5, 6))
        assert not (d / "run" / "node1.pid").exists()
        assert "removed" in qchain("devnet", "status", "--dir", str(d))
        out = qchain("devnet", "reset", "--dir", str(d))
        assert not json.loads((d / "network.json").read_text())["nodes"][1]["removed"]
    finally:
        qchain("devnet", "down", "--dir", str(d))
