"""Node configuration: a valid file loads; each kind of bad field is rejected by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from qchain.config import PROFILES, NodeConfig, PeerConfig, load_config
from qchain.errors import ConfigError

VALID = """
[node]
name = "v0"
index = 0
data_dir = "data/v0"
genesis = "genesis.json"
signing_key = "/abs/keys/v0.json"
profile = "test"

[p2p]
listen = "0.0.0.0:7000"
peers = [
  { index = 1, address = "10.0.0.2:7000", sae_id = "sae-1" },
  { index = 2, address = "node2.local:7000" },
]

[qkd]
kme_url = "https://kme-a:8443"
sae_id = "sae-0"
insecure_dev_header = true

[api]
listen = "127.0.0.1:8001"
"""


def _load(tmp_path: Path, text: str) -> NodeConfig:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return load_config(path)


def _error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    return info.value


def test_valid_config_loads_with_paths_resolved(tmp_path: Path) -> None:
    cfg = _load(tmp_path, VALID)
    base = tmp_path.resolve()
    assert cfg.node.name == "v0" and cfg.node.index == 0
    assert cfg.node.data_dir == base / "data" / "v0"
    assert cfg.node.genesis == base / "genesis.json"
    assert cfg.node.signing_key == Path("/abs/keys/v0.json")
    assert cfg.path == base / "node.toml"
    assert [p.index for p in cfg.p2p.peers] == [1, 2]
    assert cfg.p2p.peers[0] == PeerConfig(1, "10.0.0.2:7000")
    assert cfg.qkd.insecure_dev_header is True
    assert cfg.api.listen == "127.0.0.1:8001"
    assert cfg.admin.listen == "127.0.0.1:9000"  # default section
    assert cfg.timing == PROFILES["test"]


def test_relative_paths_resolve_against_the_file_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    (sub / "node.toml").write_text(VALID)
    monkeypatch.chdir(tmp_path)
    cfg = load_config("conf/node.toml")
    assert cfg.node.genesis == sub.resolve() / "genesis.json"


def test_default_profile(tmp_path: Path) -> None:
    cfg = _load(tmp_path, VALID.replace('profile = "test"\n', ""))
    assert cfg.node.profile == "default"
    assert cfg.timing == PROFILES["default"]


def test_profiles_follow_the_consensus_timer_table(tmp_path: Path) -> None:
    """CONSENSUS.md §4: base, backoff, cap, propose_wait_min, sync_interval per column."""
    table = {
        "default": (2000, 2.0, 60_000, 200, 1000),
        "lan": (500, 2.0, 20_000, 50, 500),
        "test": (100, 1.5, 2000, 0, 50),
    }
    for name, row in table.items():
        cfg = _load(tmp_path, VALID.replace('profile = "test"', f'profile = "{name}"'))
        t = cfg.timing
        assert (t.base_ms, t.backoff, t.cap_ms, t.propose_wait_min_ms, t.sync_interval_ms) == row
        assert t.propose_wait_max_ms == 1000


def test_timing_override_field_by_field(tmp_path: Path) -> None:
    cfg = _load(tmp_path, VALID + "\n[timing]\nbase_ms = 250\nbackoff = 2\n")
    assert cfg.timing.base_ms == 250
    assert cfg.timing.backoff == 2.0
    assert cfg.timing.cap_ms == PROFILES["test"].cap_ms


def test_propose_wait_max_none(tmp_path: Path) -> None:
    cfg = _load(tmp_path, VALID + '\n[timing]\npropose_wait_max_ms = "none"\n')
    assert cfg.timing.propose_wait_max_ms is None


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (VALID + "\n[extra]\nx = 1\n", "extra"),
        (VALID.replace('name = "v0"', 'name = "v0"\ncolour = "red"'), "node.colour"),
        (VALID + "\n[timing]\nturbo = true\n", "timing.turbo"),
        (VALID.replace('sae_id = "sae-1"', 'sae_id = "sae-1", port = 1'), "p2p.peers[0].port"),
        (VALID.replace("[node]", 'path = "x"\n[node]'), "path"),
    ],
)
def test_unknown_fields_rejected(tmp_path: Path, text: str, field: str) -> None:
    e = _error(tmp_path, text)
    assert e.field == field
    assert "unknown" in e.reason


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("index = 0", 'index = "0"', "node.index"),
        ("index = 0", "index = true", "node.index"),
        ("index = 0", "index = -1", "node.index"),
        ("index = 0", "index = 1.5", "node.index"),
        ('name = "v0"', "name = 7", "node.name"),
        ('genesis = "genesis.json"', 'genesis = ""', "node.genesis"),
        ("insecure_dev_header = true", 'insecure_dev_header = "yes"', "qkd.insecure_dev_header"),
        ('{ index = 2, address = "node2.local:7000" }', "5", "p2p.peers[1]"),
        ("[api]", "[api]\nrate_limit_per_s = []", "api.rate_limit_per_s"),
        ('profile = "test"', 'profile = "fast"', "node.profile"),
        ('profile = "test"', "profile = 1", "node.profile"),
        ('profile = "test"', 'profile = ["test"]', "node.profile"),
        ('profile = "test"', "profile = { a = 1 }", "node.profile"),
        ('[node]\nname = "v0"', '[node]\nname = "v0"\nlog_format = "xml"', "node.log_format"),
    ],
)
def test_wrong_types_and_values_rejected(tmp_path: Path, old: str, new: str, field: str) -> None:
    assert old in VALID
    e = _error(tmp_path, VALID.replace(old, new, 1))
    assert e.field == field, e
    assert e.reason
    assert str(e).startswith(field)


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ('listen = "0.0.0.0:7000"', 'listen = "0.0.0.0"', "p2p.listen"),
        ('listen = "0.0.0.0:7000"', 'listen = ":7000"', "p2p.listen"),
        ('listen = "0.0.0.0:7000"', 'listen = "host:99999"', "p2p.listen"),
        ('listen = "0.0.0.0:7000"', 'listen = "host:0"', "p2p.listen"),
        ('"10.0.0.2:7000"', '"10.0.0.2:port"', "p2p.peers[0].address"),
        ('listen = "127.0.0.1:8001"', 'listen = "localhost"', "api.listen"),
        ('kme_url = "https://kme-a:8443"', 'kme_url = "kme-a:8443"', "qkd.kme_url"),
    ],
)
def test_bad_addresses_rejected(tmp_path: Path, old: str, new: str, field: str) -> None:
    e = _error(tmp_path, VALID.replace(old, new, 1))
    assert e.field == field


def test_duplicate_peers_rejected(tmp_path: Path) -> None:
    e = _error(tmp_path, VALID.replace("index = 2,", "index = 1,"))
    assert e.field == "p2p.peers[1].index"
    assert "twice" in e.reason
    e = _error(tmp_path, VALID.replace("index = 1,", "index = 0,"))
    assert e.field == "p2p.peers[0].index"


@pytest.mark.parametrize(
    ("timing", "field"),
    [
        ("base_ms = 0", "timing.base_ms"),
        ("backoff = 0.5", "timing.backoff"),
        ('backoff = "2"', "timing.backoff"),
        ("cap_ms = 150", "timing.cap_ms"),
        ("propose_wait_max_ms = -5", "timing.propose_wait_max_ms"),
        ('propose_wait_max_ms = "never"', "timing.propose_wait_max_ms"),
    ],
)
def test_bad_timing_rejected(tmp_path: Path, timing: str, field: str) -> None:
    e = _error(tmp_path, VALID + f"\n[timing]\n{timing}\n")
    assert e.field == field


def test_a_peers_api_is_an_url(tmp_path: Path) -> None:
    api = '{ index = 2, address = "node2.local:7000", api = "http://node2.local:8001" }'
    cfg = _load(tmp_path, VALID.replace('{ index = 2, address = "node2.local:7000" }', api))
    assert cfg.p2p.peers[1] == PeerConfig(2, "node2.local:7000", "http://node2.local:8001")
    assert cfg.p2p.peers[0].api == ""
    for bad in ("node2.local:8001", "http://" + "x" * 250):
        text = VALID.replace('node2.local:7000" }', f'node2.local:7000", api = "{bad}" }}')
        assert _error(tmp_path, text).field == "p2p.peers[1].api"


def test_peers_must_be_a_list(tmp_path: Path) -> None:
    start, end = VALID.index("peers = ["), VALID.index("]\n\n[qkd]") + 2
    assert _error(tmp_path, VALID[:start] + 'peers = "x"\n' + VALID[end:]).field == "p2p.peers"


def test_missing_fields_and_sections(tmp_path: Path) -> None:
    assert _error(tmp_path, VALID.replace('sae_id = "sae-0"\n', "")).field == "qkd.sae_id"
    no_p2p = VALID[: VALID.index("[p2p]")] + VALID[VALID.index("[qkd]") :]
    assert _error(tmp_path, no_p2p).field == "p2p"
    assert _error(tmp_path, "node = 5\n").field == "node"


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    e = _error(tmp_path, "[node\n")
    assert "TOML" in e.reason
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_admission_bound_verify_workers_and_batch_coalescing(tmp_path: Path) -> None:
    cfg = _load(tmp_path, VALID)
    assert cfg.node.admission_bound_ms == 1000
    assert cfg.node.verify_workers is None, "chosen from the machine's cores"
    assert cfg.node.batch_delay_ms == 250 and cfg.node.batch_max_txs == 256
    set_ = (
        'profile = "test"\nadmission_bound_ms = 0\nverify_workers = 3\n'
        "batch_delay_ms = 0\nbatch_max_txs = 10000\n"
    )
    cfg = _load(tmp_path, VALID.replace('profile = "test"\n', set_))
    assert cfg.node.admission_bound_ms == 0 and cfg.node.verify_workers == 3
    assert cfg.node.batch_delay_ms == 0 and cfg.node.batch_max_txs == 10_000
    for field, value, says in [
        ("verify_workers", "-1", "must not be negative"),
        ("verify_workers", "257", "at most 256"),
        ("verify_workers", "1.5", "must be an integer"),
        ("verify_workers", '"auto"', "must be an integer"),
        ("admission_bound_ms", "-5", "must not be negative"),
        ("admission_bound_ms", "600001", "at most 600000"),
        ("batch_delay_ms", "-1", "must not be negative"),
        ("batch_delay_ms", "5001", "at most 5000"),
        ("batch_max_txs", "0", "between 1 and 10000"),
        ("batch_max_txs", "10001", "between 1 and 10000"),
    ]:
        text = VALID.replace('profile = "test"\n', f'profile = "test"\n{field} = {value}\n')
        e = _error(tmp_path, text)
        assert e.field == f"node.{field}" and says in str(e), (field, value, str(e))
