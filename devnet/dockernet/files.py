"""Writing a Docker devnet's directory: the files of a local devnet, flavoured for
containers (services listen on 0.0.0.0, chain data in the node's volume), the compose
file and `docker.json` (the settings), readable by the containers' user.
"""

from __future__ import annotations

import json
import stat
from dataclasses import asdict
from pathlib import Path

from devnet.dockernet.plan import (
    COMPOSE_FILE,
    DATA_DIR,
    SETTINGS_FILE,
    DockerSettings,
    kms_services,
)
from devnet.dockernet.render import compose_yaml
from devnet.network import NetworkPlan, node_config_toml, write_network


def write_docker_network(
    directory: Path, plan: NetworkPlan, settings: DockerSettings, *, force: bool = False
) -> bool:
    """Write the devnet files for containers and the compose file. Returns False if the
    same network was already there (the compose file and settings are rewritten anyway)."""
    from devnet.kms import kms_config_files, kms_config_toml, write_kms_files

    written = write_network(directory, plan, force=force)
    if written:
        hosts = (*kms_services(plan), "localhost", "127.0.0.1")
        write_kms_files(directory, plan, hosts=hosts)
        for file, node in kms_config_files(plan).items():
            toml = kms_config_toml(plan, listen_host="0.0.0.0", node=node)
            (directory / "kms" / file).write_text(toml)
        for node in plan.nodes:
            cfg = node_config_toml(plan, node, listen_host="0.0.0.0", data_dir=f"{DATA_DIR}/data")
            (directory / "nodes" / node.name / "config.toml").write_text(cfg)
        _share_with_container(directory)
    (directory / SETTINGS_FILE).write_text(json.dumps(asdict(settings), indent=2) + "\n")
    (directory / COMPOSE_FILE).write_text(compose_yaml(plan, settings))
    return written


def load_settings(directory: Path) -> DockerSettings:
    """The settings `write_docker_network` wrote (ConfigError if there are none)."""
    from qchain.errors import ConfigError

    path = directory / SETTINGS_FILE
    try:
        return DockerSettings(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(str(path), f"not a Docker devnet; run init --docker ({e})") from e


def _share_with_container(directory: Path) -> None:
    """Let the container user (uid 10001) read every file of the devnet directory and
    enter every folder of it (the directory itself included: it is the mount's root)."""
    for p in [directory, *directory.rglob("*")]:
        if p.is_symlink():
            continue
        mode = stat.S_IMODE(p.stat().st_mode)
        if p.is_dir():
            p.chmod(mode | 0o055)
        elif p.is_file():
            p.chmod(mode | 0o044)
