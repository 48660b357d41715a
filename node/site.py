"""A validator's site directory: what `qchain validator init` writes at a partner's site,
and what `qchain node config` later reads.

    SITE/site.toml       public: name, advertised p2p (HOST:PORT) and api (URL), the listen
                         addresses, kme_url, sae_id and, under [files], the names below
    SITE/join.json       public: what the site sends the genesis coordinator (name, public
                         key, p2p, api, sae_id, the PEM of api.crt) and nothing private
    SITE/validator.key   secret (0600): the ML-DSA-65 key that signs commit certificates
    SITE/api.key         secret (0600): the TLS key of the public API
    SITE/api.crt         public: the API's self-signed certificate; SAN = the hosts of the
                         advertised api URL and p2p address
    SITE/admin.token     secret (0600): bearer token of the admin API
    SITE/kme-client.key  secret (0600), kme-client.crt and kme-ca.crt (public): copies of
                         the site's key-manager client TLS material, when given

Every private key is made here, at the site, and never leaves it. `init_site` refuses a
directory that already holds any of these files; each file is written to a temporary name
with its final mode and linked into place, so no file is ever seen half-written or with a
wider mode. `load_site` reads `site.toml` back as hostile input.

`rotate_api_cert` and `rotate_admin_token` replace the API's key and certificate, or the
admin token, of an existing site (after an incident, or before the certificate expires):
the new file is written beside the old one and renamed over it, the old one is kept as
`NAME.replaced-<UTC time>` (secrets with mode 0600), and join.json carries the new
certificate. The node reads both at start, so a rolling restart puts them in force.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from qchain.config import load_toml
from qchain.errors import ConfigError
from qchain.keys import SigningKey
from qchain.qkd.certs import subject_alt_names

SITE_TOML = "site.toml"
JOIN_JSON = "join.json"
FILES = {
    "signing_key": "validator.key",
    "api_key": "api.key",
    "api_cert": "api.crt",
    "admin_token": "admin.token",
    "kme_client_key": "kme-client.key",
    "kme_client_cert": "kme-client.crt",
    "kme_ca": "kme-ca.crt",
}
"""site.toml's [files]: the role of each file -> its name in the site directory."""
SECRET_FILES = ("signing_key", "api_key", "admin_token", "kme_client_key")
CERT_DAYS = 3650
ADMIN_LISTEN = "127.0.0.1:9000"
_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


# --- addresses ---------------------------------------------------------------------------


def split_host_port(value: str, field: str) -> tuple[str, int]:
    """(host, port) of HOST:PORT, where HOST is a DNS name, an IPv4 address or a bracketed
    IPv6 address; a `ConfigError` naming field otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(field, f"{value!r} is not HOST:PORT with a port from 1 to 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(field, f"{host!r} is not an IPv6 address") from None
        return host, int(port)
    check_host(host, field)
    return host, int(port)


def check_host(host: str, field: str) -> None:
    """A DNS name or an IPv4 address."""
    try:
        ipaddress.IPv4Address(host)
        return
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if not host or len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ConfigError(field, f"{host!r} is not a host name or IP address")


def check_url(value: str, field: str, schemes: tuple[str, ...]) -> str:
    """The host of a URL `scheme://host[:port]` with nothing after the authority."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as e:
        raise ConfigError(field, f"{value!r} is not a URL: {e}") from None
    if parts.scheme not in schemes:
        raise ConfigError(field, f"{value!r} must start with {' or '.join(schemes)}://")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ConfigError(field, f"{value!r} must be scheme://host[:port] and nothing more")
    host = parts.hostname or ""
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(field, f"{host!r} is not an IPv6 address") from None
    else:
        check_host(host, field)
    if port == 0:
        raise ConfigError(field, "port 0 is not a port")
    return host


# --- the site ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    """A site directory as site.toml describes it."""

    dir: Path
    name: str
    p2p: str
    """host:port that the other validators dial."""
    api: str
    """The public API's URL as partners reach it."""
    p2p_listen: str
    api_listen: str
    admin_listen: str
    kme_url: str
    """The site's own QKD key manager (ETSI GS QKD 014); empty until the site has one."""
    sae_id: str
    files: dict[str, str]

    def path(self, role: str) -> Path:
        return self.dir / self.files[role]

    def has(self, role: str) -> bool:
        return self.path(role).is_file()


@dataclass(frozen=True)
class KmeFiles:
    """The site's key-manager client TLS material to copy into the site."""

    cert: Path
    key: Path
    ca: Path


def _default_listen(advertised: str, field: str, given: str | None) -> str:
    _, port = split_host_port(advertised, field)
    return f"0.0.0.0:{port}" if given is None else given


