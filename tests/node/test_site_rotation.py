"""`qchain validator rotate-tls` and `rotate-token`: a site's API certificate and admin
token replaced in place, the old files kept, join.json following, nothing else touched."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from node.site import FILES, JOIN_JSON, init_site, new_site
from qchain.cli import main


def _site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    init_site(
        new_site(
            site,
            name="Qingdao Port",
            p2p="val.port.example:26600",
            api="https://api.port.example:8443",
            kme_url="",
            sae_id="sae-a",
        )
    )
    return site


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_rotate_tls_replaces_key_and_certificate(tmp_path: Path) -> None:
    site = _site(tmp_path)
    before = {n: (site / n).read_bytes() for n in ("api.crt", "api.key", JOIN_JSON)}
    untouched = {n: (site / n).read_bytes() for n in ("validator.key", "admin.token")}
    assert main(["validator", "rotate-tls", "--dir", str(site)]) == 0
    cert = x509.load_pem_x509_certificate((site / "api.crt").read_bytes())
    key = serialization.load_pem_private_key((site / "api.key").read_bytes(), None)
    assert (site / "api.crt").read_bytes() != before["api.crt"]
    assert (site / "api.key").read_bytes() != before["api.key"]
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"api.port.example", "val.port.example"}
    join = json.loads((site / JOIN_JSON).read_text())
    assert join["api_cert"] == (site / "api.crt").read_text()
    assert join["public_key"] == json.loads(before[JOIN_JSON])["public_key"]
    assert _mode(site / "api.key") == 0o600
    for name, old in before.items():
        kept = list(site.glob(f"{name}.replaced-*"))
        assert len(kept) == 1 and kept[0].read_bytes() == old, name
    assert _mode(next(site.glob("api.key.replaced-*"))) == 0o600
    assert {n: (site / n).read_bytes() for n in untouched} == untouched
    assert not list(site.glob(".*.tmp"))


def test_rotate_token(tmp_path: Path) -> None:
    site = _site(tmp_path)
    old = (site / "admin.token").read_text()
    assert main(["validator", "rotate-token", "--dir", str(site)]) == 0
    new = (site / "admin.token").read_text()
    assert new != old and len(new.strip()) == 64
    assert _mode(site / "admin.token") == 0o600
    (kept,) = site.glob("admin.token.replaced-*")
    assert kept.read_text() == old and _mode(kept) == 0o600


def test_rotation_needs_a_site(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validator", "rotate-tls", "--dir", str(tmp_path)]) != 0
    assert "site.toml: cannot read" in capsys.readouterr().err
    site = _site(tmp_path)
    (site / FILES["admin_token"]).unlink()
    assert main(["validator", "rotate-token", "--dir", str(site)]) != 0
    assert "admin.token: missing" in capsys.readouterr().err
    assert not list(site.glob("admin.token*"))
