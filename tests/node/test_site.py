"""`qchain validator init`: the site directory, its modes, its refusals, and that nothing
private leaves it (join.json, api.crt and site.toml are checked for every secret in hex,
base64 and PEM)."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from devnet.sites import find_leaks, secret_decodings, site_secrets
from node.site import FILES, KmeFiles, init_site, load_site, new_site
from qchain.cli import main
from qchain.errors import ConfigError
from qchain.keys import SigningKey
from qchain.qkd.certs import write_kms_certs


def make_site(tmp_path: Path, **kw: str) -> Path:
    ca = write_kms_certs(tmp_path / "kms-ca", ["sae-a"])
    site = tmp_path / "site"
    args = {
        "name": "Qingdao Port",
        "p2p": "val.port.example:26600",
        "api": "https://api.port.example:8443",
    }
    args.update(kw)
    init_site(
        new_site(site, sae_id="sae-a", kme_url="https://kme.port.example", **args),
        KmeFiles(ca["sae-sae-a"], ca["sae-sae-a_key"], ca["ca"]),
    )
    return site


def test_site_layout_and_modes(tmp_path: Path) -> None:
    site_dir = make_site(tmp_path)
    site = load_site(site_dir)
    assert (site.p2p_listen, site.api_listen, site.admin_listen) == (
        "0.0.0.0:26600",
        "0.0.0.0:8443",
        "127.0.0.1:9000",
    )
    secret = {"validator.key", "api.key", "admin.token", "kme-client.key"}
    names = {p.name for p in site_dir.iterdir()}
    assert names == {"site.toml", "join.json", *FILES.values()}
    for p in site_dir.iterdir():
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o600 if p.name in secret else 0o644), p.name
    join = json.loads((site_dir / "join.json").read_text())
    assert set(join) == {"name", "public_key", "p2p", "api", "sae_id", "api_cert"}
    key = SigningKey.load(site_dir / "validator.key")
    assert join["public_key"] == key.public_key.hex()
    assert join["api_cert"] == (site_dir / "api.crt").read_text()


def test_nothing_private_leaves_the_site(tmp_path: Path) -> None:
    site_dir = make_site(tmp_path)
    secrets = site_secrets(site_dir)
    assert set(secrets) == {"validator.key", "api.key", "admin.token", "kme-client.key"}
    assert SigningKey.load(site_dir / "validator.key").seed in secrets["validator.key"]
    for name in ("join.json", "api.crt", "site.toml"):
        assert find_leaks(site_dir / name, secrets) == [], name
    assert find_leaks(site_dir / "api.key", secrets) == ["a PEM private key", "api.key"]


def test_the_check_finds_a_planted_secret(tmp_path: Path) -> None:
    seed = bytes(range(32))
    planted = '{"x": "' + base64.b64encode(b"ab" + seed).decode() + '"}'
    assert any(seed in d for d in secret_decodings(planted))
    assert any(seed in d for d in secret_decodings("k = " + seed.hex().upper()))
    (tmp_path / "public.json").write_text(planted)
    assert find_leaks(tmp_path / "public.json", {"validator.key": [seed]}) == ["validator.key"]
    (tmp_path / "receipt.bin").write_bytes(b"\x00\x91" + seed + b"\xff")
    assert find_leaks(tmp_path / "receipt.bin", {"api.key": [seed]}) == ["api.key"]


def test_an_existing_site_is_never_overwritten(tmp_path: Path) -> None:
    site_dir = make_site(tmp_path)
    before = {p.name: p.read_bytes() for p in site_dir.iterdir()}
    with pytest.raises(ConfigError, match="never overwritten"):
        make_site(tmp_path)
    assert {p.name: p.read_bytes() for p in site_dir.iterdir()} == before
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "api.key").write_text("mine")
    with pytest.raises(ConfigError, match=r"api\.key"):
        init_site(new_site(lone, name="x", p2p="h:1", api="https://h:2"))
    assert (lone / "api.key").read_text() == "mine"


@pytest.mark.parametrize(
    ("option", "kw"),
    [
        ("--p2p", {"p2p": "no-port"}),
        ("--p2p", {"p2p": "host:0"}),
        ("--p2p", {"p2p": "bad_host:1"}),
        ("--p2p", {"p2p": "host:70000"}),
        ("--api", {"api": "http://h:1"}),
        ("--api", {"api": "https://h:1/path"}),
        ("--api", {"api": "https://h:notaport"}),
        ("--name", {"name": ""}),
        ("--name", {"name": "two\nlines"}),
        ("--p2p-listen", {"p2p_listen": "0.0.0.0"}),
        ("--kme-url", {"kme_url": "ftp://kme"}),
        ("--sae-id", {"sae_id": ""}),
    ],
)
def test_bad_options_are_named(tmp_path: Path, option: str, kw: dict[str, str]) -> None:
    args = {"name": "org", "p2p": "h:1", "api": "https://h:2", **kw}
    with pytest.raises(ConfigError) as e:
        new_site(tmp_path / "s", **args)
    assert e.value.field == option


def test_cli_init_refuses_half_of_the_kme_material(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(
        [
            "validator", "init", "--dir", str(tmp_path / "s"), "--name", "org",
            "--p2p", "[::1]:26600", "--api", "https://[::1]:8443", "--kme-key", "x.key",
        ]
    )  # fmt: skip
    assert rc == 1 and "--kme-cert" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    rc = main(
        [
            "validator", "init", "--dir", str(tmp_path / "s"), "--name", "org",
            "--p2p", "[::1]:26600", "--api", "https://[::1]:8443",
        ]
    )  # fmt: skip
    assert rc == 0 and load_site(tmp_path / "s").p2p_listen == "0.0.0.0:26600"
