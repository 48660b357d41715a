"""The configuration file of the simulated key manager (`qchain kms --config FILE`), TOML.

    kms_id = "devnet-kms"            # optional, names the KMEs: "<kms_id>/<sae>"
    insecure_dev_mode = false         # true: plain HTTP, caller named by the X-SAE-ID header
    full_mesh = true                  # link every pair of SAEs with the [defaults]

    [server]
    host = "127.0.0.1"
    port = 8443                       # 0 picks a free port

    [tls]                             # required unless insecure_dev_mode
    ca_cert = "tls/ca.pem"            # the CA that signs SAE client certificates
    cert = "tls/kms.pem"
    key = "tls/kms.key"

    [admin]                           # always on loopback
    host = "127.0.0.1"
    port = 8444
    token = "change-me"               # or token_file = "admin.token"

    [defaults]                        # any link field; a [[link]] overrides it
    profile = "metro"                 # lab | metro | long-haul | constrained
    # bits_per_second = 300000        # instead of a profile
    key_size = 256                    # bits
    min_key_size = 64
    max_key_size = 1024
    max_key_count = 10000             # pool cap, in keys of key_size
    max_key_per_request = 128
    latency_ms = 2
    initial_key_count = 0

    [behaviour]                       # how the KME answers; also GET/PUT /admin/behaviour
    exhausted_status = 503            # 503 (default), 404 or 409 when keys run out
    partial_batches = false           # true: fewer keys than asked instead of an error
    max_key_per_request = 0           # > 0: a cap over every link's own (e.g. 10)
    delay_ms = 0                      # added to every answer ...
    delay_jitter_ms = 0               # ... plus a uniform 0..jitter
    sae_identity = "cn"               # "cn" or "serial" (mutual TLS); "header" (dev mode)

    [[sae]]
    id = "node0"                      # a string, or an integer such as 1001 ("1001")
    # kme_id = "KME-A"               # optional

    [[link]]                          # explicit links (needed unless full_mesh)
    saes = ["node0", "node1"]
    profile = "lab"

    [relay]                           # optional: one KME per site, see qchain.qkd.relay
    local_sae = "node0"

Relative paths are resolved against the file's directory. Every error is a
`ConfigError` naming the field.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal, cast

from qchain.config import load_toml
from qchain.errors import ConfigError
from qchain.qkd.keymanager import PROFILES, LinkConfig
from qchain.qkd.relay import RelayConfig, parse_relay_config

_LINK_INTS = (
    "key_size",
    "min_key_size",
    "max_key_size",
    "max_key_count",
    "max_key_per_request",
    "initial_key_count",
)
_LINK_FIELDS = {*_LINK_INTS, "profile", "bits_per_second", "latency_ms", "saes"}


@dataclass(frozen=True)
class TLSFiles:
    ca_cert: Path
    cert: Path
    key: Path


SAEIdentity = Literal["header", "cn", "serial"]
SAE_IDENTITIES: tuple[SAEIdentity, ...] = ("header", "cn", "serial")
EXHAUSTED_STATUSES = (503, 404, 409)


@dataclass(frozen=True)
class Behaviour:
    """How the key manager answers, to reproduce what vendor KMEs do. The defaults are the
    standard's answers; each field is one known deviation."""

    exhausted_status: int = 503
    """HTTP status when fewer keys are stored than asked for (the standard: 503)."""
    partial_batches: bool = False
    """Answer with fewer keys than asked instead of an error: the stored keys when fewer
    are stored, `max_key_per_request` keys when more are asked."""
    max_key_per_request: int = 0
    """A cap over every link's own `max_key_per_request` (0: the links' own)."""
    delay_ms: int = 0
    """Added to every answer of the ETSI API, errors included."""
    delay_jitter_ms: int = 0
    """A uniform random 0..jitter added to `delay_ms`."""
    sae_identity: SAEIdentity = "cn"
    """What names the caller: the common name or the decimal serial number of its client
    certificate (mutual TLS), or the `X-SAE-ID` header (insecure dev mode only)."""

    def __post_init__(self) -> None:
        if self.exhausted_status not in EXHAUSTED_STATUSES:
            raise ConfigError(
                "behaviour.exhausted_status", f"one of {', '.join(map(str, EXHAUSTED_STATUSES))}"
            )
        if self.sae_identity not in SAE_IDENTITIES:
            raise ConfigError("behaviour.sae_identity", f"one of {', '.join(SAE_IDENTITIES)}")
        for name in ("max_key_per_request", "delay_ms", "delay_jitter_ms"):
            if getattr(self, name) < 0:
                raise ConfigError(f"behaviour.{name}", "must be a non-negative integer")

    def to_json(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def parse_behaviour(doc: Mapping[str, object], *, tls: bool) -> Behaviour:
    """A behaviour set from a `[behaviour]` table or an admin PUT body; fields left out
    take their defaults. `tls` says whether the server runs mutual TLS, which decides the
    default and the allowed `sae_identity`."""
    path = "behaviour"
    known = {f.name for f in fields(Behaviour)}
    unknown = set(doc) - known
    if unknown:
        raise ConfigError(f"{path}.{sorted(unknown)[0]}", "unknown field")
    identity = doc.get("sae_identity", "cn" if tls else "header")
    if not isinstance(identity, str):
        raise ConfigError(f"{path}.sae_identity", "must be a string")
    behaviour = Behaviour(
        exhausted_status=_int(doc, "exhausted_status", path, 503),
        partial_batches=_bool(doc, "partial_batches", path),
        max_key_per_request=_int(doc, "max_key_per_request", path, 0),
        delay_ms=_int(doc, "delay_ms", path, 0),
        delay_jitter_ms=_int(doc, "delay_jitter_ms", path, 0),
        sae_identity=cast(SAEIdentity, identity),
    )
    check_identity(behaviour, tls=tls)
    return behaviour


def check_identity(behaviour: Behaviour, *, tls: bool) -> None:
    """`ConfigError` unless the SAE identity fits the TLS mode."""
    if (behaviour.sae_identity == "header") == tls:
        raise ConfigError(
            "behaviour.sae_identity",
            "cn or serial with mutual TLS; header only in insecure_dev_mode without TLS",
        )


@dataclass(frozen=True)
class KMSConfig:
    links: tuple[LinkConfig, ...]
    kme_ids: Mapping[str, str]
    host: str = "127.0.0.1"
    port: int = 8443
    admin_host: str = "127.0.0.1"
    admin_port: int = 8444
    admin_token: str = ""
    tls: TLSFiles | None = None
    insecure_dev_mode: bool = False
    behaviour: Behaviour | None = None
    """None: the standard's answers, the SAE named as the TLS mode implies."""
    relay: RelayConfig | None = None
    """One KME per site: serve only the local SAE and relay keys (`qchain.qkd.relay`)."""
    resolved_behaviour: Behaviour = field(init=False)
    """`behaviour`, or the default set for this TLS mode."""

    def __post_init__(self) -> None:
        if self.tls is None and not self.insecure_dev_mode:
            raise ConfigError("tls", "required unless insecure_dev_mode = true")
        behaviour = self.behaviour or parse_behaviour({}, tls=self.tls is not None)
        check_identity(behaviour, tls=self.tls is not None)
        object.__setattr__(self, "resolved_behaviour", behaviour)
        if not is_loopback(self.admin_host):
            raise ConfigError("admin.host", "the admin endpoint binds to loopback only")
        if len(self.admin_token) < 16:
            raise ConfigError("admin.token", "at least 16 characters")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _table(doc: Mapping[str, object], name: str) -> Mapping[str, object]:
    v = doc.get(name, {})
    if not isinstance(v, Mapping):
        raise ConfigError(name, "must be a table")
    return v


def _str(t: Mapping[str, object], field: str, path: str, default: str | None = None) -> str:
    v = t.get(field, default)
    if not isinstance(v, str):
        raise ConfigError(f"{path}.{field}", "must be a string")
    return v


def _int(t: Mapping[str, object], field: str, path: str, default: int) -> int:
    v = t.get(field, default)
    if type(v) is not int or v < 0:
        raise ConfigError(f"{path}.{field}", "must be a non-negative integer")
    return v


def _bool(t: Mapping[str, object], field: str, path: str) -> bool:
    v = t.get(field, False)
    if type(v) is not bool:
        raise ConfigError(f"{path}.{field}", "must be true or false")
    return v


def _link(saes: tuple[str, str], spec: Mapping[str, object], path: str) -> LinkConfig:
    unknown = set(spec) - _LINK_FIELDS
    if unknown:
        raise ConfigError(f"{path}.{sorted(unknown)[0]}", "unknown field")
    if "bits_per_second" in spec:
        rate = _int(spec, "bits_per_second", path, 0)
    else:
        profile = spec.get("profile", "metro")
        if profile not in PROFILES:
            raise ConfigError(f"{path}.profile", f"one of {', '.join(PROFILES)}")
        rate = PROFILES[str(profile)]
    latency = spec.get("latency_ms", 0)
    if not isinstance(latency, int | float) or isinstance(latency, bool) or latency < 0:
        raise ConfigError(f"{path}.latency_ms", "must be a non-negative number")
    ints = {f: _int(spec, f, path, 0) for f in _LINK_INTS if f in spec}
    try:
        return LinkConfig(saes=saes, bits_per_second=rate, latency=latency / 1000, **ints)
    except ValueError as e:
        raise ConfigError(path, str(e)) from e


def parse_kms_config(doc: Mapping[str, object], base: Path = Path(".")) -> KMSConfig:
    """A validated config from a parsed TOML document."""
    insecure = _bool(doc, "insecure_dev_mode", "config")
    kms_id = _str(doc, "kms_id", "config", "qchain-kms")
    saes_raw = doc.get("sae", [])
    if not isinstance(saes_raw, list) or not saes_raw:
        raise ConfigError("sae", "list at least one [[sae]]")
    kme_ids: dict[str, str] = {}
    for i, s in enumerate(saes_raw):
        if not isinstance(s, Mapping):
            raise ConfigError(f"sae[{i}]", "must be a table")
        raw_id = s.get("id")
        sid = str(raw_id) if type(raw_id) is int and raw_id >= 0 else _str(s, "id", f"sae[{i}]")
        if not sid or len(sid) > 64 or sid in kme_ids:
            raise ConfigError(f"sae[{i}].id", "must be unique, 1 to 64 characters")
        kme_ids[sid] = _str(s, "kme_id", f"sae[{i}]", f"{kms_id}/{sid}")
    defaults = _table(doc, "defaults")
    for name in defaults:
        if name not in _LINK_FIELDS or name == "saes":
            raise ConfigError(f"defaults.{name}", "unknown field")
    specs: dict[tuple[str, str], tuple[dict[str, object], str]] = {}
    if _bool(doc, "full_mesh", "config"):
        for a, b in itertools.combinations(sorted(kme_ids), 2):
            specs[(a, b)] = (dict(defaults), "defaults")
    links_raw = doc.get("link", [])
    if not isinstance(links_raw, list):
        raise ConfigError("link", "must be a list of [[link]] tables")
    for i, lk in enumerate(links_raw):
        path = f"link[{i}]"
        if not isinstance(lk, Mapping):
            raise ConfigError(path, "must be a table")
        pair = lk.get("saes")
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(p, str) and p in kme_ids for p in pair)
            or pair[0] == pair[1]
        ):
            raise ConfigError(f"{path}.saes", "two different SAE ids declared in [[sae]]")
        a, b = sorted(pair)
        specs[(a, b)] = ({**defaults, **lk}, path)
    if not specs:
        raise ConfigError("link", "no links: add [[link]] tables or full_mesh = true")
    links = tuple(
        _link(pair, {k: v for k, v in spec.items() if k != "saes"}, path)
        for pair, (spec, path) in sorted(specs.items())
    )
    server = _table(doc, "server")
    admin = _table(doc, "admin")
    token = _str(admin, "token", "admin", "")
    token_file = admin.get("token_file")
    if isinstance(token_file, str):
        try:
            token = (base / token_file).read_text().strip()
        except OSError as e:
            raise ConfigError("admin.token_file", f"cannot read: {e}") from e
    tls = None
    tls_t = _table(doc, "tls")
    if tls_t:
        files = {f: base / _str(tls_t, f, "tls") for f in ("ca_cert", "cert", "key")}
        for f, p in files.items():
            if not p.is_file():
                raise ConfigError(f"tls.{f}", f"{p} is not a file")
        tls = TLSFiles(files["ca_cert"], files["cert"], files["key"])
    return KMSConfig(
        behaviour=parse_behaviour(_table(doc, "behaviour"), tls=tls is not None),
        links=links,
        kme_ids=kme_ids,
        host=_str(server, "host", "server", "127.0.0.1"),
        port=_int(server, "port", "server", 8443),
        admin_host=_str(admin, "host", "admin", "127.0.0.1"),
        admin_port=_int(admin, "port", "admin", 8444),
        admin_token=token,
        tls=tls,
        insecure_dev_mode=insecure,
        relay=parse_relay_config(doc.get("relay"), base, kme_ids),
    )


def load_kms_config(path: str | Path) -> KMSConfig:
    """Read and validate a key-manager config file."""
    p = Path(path)
    return parse_kms_config(load_toml(p), p.parent)
