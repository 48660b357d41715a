"""The Docker Swarm stack of deploy/swarm/, from a real ceremony.

Four sites go through the ceremony in separate temporary directories (`validator init`
with a simulated KME per site, `genesis build` and `verify`, `node config --secrets-dir
/run/secrets --data-dir /var/lib/qchain`); deploy/swarm/generate.py writes the stack.

The fast tests read the stack: one service per validator placed by the site's node label,
secrets owned by the image's user with mode 0400, no secret in the file, refusals that name
the field.

The end-to-end test (markers `docker`, `slow`) runs the stack on a one-node swarm: it
builds the image, joins a swarm only if the machine is in none (and leaves it at the end
only then), deploys, sees the services wait for a node with their label, labels the node,
anchors a document through one validator's published API (TLS, its api.crt as the CA),
forces an update of that validator, kills its task's container and anchors again after
each, and removes the stack with its secrets, configs, network and volumes whatever
happens.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from devnet.network import free_port_base
from devnet.sites import (
    SiteKms,
    find_leaks,
    init_validator,
    qchain,
    run_ceremony,
    site_secrets,
    wait_for,
    write_members,
    write_site_kmes,
)

from ..devnet.dockernet.docker_support import (
    IMAGE,
    build_image,
    docker_lock,
    skip_without_docker,
)
from .generators import load_generator

REPO = Path(__file__).resolve().parents[2]
NAMES = ("alpha", "bravo", "charlie", "delta")
STACK = "qchain-swarm-test"
LABEL = "qchain-swarm-test"
"""The value of the node label qchain.site that places every site on this machine."""


gen = load_generator("qchain_swarm_generate", REPO / "deploy" / "swarm" / "generate.py")


@dataclass(frozen=True)
class Pilot:
    sites: dict[str, Path]
    kme_dir: Path
    partner_key: Path
    api_ports: dict[str, int]


@pytest.fixture(scope="module")
def pilot(tmp_path_factory: pytest.TempPathFactory) -> Pilot:
    """The ceremony for four sites whose validators reach each other by service name and
    serve their API on a port of this machine."""
    base = free_port_base(range(len(NAMES)))
    ports = {n: base + i for i, n in enumerate(NAMES)}
    kme_dir = tmp_path_factory.mktemp("kme-vendor")
    kmes: dict[str, SiteKms] = write_site_kmes(kme_dir, {f"sae-{n}": f"kme-{n}" for n in NAMES})
    sites = {}
    for n in NAMES:
        site = tmp_path_factory.mktemp(f"site-{n}") / "site"
        init_validator(
            site,
            name=n,
            p2p=f"{n}:7000",
            api=f"https://localhost:{ports[n]}",
            kms=kmes[f"sae-{n}"],
            sae_id=f"sae-{n}",
        )
        sites[n] = site
    partner = tmp_path_factory.mktemp("partner")
    members = write_members(partner, {"operator": "admin", "partner": "partner"})
    run_ceremony(
        list(sites.values()),
        tmp_path_factory.mktemp("coordinator"),
        members,
        chain_id="qingdao-swarm-test",
        node_config=("--secrets-dir", "/run/secrets", "--data-dir", "/var/lib/qchain"),
    )
    return Pilot(sites, kme_dir, partner / "partner.key", ports)


def generate(pilot: Pilot, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(REPO / "deploy" / "swarm" / "generate.py")]
    for n, site in pilot.sites.items():
        argv += ["--site", str(site), "--site-label", f"{n}={LABEL}"]
    argv += ["--image", IMAGE, "--out", str(out), "--stack-name", STACK, *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def rehearsal_stack(pilot: Pilot, out: Path) -> dict[str, Any]:
    r = generate(pilot, out, "--no-reservations", "--kme-dir", str(pilot.kme_dir))
    assert r.returncode == 0, r.stderr
    doc: dict[str, Any] = yaml.safe_load(out.read_text())
    return doc


# --- the stack file ----------------------------------------------------------------------


def test_the_stack_places_each_validator_by_its_site_label(pilot: Pilot, tmp_path: Path) -> None:
    r = generate(pilot, tmp_path / "stack.yml", "--site-label", "zulu=x")
    assert r.returncode == 2 and "--site-label names zulu: not a site given" in r.stderr
    out = tmp_path / "own.yml"
    r = subprocess.run(
        [sys.executable, str(REPO / "deploy" / "swarm" / "generate.py"), "--site",
         str(pilot.sites["bravo"]), "--image", "registry.bravo.example/qchain:0.1.0",
         "--out", str(out), "--network", "qchain-pilot", "--publish-p2p"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "docker node update --label-add qchain.site=bravo NODE" in r.stdout
    doc = yaml.safe_load(out.read_text())
    assert list(doc["services"]) == ["bravo"]
    svc = doc["services"]["bravo"]
    assert svc["deploy"]["placement"]["constraints"] == ["node.labels.qchain.site == bravo"]
    assert svc["deploy"]["replicas"] == 1
    assert svc["deploy"]["update_config"]["order"] == "stop-first"
    assert svc["deploy"]["restart_policy"]["condition"] == "any"
    assert svc["deploy"]["resources"]["reservations"] == {"cpus": "1", "memory": "768M"}
    assert doc["networks"] == {"qchain": {"external": True, "name": "qchain-pilot"}}
    assert {(p["published"], p["target"], p["mode"]) for p in svc["ports"]} == {
        (pilot.api_ports["bravo"], pilot.api_ports["bravo"], "host"),
        (7000, 7000, "host"),
    }


def test_secrets_reach_the_node_as_its_own_0400_files(pilot: Pilot, tmp_path: Path) -> None:
    doc = rehearsal_stack(pilot, tmp_path / "stack.yml")
    text = (tmp_path / "stack.yml").read_text()
    assert "mode: 0400" in text
    for n, site in pilot.sites.items():
        svc = doc["services"][n]
        assert svc["networks"]["qchain"]["aliases"] == [n]
        assert svc["user"] == "10001:10001" and svc["read_only"] is True
        secrets = {s["target"]: s for s in svc["secrets"]}
        assert set(secrets) == set(gen.SECRET_FILES)
        for s in secrets.values():
            assert (s["uid"], s["gid"], s["mode"]) == ("10001", "10001", 0o400)
            assert doc["secrets"][s["source"]]["file"] == str(site.resolve() / s["target"])
        configs = {c["target"] for c in svc["configs"]}
        assert configs == {f"/etc/qchain/{f}" for f in gen.CONFIG_FILES}
        assert "/readyz" not in json.dumps(svc["healthcheck"])
        assert all(p["target"] != 9000 for p in svc["ports"])
        assert find_leaks(tmp_path / "stack.yml", site_secrets(site)) == [], n
        kme = doc["services"][f"kme-{n}"]
        assert kme["networks"]["qchain"]["aliases"] == [f"kme-{n}"]
        assert kme["deploy"]["placement"] == svc["deploy"]["placement"]
    assert doc["networks"]["qchain"] == {"driver": "overlay", "attachable": True}


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            '"/run/secrets/api.key"',
            '"/srv/api.key"',
            "[api] tls_key = '/srv/api.key': in the container this file is /run/secrets/api.key",
        ),
        ('"/var/lib/qchain"', '"data"', "[node] data_dir = 'data'"),
        (
            'listen = "127.0.0.1:9000"',
            'listen = "0.0.0.0:9000"',
            "[admin] listen: 0.0.0.0 is not loopback",
        ),
    ],
)
def test_the_generator_refuses_a_node_toml_that_cannot_run(
    pilot: Pilot, tmp_path: Path, old: str, new: str, expected: str
) -> None:
    site = tmp_path / "site"
    subprocess.run(["cp", "-a", str(pilot.sites["charlie"]), str(site)], check=True)
    _edit(site / "node.toml", old, new)
    with pytest.raises(gen.SiteError) as e:
        gen.load_site(site)
    assert expected in str(e.value)


def test_the_generator_refuses_sites_of_different_geneses(pilot: Pilot, tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run(["cp", "-a", str(pilot.sites["delta"]), str(site)], check=True)
    _edit(site / "genesis.json", "qingdao-swarm-test", "qingdao-swarm-other")
    sites = [gen.load_site(pilot.sites["alpha"]), gen.load_site(site)]
    with pytest.raises(gen.SiteError, match=r"the sites. genesis\.json files differ"):
        gen.stack(sites, IMAGE)
    (site / "api.key").unlink()
    with pytest.raises(gen.SiteError, match=r"api\.key: missing"):
        gen.load_site(site)


# --- on a one-node swarm -------------------------------------------------------------------


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    r = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and r.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout.strip()


@contextlib.contextmanager
def one_node_swarm() -> Iterator[str]:
    """This machine as a swarm manager (joined only if it was in no swarm, and left
    again only then); the node's id, labelled qchain.site=LABEL until the end."""
    state = docker("info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}")
    joined = state.startswith("inactive")
    if joined:
        docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    elif state != "active true":
        pytest.skip(f"this machine is in a swarm but not as a manager ({state})")
    node = docker("info", "--format", "{{.Swarm.NodeID}}")
    before = docker("node", "inspect", node, "--format", '{{index .Spec.Labels "qchain.site"}}')
    try:
        yield node
    finally:
        try:
            if joined:
                docker("swarm", "leave", "--force")
            elif before and before != "<no value>":
                docker("node", "update", "--label-add", f"qchain.site={before}", node)
            else:
                docker("node", "update", "--label-rm", "qchain.site", node, check=False)
        except RuntimeError as e:
            print(f"leaving the swarm as found: {e}", file=sys.stderr)


