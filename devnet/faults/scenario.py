"""Fault scenarios: a TOML file with a network, a load, a timeline of perturbations and
the checks to run (see `devnet/faults/README.md` for every field).

`load_scenario(path)` / `parse_scenario(doc)` validate everything up front and raise
`ConfigError` naming the field, so a typo fails before a network is started.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.http import admin
from qchain.config import load_toml
from qchain.errors import ConfigError
from qchain.qkd.kms_config import parse_behaviour

REFILL_KEYS = 2048
"""Keys a `kme-drain` puts back on each link when undone (the devnet's initial pool)."""

ACTIONS: dict[str, frozenset[str]] = {
    # action -> parameters it accepts besides at, duration_s, expect_halt
    "kill": frozenset({"target"}),
    "restart": frozenset({"target"}),
    "stop": frozenset({"target"}),
    "pause": frozenset({"target"}),
    "partition": frozenset({"nodes", "from"}),
    "flap": frozenset({"nodes", "from", "period_s"}),
    "heal": frozenset(),
    "delay": frozenset({"target", "ms", "jitter_ms"}),
    "drop": frozenset({"target", "pct"}),
    "corrupt": frozenset({"target", "pct"}),
    "replay": frozenset({"target", "pct"}),
    "keys": frozenset({"link", "rate"}),
    "kms": frozenset({"mode", "link"}),
    "byzantine": frozenset({"target", "mode"}),
    "attack": frozenset({"target", "mode", "claim", "rate", "connections"}),
    "partner-flood": frozenset({"count", "account"}),
    "corrupt-disk": frozenset({"target"}),
    "kme-down": frozenset({"target"}),
    "kme-behaviour": frozenset({"target", "switches"}),
    "kme-drain": frozenset({"link", "rate", "refill"}),
    "add-validator": frozenset({"via", "operator"}),
    "remove-validator": frozenset({"target", "via"}),
    "propose-rotate": frozenset({"target", "via"}),
}
"""Every timeline action and the fields it takes."""

SET_CHANGES = ("add-validator", "remove-validator", "propose-rotate")
"""Actions of the `validators` contract (a chain whose genesis enables set changes)."""
UNDOABLE = frozenset(ACTIONS) - {"heal", "restart", "flap", *SET_CHANGES}
"""Actions that `duration_s` undoes (flap undoes itself; heal and restart are instant;
for partner-flood and corrupt-disk, which are instant too, it is only the window the
progress check watches). A set change is never undone: it runs until it has activated."""

BYZANTINE_MODES = (*admin.BYZANTINE_MODES, "twin")
"""The validator's own modes (set through its admin API) and the kit's twin."""
ATTACK_MODES = ("hijack", "forge", "conn-flood")
FLOOD_ACCOUNTS = ("admin", "auditor", "provider", "issuer", "partner1", "partner2")
LOCAL_ONLY = ("attack", "corrupt-disk", "add-validator", "remove-validator")
"""Actions that need local processes (P2P ports on 127.0.0.1, the node's files, a KME
process of its own, a site written and started or stopped by `devnet.joining`)."""
MAX_REFILL = 20_000
"""The devnet's per-link pool cap (`max_key_count` in its key manager configs)."""
KMS_MODES = ("outage", "eavesdrop", "clear")
EQUIVOCATION_EXPECT = ("expected", "absent", "ignore")
TX_KINDS = ("anchor", "pay")


@dataclass(frozen=True)
class NetworkSpec:
    validators: int = 4
    heartbeat_ms: int = 300
    kms_rate: str = "lab"
    scheme: str = "ed25519"
    kme_per_node: bool = False
    """One simulated KME per validator, relaying keys to each other (else one shared KMS)."""
    relay_delay_ms: int = 0
    """With kme_per_node: how long a key takes from the master's KME to the slave's."""
    reconfiguration: bool = False
    """The genesis enables validator-set changes (`qchain devnet init --reconfiguration`)."""


@dataclass(frozen=True)
class LoadSpec:
    rate: float = 5.0
    """Transactions per second, submitted open-loop (not waiting for earlier ones)."""
    duration_s: float | None = None
    """How long load runs; None = the whole timeline."""
    mix: tuple[tuple[str, int], ...] = (("anchor", 3), ("pay", 1))
    """Relative weights of notary anchors and voucher payments."""


@dataclass(frozen=True)
class Step:
    """One perturbation of the timeline."""

    at: float
    """Seconds after load starts."""
    action: str
    duration_s: float | None = None
    """If set, the perturbation is undone this many seconds later (a heal)."""
    params: tuple[tuple[str, Any], ...] = ()
    expect_halt: bool = False
    """The chain must not advance (beyond one in-flight block) while this step lasts."""
    halt_after_s: float = 2.0
    """With expect_halt: the halt is judged from this many seconds after the step starts
    (a starved node first spends the keys it already holds)."""
    index: int = 0
    """Its place in the scenario file (0: the first `[[step]]`)."""
    after: int | None = None
    """The index of an earlier step: this one starts `at` seconds after that one
    finished (applied, and undone if it has a duration); None: `at` is on the run's clock."""

    def param(self, name: str, default: Any = None) -> Any:
        return dict(self.params).get(name, default)

    @property
    def end(self) -> float:
        return self.at + (self.duration_s or 0.0)


@dataclass(frozen=True)
class ChecksSpec:
    liveness_deadline_s: float = 30.0
    """After the final heal every node must commit a new block within this time."""
    equivocation: str = "absent"
    """expected: some honest node must report an equivocation alert; absent: none may;
    ignore: report what was seen without judging."""
    starvation: tuple[str, ...] = ()
    """Links ("nodeA~nodeB") whose nodes must report starvation while their keys are
    cut, and resume sending once keys return."""
    max_lost: int = 0
    """Acknowledged-committed transactions allowed to be missing (0: none)."""
    min_progress: int = 0
    """Blocks the chain must commit during every step with a duration (0: not checked;
    steps with expect_halt are exempt)."""
    max_stall_s: float = 5.0
    """With min_progress: the longest the chain may stand still inside such a step."""
    max_latency_s: float | None = None
    """If set, no honest node's `/v1/status` may take longer (or fail) during a step."""
    readiness: bool = False
    """Judge `/readyz`: honest nodes stalled during a step are not ready, committing
    nodes are ready at the end, a node with a corrupted disk is not ready and says why."""
    readiness_stall_s: float = 5.0
    """A node whose height has not moved for this long counts as cut off."""
    no_restart: bool = False
    """No node process may be restarted during the run (its reported uptime never drops)."""
    all_acked_commit: bool = False
    """Every acknowledged transaction must be committed by the liveness deadline."""
    max_resume_s: float | None = None
    """If set, after every `expect_halt` step is undone each node must commit a new block
    (above the highest height at the undo) within this many seconds."""
    activate_during: str = ""
    """If set (an action), every set change must activate while a step of it is in force."""


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    seed: int
    duration_s: float
    network: NetworkSpec = field(default_factory=NetworkSpec)
    load: LoadSpec = field(default_factory=LoadSpec)
    steps: tuple[Step, ...] = ()
    checks: ChecksSpec = field(default_factory=ChecksSpec)
    docker_ok: bool = True
    """False if the scenario needs local processes (twins, attacks on P2P ports, disk)."""


def _take(doc: dict[str, Any], where: str, known: set[str]) -> None:
    unknown = set(doc) - known
    if unknown:
        raise ConfigError(f"{where}.{sorted(unknown)[0]}", "unknown field")


def _table(doc: dict[str, Any], name: str, known: set[str]) -> dict[str, Any]:
    """The optional table `name` of the scenario (empty if absent), holding only `known`
    fields."""
    table = doc.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(name, "a table")
    _take(table, name, known)
    return table


def _num(doc: dict[str, Any], name: str, where: str, default: float | None, lo: float = 0.0) -> Any:
    v = doc.get(name, default)
    if v is None:
        return None
    if type(v) not in (int, float) or v < lo:
        raise ConfigError(f"{where}.{name}", f"a number >= {lo}")
    return v


def _names(v: Any, where: str) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
        raise ConfigError(where, "a node name or selector, or a non-empty list of them")
    return tuple(v)


def _step(doc: Any, i: int) -> Step:
    where = f"step[{i}]"
    if not isinstance(doc, dict):
        raise ConfigError(where, "a table")
    action = doc.get("action")
    if action not in ACTIONS:
        raise ConfigError(f"{where}.action", f"one of {', '.join(ACTIONS)}")
    common = {"at", "action", "duration_s", "expect_halt", "halt_after_s", "after"}
    _take(doc, where, common | ACTIONS[action])
    at = _num(doc, "at", where, None)
    if at is None:
        raise ConfigError(f"{where}.at", "required: seconds after load starts")
    duration = _num(doc, "duration_s", where, None)
    if duration is not None and action not in UNDOABLE | {"flap"}:
        raise ConfigError(f"{where}.duration_s", f"{action} is instant")
    if action == "flap" and duration is None:
        raise ConfigError(f"{where}.duration_s", "flap needs a duration")
    expect_halt = doc.get("expect_halt", False)
    if type(expect_halt) is not bool:
        raise ConfigError(f"{where}.expect_halt", "true or false")
    if expect_halt and duration is None:
        raise ConfigError(f"{where}.expect_halt", "needs duration_s")
    halt_after = float(_num(doc, "halt_after_s", where, 2.0))
    if "halt_after_s" in doc and not expect_halt:
        raise ConfigError(f"{where}.halt_after_s", "only with expect_halt = true")
    if expect_halt and duration is not None and halt_after >= duration:
        raise ConfigError(f"{where}.halt_after_s", "must be shorter than duration_s")
    params = _step_params(doc, where, action, duration)
    after = doc.get("after")
    if after is not None and (type(after) is not int or not 0 <= after < i):
        raise ConfigError(f"{where}.after", "the index of an earlier [[step]] (0 is the first)")
    return Step(
        at=float(at),
        action=action,
        duration_s=None if duration is None else float(duration),
        params=tuple(sorted(params.items())),
        expect_halt=expect_halt,
        halt_after_s=halt_after,
        index=i,
        after=after,
    )


def _step_params(doc: dict[str, Any], where: str, action: str, duration: Any) -> dict[str, Any]:
    """The action's own parameters, checked."""
    params: dict[str, Any] = {}
    if "target" in ACTIONS[action] and (action != "kme-behaviour" or "target" in doc):
        params["target"] = _names(doc.get("target", ""), f"{where}.target")
    for name in ("nodes", "from"):
        if name in doc:
            params[name] = _names(doc[name], f"{where}.{name}")
    if action in ("partition", "flap") and "nodes" not in params:
        raise ConfigError(f"{where}.nodes", "required")
    if action == "flap":
        params["period_s"] = _num(doc, "period_s", where, 2.0, 0.1)
    if action == "delay":
        params["ms"] = int(_num(doc, "ms", where, None) or 0)
        params["jitter_ms"] = int(_num(doc, "jitter_ms", where, 0))
        if not 0 < params["ms"] <= 60_000:
            raise ConfigError(f"{where}.ms", "milliseconds in (0, 60000]")
    if action in ("drop", "corrupt", "replay"):
        pct = _num(doc, "pct", where, None)
        if pct is None or not 0 < pct <= 100:
            raise ConfigError(f"{where}.pct", "a percentage in (0, 100]")
        params["pct"] = float(pct)
    if action in ("keys", "kms", "kme-drain"):
        link = doc.get("link", "all")
        if not isinstance(link, str) or (link != "all" and link.count("~") != 1):
            raise ConfigError(f"{where}.link", 'a node pair "nodeA~nodeB" or "all"')
        params["link"] = link
    if action == "keys":
        rate = doc.get("rate")
        if not (isinstance(rate, str) or (type(rate) is int and rate >= 0)):
            raise ConfigError(f"{where}.rate", "a profile name or bits per second (0 cuts keys)")
        params["rate"] = rate
    if action == "kms":
        mode = doc.get("mode")
        if mode not in KMS_MODES:
            raise ConfigError(f"{where}.mode", f"one of {', '.join(KMS_MODES)}")
        params["mode"] = mode
    if action == "byzantine":
        mode = doc.get("mode")
        if mode not in BYZANTINE_MODES:
            raise ConfigError(f"{where}.mode", f"one of {', '.join(BYZANTINE_MODES)}")
        params["mode"] = mode
    if action == "attack":
        params |= _attack_params(doc, where, duration)
    for name in ("via", "operator"):
        if name in ACTIONS[action] and name in doc:
            if not isinstance(doc[name], str) or not doc[name]:
                raise ConfigError(f"{where}.{name}", "a node name")
            params[name] = doc[name]
    params |= _kme_and_flood_params(doc, where, action)
    return params


def _attack_params(doc: dict[str, Any], where: str, duration: Any) -> dict[str, Any]:
    params: dict[str, Any] = {}
    mode = doc.get("mode")
    if mode not in ATTACK_MODES:
        raise ConfigError(f"{where}.mode", f"one of {', '.join(ATTACK_MODES)}")
    params["mode"] = mode
    if duration is None:
        raise ConfigError(f"{where}.duration_s", "an attack needs a duration")
    if "claim" in doc:
        params["claim"] = _names(doc["claim"], f"{where}.claim")
    rate = _num(doc, "rate", where, 16.0, 0.1)
    if rate > 100:
        raise ConfigError(f"{where}.rate", "at most 100 per second")
    params["rate"] = float(rate)
    conns = doc.get("connections", 64)
    if type(conns) is not int or not 0 < conns <= 256:
        raise ConfigError(f"{where}.connections", "an integer in (0, 256]")
    params["connections"] = conns
    return params


def _kme_and_flood_params(doc: dict[str, Any], where: str, action: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if action == "kme-behaviour":
        switches = doc.get("switches")
        if not isinstance(switches, dict):
            raise ConfigError(f"{where}.switches", "a table of KME behaviour switches")
        try:
            parse_behaviour(switches, tls=True)
        except ConfigError as e:
            raise ConfigError(f"{where}.switches", f"{e.field}: {e.reason}") from e
        params["switches"] = tuple(sorted(switches.items()))
    if action == "kme-drain":
        rate = doc.get("rate", 0)
        if type(rate) is not int or rate < 0:
            raise ConfigError(f"{where}.rate", "bits per second while drained (0: none)")
        params["rate"] = rate
        refill = doc.get("refill", REFILL_KEYS)
        if type(refill) is not int or not 0 <= refill <= MAX_REFILL:
            raise ConfigError(f"{where}.refill", f"keys per link in [0, {MAX_REFILL}]")
        params["refill"] = refill
    if action == "partner-flood":
        count = doc.get("count", 64)
        if type(count) is not int or not 0 < count <= 256:
            raise ConfigError(f"{where}.count", "an integer in (0, 256] (the per-sender pool)")
        params["count"] = count
        account = doc.get("account", "partner1")
        if account not in FLOOD_ACCOUNTS:
            raise ConfigError(f"{where}.account", f"one of {', '.join(FLOOD_ACCOUNTS)}")
        params["account"] = account
    return params


def _network_spec(doc: dict[str, Any]) -> NetworkSpec:
    net_doc = _table(
        doc,
        "network",
        {
            "validators",
            "heartbeat_ms",
            "kms_rate",
            "scheme",
            "kme_per_node",
            "relay_delay_ms",
            "reconfiguration",
        },
    )
    kme_per_node = net_doc.get("kme_per_node", False)
    if type(kme_per_node) is not bool:
        raise ConfigError("network.kme_per_node", "true or false")
    if "relay_delay_ms" in net_doc and not kme_per_node:
        raise ConfigError("network.relay_delay_ms", "only with kme_per_node = true")
    reconfiguration = net_doc.get("reconfiguration", False)
    if type(reconfiguration) is not bool:
        raise ConfigError("network.reconfiguration", "true or false")
    if reconfiguration and kme_per_node:
        raise ConfigError("network.reconfiguration", "set changes need the shared KMS")
    network = NetworkSpec(
        validators=int(_num(net_doc, "validators", "network", 4, 1)),
        heartbeat_ms=int(_num(net_doc, "heartbeat_ms", "network", 300, 1)),
        kms_rate=str(net_doc.get("kms_rate", "lab")),
        scheme=str(net_doc.get("scheme", "ed25519")),
        kme_per_node=kme_per_node,
        relay_delay_ms=int(_num(net_doc, "relay_delay_ms", "network", 0)),
        reconfiguration=reconfiguration,
    )
    if network.validators % 3 != 1:
        raise ConfigError("network.validators", "n = 3f+1")
    return network


def _load_spec(doc: dict[str, Any]) -> LoadSpec:
    load_doc = _table(doc, "load", {"rate", "duration_s", "mix"})
    mix_doc = load_doc.get("mix", {"anchor": 3, "pay": 1})
    if not isinstance(mix_doc, dict) or not mix_doc:
        raise ConfigError("load.mix", "a table of weights, e.g. {anchor = 3, pay = 1}")
    for k, w in mix_doc.items():
        if k not in TX_KINDS:
            raise ConfigError(f"load.mix.{k}", f"one of {', '.join(TX_KINDS)}")
        if type(w) is not int or w < 0:
            raise ConfigError(f"load.mix.{k}", "a weight >= 0")
    if sum(mix_doc.values()) == 0:
        raise ConfigError("load.mix", "some weight must be positive")
    return LoadSpec(
        rate=float(_num(load_doc, "rate", "load", 5.0)),
        duration_s=_num(load_doc, "duration_s", "load", None),
        mix=tuple(sorted(mix_doc.items())),
    )


def _steps(doc: dict[str, Any], duration: float) -> tuple[Step, ...]:
    steps_doc = doc.get("step", [])
    if not isinstance(steps_doc, list):
        raise ConfigError("step", "an array of tables ([[step]])")
    steps = tuple(
        sorted(
            (_step(s, i) for i, s in enumerate(steps_doc)),
            key=lambda s: (s.after is not None, s.at, s.index),
        )
    )
    for i, s in enumerate(steps):
        if s.after is None and s.end > duration:
            raise ConfigError(f"step[{i}]", f"ends at {s.end}s, after duration_s = {duration}")
    return steps


def _checks_spec(doc: dict[str, Any]) -> ChecksSpec:
    checks_doc = _table(
        doc,
        "checks",
        {
            "liveness_deadline_s",
            "equivocation",
            "starvation",
            "max_lost",
            "min_progress",
            "max_stall_s",
            "max_latency_s",
            "readiness",
            "readiness_stall_s",
            "max_resume_s",
            "all_acked_commit",
            "no_restart",
            "activate_during",
        },
    )
    equivocation = checks_doc.get("equivocation", "absent")
    if equivocation not in EQUIVOCATION_EXPECT:
        raise ConfigError("checks.equivocation", f"one of {', '.join(EQUIVOCATION_EXPECT)}")
    starvation = checks_doc.get("starvation", [])
    if not isinstance(starvation, list) or not all(
        isinstance(x, str) and x.count("~") == 1 for x in starvation
    ):
        raise ConfigError("checks.starvation", 'a list of links "nodeA~nodeB"')
    max_lost = checks_doc.get("max_lost", 0)
    if type(max_lost) is not int or max_lost < 0:
        raise ConfigError("checks.max_lost", "an integer >= 0")
    min_progress = checks_doc.get("min_progress", 0)
    if type(min_progress) is not int or min_progress < 0:
        raise ConfigError("checks.min_progress", "an integer >= 0 (blocks)")
    readiness = checks_doc.get("readiness", False)
    if type(readiness) is not bool:
        raise ConfigError("checks.readiness", "true or false")
    max_latency = _num(checks_doc, "max_latency_s", "checks", None, 0.01)
    all_acked_commit = checks_doc.get("all_acked_commit", False)
    if type(all_acked_commit) is not bool:
        raise ConfigError("checks.all_acked_commit", "true or false")
    no_restart = checks_doc.get("no_restart", False)
    if type(no_restart) is not bool:
        raise ConfigError("checks.no_restart", "true or false")
    max_resume = _num(checks_doc, "max_resume_s", "checks", None, 0.5)
    activate_during = checks_doc.get("activate_during", "")
    if activate_during != "" and activate_during not in ACTIONS:
        raise ConfigError("checks.activate_during", "the name of a step action")
    return ChecksSpec(
        liveness_deadline_s=float(_num(checks_doc, "liveness_deadline_s", "checks", 30.0, 1.0)),
        equivocation=equivocation,
        starvation=tuple(starvation),
        max_lost=max_lost,
        min_progress=min_progress,
        max_stall_s=float(_num(checks_doc, "max_stall_s", "checks", 5.0, 0.5)),
        max_latency_s=None if max_latency is None else float(max_latency),
        readiness=readiness,
        readiness_stall_s=float(_num(checks_doc, "readiness_stall_s", "checks", 5.0, 0.5)),
        max_resume_s=None if max_resume is None else float(max_resume),
        all_acked_commit=all_acked_commit,
        no_restart=no_restart,
        activate_during=activate_during,
    )


def parse_scenario(doc: dict[str, Any], default_name: str = "scenario") -> Scenario:
    _take(
        doc,
        "scenario",
        {"name", "description", "seed", "duration_s", "network", "load", "step", "checks"},
    )
    name = doc.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise ConfigError("name", "a non-empty string")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise ConfigError("description", "a string")
    seed = doc.get("seed", 1)
    if type(seed) is not int:
        raise ConfigError("seed", "an integer")
    duration = _num(doc, "duration_s", "scenario", None, 1.0)
    if duration is None:
        raise ConfigError("duration_s", "required: the length of the timeline in seconds")

    network = _network_spec(doc)
    load = _load_spec(doc)
    steps = _steps(doc, duration)
    checks = _checks_spec(doc)
    changes = [s.action for s in steps if s.action in SET_CHANGES]
    if changes and not network.reconfiguration:
        raise ConfigError("network.reconfiguration", f"{changes[0]} needs it set to true")
    docker_ok = not any(
        (s.action == "byzantine" and s.param("mode") == "twin") or s.action in LOCAL_ONLY
        for s in steps
    )
    return Scenario(
        name=name,
        description=description,
        seed=seed,
        duration_s=float(duration),
        network=network,
        load=load,
        steps=steps,
        checks=checks,
        docker_ok=docker_ok,
    )


def load_scenario(path: Path) -> Scenario:
    return parse_scenario(load_toml(path), path.stem)


def shipped_scenarios() -> dict[str, Path]:
    """The scenarios shipped with the kit, by name (file stem)."""
    folder = Path(__file__).parent / "scenarios"
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def resolve_scenario(name_or_path: str) -> Path:
    """A path, or the name of a shipped scenario."""
    p = Path(name_or_path)
    if p.exists():
        return p
    shipped = shipped_scenarios()
    if name_or_path in shipped:
        return shipped[name_or_path]
    raise ConfigError(
        name_or_path, f"no such file or shipped scenario ({', '.join(shipped) or 'none'})"
    )
