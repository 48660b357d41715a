"""A site that left the set (`qchain devnet remove-validator`) is marked removed in
`network.json`: the devnet does not start it again (it would only run as a learner), and
`status` and the endpoint table show it as removed; `reset`, whose chain starts again
from the genesis, makes the genesis's sites validators again and drops the sites added
later. On the files alone, no process started."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devnet.endpoints import local_endpoints, print_table
from devnet.joining import add_site, mark_removed
from devnet.kms import write_kms_files
from devnet.local import LocalNetwork
from devnet.network import load_plan, plan_network, write_network
from devnet.running import BackendError
from qchain.cli import main


@pytest.fixture
def devnet(tmp_path: Path) -> Path:
    d = tmp_path / "net"
    plan = plan_network(base_port=None, scheme="ed25519", reconfiguration=True)
    write_network(d, plan)
    write_kms_files(d, plan)
    return d


def test_a_removed_site_is_not_started_and_shows_as_removed(
    devnet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_site(devnet)
    mark_removed(devnet, "node1")
    assert [n.removed for n in load_plan(devnet).nodes] == [False, True, False, False, False]
    net = LocalNetwork(devnet)
    assert net.node_names() == ["node0", "node2", "node3", "node4"]
    assert "node1" not in [s.name for s in net.services()]
    with pytest.raises(BackendError, match="removed from the validator set"):
        net.start_node("node1")

    doc = local_endpoints(net)
    assert [(n["name"], n["removed"]) for n in doc["nodes"]][:2] == [
        ("node0", False),
        ("node1", True),
    ]
    print_table(doc)
    table = capsys.readouterr().out
    assert "node1 (removed)" in table and f"{net.plan.nodes[1].api_url}" not in table

    assert main(["devnet", "status", "--dir", str(devnet), "--json"]) == 0
    rows = {r["node"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["node1"]["removed"] is True and rows["node1"]["status"] is None
    assert rows["node0"]["removed"] is False
    assert main(["devnet", "status", "--dir", str(devnet)]) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()[1:]}
    assert lines["node1"].split()[-1] == "removed"
    assert lines["node0"].split()[-1] == "down"


def test_reset_starts_from_the_genesis_sites(
    devnet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_site(devnet)
    mark_removed(devnet, "node1")
    assert (devnet / "nodes" / "node4").is_dir()
    assert main(["devnet", "reset", "--dir", str(devnet)]) == 0
    assert "dropped the sites added after the genesis: node4" in capsys.readouterr().out
    plan = load_plan(devnet)
    assert [(n.name, n.removed) for n in plan.nodes] == [
        ("node0", False),
        ("node1", False),
        ("node2", False),
        ("node3", False),
    ]
    assert not (devnet / "nodes" / "node4").exists()
    # The next add gets the id the new chain gives it.
    assert add_site(devnet).index == 4
