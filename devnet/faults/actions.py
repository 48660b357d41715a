"""The perturbations, as plain functions over a `Target`. The runner's timeline and the
ad-hoc verbs (`qchain fault kill ...`) both call these.

Transport rules are read-modify-write through the node admin API (`GET` then `PUT
/admin/faults`), so a partition and a delay on the same node combine, and separate
`qchain fault` invocations see each other's rules. `heal` clears every node's rules.

Key-manager actions name a link as "nodeA~nodeB" or "all". Cutting a link's keys
(`keys ... rate 0`) sets its rate to 0 *and* empties the key manager's stored pool (the
eavesdropper switch, on then off, is the admin API's only way to flush), so the nodes
starve as soon as the keys they already hold are spent, not minutes later. `drain`
does the same through the admin API's `stored` count and `refill` puts keys back.

With one KME per node every key manager action goes to the KMEs that hold the link: both
ends' for "nodeA~nodeB" (the master's KME serves enc_keys, the slave's dec_keys, and
each end is master for its own frames), every KME for "all" (`kmes_for_link`).
`set_behaviour` replaces the behaviour switches of chosen sites' KMEs, `kme_down` /
`kme_up` stop (SIGTERM) and start one site's KME. Counters are read per KME and added
up per link (`kme_links`, `sum_links`).

A twin (`start_twin`) is a second process with a validator's identity: the node is
stopped cleanly, its directory (key, config, chain data, sequence-number lease) is
copied to `DIR/twins/NODE`, the original is started again and the copy runs on fresh
ports. See README.md for what a twin can and cannot do with this transport.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from devnet.faults.backends import BackendError, Target
from devnet.network import free_ports, node_config_toml

RULE_FIELDS = ("drop_pct", "delay_ms", "jitter_ms", "duplicate_pct", "corrupt_pct")


# --- selecting nodes -----------------------------------------------------------------


def current_leader(target: Target) -> str | None:
    """The leader most live nodes name (None if no node answers)."""
    from devnet.local import http_json

    votes: dict[int, int] = {}
    for name in target.node_names():
        try:
            st = http_json(f"{target.api_url(name)}/v1/status", 1.0)
        except (OSError, ValueError):
            continue
        leader = st.get("leader") if isinstance(st, dict) else None
        if isinstance(leader, int):
            votes[leader] = votes.get(leader, 0) + 1
    if not votes:
        return None
    index = max(sorted(votes), key=lambda k: votes[k])
    return target.plan.nodes[index].name


def resolve(target: Target, selectors: Iterable[str], rng: random.Random) -> list[str]:
    """Node names from names and selectors: leader, random, non-leader."""
    names = target.node_names()
    out: list[str] = []
    for sel in selectors:
        if sel in names:
            pick = sel
        elif sel == "leader":
            leader = current_leader(target)
            if leader is None:
                raise BackendError("no node answers: cannot tell the leader")
            pick = leader
        elif sel in ("random", "non-leader"):
            leader = current_leader(target) if sel == "non-leader" else None
            pool = [n for n in names if n not in out and n != leader]
            if not pool:
                raise BackendError(f"no node left for {sel!r}")
            pick = rng.choice(pool)
        else:
            raise BackendError(f"unknown node or selector {sel!r} (nodes: {', '.join(names)})")
        if pick not in out:
            out.append(pick)
    return out


def index_of(target: Target, name: str) -> int:
    for n in target.plan.nodes:
        if n.name == name:
            return n.index
    raise BackendError(f"no node {name!r}")


# --- processes -----------------------------------------------------------------------


def kill(target: Target, name: str) -> None:
    target.kill(name)


def restart(target: Target, name: str) -> None:
    """SIGTERM (graceful), then start again."""
    target.stop(name)
    target.start(name)


def start(target: Target, name: str) -> None:
    target.start(name)


def pause(target: Target, name: str) -> None:
    target.pause(name)


def resume(target: Target, name: str) -> None:
    target.resume(name)


# --- transport rules (node admin API) ------------------------------------------------


def _rules(target: Target, name: str) -> dict[str, dict[str, Any]]:
    doc = target.admin(name, "GET", "/admin/faults")
    if not isinstance(doc, dict):
        raise BackendError(f"{name}: unexpected /admin/faults answer")
    return {"out": dict(doc.get("out", {})), "in": dict(doc.get("in", {}))}


def update_rules(target: Target, name: str, direction: str, **fields: Any) -> None:
    """Set some fields of one direction's rules on a node, keeping the rest."""
    rules = _rules(target, name)
    rules[direction].update(fields)
    target.admin(name, "PUT", "/admin/faults", rules)