def _stack_leftovers() -> dict[str, str]:
    label = f"label=com.docker.stack.namespace={STACK}"
    return {
        kind: docker(*cmd, "--filter", label, check=False)
        for kind, cmd in {
            "containers": ("ps", "-aq"),
            "secrets": ("secret", "ls", "-q"),
            "configs": ("config", "ls", "-q"),
            "networks": ("network", "ls", "-q"),
        }.items()
    }


def remove_stack() -> None:
    """`docker stack rm`, then wait for its containers and network to go and remove its
    volumes (stack rm leaves them); fails if anything of the stack is left."""
    docker("stack", "rm", STACK, check=False)
    wait_for(
        "the stack's containers and network to go",
        lambda: not any(_stack_leftovers().values()),
        90,
        [],
    )
    volumes = docker("volume", "ls", "-q", "--filter", f"name={STACK}_").split()
    if volumes:
        docker("volume", "rm", *volumes)
    assert docker("volume", "ls", "-q", "--filter", f"name={STACK}_") == ""


def _running_task(service: str) -> tuple[str, str] | None:
    """(task id, container id) of the service's task that is running now."""
    out = docker(
        "service", "ps", f"{STACK}_{service}", "--no-trunc", "--filter",
        "desired-state=running", "--format", "{{.ID}} {{.CurrentState}}", check=False,
    )  # fmt: skip
    for line in out.splitlines():
        task, state = line.split(" ", 1)
        if state.startswith("Running"):
            cid = docker("inspect", task, "--format", "{{.Status.ContainerStatus.ContainerID}}")
            return task, cid
    return None


