"""The genesis ceremony on one machine, as separate sites: the pieces that the ceremony
test runs as local processes and a rehearsal runs in containers.

A pilot network has no devnet directory: every partner runs `qchain validator init` in its
own site directory, sends `join.json` to a coordinator, who runs `qchain genesis build`;
every site runs `qchain genesis verify` and `qchain node config`, then `qchain node run`.
This module drives those commands (through the `qchain` CLI, as an operator would), makes
a simulated key manager for N sites (one shared KMS serving every site's SAE, with a TLS
client certificate per SAE that `validator init` copies into the site), and starts and
stops a site's node.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from devnet.spawn import qchain_argv, spawn, terminate
from qchain.qkd.certs import write_kms_certs


@dataclass(frozen=True)
class SiteSpec:
    """What one partner passes to `qchain validator init`."""

    name: str
    sae_id: str
    host: str
    """The name the other sites and the partners reach this site by (e.g. localhost)."""
    p2p_port: int
    api_port: int
    admin_port: int
    listen_host: str = "127.0.0.1"

    @property
    def p2p(self) -> str:
        return f"{self.host}:{self.p2p_port}"

    @property
    def api(self) -> str:
        return f"https://{self.host}:{self.api_port}"


@dataclass(frozen=True)
class SiteKms:
    """A simulated key manager serving several sites: its config and each SAE's client
    TLS material (what a site's KME vendor would hand the site)."""

    config: Path
    url: str
    admin_url: str
    ca: Path
    client_cert: dict[str, Path]
    client_key: dict[str, Path]


def qchain(*args: str, cwd: Path | None = None, timeout: float = 60.0) -> str:
    """Run `qchain ARGS` to completion; its standard output. `RuntimeError` with the
    output if it fails."""
    done = subprocess.run(
        qchain_argv(*args), capture_output=True, text=True, cwd=cwd, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"qchain {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
        )
    return done.stdout


def _kms_toml(
    kms_id: str,
    sae_ids: Sequence[str],
    *,
    server: tuple[str, int],
    tls: tuple[str, str, str],
    admin: tuple[int, str],
    rate: str,
) -> str:
    """The simulated KMS's config: its server (host, port), TLS files (CA, certificate,
    key), admin API on loopback (port, token file), key defaults at rate, and its SAEs."""
    saes = "\n".join(f'[[sae]]\nid = "{s}"\n' for s in sae_ids)
    return f"""kms_id = "{kms_id}"
full_mesh = true

[server]
host = "{server[0]}"
port = {server[1]}

[tls]
ca_cert = "{tls[0]}"
cert = "{tls[1]}"
key = "{tls[2]}"

[admin]
host = "127.0.0.1"
port = {admin[0]}
token_file = "{admin[1]}"

[defaults]
profile = "{rate}"
key_size = 256
max_key_count = 20000
max_key_per_request = 128
initial_key_count = 2048

{saes}"""


def write_site_kms(
    directory: Path,
    sae_ids: Sequence[str],
    *,
    port: int,
    admin_port: int,
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    rate: str = "lab",
) -> SiteKms:
    """Write a shared simulated KMS for the SAEs under directory (config, admin token,
    private CA, server and client certificates)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = write_kms_certs(directory / "ca", sae_ids, hosts)
    token = directory / "admin.token"
    token.write_text(secrets.token_hex(16) + "\n")
    token.chmod(0o600)
    config = directory / "kms.toml"
    config.write_text(
        _kms_toml(
            "site-kms",
            sae_ids,
            server=("127.0.0.1", port),
            tls=("ca/ca.pem", "ca/kms.pem", "ca/kms.key"),
            admin=(admin_port, "admin.token"),
            rate=rate,
        )
    )
    return SiteKms(
        config,
        f"https://{hosts[-1]}:{port}",
        f"http://127.0.0.1:{admin_port}",
        paths["ca"],
        {s: paths[f"sae-{s}"] for s in sae_ids},
        {s: paths[f"sae-{s}_key"] for s in sae_ids},
    )


def init_site(site_dir: Path, spec: SiteSpec, kms: SiteKms) -> None:
    """`qchain validator init` for one site, with its KME client material from kms."""
    qchain(
        "validator",
        "init",
        "--dir",
        str(site_dir),
        "--name",
        spec.name,
        "--p2p",
        spec.p2p,
        "--api",
        spec.api,
        "--p2p-listen",
        f"{spec.listen_host}:{spec.p2p_port}",
        "--api-listen",
        f"{spec.listen_host}:{spec.api_port}",
        "--admin-listen",
        f"127.0.0.1:{spec.admin_port}",
        "--kme-url",
        kms.url,
        "--sae-id",
        spec.sae_id,
        "--kme-cert",
        str(kms.client_cert[spec.sae_id]),
        "--kme-key",
        str(kms.client_key[spec.sae_id]),
        "--kme-ca",
        str(kms.ca),
    )


def genesis_hash_of(build_output: str) -> str:
    """The genesis hash `qchain genesis build` prints on its last line."""
    return build_output.strip().splitlines()[-1].strip()


@dataclass
class Process:
    """A background `qchain` process and its log."""

    proc: subprocess.Popen[bytes]
    log: Path

    def exited(self) -> int | None:
        return self.proc.poll()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start(args: Sequence[str], log_dir: Path, name: str, cwd: Path) -> Process:
    """Start `qchain ARGS` in the background, its output in log_dir/NAME.log."""
    proc = spawn(qchain_argv(*args), log_dir / f"{name}.log", log_dir / f"{name}.pid", cwd)
    return Process(proc, log_dir / f"{name}.log")


def start_kms(kms: SiteKms, log_dir: Path) -> Process:
    return start(["kms", "--config", str(kms.config)], log_dir, "kms", kms.config.parent)


def start_node(site_dir: Path, log_dir: Path, name: str) -> Process:
    """`qchain node run --config SITE/node.toml`, as the site's operator starts it; its
    log is log_dir/NAME.log."""
    return start(["node", "run", "--config", str(site_dir / "node.toml")], log_dir, name, site_dir)


def stop(processes: Sequence[Process], grace_s: float = 10.0) -> None:
    terminate([p.proc.pid for p in processes if p.exited() is None], grace_s)
    for p in processes:
        p.proc.wait(timeout=grace_s)


def wait_for(
    what: str, check: Callable[[], bool], timeout: float, processes: Sequence[Process]
) -> None:
    """Poll check() (a callable returning true when done) until the deadline; fails
    early, with the log, when one of the processes exits."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        for p in processes:
            if p.exited() is not None:
                raise RuntimeError(f"{p.log.stem} exited while waiting for {what}:\n{p.log_text()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout:.0f}s")
        time.sleep(0.1)


# --- what must never leave a site -------------------------------------------------------


def site_secrets(site_dir: Path) -> dict[str, list[bytes]]:
    """Every secret of a site as raw bytes, by file: the validator key's seed, the API's
    TLS private scalar and its PKCS#8 encoding, the key manager client key's scalar (when
    the site has one) and the admin token (as text and as the bytes its hex names)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from qchain.keys import SigningKey

    def ec_key(path: Path) -> list[bytes]:
        key = serialization.load_pem_private_key(path.read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError(f"{path}: not an EC private key")
        scalar = key.private_numbers().private_value.to_bytes(32, "big")
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return [scalar, der]

    token = (site_dir / "admin.token").read_text().strip()
    found = {
        "validator.key": [SigningKey.load(site_dir / "validator.key").seed],
        "api.key": ec_key(site_dir / "api.key"),
        "admin.token": [token.encode(), bytes.fromhex(token)],
    }
    if (site_dir / "kme-client.key").exists():
        found["kme-client.key"] = ec_key(site_dir / "kme-client.key")[:1]
    return found


def secret_decodings(text: str) -> list[bytes]:
    """The text's bytes and everything a hex or base64 (standard or URL-safe) run in it
    decodes to, at every alignment: where a secret could hide in a public file."""
    out = [text.encode(errors="replace")]
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


def find_leaks(path: Path, secrets_by_name: dict[str, list[bytes]]) -> list[str]:
    """Which of the secrets appear in the file (raw, hex in either case, base64, or as
    the payload of any hex or base64 run), and whether it holds a PEM private key at all;
    empty if none. Binary files (a receipt, say) are read as Latin-1 text too."""
    data = path.read_bytes()
    text = data.decode("latin-1")
    found = ["a PEM private key"] if "PRIVATE KEY" in text else []
    decoded = [data, *secret_decodings(text)]
    for name, values in secrets_by_name.items():
        for s in values:
            forms = (s.hex(), s.hex().upper(), base64.b64encode(s).decode().rstrip("="))
            if any(s in d for d in decoded) or any(f[4:-4] in text for f in forms):
                found.append(name)
                break
    return found


def init_validator(
    site_dir: Path,
    *,
    name: str,
    p2p: str,
    api: str,
    kms: SiteKms,
    sae_id: str,
    p2p_listen: str | None = None,
    api_listen: str | None = None,
    admin_listen: str = "127.0.0.1:9000",
) -> None:
    """`qchain validator init` with the P2P hint and API URL given apart (in containers
    the peers dial a service name, the partners a published port); the listen addresses
    default to validator init's own (0.0.0.0)."""
    listen = [("--p2p-listen", p2p_listen), ("--api-listen", api_listen)]
    qchain(
        "validator", "init", "--dir", str(site_dir), "--name", name, "--p2p", p2p,
        "--api", api, "--admin-listen", admin_listen, "--kme-url", kms.url,
        "--sae-id", sae_id, "--kme-cert", str(kms.client_cert[sae_id]),
        "--kme-key", str(kms.client_key[sae_id]), "--kme-ca", str(kms.ca),
        *[arg for flag, value in listen if value is not None for arg in (flag, value)],
    )  # fmt: skip


def write_members(directory: Path, roles: dict[str, str]) -> Path:
    """A key per member (`qchain keys new`, ML-DSA-65: directory/NAME.key) and the
    members.toml that lists them with their role; its path."""
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, role in roles.items():
        key = directory / f"{name}.key"
        out = qchain("keys", "new", "--out", str(key), "--scheme", "ml-dsa-65", "--json")
        public = json.loads(out)["public_key"]
        entries.append(
            f'[[members]]\nname = "{name}"\nscheme = "ml-dsa-65"\npublic_key = "{public}"\n'
            f'roles = ["{role}"]\n'
        )
    members = directory / "members.toml"
    members.write_text("\n".join(entries))
    return members


def run_ceremony(
    sites: Sequence[Path],
    coordinator: Path,
    members: Path,
    *,
    chain_id: str,
    timing: str = "test",
    node_config: Sequence[str] = (),
) -> str:
    """The ceremony after every `validator init`: the coordinator gathers the join files
    and builds the genesis; each site fetches it beside its directory, verifies it against
    the announced hash and runs `qchain node config ARGS` (e.g. `--secrets-dir`,
    `--data-dir`). The genesis hash."""
    coordinator.mkdir(parents=True, exist_ok=True)
    joins = []
    for site in sites:
        name = json.loads((site / "join.json").read_text())["name"]
        joins.append(coordinator / f"join-{name}.json")
        shutil.copy(site / "join.json", joins[-1])
    build = qchain(
        "genesis", "build", "--chain-id", chain_id, "--validators", *map(str, joins),
        "--members", str(members), "--timing", timing, "--out", "genesis.json",
        cwd=coordinator,
    )  # fmt: skip
    announced = genesis_hash_of(build)
    for site in sites:
        got = site.parent / "downloaded-genesis.json"
        shutil.copy(coordinator / "genesis.json", got)
        qchain("genesis", "verify", str(got), "--expect-hash", announced)
        qchain("node", "config", "--genesis", str(got), "--site", str(site), *node_config)
    return announced


KME_CONFIG_DIR = "/etc/qchain-kme"
KME_SECRETS_DIR = "/run/secrets"


def write_site_kmes(
    directory: Path,
    kme_hosts: dict[str, str],
    *,
    port: int = 8443,
    relay_port: int = 7400,
    rate: str = "lab",
) -> dict[str, SiteKms]:
    """One simulated KME per site, for containers: {SAE id: its KME} for kme_hosts
    ({SAE id: the host name the site's validator and the other KMEs reach its KME by}).

    Each KME serves only its own SAE and relays the keys its SAE takes as master to the
    other SAEs' KMEs (`qchain.qkd.relay`, plain HTTP with an HMAC under a shared relay
    secret: a simulation of trusted-node links). directory/SAE/ holds what a KME vendor
    would install at that site: kme.toml (written for the container's paths: public files
    in KME_CONFIG_DIR, secrets in KME_SECRETS_DIR), ca.pem, kms.pem and the secrets
    kms.key, relay.secret, admin.token; one private CA signs the KMEs' server certificate
    (valid for every host in kme_hosts) and each SAE's client certificate (directory/ca/).
    A KME's admin API stays on its container's loopback, so `admin_url` is empty.
    """
    paths = write_kms_certs(directory / "ca", list(kme_hosts), list(kme_hosts.values()))
    relay_secret = secrets.token_hex(24)
    out = {}
    for sae, host in kme_hosts.items():
        kme = directory / sae
        kme.mkdir(parents=True, exist_ok=True)
        shutil.copy(paths["ca"], kme / "ca.pem")
        shutil.copy(paths["kms"], kme / "kms.pem")
        for f, text in (
            ("kms.key", paths["kms_key"].read_text()),
            ("relay.secret", relay_secret + "\n"),
            ("admin.token", secrets.token_hex(16) + "\n"),
        ):
            (kme / f).write_text(text)
            (kme / f).chmod(0o600)
        (kme / "kme.toml").write_text(
            _kme_toml(sae, kme_hosts, port=port, relay_port=relay_port, rate=rate)
        )
        out[sae] = SiteKms(
            kme / "kme.toml",
            f"https://{host}:{port}",
            "",
            paths["ca"],
            {s: paths[f"sae-{s}"] for s in kme_hosts},
            {s: paths[f"sae-{s}_key"] for s in kme_hosts},
        )
    return out


def _kme_toml(sae: str, kme_hosts: dict[str, str], *, port: int, relay_port: int, rate: str) -> str:
    peers = "\n".join(
        f'"{s}" = "http://{h}:{relay_port}"' for s, h in kme_hosts.items() if s != sae
    )
    kms = _kms_toml(
        f"kme-{sae}",
        list(kme_hosts),
        server=("0.0.0.0", port),
        tls=("ca.pem", "kms.pem", f"{KME_SECRETS_DIR}/kms.key"),
        admin=(9001, f"{KME_SECRETS_DIR}/admin.token"),
        rate=rate,
    )
    return f"""{kms}
[relay]
local_sae = "{sae}"
host = "0.0.0.0"
port = {relay_port}
secret_file = "{KME_SECRETS_DIR}/relay.secret"
delay_ms = 0

[relay.peers]
{peers}
"""
