"""`qchain node config`: a site's `node.toml` from its site directory and the genesis.

The validator's index is the one whose public key in the genesis is the site's key (from
`join.json`, checked against `validator.key` when that is still in the site); the peers are
the other validators' `p2p` hints; the API serves TLS with `api.crt`/`api.key`; `[qkd]`
comes from site.toml; the timing profile is the genesis's. Secret files are named under
`secrets_dir` (where they are at run time, e.g. `/run/secrets/qchain` in a container;
default the site), public ones relative to the site. The genesis is copied to
`SITE/genesis.json`; a different genesis already there is refused, since the node's store
belongs to it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from contracts.genesis import Genesis, ValidatorInfo
from node.ceremony import load_join
from node.genesis_file import load_genesis
from node.site import JOIN_JSON, Site, load_site
from qchain.config import load_config
from qchain.errors import ConfigError, GenesisError, KeyFileError
from qchain.keys import SigningKey

NODE_TOML = "node.toml"
GENESIS_JSON = "genesis.json"


@dataclass(frozen=True)
class Written:
    node_toml: Path
    index: int
    peers: int


def _own_validator(site: Site, genesis: Genesis) -> ValidatorInfo:
    join = load_join(site.dir / JOIN_JSON)
    if site.has("signing_key"):
        try:
            key = SigningKey.load(site.path("signing_key"))
        except KeyFileError as e:
            raise ConfigError(str(site.path("signing_key")), e.message) from None
        if key.public_key != join.public_key:
            raise ConfigError(
                str(site.path("signing_key")), f"is not the key {JOIN_JSON} announced"
            )
    for v in genesis.validators:
        if v.public_key == join.public_key:
            if v.sae_id != site.sae_id:
                raise ConfigError(
                    f"genesis validators[{v.index}].sae_id",
                    f"is {v.sae_id!r} but site.toml says {site.sae_id!r}",
                )
            return v
    raise ConfigError(
        "--genesis",
        f"no validator of this genesis has the key of site {site.name!r} ({site.dir}); "
        "was its join.json given to `qchain genesis build`?",
    )


def _peers(genesis: Genesis, me: int) -> str:
    lines = []
    for v in genesis.validators:
        if v.index == me:
            continue
        if not v.p2p:
            raise ConfigError(f"genesis validators[{v.index}].p2p", f"{v.name} has no p2p hint")
        lines.append(f"[[p2p.peers]]\nindex = {v.index}\naddress = {_q(v.p2p)}\n")
    return "\n".join(lines)


def _q(value: str | Path) -> str:
    return json.dumps(str(value), ensure_ascii=False)


def _qkd(site: Site, secret: Path | None) -> str:
    if not site.kme_url:
        raise ConfigError(
            f"{site.dir / 'site.toml'}: kme_url",
            "is empty: give the site's key manager (qchain validator init --kme-url ...)",
        )
    missing = [site.files[r] for r in ("kme_client_cert", "kme_ca") if not site.has(r)]
    if missing:
        raise ConfigError(
            str(site.dir),
            f"has no {', '.join(missing)}: the site's key-manager TLS material is given to "
            "`qchain validator init` (--kme-cert, --kme-key, --kme-ca)",
        )
    key = site.files["kme_client_key"]
    return f"""[qkd]
kme_url = {_q(site.kme_url)}
sae_id = {_q(site.sae_id)}
client_cert = {_q(site.files["kme_client_cert"])}
client_key = {_q(secret / key if secret else key)}
ca_cert = {_q(site.files["kme_ca"])}
"""


def node_toml(
    site: Site, genesis: Genesis, me: ValidatorInfo, secret: Path | None, data_dir: Path | None
) -> str:
    def sec(role: str) -> str:
        name = site.files[role]
        return _q(secret / name if secret else name)

    return f"""# written by `qchain node config`: chain {_q(genesis.chain_id)}
# genesis hash {genesis.hash.hex()}
[node]
name = {_q(me.name)}
index = {me.index}
data_dir = {_q(data_dir if data_dir else "data")}
genesis = {_q(GENESIS_JSON)}
signing_key = {sec("signing_key")}
profile = {_q(genesis.consensus.timing)}
log_format = "text"

[p2p]
listen = {_q(site.p2p_listen)}

{_peers(genesis, me.index)}
[api]
listen = {_q(site.api_listen)}
tls_cert = {_q(site.files["api_cert"])}
tls_key = {sec("api_key")}

[admin]
listen = {_q(site.admin_listen)}
token_file = {sec("admin_token")}

{_qkd(site, secret)}"""


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _copy_genesis(genesis_file: Path, genesis: Genesis, site: Site) -> None:
    target = site.dir / GENESIS_JSON
    if target.exists() and target.resolve() != genesis_file.resolve():
        try:
            existing = load_genesis(target).hash
        except GenesisError:
            existing = b""
        if existing != genesis.hash:
            raise ConfigError(
                str(target),
                "holds a different genesis; this site's store belongs to that chain. Move it "
                "(and the data directory) away yourself if the site joins a new chain",
            )
    if target.resolve() != genesis_file.resolve():
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        shutil.copyfile(genesis_file, tmp)
        os.replace(tmp, target)


def write_node_config(
    genesis_file: Path,
    site_dir: Path,
    *,
    secrets_dir: Path | None = None,
    data_dir: Path | None = None,
) -> Written:
    """Write SITE/node.toml and SITE/genesis.json; the written config is loaded back and
    validated before this returns."""
    site = load_site(site_dir)
    genesis = load_genesis(genesis_file)
    me = _own_validator(site, genesis)
    text = node_toml(site, genesis, me, secrets_dir, data_dir)
    _copy_genesis(genesis_file, genesis, site)
    path = site.dir / NODE_TOML
    _replace(path, text)
    load_config(path)
    return Written(path, me.index, len(genesis.validators) - 1)
