"""The Docker devnet's compose project as data (`devnet.dockernet.plan`) and its YAML
(`devnet.dockernet.render`), without Docker: which services, ports, volumes and
dependencies a plan gives, that the text says exactly that, and the free host ports the
Docker tests run on."""

from __future__ import annotations

import socket

import pytest

from devnet.dockernet.plan import (
    API_PORT,
    KMS_SERVICE,
    DockerSettings,
    Port,
    compose_project,
    host_port_offsets,
    plan_docker_network,
)
from devnet.dockernet.render import compose_yaml, render_project
from devnet.network import free_port_base
from qchain.errors import ConfigError

SETTINGS = DockerSettings(project="qchain-x", base_port=29900, image="qchain:test")


def test_shared_kms_project_publishes_the_kms_and_every_node() -> None:
    plan = plan_docker_network(validators=4, scheme="ed25519")
    project = compose_project(plan, SETTINGS)
    names = [s.name for s in project.services]
    assert names == [KMS_SERVICE, "node0", "node1", "node2", "node3"]
    kms, node3 = project.services[0], project.services[4]
    assert kms.ports == (Port(29900, 6000),)
    assert kms.depends_on == ()
    assert node3.ports == (Port(30003, API_PORT), Port(30103, 9000))
    assert node3.depends_on == (KMS_SERVICE,)
    assert node3.volumes == (".:/devnet:ro", "node3-data:/var/lib/qchain")
    assert project.volumes == ("node0-data", "node1-data", "node2-data", "node3-data")


def test_per_node_kmes_are_not_published_and_every_node_waits_for_all() -> None:
    plan = plan_docker_network(validators=4, scheme="ed25519", kme_mode="per-node")
    project = compose_project(plan, SETTINGS, config_dir="${DIR}")
    kmes = [s for s in project.services if s.name.startswith("kme-")]
    assert [k.name for k in kmes] == [f"kme-node{i}" for i in range(4)]
    assert all(k.ports == () for k in kmes)
    nodes = [s for s in project.services if s.name.startswith("node")]
    assert all(n.depends_on == tuple(k.name for k in kmes) for n in nodes)
    assert all(v.startswith("${DIR}:/devnet:ro") for s in project.services for v in s.volumes[:1])


def test_render_writes_what_the_project_says() -> None:
    plan = plan_docker_network(validators=1, scheme="ed25519")
    text = render_project(compose_project(plan, SETTINGS))
    assert text == compose_yaml(plan, SETTINGS)
    assert text.endswith("networks:\n  devnet: {}\n")
    assert "  image: qchain:test\n" in text
    assert '    command: ["node", "run", "--config", "/devnet/nodes/node0/config.toml"]\n' in text
    assert '      QCHAIN_API_PORT: "8000"\n' in text
    assert '      - "127.0.0.1:30000:8000"\n' in text
    assert "      kms:\n        condition: service_healthy\n" in text
    assert "  node0-data: {}\n" in text


def test_settings_say_which_field_is_wrong() -> None:
    with pytest.raises(ConfigError) as e:
        DockerSettings(base_port=65500)
    assert e.value.field == "base_port"
    with pytest.raises(ConfigError) as e:
        DockerSettings(project="Qchain")
    assert e.value.field == "project"


def test_host_port_offsets_are_the_published_ports() -> None:
    offsets = host_port_offsets(4)
    settings = DockerSettings(base_port=29900)
    project = compose_project(plan_docker_network(validators=4, scheme="ed25519"), settings)
    published = sorted(p.host_port for s in project.services for p in s.ports)
    assert sorted(29900 + o for o in offsets) == published


def test_free_port_base_avoids_a_taken_port() -> None:
    offsets = host_port_offsets(4)
    base = free_port_base(offsets)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", base + offsets[-1]))
        other = free_port_base(offsets)
        assert base + offsets[-1] not in {other + o for o in offsets}
    DockerSettings(base_port=base)  # a valid base for the settings too
