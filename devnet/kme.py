"""Where each validator finds its key manager (KME): the SAE ids and the external-KME map.

A devnet names its SAEs `SAE-node{i}` unless told otherwise. `sae_ids_from` turns the
`--sae-ids` choice into one id per validator: a comma-separated list (`1,2,3,4`) or a
pattern with `{i}` for the validator index (`site-{i}`, `100{i}`).

A node that uses a KME the devnet does not start (a pilot site's own KME, or a simulated
one started elsewhere) is described in an external-KME map, TOML or JSON, one table per
node:

    [nodes.node0]
    kme_url = "https://kme-a.example:8443"
    sae_id = "1001"
    client_cert = "site-a/sae.pem"       # the SAE's client certificate ...
    client_key = "site-a/sae.key"        # ... its key
    ca_cert = "site-a/ca.pem"            # the CA that signed the KME's server certificate

    [nodes.node1]
    kme_url = "http://127.0.0.1:8500"
    sae_id = "1002"
    insecure_dev_header = true           # simulated KME in insecure dev mode only

Relative paths are resolved against the map file's directory. Either all three TLS files
or `insecure_dev_header = true` are given. Every node of the devnet is listed once and
the SAE ids are distinct; an error names the node and the field.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from qchain.errors import ConfigError

DEFAULT_SAE_PATTERN = "SAE-node{i}"
_SAE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
"""SAE ids go into URL paths, file names and TOML strings: a safe alphabet, as the
simulated KME's 64-character limit."""

_TLS_FIELDS = ("client_cert", "client_key", "ca_cert")
_FIELDS = {"kme_url", "sae_id", "insecure_dev_header", *_TLS_FIELDS}


@dataclass(frozen=True)
class KmeEndpoint:
    """How one node reaches its KME. Paths are absolute; all three or none are set."""

    kme_url: str
    sae_id: str
    client_cert: str = ""
    client_key: str = ""
    ca_cert: str = ""
    insecure_dev_header: bool = False


def check_sae_id(value: str, field: str) -> str:
    if not _SAE_ID.match(value):
        raise ConfigError(field, f"{value!r} is not 1 to 64 of A-Z a-z 0-9 . _ : -")
    return value


def sae_ids_from(spec: str | None, validators: int) -> list[str]:
    """One SAE id per validator from a list or a `{i}` pattern (None: the default)."""
    spec = DEFAULT_SAE_PATTERN if spec is None else spec.strip()
    if "{i}" in spec:
        if "," in spec:
            raise ConfigError("--sae-ids", "give a list or a pattern with {i}, not both")
        ids = [spec.replace("{i}", str(i)) for i in range(validators)]
    else:
        ids = [s.strip() for s in spec.split(",")]
        if len(ids) != validators:
            raise ConfigError("--sae-ids", f"{len(ids)} ids for {validators} validators (one each)")
    for i, sid in enumerate(ids):
        check_sae_id(sid, f"--sae-ids[{i}]")
    if len(set(ids)) != len(ids):
        raise ConfigError("--sae-ids", "SAE ids must be distinct")
    return ids


def _read(path: Path) -> Mapping[str, object]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(str(path), f"cannot read: {e.strerror}") from e
    try:
        doc: object = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(str(path), f"not valid {path.suffix.lstrip('.') or 'TOML'}: {e}") from e
    if not isinstance(doc, Mapping):
        raise ConfigError(str(path), "must be a table of nodes")
    return doc


def parse_kme_map(
    doc: Mapping[str, object], node_names: list[str], base: Path
) -> dict[str, KmeEndpoint]:
    """The validated map {node name: endpoint} for every node of a devnet."""
    unknown_top = set(doc) - {"nodes"}
    if unknown_top:
        raise ConfigError(sorted(unknown_top)[0], "unknown field (the map has [nodes.NAME])")
    nodes = doc.get("nodes")
    if not isinstance(nodes, Mapping):
        raise ConfigError("nodes", "must be a table with one [nodes.NAME] per node")
    for name in nodes:
        if name not in node_names:
            raise ConfigError(f"nodes.{name}", f"not a node of this devnet ({node_names[0]}..)")
    out: dict[str, KmeEndpoint] = {}
    seen: dict[str, str] = {}
    for name in node_names:
        where = f"nodes.{name}"
        t = nodes.get(name)
        if t is None:
            raise ConfigError(where, "missing: every node needs its KME")
        if not isinstance(t, Mapping):
            raise ConfigError(where, "must be a table")
        for key in t:
            if key not in _FIELDS:
                raise ConfigError(f"{where}.{key}", "unknown field")
        url = t.get("kme_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.kme_url", "must be an http:// or https:// URL")
        sae = t.get("sae_id")
        if isinstance(sae, int) and not isinstance(sae, bool):
            sae = str(sae)
        if not isinstance(sae, str):
            raise ConfigError(f"{where}.sae_id", "must be a string")
        check_sae_id(sae, f"{where}.sae_id")
        if sae in seen:
            raise ConfigError(f"{where}.sae_id", f"{sae!r} is also the SAE id of {seen[sae]}")
        seen[sae] = name
        insecure = t.get("insecure_dev_header", False)
        if type(insecure) is not bool:
            raise ConfigError(f"{where}.insecure_dev_header", "must be true or false")
        files: dict[str, str] = {}
        for f in _TLS_FIELDS:
            v = t.get(f)
            if v is None:
                continue
            if not isinstance(v, str) or not v:
                raise ConfigError(f"{where}.{f}", "must be a non-empty path")
            p = Path(v) if Path(v).is_absolute() else base / v
            if not p.is_file():
                raise ConfigError(f"{where}.{f}", f"{p} is not a file")
            files[f] = str(p.resolve())
        if insecure and files:
            raise ConfigError(
                f"{where}.insecure_dev_header", "either the TLS files or the dev header, not both"
            )
        if not insecure:
            missing = [f for f in _TLS_FIELDS if f not in files]
            if missing:
                raise ConfigError(
                    f"{where}.{missing[0]}", "missing (or set insecure_dev_header = true)"
                )
            if not url.startswith("https://"):
                raise ConfigError(f"{where}.kme_url", "mutual TLS needs an https:// URL")
        out[name] = KmeEndpoint(kme_url=url, sae_id=sae, insecure_dev_header=insecure, **files)
    return out


def load_kme_map(path: Path, node_names: list[str]) -> dict[str, KmeEndpoint]:
    """Read and validate an external-KME map file (`.json` is JSON, anything else TOML)."""
    return parse_kme_map(_read(path), node_names, path.resolve().parent)
