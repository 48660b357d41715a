"""The fault kit's Docker backend against a real compose devnet.

Builds (or reuses: an unchanged tree takes seconds) the image `qchain:dev`, brings up a
4-validator Docker devnet of its own (compose project `qchain-faultdocker`, on free host
ports), runs the shipped leader-crash and minority-partition scenarios through
`ComposeNetwork` (`docker kill` / `docker start`, node admin APIs on the published ports,
the key manager's admin API through `docker exec` into its container) with every check
holding (`make test` runs leader-crash, `make test-sweeps` minority-partition), and tears
the devnet down with its volumes, whatever happened. It holds the
machine-wide Docker test lock, so it never runs beside `test_docker.py`. Skipped, saying
why, when no Docker daemon is reachable.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devnet.dockernet.network import ComposeNetwork
from devnet.dockernet.plan import DockerSettings, plan_docker_network
from devnet.faults import keys
from devnet.faults.report import render
from devnet.faults.runner import run_scenario
from devnet.faults.scenario import load_scenario, shipped_scenarios

from ..dockernet.docker_support import (
    IMAGE,
    build_image,
    compose_devnet,
    docker_lock,
    free_base_port,
    skip_without_docker,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PROJECT = "qchain-faultdocker"
SCENARIOS = ("leader-crash", "minority-partition")


@pytest.fixture(scope="module")
def docker_devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeNetwork]:
    skip_without_docker("Fault kit Docker backend test")
    # The scenarios' network spec (they are written for a fresh local devnet).
    spec = load_scenario(shipped_scenarios()[SCENARIOS[0]]).network
    with docker_lock():
        build_image(IMAGE)
        plan = plan_docker_network(
            validators=spec.validators,
            scheme=spec.scheme,
            kms_rate=spec.kms_rate,
            heartbeat_ms=spec.heartbeat_ms,
        )
        settings = DockerSettings(
            project=PROJECT, base_port=free_base_port(spec.validators), image=IMAGE
        )
        directory = tmp_path_factory.mktemp("fault-docker-devnet")
        with compose_devnet(directory, plan, settings) as net:
            net.wait_ready(min_height=1, timeout=120)
            yield net


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "name", [SCENARIOS[0], pytest.param(SCENARIOS[1], marks=pytest.mark.sweep)]
)
async def test_scenario_holds_through_the_docker_backend(
    docker_devnet: ComposeNetwork, name: str
) -> None:
    net = docker_devnet
    scenario = load_scenario(shipped_scenarios()[name])
    try:
        result = await run_scenario(scenario, devnet=net.dir, docker=True, log=lambda _: None)
        report = render(result)
        assert result.ok, report
        assert result.load["committed"] > 0, report
        assert all(not s["error"] for s in result.step_stats), report
        step = result.step_stats[0]
        assert step["nodes"] and step.get("recovery_s") is not None, report
        # The key manager's counters came through `docker exec` during the run.
        assert result.history.kms, "no key manager counters were recorded"
        assert result.kept_up  # an existing devnet is never stopped by the runner
        target = ComposeNetwork(net.dir)
        try:
            assert all(target.node_alive(n) for n in target.node_names())
            # A write to the key manager's admin API through `docker exec`: a link's rate
            # set to its profile (what it already is).
            keys.set_keys(target, "node0~node1", net.plan.kms_rate)
            n = len(net.plan.nodes)
            assert len(keys.kms_links(target)) == n * (n - 1) // 2
        finally:
            target.close()
    except BaseException:
        net.compose("logs", "--tail", "60", check=False)
        raise
