"""The host side of the rehearsal, without Docker: each party's directory holds only what
it made or was handed, the coordinator only join files and public keys, each site's node
listens where its WAN link expects it, and the four KMEs share the relay secret and
nothing else."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from devnet.rehearsal import SITES, Rehearsal, Settings, ceremony
from qchain.errors import ConfigError


@pytest.mark.parametrize(("wan", "p2p", "api"), [
    ("netem", "0.0.0.0:7000", "0.0.0.0:8000"),
    ("delay line", "127.0.0.1:7001", "127.0.0.1:8001"),
])  # fmt: skip
def test_the_ceremony_in_separate_directories(tmp_path: Path, wan: str, p2p: str, api: str) -> None:
    s = Settings(tmp_path / "r", delay_ms=25)
    s.directory.mkdir()
    r = Rehearsal(s, wan=wan)
    ceremony(r)
    d = s.directory
    assert sorted(p.name for p in (d / "coordinator").iterdir()) == sorted(
        ["genesis.json", "members.toml", *(f"join-site-{x}.json" for x in SITES)]
    )
    assert {c.source.parent.name for c in r.crossings} == {
        "coordinator",
        *(f"site-{x}" for x in SITES),
    }
    kmes = {}
    for x in SITES:
        node = tomllib.loads((d / f"site-{x}" / "node.toml").read_text())
        assert (node["p2p"]["listen"], node["api"]["listen"]) == (p2p, api)
        peers = {p["address"] for p in node["p2p"]["peers"]}
        assert peers == {f"rehearsal-site-{y}:7000" for y in SITES if y != x}
        assert node["qkd"]["kme_url"] == "https://localhost:6000"
        kme = tomllib.loads((d / f"kme-{x}" / "kms" / "kme.toml").read_text())
        assert kme["server"]["host"] == "127.0.0.1"
        assert (kme["relay"]["host"], kme["relay"]["local_sae"]) == ("0.0.0.0", f"sae-{x}")
        assert kme["relay"]["delay_ms"] == (25 if wan == "delay line" else 0)
        assert kme["relay"]["peers"] == {
            f"sae-{y}": f"http://rehearsal-site-{y}:6002" for y in SITES if y != x
        }
        kmes[x] = d / f"kme-{x}"
    secret = (d / "qkd-network" / "relay.secret").read_bytes()
    assert all((k / "kms" / "relay.secret").read_bytes() == secret for k in kmes.values())
    assert len({(k / "ca" / "ca.pem").read_bytes() for k in kmes.values()}) == len(SITES)
    assert len({(k / "kms" / "admin.token").read_bytes() for k in kmes.values()}) == len(SITES)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"delay_ms": -1}, "--delay-ms"),
        ({"delay_ms": 5000}, "--delay-ms"),
        ({"subnet": "172.29.17.1/24"}, "--subnet"),
        ({"subnet": "no"}, "--subnet"),
        ({"subnet": "172.29.17.0/28"}, "--subnet"),
        ({"subnet": "fd00::/64"}, "--subnet"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, kw: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as e:
        Settings(tmp_path, **kw)  # type: ignore[arg-type]
    assert e.value.field == field


def test_addresses_are_distinct_and_fixed(tmp_path: Path) -> None:
    s = Settings(tmp_path)
    assert [s.address(x) for x in SITES] == [f"172.29.17.{11 + i}" for i in range(4)]
    assert s.partner_address == "172.29.17.50"
    assert [s.host(x) for x in SITES] == [f"rehearsal-site-{x}" for x in SITES]
