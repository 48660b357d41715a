"""`qchain validator init`: the site directory, its modes, its refusals, and that nothing
private leaves it (join.json, api.crt and site.toml are checked for every secret in hex,
base64 and PEM)."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

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


def _decodings(text: str) -> list[bytes]:
    """The file's bytes and everything a hex or base64 run in it decodes to."""
    out = [text.encode()]
    flat = re.sub(r"\s+", "", text.replace("\\n", ""))
    for run in re.findall(r"[A-Za-z0-9+/=_-]{16,}", flat):
        for alphabet in (run, run.replace("-", "+").replace("_", "/")):
            body = alphabet.rstrip("=")
            for start in range(4):
                chunk = body[start:]
                if len(chunk) % 4 == 1:
                    chunk = chunk[:-1]
                chunk += "=" * (-len(chunk) % 4)
                with contextlib.suppress(ValueError):
                    out.append(base64.b64decode(chunk, validate=True))
    for run in re.findall(r"[0-9a-fA-F]{32,}", text):
        for start in (0, 1):
            chunk = run[start:]
            out.append(bytes.fromhex(chunk[: len(chunk) - len(chunk) % 2]))
    return out


def test_nothing_private_leaves_the_site(tmp_path: Path) -> None:
    site_dir = make_site(tmp_path)
    seed = SigningKey.load(site_dir / "validator.key").seed
    tls = serialization.load_pem_private_key((site_dir / "api.key").read_bytes(), None)
    assert isinstance(tls, ec.EllipticCurvePrivateKey)
    scalar = tls.private_numbers().private_value.to_bytes(32, "big")
    der = tls.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    kme = serialization.load_pem_private_key((site_dir / "kme-client.key").read_bytes(), None)
    assert isinstance(kme, ec.EllipticCurvePrivateKey)
    kme_scalar = kme.private_numbers().private_value.to_bytes(32, "big")
    token = (site_dir / "admin.token").read_text().strip()
    secrets = [seed, scalar, der, kme_scalar, token.encode(), bytes.fromhex(token)]
    for name in ("join.json", "api.crt", "site.toml"):
        text = (site_dir / name).read_text()
        assert "PRIVATE KEY" not in text, name
        for decoded in _decodings(text):
            for s in secrets:
                assert s not in decoded, f"a secret of the site appears in {name}"
        for s in secrets:
            for fmt in (s.hex(), s.hex().upper(), base64.b64encode(s).decode().rstrip("=")):
                assert fmt[4:-4] not in text, name


def test_the_check_finds_a_planted_secret(tmp_path: Path) -> None:
    seed = bytes(range(32))
    planted = '{"x": "' + base64.b64encode(b"ab" + seed).decode() + '"}'
    assert any(seed in d for d in _decodings(planted))
    assert any(seed in d for d in _decodings("k = " + seed.hex().upper()))


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
