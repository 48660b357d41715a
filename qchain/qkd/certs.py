"""TLS material for a devnet's key manager: a private CA, the KME's server certificate and
one client certificate per SAE (its common name is the SAE id, which is how the key
manager identifies the caller by default). For a key manager that names SAEs by the
certificate's serial number (`sae_identity = "serial"`), SAE ids are decimal integers and
`serial_from_id` makes each SAE certificate's serial number its id. Keys are ECDSA P-256;
private keys are written 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 3650


@dataclass(frozen=True)
class Issued:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "qchain devnet"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public: ec.EllipticCurvePublicKey,
    days: int,
    serial: int | None = None,
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number() if serial is None else serial)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def make_ca(common_name: str = "qchain devnet KMS CA", days: int = VALID_DAYS) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = (
        _builder(name, name, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(key, cert)


def subject_alt_names(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    """The names a server certificate is valid for: IP addresses as such, the rest as DNS
    names."""
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(sans)


def issue(
    ca: Issued,
    common_name: str,
    *,
    server_hosts: Iterable[str] = (),
    days: int = VALID_DAYS,
    serial: int | None = None,
) -> Issued:
    """A leaf certificate: a server certificate for `server_hosts` if any, else a client
    certificate. `serial`: its serial number (default: random, 159 bits)."""
    key = ec.generate_private_key(ec.SECP256R1())
    hosts = list(server_hosts)
    builder = (
        _builder(_name(common_name), ca.cert.subject, key.public_key(), days, serial)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if hosts:
        builder = builder.add_extension(subject_alt_names(hosts), critical=False)
        usage = ExtendedKeyUsageOID.SERVER_AUTH
    else:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return Issued(key, builder.sign(ca.key, hashes.SHA256()))


def _write(path: Path, data: bytes, private: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def load(cert_path: Path, key_path: Path) -> Issued:
    """A certificate and its key as `save` wrote them (the devnet's CA, to issue one more
    SAE certificate when a validator joins)."""
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path}: not an EC private key")
    return Issued(key, x509.load_pem_x509_certificate(cert_path.read_bytes()))


def save(issued: Issued, cert_path: Path, key_path: Path) -> None:
    _write(cert_path, issued.cert.public_bytes(serialization.Encoding.PEM), False)
    key_pem = issued.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(key_path, key_pem, True)


def write_kms_certs(
    out_dir: Path,
    sae_ids: Iterable[str],
    hosts: Iterable[str] = ("127.0.0.1", "localhost"),
    *,
    serial_from_id: bool = False,
) -> dict[str, Path]:
    """Write ca.pem/ca.key, kms.pem/kms.key and sae-<id>.pem/.key; returns the paths by
    name ("ca", "ca_key", "kms", "kms_key", "sae-<id>", "sae-<id>_key"). With
    `serial_from_id` every SAE id must be a positive decimal integer, used as the serial
    number of that SAE's certificate (`ValueError` otherwise)."""
    sae_ids = list(sae_ids)
    if serial_from_id and not all(s.isdigit() and int(s) > 0 for s in sae_ids):
        raise ValueError("serial numbers from SAE ids need positive decimal SAE ids")
    out_dir.mkdir(parents=True, exist_ok=True)
    ca = make_ca()
    paths: dict[str, Path] = {}

    def put(name: str, issued: Issued) -> None:
        paths[name], paths[f"{name}_key"] = out_dir / f"{name}.pem", out_dir / f"{name}.key"
        save(issued, paths[name], paths[f"{name}_key"])

    put("ca", ca)
    put("kms", issue(ca, "qchain KMS", server_hosts=hosts))
    for sae in sae_ids:
        put(f"sae-{sae}", issue(ca, sae, serial=int(sae) if serial_from_id else None))
    return paths
