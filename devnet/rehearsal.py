"""A pilot network rehearsed on one machine: four partner sites in containers, each with
its own key manager, WAN-like delay between them, and a partner who checks a receipt
with nothing but the genesis (`qchain devnet rehearse`).

The genesis ceremony as four partners and a coordinator would run it, each in a
directory of its own under DIR, with nothing shared but what the ceremony hands over:

    DIR/site-X/         `qchain validator init` of site X (secrets 0600, never copied)
    DIR/kme-X/          site X's key manager, as its vendor set it up: its own CA, server
                        certificate, admin token and the SAE client certificate that
                        `validator init` copies into the site
    DIR/qkd-network/    relay.secret: the QKD network's trusted-node relay secret, the one
                        thing the four KMEs share (it is no validator's: it stands for the
                        QKD links between the sites' key managers)
    DIR/coordinator/    receives only copies of the join files and the members' public
                        keys; writes members.toml and runs `genesis build`
    DIR/operator/, DIR/partner/   `qchain keys new` of the platform operator (admin) and
                        of a partner; the partner later holds copies of genesis.json and
                        of site B's api.crt, and the receipt it fetched

Every site gets a copy of the genesis back, checks it with `genesis verify` against the
announced hash and writes its `node.toml` with `node config`. Then, on a user-defined
bridge network with a fixed subnet (one address per site), site X is a small pod of
containers sharing one network namespace: `PROJECT-site-X` (host name and container
name; it owns the address and the WAN link), `PROJECT-site-X-kme` (`qchain kms`, its ETSI
API on the site's loopback, its relay listener on the network) and `PROJECT-site-X-node`
(`qchain node run --config /site/node.toml`, the site directory mounted at /site). The
WAN delay is `tc qdisc add dev eth0 root netem delay Xms` in each site's namespace; on a
kernel without `sch_netem` (no other qdisc can delay) the site container runs
`devnet.delayline` in front of the node's P2P and API listeners instead, and the KMEs'
relay delays by itself (`[relay] delay_ms`). The summary says which one ran.

The partner (`PROJECT-partner`, on the network) anchors a document at site B's API over
TLS, fetches the receipt, and a container with no network verifies it with `qchain receipt
verify --genesis`. `Rehearsal.crossings` lists every file that crossed between directories
(for `devnet.sites.find_leaks`).
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import shutil
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devnet import delayline
from devnet.dockernet import engine
from devnet.kms import kms_config_toml
from devnet.network import NetworkPlan, NodePlan
from devnet.running import BackendError
from devnet.sites import genesis_hash_of, qchain
from qchain.client import Client
from qchain.errors import ConfigError
from qchain.qkd.certs import write_kms_certs

SITES = ("a", "b", "c", "d")
P2P_PORT = 7000
API_PORT = 8000
ADMIN_PORT = 9000
KME_PORT = 6000
KME_ADMIN_PORT = 6001
KME_RELAY_PORT = 6002
INNER = 1
"""With the delay line, the node listens on loopback at the advertised port + INNER."""
CONTAINER_UID = 10001
"""The image's user (`devnet/docker/Dockerfile`)."""
LABEL = "qchain.rehearsal"
PARTNER_SITE = "b"
"""The site whose API the partner uses."""
RTT_PROBE = """
import socket, ssl, sys, time
host, port = sys.argv[1], int(sys.argv[2])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
connects, handshakes = [], []
for _ in range(5):
    t0 = time.monotonic()
    raw = socket.create_connection((host, port), 10)
    connects.append(time.monotonic() - t0)
    ctx.wrap_socket(raw, server_hostname=host).close()
    handshakes.append(time.monotonic() - t0)
print(f"{min(connects) * 1000:.1f} {min(handshakes) * 1000:.1f}")
"""
"""Run in site A's namespace: the fastest of five TCP connects to HOST:PORT and of five
connects + TLS handshakes, in ms. No certificate check: only the time is wanted."""