def new_site(
    directory: Path,
    *,
    name: str,
    p2p: str,
    api: str,
    kme_url: str = "",
    sae_id: str | None = None,
    p2p_listen: str | None = None,
    api_listen: str | None = None,
) -> Site:
    """The site that `init_site` writes, every value checked (`ConfigError` naming the
    command-line option)."""
    if not 1 <= len(name.encode()) <= 64 or not name.isprintable():
        raise ConfigError("--name", "must be 1 to 64 bytes of printable text")
    split_host_port(p2p, "--p2p")
    check_url(api, "--api", ("https",))
    api_port = urlsplit(api).port or 443
    p2p_listen = _default_listen(p2p, "--p2p", p2p_listen)
    split_host_port(p2p_listen, "--p2p-listen")
    api_listen = f"0.0.0.0:{api_port}" if api_listen is None else api_listen
    split_host_port(api_listen, "--api-listen")
    if kme_url:
        check_url(kme_url, "--kme-url", ("https", "http"))
    sae = name if sae_id is None else sae_id
    if not 1 <= len(sae.encode()) <= 128 or not sae.isprintable():
        raise ConfigError("--sae-id", "must be 1 to 128 bytes of printable text")
    return Site(
        directory,
        name,
        p2p,
        api.rstrip("/"),
        p2p_listen,
        api_listen,
        ADMIN_LISTEN,
        kme_url,
        sae,
        dict(FILES),
    )


def site_hosts(site: Site) -> list[str]:
    """The hosts the API certificate names: those of the api URL and the p2p address."""
    hosts = [urlsplit(site.api).hostname or "", split_host_port(site.p2p, "p2p")[0]]
    return list(dict.fromkeys(h for h in hosts if h))


def self_signed_cert(common_name: str, hosts: list[str]) -> tuple[bytes, bytes]:
    """(certificate PEM, PKCS#8 key PEM): an ECDSA P-256 server certificate, self-signed,
    valid for `hosts` (DNS names or IP addresses)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, common_name[:64]),
            x509.NameAttribute(NameOID.COMMON_NAME, f"qchain API of {common_name}"[:64]),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(subject_alt_names(hosts), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def read_kme_files(kme: KmeFiles) -> tuple[bytes, bytes, bytes]:
    """(client cert, client key, CA) PEM bytes, each parsed to check it is what it claims."""
    out: list[bytes] = []
    for option, path, is_key in (
        ("--kme-cert", kme.cert, False),
        ("--kme-key", kme.key, True),
        ("--kme-ca", kme.ca, False),
    ):
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ConfigError(option, f"cannot read {path}: {e.strerror}") from None
        try:
            if is_key:
                serialization.load_pem_private_key(data, password=None)
            else:
                x509.load_pem_x509_certificate(data)
        except (ValueError, TypeError) as e:
            what = "an unencrypted PEM private key" if is_key else "a PEM certificate"
            raise ConfigError(option, f"{path} is not {what}: {e}") from None
        out.append(data)
    return out[0], out[1], out[2]


def _write_temp(path: Path, data: bytes, mode: int) -> Path:
    """`data` in a new temporary file beside `path`, with its final mode, synced."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write a file that must not exist yet: to a temporary name with its final mode,
    synced, then linked into place (which fails if the name was taken meanwhile)."""
    tmp = _write_temp(path, data, mode)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise ConfigError(str(path), "already exists; a site is never overwritten") from None
    finally:
        tmp.unlink(missing_ok=True)


def site_toml(site: Site) -> str:
    def q(v: str) -> str:
        return json.dumps(v, ensure_ascii=False)

    files = "\n".join(f"{role} = {q(name)}" for role, name in site.files.items())
    return f"""# qchain validator site (written by `qchain validator init`); public
name = {q(site.name)}
p2p = {q(site.p2p)}
api = {q(site.api)}
p2p_listen = {q(site.p2p_listen)}
api_listen = {q(site.api_listen)}
admin_listen = {q(site.admin_listen)}
kme_url = {q(site.kme_url)}
sae_id = {q(site.sae_id)}