def ready(url: str, ca: Path) -> bool:
    ctx = ssl.create_default_context(cafile=str(ca))
    try:
        with urllib.request.urlopen(f"{url}/readyz", context=ctx, timeout=2) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def anchor(pilot: Pilot, name: str, text: str) -> int:
    """Anchor a document through validator NAME's published API; the block height."""
    digest = hashlib.sha256(text.encode()).hexdigest()
    args = json.dumps([{"hex": digest}, "sha256", text, "contract", {"hex": ""}])
    out = qchain(
        "tx", "send", "notary", "anchor", "--args", args, "--key", str(pilot.partner_key),
        "--node", f"https://localhost:{pilot.api_ports[name]}",
        "--ca-file", str(pilot.sites[name] / "api.crt"), "--json", timeout=90,
    )  # fmt: skip
    sent = json.loads(out)
    assert sent["status"] == "committed" and sent["receipt"]["ok"], out
    return int(sent["height"])


def replaced_and_ready(pilot: Pilot, name: str, old_task: str, timeout: float) -> None:
    url, ca = f"https://localhost:{pilot.api_ports[name]}", pilot.sites[name] / "api.crt"

    def check() -> bool:
        now = _running_task(name)
        return now is not None and now[0] != old_task and ready(url, ca)

    wait_for(f"a new task of {name} to be ready", check, timeout, [])


def _print_logs() -> None:
    for n in NAMES:
        logs = subprocess.run(
            ["docker", "service", "logs", "--tail", "20", f"{STACK}_{n}"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        print(f"--- {n}\n{logs.stdout}{logs.stderr}", file=sys.stderr)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_stack_runs_a_pilot_on_a_one_node_swarm(pilot: Pilot, tmp_path: Path) -> None:
    skip_without_docker("the swarm test")
    start = time.monotonic()
    stack_file = tmp_path / "stack.yml"
    rehearsal_stack(pilot, stack_file)
    with docker_lock():
        build_image()
        with one_node_swarm() as node:
            remove_stack()  # whatever a crashed earlier run left behind
            try:
                run_on_swarm(pilot, stack_file, node)
            except BaseException:
                _print_logs()
                raise
            finally:
                remove_stack()
    print(f"swarm test wall time {time.monotonic() - start:.0f} s", file=sys.stderr)


def run_on_swarm(pilot: Pilot, stack_file: Path, node: str) -> None:
    docker("node", "update", "--label-rm", "qchain.site", node, check=False)
    docker("stack", "deploy", "--compose-file", str(stack_file), STACK)

    def unplaced() -> bool:
        out = docker("service", "ps", f"{STACK}_alpha", "--no-trunc", "--format", "{{.Error}}")
        return "no suitable node" in out

    wait_for("alpha's task to wait for a node labelled for it", unplaced, 60, [])
    docker("node", "update", "--label-add", f"qchain.site={LABEL}", node)
    for n in NAMES:
        url, ca = f"https://localhost:{pilot.api_ports[n]}", pilot.sites[n] / "api.crt"
        wait_for(f"{n} to be ready", lambda u=url, c=ca: ready(u, c), 180, [])
    first = anchor(pilot, "alpha", "Joint R&D contract v1")

    task = _running_task("alpha")
    assert task is not None
    docker("service", "update", "--force", "--detach", f"{STACK}_alpha")
    replaced_and_ready(pilot, "alpha", task[0], 180)
    second = anchor(pilot, "alpha", "Joint R&D contract v2")
    assert second > first

    task = _running_task("alpha")
    assert task is not None
    docker("kill", task[1])
    replaced_and_ready(pilot, "alpha", task[0], 180)
    assert anchor(pilot, "alpha", "Joint R&D contract v3") > second
    if os.environ.get("QCHAIN_DOCKER_TEST_LOGS"):
        _print_logs()