@dataclass(frozen=True)
class Settings:
    """What `qchain devnet rehearse` is asked for; the names and addresses follow."""

    directory: Path
    delay_ms: int = 40
    project: str = "rehearsal"
    subnet: str = "172.29.17.0/24"
    image: str = "qchain:dev"
    chain_id: str = "qingdao-rehearsal"
    timing: str = "lan"
    """`lan` (500 ms rounds) suits a WAN of tens of ms; `test` is tuned for loopback."""
    timeout_s: float = 180.0

    def __post_init__(self) -> None:
        if not 0 <= self.delay_ms <= 1000:
            raise ConfigError("--delay-ms", "must be 0 to 1000")
        try:
            net = ipaddress.ip_network(self.subnet, strict=True)
        except ValueError as e:
            raise ConfigError("--subnet", f"{self.subnet!r} is not a network ({e})") from None
        if net.version != 4 or net.num_addresses < 64:
            raise ConfigError("--subnet", "must be an IPv4 network of at least 64 addresses")

    @property
    def network(self) -> str:
        return f"{self.project}-net"

    def host(self, site: str) -> str:
        """Site X's host name: the name of the container that owns its address."""
        return f"{self.project}-site-{site}"

    def address(self, site: str) -> str:
        return str(ipaddress.ip_network(self.subnet)[11 + SITES.index(site)])

    @property
    def partner(self) -> str:
        return f"{self.project}-partner"

    @property
    def partner_address(self) -> str:
        return str(ipaddress.ip_network(self.subnet)[50])


@dataclass(frozen=True)
class Crossing:
    """A file that went from one directory of the rehearsal to another."""

    source: Path
    copy: Path


@dataclass
class Rehearsal:
    """What a rehearsal did and saw."""

    settings: Settings
    wan: str = ""
    """`netem` or `delay line`."""
    genesis_hash: str = ""
    crossings: list[Crossing] = field(default_factory=list)
    addresses: dict[str, str] = field(default_factory=dict)
    connect_ms: float = 0.0
    handshake_ms: float = 0.0
    """Site A to site B's API: TCP connect, and connect + TLS handshake (best of five)."""
    tx_hash: str = ""
    committed_at: dict[str, int] = field(default_factory=dict)
    """The height at which each site reports the partner's transaction committed."""
    heights: dict[str, int] = field(default_factory=dict)
    receipt: dict[str, Any] = field(default_factory=dict)
    """`qchain receipt verify --json` of the partner's receipt."""

    def cross(self, source: Path, copy: Path) -> None:
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, copy)
        self.crossings.append(Crossing(source, copy))

    def summary(self) -> str:
        s = self.settings
        lines = [f"rehearsal in {s.directory} (chain {s.chain_id}, genesis {self.genesis_hash})"]
        width = max(map(len, self.addresses), default=0)
        lines += [f"  {h:<{width}}  {a}" for h, a in self.addresses.items()]
        lines.append(
            f"  WAN: {self.wan}, {s.delay_ms} ms each way; site A -> site B's API: TCP "
            f"connect {self.connect_ms:.1f} ms, connect + TLS handshake {self.handshake_ms:.1f} ms"
        )
        lines.append("  heights: " + ", ".join(f"{h} {n}" for h, n in self.heights.items()))
        lines.append(
            f"  partner's anchor {self.tx_hash[:16]}... committed at "
            + ", ".join(f"{h} {n}" for h, n in self.committed_at.items())
        )
        ok = "verified" if self.receipt.get("verified") else "NOT verified"
        lines.append(
            f"  receipt {ok} offline (no network) with genesis.json only; "
            f"{len(self.crossings)} files crossed between directories"
        )
        return "\n".join(lines)


# --- the ceremony, on the host ---------------------------------------------------------


def netem_available(image: str) -> bool:
    """Whether the kernel has sch_netem (tried on a throw-away container's loopback)."""
    out = engine.docker_quiet(
        "run", "--rm", "--network", "none", "--cap-add", "NET_ADMIN", "-u", "0",
        "--entrypoint", "tc", image, "qdisc", "add", "dev", "lo", "root", "netem",
        "delay", "1ms",
    )  # fmt: skip
    return out is not None