[files]
{files}
"""


def join_document(site: Site, key: SigningKey, api_cert_pem: bytes) -> dict[str, str]:
    """What the site sends the coordinator: public values only."""
    return {
        "name": site.name,
        "public_key": key.public_key.hex(),
        "p2p": site.p2p,
        "api": site.api,
        "sae_id": site.sae_id,
        "api_cert": api_cert_pem.decode("ascii"),
    }


def init_site(site: Site, kme: KmeFiles | None = None) -> SigningKey:
    """Write a new site directory; returns its signing key. Refuses (`ConfigError`) a
    directory holding any file of a site."""
    kme_pems = read_kme_files(kme) if kme is not None else None
    names = [SITE_TOML, JOIN_JSON, *site.files.values()]
    taken = [n for n in names if (site.dir / n).exists()]
    if taken:
        raise ConfigError(
            str(site.dir), f"already holds {', '.join(taken)}; a site is never overwritten"
        )
    site.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = SigningKey.generate()
    cert_pem, tls_key_pem = self_signed_cert(site.name, site_hosts(site))
    key_doc = json.dumps(key.to_json(), indent=2) + "\n"
    _write_new(site.path("signing_key"), key_doc.encode(), 0o600)
    _write_new(site.path("api_key"), tls_key_pem, 0o600)
    _write_new(site.path("admin_token"), (secrets.token_hex(32) + "\n").encode(), 0o600)
    _write_new(site.path("api_cert"), cert_pem, 0o644)
    if kme_pems is not None:
        _write_new(site.path("kme_client_key"), kme_pems[1], 0o600)
        _write_new(site.path("kme_client_cert"), kme_pems[0], 0o644)
        _write_new(site.path("kme_ca"), kme_pems[2], 0o644)
    join = json.dumps(join_document(site, key, cert_pem), indent=2) + "\n"
    _write_new(site.dir / JOIN_JSON, join.encode(), 0o644)
    _write_new(site.dir / SITE_TOML, site_toml(site).encode(), 0o644)
    return key


# --- reading a site back -----------------------------------------------------------------


def _str(doc: dict[str, Any], key: str, path: Path) -> str:
    v = doc.get(key)
    if not isinstance(v, str):
        raise ConfigError(f"{path}: {key}", "missing or not a string")
    return v


def load_site(directory: Path) -> Site:
    """The site in directory, site.toml checked as `new_site` checks the options."""
    path = directory / SITE_TOML
    doc = load_toml(path)
    known = {"name", "p2p", "api", "p2p_listen", "api_listen", "admin_listen", "kme_url"}
    for key in doc:
        if key not in known | {"sae_id", "files"}:
            raise ConfigError(f"{path}: {key}", "unknown field")
    files = doc.get("files", {})
    if not isinstance(files, dict) or set(files) != set(FILES):
        raise ConfigError(f"{path}: files", f"must name exactly {', '.join(FILES)}")
    for role, name in files.items():
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise ConfigError(f"{path}: files.{role}", "must be a plain file name")
    try:
        site = new_site(
            directory,
            name=_str(doc, "name", path),
            p2p=_str(doc, "p2p", path),
            api=_str(doc, "api", path),
            kme_url=_str(doc, "kme_url", path),
            sae_id=_str(doc, "sae_id", path),
            p2p_listen=_str(doc, "p2p_listen", path),
            api_listen=_str(doc, "api_listen", path),
        )
    except ConfigError as e:
        field = e.field.removeprefix("--").replace("-", "_")
        raise ConfigError(f"{path}: {field}", e.reason) from None
    split_host_port(_str(doc, "admin_listen", path), f"{path}: admin_listen")
    return Site(
        site.dir,
        site.name,
        site.p2p,
        site.api,
        site.p2p_listen,
        site.api_listen,
        _str(doc, "admin_listen", path),
        site.kme_url,
        site.sae_id,
        {str(k): str(v) for k, v in files.items()},
    )


# --- rotating a site's API certificate and admin token -----------------------------------


def _replace(path: Path, data: bytes, mode: int, stamp: str) -> Path:
    """Put `data` at `path`, keeping the old file as `path.replaced-<stamp>`; returns the
    name the old file now has."""
    if not path.is_file():
        raise ConfigError(str(path), "missing; is this a site directory?")
    tmp = _write_temp(path, data, mode)
    kept = path.with_name(f"{path.name}.replaced-{stamp}")
    try:
        os.link(path, kept)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return kept


def _stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")


def rotate_api_cert(directory: Path) -> tuple[bytes, list[Path]]:
    """A new API key and self-signed certificate for the site's hosts; join.json follows.
    Returns the new certificate (PEM) and where the old files were kept."""
    site = load_site(directory)
    cert_pem, key_pem = self_signed_cert(site.name, site_hosts(site))
    join_path = site.dir / JOIN_JSON
    try:
        join = json.loads(join_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(str(join_path), f"cannot read: {e}") from None
    if not isinstance(join, dict):
        raise ConfigError(str(join_path), "not a JSON object")
    join["api_cert"] = cert_pem.decode("ascii")
    stamp = _stamp()
    kept = [
        _replace(site.path("api_key"), key_pem, 0o600, stamp),
        _replace(site.path("api_cert"), cert_pem, 0o644, stamp),
        _replace(join_path, (json.dumps(join, indent=2) + "\n").encode(), 0o644, stamp),
    ]
    return cert_pem, kept


def rotate_admin_token(directory: Path) -> Path:
    """A new admin token; returns where the old one was kept (mode 0600)."""
    site = load_site(directory)
    token = (secrets.token_hex(32) + "\n").encode()
    return _replace(site.path("admin_token"), token, 0o600, _stamp())
