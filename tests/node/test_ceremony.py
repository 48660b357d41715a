"""`qchain genesis build|verify` and `qchain node config` on real site directories."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from contracts.genesis import Genesis
from devnet.network import account_key, validator_key
from node.ceremony import (
    Members,
    build_genesis,
    check_hash,
    describe,
    load_join,
    load_members,
)
from node.genesis_file import load_genesis, save_genesis
from node.nodeconfig import write_node_config
from node.site import KmeFiles, init_site, new_site
from qchain.cli import main
from qchain.config import load_config
from qchain.errors import ConfigError
from qchain.keys import SigningKey
from qchain.qkd.certs import write_kms_certs

NAMES = ("delta", "alpha", "charlie", "bravo")


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("sites")
    ca = write_kms_certs(root / "kme", [f"sae-{n}" for n in NAMES])
    out = []
    for i, name in enumerate(NAMES):
        site = root / name
        init_site(
            new_site(
                site,
                name=name,
                p2p=f"{name}.example:{26600 + i}",
                api=f"https://{name}.example:{8443 + i}",
                kme_url="https://kme.example:8000",
                sae_id=f"sae-{name}",
            ),
            KmeFiles(ca[f"sae-sae-{name}"], ca[f"sae-sae-{name}_key"], ca["ca"]),
        )
        out.append(site)
    return out


def members_toml(path: Path, *entries: tuple[str, SigningKey, list[str]], extra: str = "") -> Path:
    text = "".join(
        f'[[members]]\nname = "{n}"\nscheme = "{k.scheme.value}"\n'
        f'public_key = "{k.public_key.hex()}"\nroles = {json.dumps(r)}\n\n'
        for n, k, r in entries
    )
    path.write_text(text + extra)
    return path


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> Members:
    d = tmp_path_factory.mktemp("coordinator")
    admin, bureau = SigningKey.generate(), SigningKey.generate("ed25519")
    path = members_toml(
        d / "members.toml",
        ("Operator", admin, ["admin"]),
        ("Bureau", bureau, ["auditor"]),
        extra='[[voucher_issuers]]\nname = "Bureau"\n',
    )
    return load_members(path)


def genesis_of(sites: list[Path], members: Members, timing: str = "lan") -> Genesis:
    return build_genesis(
        "qingdao-pilot", [load_join(s / "join.json") for s in sites], members, timing=timing
    )


def test_validators_are_indexed_by_name_whatever_the_order(
    sites: list[Path], members: Members
) -> None:
    g = genesis_of(sites, members)
    assert [v.name for v in g.validators] == sorted(NAMES)
    assert genesis_of(list(reversed(sites)), members).hash == g.hash
    assert g.validators[0].p2p == "alpha.example:26601"
    assert g.consensus.timing == "lan"
    assert genesis_of(sites, members, "default").hash != g.hash
    bureau = next(m for m in g.members if m.name == "Bureau")
    assert "issuer" in bureau.roles and g.voucher_issuers == (bureau.address,)


def test_build_refusals(sites: list[Path], members: Members, tmp_path: Path) -> None:
    joins = [load_join(s / "join.json") for s in sites]
    with pytest.raises(ConfigError, match="reserved for devnets"):
        build_genesis("qchain-devnet-pilot", joins, members)
    with pytest.raises(ConfigError, match="3f"):
        build_genesis("pilot", joins[:3], members)
    with pytest.raises(ConfigError, match="same name"):
        build_genesis("pilot", [*joins[:3], joins[0]], members)
    delta = json.loads((sites[0] / "join.json").read_text())
    fresh = SigningKey.generate().public_key.hex()
    for field, value in (
        ("public_key", delta["public_key"]),
        ("sae_id", "sae-delta"),
        ("p2p", "DELTA.example:26600"),
        ("api", "https://delta.example:8443/"),
    ):
        unique = {"name": "echo", "public_key": fresh, "sae_id": "sae-echo"}
        unique |= {"p2p": "echo.example:1", "api": "https://echo.example:2"}
        doc = {**delta, **unique, field: value}
        copy = tmp_path / f"dup-{field}.json"
        copy.write_text(json.dumps(doc))
        with pytest.raises(ConfigError, match=f"same {field}"):
            build_genesis("pilot", [*joins[:3], load_join(copy)], members)
    doc = json.loads((sites[0] / "join.json").read_text())
    doc["public_key"] = validator_key(2).public_key.hex()
    (tmp_path / "dev.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="dev seed"):
        build_genesis("pilot", [load_join(tmp_path / "dev.json"), *joins[1:]], members)
    dev_member = members_toml(
        tmp_path / "m.toml", ("Op", account_key("admin", "ed25519"), ["admin"])
    )
    with pytest.raises(ConfigError, match=r"members\[0\]\.public_key.*dev seed"):
        build_genesis("pilot", joins, load_members(dev_member))
    no_admin = members_toml(tmp_path / "n.toml", ("Op", SigningKey.generate(), ["partner"]))
    with pytest.raises(ConfigError, match="admin"):
        build_genesis("pilot", joins, load_members(no_admin))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"secret": "x"}, "secret"),
        ({"public_key": "abcd"}, "public_key"),
        ({"p2p": "nohost"}, "p2p"),
        ({"api": "http://a:1"}, "api"),
        (
            {"api_cert": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
            "api_cert",
        ),
        ({"name": 7}, "name"),
    ],
)
def test_hostile_join_files_are_refused_by_field(
    sites: list[Path], tmp_path: Path, change: dict[str, object], field: str
) -> None:
    doc = {**json.loads((sites[0] / "join.json").read_text()), **change}
    path = tmp_path / "join.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as e:
        load_join(path)
    assert e.value.field == f"{path}: {field}"


def test_members_toml_errors(tmp_path: Path) -> None:
    bad = {
        "": "at least one",
        '[[members]]\nname = "a"\ncolour = "red"\n': r"members\[0\]\.colour",
        '[[members]]\nname = "a"\n[[members]]\nname = "a"\n': "listed twice",
        '[[members]]\nname = "a"\n[[voucher_issuers]]\nname = "b"\n': "voucher_issuers",
    }
    for text, message in bad.items():
        (tmp_path / "m.toml").write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_members(tmp_path / "m.toml")


def test_verify_says_what_differs(
    sites: list[Path], members: Members, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    g = genesis_of(sites, members)
    assert check_hash(g, g.hash.hex()) is None
    assert "not the genesis that was announced" in (check_hash(g, "00" * 32) or "")
    with pytest.raises(ConfigError, match="--expect-hash"):
        check_hash(g, "xyz")
    save_genesis(g, tmp_path / "genesis.json")
    assert (
        main(["genesis", "verify", str(tmp_path / "genesis.json"), "--expect-hash", g.hash.hex()])
        == 0
    )
    assert (
        main(["genesis", "verify", str(tmp_path / "genesis.json"), "--expect-hash", "11" * 32]) == 1
    )
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "timing:        lan" in out


def test_node_config_writes_a_loadable_config(
    sites: list[Path], members: Members, tmp_path: Path
) -> None:
    g = genesis_of(sites, members)
    save_genesis(g, tmp_path / "genesis.json")
    site = tmp_path / "charlie"
    shutil.copytree(sites[2], site)
    done = write_node_config(
        tmp_path / "genesis.json",
        site,
        secrets_dir=Path("/run/secrets/qchain"),
        data_dir=Path("/var/lib/qchain"),
    )
    cfg = load_config(done.node_toml)
    assert (cfg.node.index, cfg.node.profile, cfg.timing.base_ms) == (2, "lan", 500)
    assert cfg.node.signing_key == Path("/run/secrets/qchain/validator.key")
    assert cfg.qkd.client_key == Path("/run/secrets/qchain/kme-client.key")
    assert cfg.api.tls_cert == site.resolve() / "api.crt"
    assert cfg.qkd.ca_cert == site.resolve() / "kme-ca.crt"
    assert cfg.node.data_dir == Path("/var/lib/qchain")
    assert {p.index: p.address for p in cfg.p2p.peers} == {
        0: "alpha.example:26601",
        1: "bravo.example:26603",
        3: "delta.example:26600",
    }
    assert load_genesis(site / "genesis.json").hash == g.hash
    other = genesis_of(sites, members, "test")
    save_genesis(other, tmp_path / "other.json")
    with pytest.raises(ConfigError, match="different genesis"):
        write_node_config(tmp_path / "other.json", site)
    outsider = [load_join(s / "join.json") for s in sites]
    save_genesis(build_genesis("p2", outsider[:1], members), tmp_path / "one.json")
    shutil.copytree(sites[1], tmp_path / "bravo")
    with pytest.raises(ConfigError, match="no validator of this genesis"):
        write_node_config(tmp_path / "one.json", tmp_path / "bravo")


def test_members_toml_restricts_the_schemes(sites: list[Path], tmp_path: Path) -> None:
    bank, operator = SigningKey.generate("sm2"), SigningKey.generate()
    entries = (("Operator", operator, ["admin"]), ("Bank", bank, ["partner"]))
    path = members_toml(tmp_path / "m.toml", *entries)
    text = path.read_text()
    path.write_text('accepted_schemes = ["sm2", "ml-dsa-65"]\n\n' + text)
    g = genesis_of(sites, load_members(path))
    assert g.accepted_schemes == ("ml-dsa-65", "sm2")
    assert next(m for m in g.members if m.name == "Bank").scheme == "sm2"
    path.write_text('accepted_schemes = ["sm2"]\n\n' + text)
    with pytest.raises(ConfigError, match=r"m\.toml: members\[0\]\.scheme"):
        genesis_of(sites, load_members(path))
    path.write_text('accepted_schemes = ["rsa"]\n\n' + text)
    with pytest.raises(ConfigError, match=r"m\.toml: accepted_schemes\[0\]"):
        genesis_of(sites, load_members(path))


def test_state_root_interval_is_a_genesis_choice(sites: list[Path], members: Members) -> None:
    joins = [load_join(s / "join.json") for s in sites]
    plain = build_genesis("qingdao-pilot", joins, members, timing="lan")
    with_k = build_genesis("qingdao-pilot", joins, members, timing="lan", state_root_interval=100)
    assert plain.state_root_interval == 0 and with_k.state_root_interval == 100
    assert with_k.hash != plain.hash
    assert "state root:    every 100 heights" in describe(with_k)
    assert not any(line.startswith("state root") for line in describe(plain))
