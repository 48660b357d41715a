"""What `qchain node run` refuses on a chain that is not a devnet, before it opens its
store or binds a port: keys from the published dev seed, secret files open to others or
owned by someone else, a timing profile other than the genesis's. Each case runs the real
command as a subprocess on real files."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from contracts.genesis import parse_genesis
from devnet.network import account_key, plan_network, write_network
from devnet.spawn import qchain_argv
from node.ceremony import build_genesis, load_join, load_members
from node.genesis_file import load_genesis, save_genesis
from node.nodeconfig import write_node_config
from node.preflight import check_before_run
from node.site import KmeFiles, init_site, new_site
from qchain.config import load_config
from qchain.errors import ConfigError
from qchain.keys import SigningKey
from qchain.qkd.certs import write_kms_certs


def one_site_chain(tmp_path: Path, member: SigningKey | None = None) -> Path:
    """A one-validator chain `qingdao-pilot` of a site made by validator init; with
    `member`, the genesis is edited afterwards to make that key its admin."""
    ca = write_kms_certs(tmp_path / "kme", ["sae-solo"])
    site = tmp_path / "site"
    init_site(
        new_site(
            site, name="solo", p2p="localhost:1", api="https://localhost:2",
            kme_url="https://localhost:3", sae_id="sae-solo",
        ),
        KmeFiles(ca["sae-sae-solo"], ca["sae-sae-solo_key"], ca["ca"]),
    )  # fmt: skip
    admin = SigningKey.generate()
    (tmp_path / "members.toml").write_text(
        f'[[members]]\nname = "Op"\nscheme = "ml-dsa-65"\npublic_key = "{admin.public_key.hex()}"\n'
        'roles = ["admin"]\n'
    )
    genesis = build_genesis(
        "qingdao-pilot",
        [load_join(site / "join.json")],
        load_members(tmp_path / "members.toml"),
        timing="test",
    )
    doc = genesis.to_json()
    if member is not None:
        members = doc["members"]
        assert isinstance(members, list)
        members[0] = {
            "name": "Op",
            "scheme": member.scheme.value,
            "public_key": member.public_key.hex(),
            "roles": ["admin"],
        }
    (tmp_path / "genesis.json").write_text(json.dumps(doc))
    write_node_config(tmp_path / "genesis.json", site)
    return site


def node_run(config: Path, *more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        qchain_argv("node", "run", "--config", str(config), *more),
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_refused(config: Path, *needles: str) -> str:
    done = node_run(config)
    assert done.returncode != 0, done.stdout + done.stderr
    for needle in needles:
        assert needle in done.stderr, done.stderr
    cfg = load_config(config)
    assert not (cfg.node.data_dir / "db").exists(), "the store was opened"
    return done.stderr


@pytest.mark.parametrize(
    ("file", "key"),
    [
        ("api.key", "api.tls_key"),
        ("validator.key", "node.signing_key"),
        ("admin.token", "admin.token_file"),
        ("kme-client.key", "qkd.client_key"),
    ],
)
def test_secret_files_open_to_others_are_refused(tmp_path: Path, file: str, key: str) -> None:
    site = one_site_chain(tmp_path)
    (site / file).chmod(0o640)
    assert_refused(site / "node.toml", key, str(site / file), "mode 0640", "chmod 600")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_secret_files_of_another_user_are_refused(tmp_path: Path) -> None:
    site = one_site_chain(tmp_path)
    os.chown(site / "validator.key", 4242, -1)
    assert_refused(site / "node.toml", "node.signing_key", "belongs to uid 4242", "chown")


def test_a_timing_profile_other_than_the_genesis_is_refused(tmp_path: Path) -> None:
    site = one_site_chain(tmp_path)
    toml = site / "node.toml"
    toml.write_text(toml.read_text().replace('profile = "test"', 'profile = "default"'))
    assert_refused(toml, "node.profile", "'test' timing profile")


def test_a_dev_seed_member_on_a_real_chain_is_refused(tmp_path: Path) -> None:
    site = one_site_chain(tmp_path, member=account_key("admin", "ml-dsa-65"))
    assert_refused(site / "node.toml", "members[0] (Op)", "'account-admin'", "qchain-devnet")


def test_a_devnet_renamed_to_a_real_chain_is_refused(tmp_path: Path) -> None:
    plan = plan_network(validators=4, base_port=None)
    write_network(tmp_path, plan)
    genesis = load_genesis(tmp_path / "genesis.json").to_json()
    genesis["chain_id"] = "qingdao-pilot"
    (tmp_path / "genesis.json").write_text(json.dumps(genesis))
    err = assert_refused(
        tmp_path / "nodes" / "node1" / "config.toml",
        "is not a devnet",
        "validators[3] (node3) has the dev seed's 'validator-3' key",
        "members[0]",
        "node.signing_key",
        "'validator-1'",
    )
    assert "qchain validator init" in err


def test_a_devnet_only_warns(tmp_path: Path) -> None:
    plan = plan_network(validators=1, base_port=None)
    write_network(tmp_path, plan)
    cfg = load_config(tmp_path / "nodes" / "node0" / "config.toml")
    cfg.node.signing_key.chmod(0o644)
    check_before_run(cfg, load_genesis(cfg.node.genesis))
    genesis = load_genesis(cfg.node.genesis)
    renamed = genesis.to_json() | {"chain_id": "pilot"}
    save_genesis(parse_genesis(renamed), tmp_path / "pilot.json")
    with pytest.raises(ConfigError, match="dev seed"):
        check_before_run(cfg, load_genesis(tmp_path / "pilot.json"))


def reconfiguring_chain(tmp_path: Path, heartbeat_ms: int | None) -> Path:
    """A one-validator devnet whose genesis enables validator-set changes."""
    plan = plan_network(validators=1, base_port=None, heartbeat_ms=heartbeat_ms)
    write_network(tmp_path, plan)
    doc = load_genesis(tmp_path / "genesis.json").to_json()
    members, validators = doc["members"], doc["validators"]
    assert isinstance(members, list) and isinstance(validators, list)
    validators[0]["operator"] = members[0]["address"]
    consensus = doc["consensus"]
    assert isinstance(consensus, dict)
    consensus["reconfiguration"] = True
    save_genesis(parse_genesis(doc), tmp_path / "genesis.json")
    return tmp_path / "nodes" / "node0" / "config.toml"


def test_validator_set_changes_without_a_heartbeat_are_refused(tmp_path: Path) -> None:
    """What the node does not build of §10 is refused by name: an idle chain (no
    heartbeat) needs §10.7's liveness machinery across an activation."""
    config = reconfiguring_chain(tmp_path, heartbeat_ms=None)
    assert_refused(config, "timing.propose_wait_max_ms", "docs/CONSENSUS.md §10.7", "not built")


def test_validator_set_changes_with_a_heartbeat_pass_preflight(tmp_path: Path) -> None:
    config = reconfiguring_chain(tmp_path, heartbeat_ms=300)
    cfg = load_config(config)
    check_before_run(cfg, load_genesis(cfg.node.genesis))


def test_state_sync_on_a_chain_whose_set_changes_goes_to_the_sync(tmp_path: Path) -> None:
    """Revision 1.22: `--state-sync` there is no longer refused by name (the snapshot is
    checked under the set a peer's set chain proves, tests/node/test_statesync_governed.py);
    with no peer to ask, the sync refuses as on any chain, and the node does not start."""
    config = reconfiguring_chain(tmp_path, heartbeat_ms=300)
    done = node_run(config, "--state-sync")
    assert done.returncode != 0, done.stdout + done.stderr
    assert "--state-sync" in done.stderr and "no other validator" in done.stderr, done.stderr
    assert "genesis set only" not in done.stderr
