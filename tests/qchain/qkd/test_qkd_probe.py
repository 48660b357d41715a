"""`qchain kms probe` against the simulated key manager, once per behaviour switch: the
report names each deviation (404 on exhaustion, partial batches, a cap of 10, slow
answers), the verdict line gives the node settings it needs, and blockers make the exit
code 1. Over mutual TLS too, with SAEs named by certificate serial number."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from qchain.cli import main as qchain_main
from qchain.qkd.certs import issue, make_ca, save
from qchain.qkd.keymanager import LinkConfig
from qchain.qkd.kms import KMSServer, set_stored
from qchain.qkd.kms_config import Behaviour, TLSFiles
from qchain.qkd.probe import (
    Check,
    Credentials,
    NodeTolerance,
    ProbeConfig,
    ProbeReport,
    Verdict,
    run_probe,
)
from qchain.qkd.testing import kms_test_config, running_kms

LINKS = [
    LinkConfig(saes=("a", "b"), bits_per_second=0, max_key_count=100, initial_key_count=60),
    LinkConfig(saes=("a", "c"), bits_per_second=0),
]


@pytest.fixture
async def kms() -> AsyncIterator[KMSServer]:
    async with running_kms(kms_test_config(LINKS)) as server:
        yield server


async def probe(server: KMSServer, **changes: Any) -> ProbeReport:
    """The probe as SAE a toward b, with c as the third SAE, exhaustion allowed."""
    cfg = ProbeConfig(
        kme=server.url,
        me=Credentials("a"),
        peer=Credentials("b"),
        third=Credentials("c"),
        allow_exhaust=True,
    )
    return await run_probe(dataclasses.replace(cfg, **changes))


def refill(server: KMSServer) -> None:
    set_stored(server.manager, "a", "b", 60)


def row(report: ProbeReport, name: str) -> Check:
    return next(c for c in report.checks if c.name == name)


async def test_standard_kme_runs_with_defaults(kms: KMSServer) -> None:
    report = await probe(kms)
    assert {c.name: c.verdict for c in report.checks} == {
        "status": Verdict.OK,
        "256-bit keys": Verdict.OK,
        "enc_keys by POST": Verdict.OK,
        "enc_keys by GET": Verdict.OK,
        "default key size": Verdict.OK,
        "dec_keys by POST (2 ids)": Verdict.OK,
        "delivered key is gone": Verdict.OK,
        "dec_keys by GET (1 id)": Verdict.OK,
        "unknown key_ID": Verdict.OK,
        "dec_keys by a non-slave SAE": Verdict.OK,
        "batch cap": Verdict.OK,
        "exhaustion": Verdict.OK,
        "answer time": Verdict.OK,
    }
    assert row(report, "exhaustion").observed.startswith("503 not enough keys")
    assert row(report, "batch cap").observed.startswith("cap 128: 400")
    assert report.runs and report.verdict_line() == "qchain runs on this KME: default settings"


@pytest.mark.parametrize("code", [404, 409])
async def test_exhaustion_status_is_named(kms: KMSServer, code: int) -> None:
    kms.switches.replace({"exhausted_status": code})
    report = await probe(kms)
    check = row(report, "exhaustion")
    assert check.verdict is Verdict.DEVIATION  # not the standard's 503; the node copes
    assert check.observed.startswith(f"{code} not enough keys")
    assert check.observed.endswith("; the node's client backs off and retries")
    assert report.verdict_line() == "qchain runs on this KME: default settings"
    refill(kms)
    # A client that read the status as a configuration error could not run on it.
    report = await probe(kms, node=NodeTolerance(config_statuses=frozenset({401, 403, code})))
    assert row(report, "exhaustion").verdict is Verdict.BLOCKER
    assert report.verdict_line() == "qchain does NOT run on this KME: blocked by exhaustion"


async def test_cap_10_is_named(kms: KMSServer) -> None:
    kms.switches.replace({"max_key_per_request": 10})
    report = await probe(kms)
    assert row(report, "batch cap").observed.startswith("cap 10: 400")
    assert row(report, "batch cap").verdict is Verdict.OK
    assert "max_key_per_request=10" in row(report, "status").observed
    assert report.verdict_line() == (
        "qchain runs on this KME: qkd.batch_keys <= 10; qkd.low_water <= 10"
    )


async def test_partial_batches_are_named(kms: KMSServer) -> None:
    kms.switches.replace({"partial_batches": True, "max_key_per_request": 10})
    report = await probe(kms)
    check = row(report, "batch cap")
    assert check.verdict is Verdict.DEVIATION  # the node never asks above the cap
    assert check.observed == "cap 10: 10 keys (partial batch)"
    check = row(report, "exhaustion")
    assert check.observed == "503 not enough keys: 10 requested, 0 stored; a partial batch first"
    assert check.verdict is Verdict.DEVIATION  # the node's client uses a short batch
    assert report.runs
    assert report.verdict_line() == (
        "qchain runs on this KME: qkd.batch_keys <= 10; qkd.low_water <= 10"
    )


async def test_slow_answers_are_named(kms: KMSServer) -> None:
    kms.switches.replace({"delay_ms": 30, "delay_jitter_ms": 10})
    report = await probe(kms, allow_exhaust=False, slow_ms=20.0)
    check = row(report, "answer time")
    assert check.verdict is Verdict.DEVIATION
    median = int(check.observed.split()[1])
    assert median >= 30
    assert row(report, "exhaustion").verdict is Verdict.SKIPPED
    assert report.runs


async def test_blockers_fail(kms: KMSServer) -> None:
    report = await probe(kms, me=Credentials("zed"))  # not an SAE of this KME
    assert row(report, "status").verdict is Verdict.BLOCKER
    assert row(report, "status").observed.startswith("401")
    assert not report.runs
    assert report.verdict_line() == "qchain does NOT run on this KME: blocked by status"
    small = LinkConfig(saes=("a", "b"), bits_per_second=0, key_size=128, max_key_size=128)
    async with running_kms(kms_test_config([small])) as server:
        report = await probe(server, third=None, allow_exhaust=False)
    assert row(report, "256-bit keys").verdict is Verdict.BLOCKER
    assert row(report, "dec_keys by a non-slave SAE").verdict is Verdict.SKIPPED
    assert "blocked by 256-bit keys" in report.verdict_line()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pki")
    ca = make_ca()
    save(ca, out / "ca.pem", out / "ca.key")
    save(issue(ca, "kms", server_hosts=["127.0.0.1"]), out / "kms.pem", out / "kms.key")
    for sae in ("1001", "1002", "1003"):
        save(issue(ca, f"partner {sae}", serial=int(sae)), out / f"{sae}.pem", out / f"{sae}.key")
    return out


async def test_cli_over_mtls_with_serial_identity(
    pki: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = TLSFiles(pki / "ca.pem", pki / "kms.pem", pki / "kms.key")
    links = [
        LinkConfig(saes=("1001", "1002"), bits_per_second=0, initial_key_count=30),
        LinkConfig(saes=("1001", "1003"), bits_per_second=0),
    ]
    cfg = kms_test_config(
        links, tls=files, behaviour=Behaviour(sae_identity="serial", max_key_per_request=10)
    )
    async with running_kms(cfg) as server:

        def argv(cert: str) -> list[str]:
            """Probe as SAE 1001 toward 1002, presenting the certificate of `cert`."""
            return [
                *("kms", "probe", "--kme", server.url, "--ca", str(pki / "ca.pem")),
                *("--sae-id", "1001", "--peer-sae-id", "1002"),
                *("--cert", str(pki / f"{cert}.pem"), "--key", str(pki / f"{cert}.key")),
                *("--peer-cert", str(pki / "1002.pem"), "--peer-key", str(pki / "1002.key")),
            ]

        third = ["--third-sae-id", "1003", "--third-cert", str(pki / "1003.pem")]
        third += ["--third-key", str(pki / "1003.key")]
        assert await asyncio.to_thread(qchain_main, [*argv("1001"), *third]) == 0
        out = capsys.readouterr().out
        assert out.splitlines()[0].split(" | ")[0].strip() == "check"
        assert "batch cap" in out and "cap 10: 400" in out
        assert out.rstrip().endswith(
            "qchain runs on this KME: qkd.batch_keys <= 10; qkd.low_water <= 10"
        )
        # the peer's certificate given as our own: the KME names us 1002, not on a link
        # as master toward itself, so status fails and the exit code is 1
        assert await asyncio.to_thread(qchain_main, [*argv("1002"), "--json"]) == 1
        doc = json.loads(capsys.readouterr().out)
        assert doc["runs"] is False and doc["checks"][0]["verdict"] == "blocker"
        assert doc["verdict"] == "qchain does NOT run on this KME: blocked by status"
        # exhaustion answered 409: a deviation the node's client copes with
        server.switches.replace({"sae_identity": "serial", "exhausted_status": 409})
        exhaust = [*argv("1001"), "--allow-exhaust"]
        assert await asyncio.to_thread(qchain_main, exhaust) == 0
        out = capsys.readouterr().out
        assert "409 not enough keys" in out and "backs off and retries" in out
        assert out.rstrip().endswith("qchain runs on this KME: default settings")
        # the KME reads the common name instead: these certificates name "partner 1001"
        server.switches.replace({"sae_identity": "cn"})
        assert await asyncio.to_thread(qchain_main, argv("1001")) == 1
        out = capsys.readouterr().out
        assert "401 SAE 'partner 1001' is not known to this key manager" in out
        assert "blocked by status" in out
