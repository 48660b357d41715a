"""State sync on a chain whose validator set changes, with real processes on 127.0.0.1
(docs/CONSENSUS.md, Revision 1.22).

Four validators whose genesis enables set changes commit to their state every `INTERVAL`
heights. A fifth joins (`qchain devnet add-validator`: its site, proposal, approvals,
catch-up by replay, readiness, activation at e), so the set of every height from e on is
{0, 1, 2, 3, 4}. Once the others keep a snapshot above e, validator 3 is stopped and
`qchain node run --state-sync` runs as a process on its config with its data directory
moved aside: it fetches the snapshot from its peers' APIs, checks its certificate under
the set that a peer's set chain (`GET /v1/setchain`) proves from the genesis, and writes
it; then the node refuses to start on the synced store, which carries the amnesia mark,
because the amnesia guard across a change (§10.9) is not built.
"""

from __future__ import annotations

import re
import shutil
from functools import partial

import pytest

from devnet.local import running_network
from devnet.network import load_plan, plan_network
from devnet.nodeapi import http_json
from devnet.testing import run_qchain, until
from node.chainstore import ChainStore
from qchain.client import Client
from qchain.config import load_config
from qchain.store import schema
from qchain.store.kv import open_store

pytestmark = pytest.mark.slow
SCHEME = "ed25519"
INTERVAL = 10

_until = partial(until, timeout=240.0)


@pytest.mark.timeout(600)  # an add with its catch-up, then a checkpoint above it
def test_a_node_state_syncs_past_a_set_change(tmp_path_factory: pytest.TempPathFactory) -> None:
    plan = plan_network(
        base_port=None,
        scheme=SCHEME,
        heartbeat_ms=300,
        state_root_interval=INTERVAL,
        reconfiguration=True,
    )
    with running_network(tmp_path_factory.mktemp("devnet"), plan, min_height=2) as net:
        added = run_qchain("devnet", "add-validator", "--dir", str(net.dir), timeout=400)
        net.plan = load_plan(net.dir)
        assert added.returncode == 0, added.stdout + added.stderr
        found = re.search(r"a member from height (\d+)", added.stdout)
        assert found, added.stdout
        e = int(found.group(1))
        snapshots_url = f"{net.api_url('node0')}/v1/snapshots"
        _until(
            f"the others to keep a certified snapshot above height {e}",
            lambda: any(int(x["height"]) > e for x in http_json(snapshots_url)["snapshots"]),
        )
        with Client(net.api_url("node0")) as c:
            doc = c.query("validators", "set", {"height": e})
        assert [r["id"] for r in doc["records"]] == [0, 1, 2, 3, 4], doc

        net.stop_node("node3")
        config = net.dir / "nodes" / "node3" / "config.toml"
        data = load_config(config).node.data_dir
        shutil.move(data, data.with_name(data.name + ".old"))
        data.mkdir()

        run = run_qchain("node", "run", "--config", str(config), "--state-sync", timeout=240)
        out = run.stdout + run.stderr
        synced = re.search(r"state synced at height (\d+)", out)
        assert synced is not None, out[-3000:]
        s = int(synced.group(1))
        assert s > e and s % INTERVAL == 0
        assert re.search(
            rf"the set of height {s} was proven from the genesis by node[012]'s set chain", out
        ), out[-3000:]
        # Then the node refuses the synced store: §10.9 is not built.
        assert run.returncode != 0
        assert "amnesia" in out and "10.9" in out, out[-3000:]
        store = open_store(data / "db")
        try:
            chain = ChainStore(store)
            assert chain.height() == s and chain.base_height() == s
            assert store.get(schema.META_AMNESIA) is not None
        finally:
            store.close()