def _secret_file(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def kme_plan(s: Settings, relay_delay_ms: int) -> NetworkPlan:
    """The four KMEs as `devnet.kms` describes per-node KMEs: each serves its site's SAE
    on the site's loopback and relays to the other sites' KMEs by host name."""
    nodes = tuple(
        NodePlan(
            index=i,
            name=f"site-{x}",
            sae_id=f"sae-{x}",
            host=s.host(x),
            p2p_port=P2P_PORT,
            api_port=API_PORT,
            admin_port=ADMIN_PORT,
            kme_port=KME_PORT,
            kme_admin_port=KME_ADMIN_PORT,
            kme_relay_port=KME_RELAY_PORT,
            kme_host=s.host(x),
        )
        for i, x in enumerate(SITES)
    )
    return NetworkPlan(
        chain_id=s.chain_id,
        validators=len(SITES),
        profile=s.timing,
        scheme="ml-dsa-65",
        kms_rate="lab",
        host="localhost",
        kms_port=KME_PORT,
        kms_admin_port=KME_ADMIN_PORT,
        nodes=nodes,
        kme_mode="per-node",
        relay_delay_ms=relay_delay_ms,
    )


def write_kmes(s: Settings, relay_delay_ms: int) -> None:
    """DIR/kme-X for every site (own CA, certificates, admin token, config) and the QKD
    network's relay secret, copied to every KME."""
    d = s.directory
    (d / "qkd-network").mkdir(parents=True)
    relay_secret = d / "qkd-network" / "relay.secret"
    _secret_file(relay_secret, os.urandom(16).hex() + "\n")
    plan = kme_plan(s, relay_delay_ms)
    for x, node in zip(SITES, plan.nodes, strict=True):
        kme = d / f"kme-{x}"
        write_kms_certs(kme / "ca", [node.sae_id], ("localhost", "127.0.0.1"))
        (kme / "kms").mkdir()
        toml = kms_config_toml(plan, listen_host="127.0.0.1", node=node, relay_host="0.0.0.0")
        (kme / "kms" / "kme.toml").write_text(toml)
        _secret_file(kme / "kms" / "admin.token", os.urandom(16).hex() + "\n")
        shutil.copyfile(relay_secret, kme / "kms" / "relay.secret")


def init_site(s: Settings, x: str, wan: str) -> None:
    """`qchain validator init` for site X, with the client material its KME issued."""
    inner = INNER if wan == "delay line" else 0
    listen = "127.0.0.1" if inner else "0.0.0.0"
    ca = s.directory / f"kme-{x}" / "ca"
    qchain(
        "validator", "init", "--dir", str(s.directory / f"site-{x}"), "--name", f"site-{x}",
        "--p2p", f"{s.host(x)}:{P2P_PORT}", "--api", f"https://{s.host(x)}:{API_PORT}",
        "--p2p-listen", f"{listen}:{P2P_PORT + inner}",
        "--api-listen", f"{listen}:{API_PORT + inner}",
        "--admin-listen", f"127.0.0.1:{ADMIN_PORT}",
        "--kme-url", f"https://localhost:{KME_PORT}", "--sae-id", f"sae-{x}",
        "--kme-cert", str(ca / f"sae-sae-{x}.pem"), "--kme-key", str(ca / f"sae-sae-{x}.key"),
        "--kme-ca", str(ca / "ca.pem"),
    )  # fmt: skip


def new_member_key(directory: Path, name: str) -> str:
    """`qchain keys new` in the member's own directory; its public key (hex)."""
    directory.mkdir(parents=True, exist_ok=True)
    out = qchain(
        "keys", "new", "--out", str(directory / f"{name}.key"), "--scheme", "ml-dsa-65", "--json"
    )
    return str(json.loads(out)["public_key"])


def members_toml(operator: str, partner: str) -> str:
    return (
        f'[[members]]\nname = "Platform Operator"\nscheme = "ml-dsa-65"\n'
        f'public_key = "{operator}"\nroles = ["admin"]\n\n'
        f'[[members]]\nname = "Partner"\nscheme = "ml-dsa-65"\n'
        f'public_key = "{partner}"\nroles = ["partner"]\n'
    )


def ceremony(r: Rehearsal) -> None:
    """Everything before the containers: sites, KMEs, members, genesis, node configs."""
    s, d = r.settings, r.settings.directory
    write_kmes(s, relay_delay_ms=s.delay_ms if r.wan == "delay line" else 0)
    coordinator = d / "coordinator"
    coordinator.mkdir()
    with ThreadPoolExecutor(len(SITES)) as pool:
        list(pool.map(lambda x: init_site(s, x, r.wan), SITES))
        operator = pool.submit(new_member_key, d / "operator", "operator")
        partner = pool.submit(new_member_key, d / "partner", "partner")
        keys = {"operator": operator.result(), "partner": partner.result()}
    for x in SITES:
        r.cross(d / f"site-{x}" / "join.json", coordinator / f"join-site-{x}.json")
    (coordinator / "members.toml").write_text(members_toml(keys["operator"], keys["partner"]))
    joins = [f"join-site-{x}.json" for x in SITES]
    build = qchain(
        "genesis", "build", "--chain-id", s.chain_id, "--validators", *joins,
        "--members", "members.toml", "--timing", s.timing, "--out", "genesis.json",
        cwd=coordinator,
    )  # fmt: skip
    r.genesis_hash = genesis_hash_of(build)

    def configure(x: str) -> None:
        site = d / f"site-{x}"
        qchain("genesis", "verify", str(site / "genesis.json"), "--expect-hash", r.genesis_hash)
        qchain("node", "config", "--genesis", str(site / "genesis.json"), "--site", str(site))

    for x in SITES:
        r.cross(coordinator / "genesis.json", d / f"site-{x}" / "genesis.json")
    r.cross(coordinator / "genesis.json", d / "partner" / "genesis.json")
    r.cross(d / f"site-{PARTNER_SITE}" / "api.crt", d / "partner" / f"site-{PARTNER_SITE}-api.crt")
    with ThreadPoolExecutor(len(SITES)) as pool:
        list(pool.map(configure, SITES))
    for x in SITES:
        (d / f"site-{x}" / "data").mkdir()
    for name in (*(f"site-{x}" for x in SITES), *(f"kme-{x}" for x in SITES), "partner"):
        _give_to_container(d / name)


def _give_to_container(directory: Path) -> None:
    """As root, hand the directory to the image's user (as an operator gives a service
    account its files; the node refuses secrets another user owns). Otherwise the
    containers run as the caller (`_user_args`)."""
    if os.geteuid() != 0:
        return
    for p in [directory, *directory.rglob("*")]:
        os.chown(p, CONTAINER_UID, CONTAINER_UID, follow_symlinks=False)


def _user_args() -> list[str]:
    return [] if os.geteuid() == 0 else ["--user", f"{os.getuid()}:{os.getgid()}"]


# --- the containers --------------------------------------------------------------------


def _run(s: Settings, name: str, *args: str) -> None:
    """`docker run -d` a container of the rehearsal (labelled, so `down` finds it)."""
    engine.docker(
        "run", "-d", "--name", name, "--label", f"{LABEL}={s.project}", "--init",
        "--no-healthcheck", *args,
    )  # fmt: skip


def down(s: Settings) -> list[str]:
    """Remove the rehearsal's containers and network; the names of those removed."""
    out = engine.docker_quiet("ps", "-aq", "--filter", f"label={LABEL}={s.project}") or ""
    ids = out.split()
    if ids:
        engine.docker("rm", "-f", "-v", *ids, timeout=120)
    if engine.docker_quiet("network", "inspect", s.network) is not None:
        engine.docker("network", "rm", s.network)
    return ids


def start_site(s: Settings, x: str, wan: str) -> None:
    """Site X's pod: the container that owns its address and WAN link, its KME and its
    node, the latter two in the first one's network namespace."""
    d, host = s.directory, s.host(x)
    edge = ["--hostname", host, "--network", s.network, "--ip", s.address(x)]
    edge += ["--cap-add", "NET_ADMIN", *_user_args()]
    if wan == "delay line":
        script = Path(delayline.__file__).resolve()
        routes = [f"0.0.0.0:{p}=127.0.0.1:{p + INNER}" for p in (P2P_PORT, API_PORT)]
        _run(
            s, host, *edge, "-v", f"{script}:/opt/delayline.py:ro", "--entrypoint", "python3",
            s.image, "/opt/delayline.py", "--delay-ms", str(s.delay_ms), *routes,
        )  # fmt: skip
    else:
        _run(s, host, *edge, "--entrypoint", "sleep", s.image, "infinity")
        engine.docker(
            "exec", "-u", "0", host, "tc", "qdisc", "add", "dev", "eth0", "root", "netem",
            "delay", f"{s.delay_ms}ms",
        )  # fmt: skip
    pod = ["--network", f"container:{host}", *_user_args()]
    _run(
        s, f"{host}-kme", *pod, "-v", f"{d / f'kme-{x}'}:/kme:ro",
        s.image, "kms", "--config", "/kme/kms/kme.toml",
    )  # fmt: skip
    _run(
        s, f"{host}-node", *pod, "-v", f"{d / f'site-{x}'}:/site",
        s.image, "node", "run", "--config", "/site/node.toml",
    )  # fmt: skip


def start_partner(s: Settings) -> None:
    """The partner's machine: on the network, idle until the partner runs a command."""
    _run(
        s, s.partner, "--hostname", s.partner, "--network", s.network,
        "--ip", s.partner_address, *_user_args(), "-v", f"{s.directory / 'partner'}:/partner",
        "--entrypoint", "sleep", s.image, "infinity",
    )  # fmt: skip


def _containers(s: Settings) -> list[str]:
    names = [s.partner]
    for x in SITES:
        names += [s.host(x), f"{s.host(x)}-kme", f"{s.host(x)}-node"]
    return names


def _not_running(s: Settings) -> list[str]:
    fmt = "{{.Name}} {{.State.Status}}"
    out = engine.docker_quiet("inspect", "-f", fmt, *_containers(s)) or ""
    running = {line.split()[0].lstrip("/") for line in out.splitlines() if "running" in line}
    return [c for c in _containers(s) if c not in running]


def logs_of(s: Settings, names: Sequence[str], lines: int = 30) -> str:
    parts = []
    for name in names:
        out = engine.docker_quiet("logs", "--tail", str(lines), name) or ""
        parts.append(f"--- {name}\n{out}")
    return "\n".join(parts)


def site_client(s: Settings, x: str, timeout_s: float = 5.0) -> Client:
    """A client of site X's API from the host, by address: the host does not resolve
    the network's names, so the certificate is pinned (the site's api.crt) and its host
    name not checked. The partner, inside the network, checks both."""
    ctx = ssl.create_default_context(cafile=str(s.directory / f"site-{x}" / "api.crt"))
    ctx.check_hostname = False
    return Client(f"https://{s.address(x)}:{API_PORT}", ssl_context=ctx, timeout_s=timeout_s)


def height_of(s: Settings, x: str) -> int:
    try:
        with site_client(s, x, timeout_s=2.0) as c:
            return int(c.status()["height"])
    except Exception:
        return -1


def poll(what: str, check: Callable[[], bool], s: Settings, timeout_s: float) -> None:
    """Poll check() until it holds; fail early, with logs, if a container stopped."""
    deadline = time.monotonic() + timeout_s
    checked = 0.0
    while not check():
        if time.monotonic() - checked > 3:
            checked = time.monotonic()
            stopped = _not_running(s)
            if stopped:
                raise RuntimeError(f"{', '.join(stopped)} stopped:\n{logs_of(s, stopped)}")
        if time.monotonic() > deadline:
            names = [n for n in _containers(s) if n.endswith(("-node", "-kme"))]
            raise TimeoutError(f"{what} after {timeout_s:.0f}s\n{logs_of(s, names, 10)}")
        time.sleep(0.25)


def _committed_a_block(s: Settings, x: str) -> Callable[[], bool]:
    return lambda: height_of(s, x) >= 1


# --- the partner -----------------------------------------------------------------------


def partner_qchain(s: Settings, *args: str, timeout: float = 120.0) -> str:
    return engine.docker("exec", s.partner, "qchain", *args, timeout=timeout)


def anchor(r: Rehearsal) -> None:
    """The partner anchors a document at site B over TLS, fetches the receipt, and a
    container without any network verifies it with the genesis alone."""
    s = r.settings
    node = ["--node", f"https://{s.host(PARTNER_SITE)}:{API_PORT}"]
    ca = ["--ca-file", f"/partner/site-{PARTNER_SITE}-api.crt"]
    digest = hashlib.sha256(b"joint R&D contract v1").hexdigest()
    args = json.dumps([{"hex": digest}, "sha256", "Joint R&D contract", "contract", {"hex": ""}])
    out = partner_qchain(
        s, "tx", "send", "notary", "anchor", "--args", args, "--key", "/partner/partner.key",
        *node, *ca, "--json",
    )  # fmt: skip
    sent = json.loads(out)
    if sent.get("status") != "committed" or not sent.get("receipt", {}).get("ok"):
        raise RuntimeError(f"the partner's anchor was not committed: {out}")
    r.tx_hash = str(sent["tx_hash"])
    partner_qchain(s, "receipt", "get", r.tx_hash, *node, *ca, "--out", "/partner/receipt.bin")
    verify = [
        "run", "--rm", "--network", "none", *_user_args(),
        "-v", f"{s.directory / 'partner'}:/partner:ro", s.image,
        "receipt", "verify", "/partner/receipt.bin", "--genesis", "/partner/genesis.json",
        "--json",
    ]  # fmt: skip
    r.receipt = json.loads(engine.docker(*verify))


def committed_everywhere(r: Rehearsal) -> None:
    """Wait until every site reports the partner's transaction committed."""
    s = r.settings

    def at(x: str) -> int | None:
        try:
            with site_client(s, x) as c:
                info = c.tx_status(r.tx_hash)
        except Exception:
            return None
        return info.height if info.status == "committed" else None

    def check() -> bool:
        for x in SITES:
            if s.host(x) not in r.committed_at and (h := at(x)) is not None:
                r.committed_at[s.host(x)] = h
        return len(r.committed_at) == len(SITES)

    poll("the anchor to be committed at every site", check, s, 60)


def measure_rtt(r: Rehearsal) -> None:
    s = r.settings
    out = engine.docker("exec", s.host("a"), "python3", "-c", RTT_PROBE, s.host("b"), str(API_PORT))
    connect, handshake = out.split()
    r.connect_ms, r.handshake_ms = float(connect), float(handshake)


# --- all of it -------------------------------------------------------------------------


def rehearse(s: Settings, *, keep: bool = False, log: Callable[[str], None] = print) -> Rehearsal:
    """Run the whole rehearsal; tear the containers and network down unless keep (the
    directory stays). Raises RuntimeError or TimeoutError, with logs, if a step fails."""
    if s.directory.exists() and any(s.directory.iterdir()):
        raise ConfigError("--dir", f"{s.directory} is not empty: a rehearsal starts afresh")
    if not engine.image_exists(s.image):
        raise ConfigError("image", f"{s.image} is not built: run devnet/docker/build.sh")
    s.directory.mkdir(parents=True, exist_ok=True)
    r = Rehearsal(s, wan="netem" if netem_available(s.image) else "delay line")
    started = time.monotonic()
    ceremony(r)
    log(f"ceremony done in {time.monotonic() - started:.1f}s: genesis {r.genesis_hash}")
    down(s)
    try:
        engine.docker(
            "network", "create", "--driver", "bridge", "--subnet", s.subnet,
            "--label", f"{LABEL}={s.project}", s.network,
        )  # fmt: skip
        for x in SITES:
            start_site(s, x, r.wan)
            r.addresses[s.host(x)] = s.address(x)
        start_partner(s)
        r.addresses[s.partner] = s.partner_address
        log(f"containers up at {time.monotonic() - started:.1f}s (WAN: {r.wan})")
        for x in SITES:
            poll(f"{s.host(x)} to commit a block", _committed_a_block(s, x), s, s.timeout_s)
        log(f"every site committed a block at {time.monotonic() - started:.1f}s")
        measure_rtt(r)
        anchor(r)
        committed_everywhere(r)
        r.heights = {s.host(x): height_of(s, x) for x in SITES}
    finally:
        if not keep:
            down(s)
    return r


def main(args: argparse.Namespace) -> int:
    """`qchain devnet rehearse` (options in `devnet.cli`)."""
    try:
        s = Settings(
            args.dir.resolve(), delay_ms=args.delay_ms, subnet=args.subnet, image=args.image
        )
        if args.down:
            removed = down(s)
            print(f"removed {len(removed)} containers and the network {s.network}")
            return 0
        if args.build or not engine.image_exists(s.image):
            engine.build_image(tag=s.image)
        r = rehearse(s, keep=args.keep)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, TimeoutError, BackendError) as e:
        print(f"rehearsal failed: {e}", file=sys.stderr)
        return 1
    print(r.summary())
    if args.keep:
        print(f"containers kept; remove them with: qchain devnet rehearse --dir {args.dir} --down")
    return 0 if r.receipt.get("verified") and len(r.committed_at) == len(SITES) else 1