def block(target: Target, name: str, peers: Iterable[int], add: bool) -> None:
    rules = _rules(target, name)
    for d in ("out", "in"):
        blocked = set(rules[d].get("blocked", []))
        blocked = blocked | set(peers) if add else blocked - set(peers)
        rules[d]["blocked"] = sorted(blocked)
    target.admin(name, "PUT", "/admin/faults", rules)


def partition(target: Target, side: Sequence[str], other: Sequence[str] | None = None) -> None:
    """Cut every link between `side` and `other` (default: every other node)."""
    names = target.node_names()
    rest = [n for n in names if n not in side] if not other else list(other)
    for a in side:
        block(target, a, [index_of(target, b) for b in rest], True)
    for b in rest:
        block(target, b, [index_of(target, a) for a in side], True)


def unpartition(target: Target, side: Sequence[str], other: Sequence[str] | None = None) -> None:
    names = target.node_names()
    rest = [n for n in names if n not in side] if not other else list(other)
    for a in side:
        with contextlib.suppress(OSError, BackendError):
            block(target, a, [index_of(target, b) for b in rest], False)
    for b in rest:
        with contextlib.suppress(OSError, BackendError):
            block(target, b, [index_of(target, a) for a in side], False)


def heal(target: Target) -> list[str]:
    """Clear every live node's transport rules. Returns the nodes that did not answer."""
    missed = []
    for name in target.node_names():
        try:
            target.admin(name, "DELETE", "/admin/faults")
        except (OSError, BackendError):
            missed.append(name)
    return missed


def delay(target: Target, name: str, ms: int, jitter_ms: int = 0) -> None:
    update_rules(target, name, "out", delay_ms=ms, jitter_ms=jitter_ms)


def drop(target: Target, name: str, pct: float) -> None:
    update_rules(target, name, "out", drop_pct=pct)


def corrupt(target: Target, name: str, pct: float) -> None:
    update_rules(target, name, "out", corrupt_pct=pct)


def replay(target: Target, name: str, pct: float = 30.0) -> None:
    """Replay (send twice) pct% of the node's outgoing frames, byte for byte."""
    update_rules(target, name, "out", duplicate_pct=pct)


RULE_OF_ACTION = {
    "delay": ("delay_ms", "jitter_ms"),
    "drop": ("drop_pct",),
    "corrupt": ("corrupt_pct",),
    "replay": ("duplicate_pct",),
}


def clear_rule(target: Target, name: str, action: str) -> None:
    with contextlib.suppress(OSError, BackendError):
        update_rules(target, name, "out", **dict.fromkeys(RULE_OF_ACTION[action], 0))


# --- key manager ---------------------------------------------------------------------


def links(target: Target, link: str) -> list[tuple[str, str]]:
    """SAE pairs of "nodeA~nodeB" or "all"."""
    sae = {n.name: n.sae_id for n in target.plan.nodes}
    if link == "all":
        nodes = target.plan.nodes
        return [(a.sae_id, b.sae_id) for a in nodes for b in nodes if a.index < b.index]
    a, _, b = link.partition("~")
    if a not in sae or b not in sae or a == b:
        raise BackendError(f"{link!r}: give two different nodes as nodeA~nodeB, or all")
    return [(sae[a], sae[b])]


def kmes_for_link(target: Target, link: str) -> list[str]:
    """The key managers that hold `link` ("nodeA~nodeB" or "all"): the shared KMS, or with
    one KME per node both ends' KMEs (the master's serves enc_keys, the slave's dec_keys,
    and each side is master for the frames it sends), every KME for "all"."""
    if link == "all":
        return target.kme_names()
    links(target, link)
    a, _, b = link.partition("~")
    return list(dict.fromkeys((target.kme_of(a), target.kme_of(b))))


def kmes_for_nodes(target: Target, names: Iterable[str] | None) -> list[str]:
    """The key managers serving the named nodes (None: every key manager)."""
    if names is None:
        return target.kme_names()
    return list(dict.fromkeys(target.kme_of(n) for n in names))


def set_keys(target: Target, link: str, rate: str | int) -> None:
    """Set a link's key rate (profile name or bits/s); 0 also empties its stored pool."""
    for kme in kmes_for_link(target, link):
        for a, b in links(target, link):
            base = f"/admin/links/{a}/{b}"
            body = {"profile": rate} if isinstance(rate, str) else {"bits_per_second": rate}
            target.kme_admin(kme, "POST", f"{base}/rate", body)
            if rate == 0:
                target.kme_admin(kme, "POST", f"{base}/eavesdropper", {"active": True})
                target.kme_admin(kme, "POST", f"{base}/eavesdropper", {"active": False})


