"""The four-site rehearsal (`qchain devnet rehearse`): four site directories made by
`validator init`, a coordinator that only sees join files and public keys, one container
pod per site with its own KME on one bridge network, WAN delay between the sites, and a
partner whose anchor commits on all four sites and whose receipt verifies with nothing
but the genesis. Every file that crossed between directories, and every file outside a
site's own directory and its KME's, is scanned for that site's private keys."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from devnet.rehearsal import SITES, Rehearsal, Settings, rehearse
from devnet.sites import find_leaks, site_secrets

from .dockernet.docker_support import IMAGE, build_image, docker_lock, skip_without_docker

pytestmark = [pytest.mark.docker, pytest.mark.slow]
DELAY_MS = 40


def _secrets(r: Rehearsal) -> dict[str, dict[str, list[bytes]]]:
    d = r.settings.directory
    return {x: site_secrets(d / f"site-{x}") for x in SITES}


def _assert_nothing_leaked(r: Rehearsal) -> int:
    """Every crossing and every file the partner holds carries no private key of any
    site; no file outside site X's directory and its KME's holds a secret of site X.
    Returns the number of files scanned."""
    d = r.settings.directory
    by_site = _secrets(r)
    every = {f"site-{x}/{k}": v for x, s in by_site.items() for k, v in s.items()}
    handed = {c.copy for c in r.crossings}
    handed |= {p for p in (d / "partner").iterdir() if p.name != "partner.key"}
    handed |= set((d / "coordinator").iterdir())
    for path in sorted(handed):
        assert find_leaks(path, every) == [], f"{path.relative_to(d)} leaks a site's secret"
    scanned = 0
    for x, secrets in by_site.items():
        own = {d / f"site-{x}", d / f"kme-{x}"}
        for path in d.rglob("*"):
            if path.is_file() and not own & set(path.parents):
                leaks = [n for n in find_leaks(path, secrets) if n in secrets]
                assert leaks == [], f"{path.relative_to(d)} holds site {x}'s {leaks}"
                scanned += 1
    return scanned


@pytest.mark.timeout(480)
def test_four_sites_rehearse_a_pilot_network(tmp_path: Path) -> None:
    skip_without_docker("the four-site rehearsal")
    settings = Settings(
        tmp_path / "rehearsal",
        delay_ms=DELAY_MS,
        project="qchain-rehearsaltest",
        subnet="172.29.18.0/24",
        image=IMAGE,
    )
    with docker_lock():
        build_image(IMAGE)
        started = time.monotonic()
        r = rehearse(settings)
        wall = time.monotonic() - started
    print(r.summary())
    print(f"rehearsal wall time {wall:.1f}s (image build not counted)")
    d = settings.directory

    keys = {json.loads((d / f"site-{x}" / "join.json").read_text())["public_key"] for x in SITES}
    assert len(keys) == len(SITES)
    assert sorted(p.name for p in (d / "coordinator").iterdir()) == sorted(
        ["genesis.json", "members.toml", *(f"join-site-{x}.json" for x in SITES)]
    )
    assert len(set(r.addresses.values())) == len(SITES) + 1

    assert set(r.committed_at) == {settings.host(x) for x in SITES}
    assert len(set(r.committed_at.values())) == 1, r.committed_at
    assert all(h >= min(r.committed_at.values()) for h in r.heights.values()), r.heights
    assert r.receipt["verified"] is True, r.receipt

    assert r.handshake_ms >= 2 * DELAY_MS, f"no WAN delay in effect ({r.wan}): {r.summary()}"
    crossed = {c.copy.relative_to(d).as_posix() for c in r.crossings}
    assert {f"coordinator/join-site-{x}.json" for x in SITES} <= crossed
    assert {f"site-{x}/genesis.json" for x in SITES} | {"partner/genesis.json"} <= crossed
    scanned = _assert_nothing_leaked(r)
    print(f"{len(r.crossings)} crossings and {scanned} file scans found no site's secret")
