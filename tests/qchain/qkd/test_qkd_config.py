"""The key manager's TOML config, and `qchain kms --config` as a process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tomllib
from pathlib import Path

import aiohttp
import pytest

from qchain.errors import ConfigError
from qchain.qkd.keymanager import PROFILES
from qchain.qkd.kms_config import load_kms_config, parse_kms_config

BASE = """
insecure_dev_mode = true
full_mesh = true
[server]
port = 0
[admin]
port = 0
token = "0123456789abcdef-token"
[defaults]
profile = "metro"
latency_ms = 1
[[sae]]
id = "n0"
[[sae]]
id = "n1"
[[sae]]
id = "n2"
kme_id = "KME-two"
[[link]]
saes = ["n1", "n0"]
profile = "lab"
max_key_count = 500
"""


def test_full_mesh_with_override(tmp_path: Path) -> None:
    path = tmp_path / "kms.toml"
    path.write_text(BASE)
    cfg = load_kms_config(path)
    links = {lk.name: lk for lk in cfg.links}
    assert sorted(links) == ["n0~n1", "n0~n2", "n1~n2"]
    assert links["n0~n1"].bits_per_second == PROFILES["lab"]
    assert links["n0~n1"].max_key_count == 500 and links["n0~n1"].latency == 0.001
    assert links["n1~n2"].bits_per_second == PROFILES["metro"]
    assert cfg.kme_ids["n2"] == "KME-two" and cfg.kme_ids["n0"] == "qchain-kms/n0"


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        (("insecure_dev_mode = true", "insecure_dev_mode = false"), "tls"),
        (('profile = "lab"', 'profile = "warp"'), "link[0].profile"),
        (("max_key_count = 500", "max_key_count = -1"), "link[0].max_key_count"),
        (('saes = ["n1", "n0"]', 'saes = ["n1", "n9"]'), "link[0].saes"),
        (("[admin]", '[admin]\nhost = "0.0.0.0"'), "admin.host"),
        (('token = "0123456789abcdef-token"', 'token = "short"'), "admin.token"),
        (("latency_ms = 1", "latency_ms = -3"), "link[0].latency_ms"),
        (("latency_ms = 1", "key_size = 100"), "link[0]"),
        (("latency_ms = 1", "colour = 1"), "defaults.colour"),
    ],
)
def test_bad_config_names_the_field(patch: tuple[str, str], field: str) -> None:
    text = BASE.replace(*patch)
    with pytest.raises(ConfigError) as exc:
        parse_kms_config(tomllib.loads(text))
    assert exc.value.field == field


async def test_qchain_kms_runs_from_a_config_file(tmp_path: Path) -> None:
    path = tmp_path / "kms.toml"
    path.write_text(BASE)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qchain.cli",
        "kms",
        "--config",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line.startswith("key manager: http://127.0.0.1:"), line
        url = line.split()[2]
        status_url = f"{url}/api/v1/keys/n1/status"
        async with (
            aiohttp.ClientSession() as http,
            http.get(status_url, headers={"X-SAE-ID": "n0"}) as resp,
        ):
            assert resp.status == 200
            body = await resp.json()
        assert body["max_key_count"] == 500
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), 30)
    assert rc == 0