def kms_fault(target: Target, mode: str, link: str = "all") -> None:
    """outage | eavesdrop | clear (clear also restores the devnet's key rate)."""
    if mode not in ("outage", "eavesdrop", "clear"):
        raise BackendError(f"kms mode {mode!r}: outage, eavesdrop or clear")
    for kme in kmes_for_link(target, link):
        for a, b in links(target, link):
            base = f"/admin/links/{a}/{b}"
            if mode == "outage":
                target.kme_admin(kme, "POST", f"{base}/outage", {"active": True})
            elif mode == "eavesdrop":
                target.kme_admin(kme, "POST", f"{base}/eavesdropper", {"active": True})
            else:
                target.kme_admin(kme, "POST", f"{base}/outage", {"active": False})
                target.kme_admin(kme, "POST", f"{base}/eavesdropper", {"active": False})
                target.kme_admin(kme, "POST", f"{base}/rate", {"profile": target.plan.kms_rate})


def drain(target: Target, link: str = "all", rate: int = 0) -> None:
    """Empty the links' stored pools at every key manager that holds them, generating
    `rate` bits/s from then on (0: the pools stay empty)."""
    for kme in kmes_for_link(target, link):
        for a, b in links(target, link):
            base = f"/admin/links/{a}/{b}"
            target.kme_admin(kme, "POST", f"{base}/rate", {"bits_per_second": rate})
            target.kme_admin(kme, "POST", f"{base}/stored", {"stored_key_count": 0})


def refill(target: Target, link: str, count: int) -> None:
    """Back to the devnet's rate profile, with `count` keys stored on each link."""
    for kme in kmes_for_link(target, link):
        for a, b in links(target, link):
            base = f"/admin/links/{a}/{b}"
            target.kme_admin(kme, "POST", f"{base}/rate", {"profile": target.plan.kms_rate})
            target.kme_admin(kme, "POST", f"{base}/stored", {"stored_key_count": count})


def set_behaviour(target: Target, switches: dict[str, Any], names: Iterable[str] | None) -> None:
    """Replace the behaviour switches of the named nodes' key managers (None: all); `{}`
    restores the standard set."""
    for kme in kmes_for_nodes(target, names):
        target.kme_admin(kme, "PUT", "/admin/behaviour", switches)


def kme_down(target: Target, name: str) -> str:
    """Stop (SIGTERM) the KME that serves node `name`; only with one KME per node (the
    shared KMS is every node's). Returns the KME's service name."""
    if target.plan.kme_mode != "per-node":
        raise BackendError("kme-down needs a devnet with one KME per node (kme_per_node)")
    kme = target.kme_of(name)
    target.stop_kme(kme)
    return kme


def kme_up(target: Target, name: str) -> None:
    target.start_kme(target.kme_of(name))


def kme_links(target: Target, kme: str) -> dict[str, dict[str, int]]:
    """One key manager's counters and stored key count per link, keyed "SAE-a~SAE-b"."""
    doc = target.kme_admin(kme, "GET", "/admin/links")
    out: dict[str, dict[str, int]] = {}
    for link in doc.get("links", []) if isinstance(doc, dict) else []:
        counters = {k: int(v) for k, v in link.get("counters", {}).items()}
        counters["stored_key_count"] = int(link.get("stored_key_count", 0))
        out[str(link["link"])] = counters
    return out


def sum_links(per_kme: Iterable[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    """Per-link counters added over key managers: with one KME per node each counts what
    its own SAE took (as master it also counts the copies it relayed to the slave)."""
    out: dict[str, dict[str, int]] = {}
    for doc in per_kme:
        for link, counters in doc.items():
            total = out.setdefault(link, {})
            for k, v in counters.items():
                total[k] = total.get(k, 0) + v
    return out


def restarted(last: dict[str, dict[str, int]], now: dict[str, dict[str, int]]) -> bool:
    """A KME's counters went down between two reads: it was restarted in between."""
    return any(
        now.get(link, {}).get(k, 0) < v
        for link, counters in last.items()
        for k, v in counters.items()
        if k != "stored_key_count"
    )


def carry_over(
    base: dict[str, dict[str, int]],
    last: dict[str, dict[str, int]],
    final: dict[str, dict[str, int]],
) -> dict[str, dict[str, int]]:
    """The counters of a restarted KME's earlier lives: `base` plus what it had counted
    when it stopped (the larger of the last periodic read and a `final` read just before
    the stop, if any); stored keys do not carry over."""
    ended = {
        link: {k: max(v, final.get(link, {}).get(k, 0)) for k, v in counters.items()}
        for link, counters in (last or final).items()
    }
    total = sum_links([base, ended])
    return {link: {**c, "stored_key_count": 0} for link, c in total.items()}


def kms_links(target: Target) -> dict[str, dict[str, int]]:
    """Every link's counters and stored key count over all key managers."""
    return sum_links(kme_links(target, kme) for kme in target.kme_names())


# --- Byzantine -----------------------------------------------------------------------


def byzantine(target: Target, name: str, mode: str | None) -> None:
    """A test-only misbehaviour of the node itself (admin API; needs admin.byzantine)."""
    target.admin(name, "PUT", "/admin/byzantine", {"mode": mode})


def twin_dir(target: Target, name: str) -> Path:
    return target.dir / "twins" / name


def twin_pid_file(target: Target, name: str) -> Path:
    return target.dir / "run" / f"twin-{name}.pid"


def twin_log(target: Target, name: str) -> Path:
    return target.dir / "logs" / f"twin-{name}.log"


def start_twin(target: Target, name: str) -> int:
    """Start a second process with `name`'s identity and a copy of its state. Local
    processes only. Returns the twin's PID."""
    from devnet.local import LocalNetwork, qchain_argv

    if not isinstance(getattr(target, "net", None), LocalNetwork):
        raise BackendError("twins need a local-process devnet (a container has one identity)")
    node = next(n for n in target.plan.nodes if n.name == name)
    src = target.dir / "nodes" / name
    dst = twin_dir(target, name)
    stop_twin(target, name)
    target.stop(name)
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    target.start(name)
    p2p, api, admin = free_ports(3, node.host)
    twin_plan = replace(node, p2p_port=p2p, api_port=api, admin_port=admin)
    (dst / "config.toml").write_text(node_config_toml(target.plan, twin_plan))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log_path = twin_log(target, name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            qchain_argv("node", "run", "--config", str(dst / "config.toml")),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=target.dir,
            env=env,
            start_new_session=True,
        )
    pid_file = twin_pid_file(target, name)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def twin_api_url(target: Target, name: str) -> str | None:
    import tomllib

    cfg = twin_dir(target, name) / "config.toml"
    if not cfg.exists():
        return None
    listen = tomllib.loads(cfg.read_text())["api"]["listen"]
    return f"http://{listen}"


def stop_twin(target: Target, name: str, grace_s: float = 10.0) -> bool:
    """SIGTERM the twin (SIGKILL after grace_s). False if none ran."""
    pid_file = twin_pid_file(target, name)
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return False
    pid_file.unlink(missing_ok=True)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = 0 if _alive(pid) else pid
        if done:
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# --- disk ----------------------------------------------------------------------------


def node_db(target: Target, name: str) -> Path:
    """The LevelDB directory of a local node (its config's data_dir, then `db`)."""
    import tomllib

    node_dir = target.dir / "nodes" / name
    cfg = tomllib.loads((node_dir / "config.toml").read_text())
    return node_dir / str(cfg["node"]["data_dir"]) / "db"


def flip_bit_in_tables(db: Path, marker: bytes, rng: random.Random) -> dict[str, Any]:
    """Flip one bit in a value of one LevelDB table (`*.ldb`): a byte 8 to 40 bytes after
    an occurrence of marker (the chain id, which every block header and transaction
    encodes first, so the byte lies in a hash, height or time of a stored value; tables
    are written uncompressed). Returns where."""
    hits: list[tuple[Path, int]] = []
    for table in sorted(db.glob("*.ldb")):
        data = table.read_bytes()
        at = data.find(marker)
        while at >= 0:
            if at + len(marker) + 40 < len(data):
                hits.append((table, at + len(marker)))
            at = data.find(marker, at + 1)
    if not hits:
        raise BackendError(f"{db}: no table holds a value to corrupt")
    table, start = rng.choice(hits)
    offset = start + rng.randrange(8, 40)
    bit = rng.randrange(8)
    with open(table, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << bit)]))
    return {"file": table.name, "offset": offset, "bit": bit}


def corrupt_disk(target: Target, name: str, rng: random.Random) -> dict[str, Any]:
    """Stop the node (SIGTERM), flip one bit in a value of one of its LevelDB tables and
    start it again. Local processes only. A node whose data still sits only in LevelDB's
    log gets a table first: the kit opens and closes the stopped store once (LevelDB
    turns its log into a table when it opens)."""
    from devnet.local import LocalNetwork
    from qchain.store.leveldb import LevelDBStore

    if not isinstance(getattr(target, "net", None), LocalNetwork):
        raise BackendError("corrupt-disk needs a local-process devnet")
    db = node_db(target, name)
    target.stop(name)
    try:
        marker = target.plan.chain_id.encode()
        if not any(marker in t.read_bytes() for t in db.glob("*.ldb")):
            LevelDBStore(db).close()
        where = flip_bit_in_tables(db, marker, rng)
    finally:
        target.start(name)
    return where
