"""`qchain kms`: run the simulated key manager, or make its TLS material.

qchain kms --config kms.toml
qchain kms certs --out DIR --sae node0 --sae node1 [--host 127.0.0.1 --host kms]
qchain kms certs --out DIR --sae 1001 --sae 1002 --serial-from-id
qchain kms probe --kme URL --sae-id A --peer-sae-id B --cert A.pem --key A.key \
    --peer-cert B.pem --peer-key B.key --ca ca.pem [--third-sae-id C --third-cert ...]
    [--allow-exhaust] [--json]            (or --insecure-header for a dev key manager)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from pathlib import Path

from qchain.errors import ConfigError
from qchain.qkd.certs import write_kms_certs
from qchain.qkd.kms import KMSServer
from qchain.qkd.kms_config import KMSConfig, load_kms_config
from qchain.qkd.probe import Credentials, ProbeConfig, run_probe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="the key manager's TOML config")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ...")
    sub = parser.add_subparsers(dest="kms_command", metavar="SUBCOMMAND")
    certs = sub.add_parser("certs", help="write a private CA, the KME and SAE certificates")
    certs.add_argument("--out", type=Path, required=True, help="directory to write into")
    certs.add_argument("--sae", action="append", default=[], help="an SAE id (repeat)")
    certs.add_argument(
        "--host", action="append", default=[], help="a name or IP of the KME (repeat)"
    )
    certs.add_argument(
        "--serial-from-id",
        action="store_true",
        help="decimal SAE ids: each SAE certificate's serial number is its id",
    )
    probe = sub.add_parser(
        "probe", help="check a KME against ETSI GS QKD 014 and what a qchain node needs"
    )
    probe.add_argument("--kme", required=True, help="base URL of the KME")
    probe.add_argument("--sae-id", required=True, help="your SAE id (the master)")
    probe.add_argument("--peer-sae-id", required=True, help="the peer SAE id (the slave)")
    probe.add_argument("--cert", type=Path, help="your SAE's client certificate")
    probe.add_argument("--key", type=Path, help="its private key")
    probe.add_argument("--peer-cert", type=Path, help="the peer SAE's client certificate")
    probe.add_argument("--peer-key", type=Path, help="its private key")
    probe.add_argument("--third-sae-id", help="an SAE that must not get the peer's keys")
    probe.add_argument("--third-cert", type=Path, help="the third SAE's client certificate")
    probe.add_argument("--third-key", type=Path, help="its private key")
    probe.add_argument("--ca", type=Path, help="the CA of the KME's server certificate")
    probe.add_argument(
        "--insecure-header",
        action="store_true",
        help="dev key manager: name SAEs with the X-SAE-ID header, no client certificates",
    )
    probe.add_argument(
        "--allow-exhaust", action="store_true", help="take every stored key to see exhaustion"
    )
    probe.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    probe.add_argument(
        "--slow-ms", type=float, default=1000.0, help="answers slower than this are a deviation"
    )
    probe.add_argument("--json", action="store_true", help="print the report as JSON")


async def serve(config: KMSConfig) -> None:
    """Run until SIGINT or SIGTERM."""
    server = KMSServer(config)
    await server.start()
    print(f"key manager: {server.url}  admin: {server.admin_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def _credentials(
    sae_id: str, cert: Path | None, key: Path | None, insecure: bool, flag: str
) -> Credentials:
    if insecure:
        return Credentials(sae_id)
    if cert is None or key is None:
        raise ConfigError(
            f"--{flag}cert", f"give --{flag}cert and --{flag}key, or --insecure-header"
        )
    for path in (cert, key):
        if not path.is_file():
            raise ConfigError(f"--{flag}cert", f"{path} is not a file")
    return Credentials(sae_id, cert, key)


def probe_config(args: argparse.Namespace) -> ProbeConfig:
    """The probe's settings from `qchain kms probe` arguments."""
    insecure = args.insecure_header
    third = None
    if args.third_sae_id:
        third = _credentials(args.third_sae_id, args.third_cert, args.third_key, insecure, "third-")
    if args.timeout <= 0:
        raise ConfigError("--timeout", "must be positive")
    return ProbeConfig(
        kme=args.kme,
        me=_credentials(args.sae_id, args.cert, args.key, insecure, ""),
        peer=_credentials(args.peer_sae_id, args.peer_cert, args.peer_key, insecure, "peer-"),
        third=third,
        ca=args.ca,
        allow_exhaust=args.allow_exhaust,
        timeout=args.timeout,
        slow_ms=args.slow_ms,
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    if args.kms_command == "certs":
        if not args.sae:
            raise ConfigError("--sae", "name at least one SAE")
        if args.serial_from_id and not all(s.isdigit() and int(s) > 0 for s in args.sae):
            raise ConfigError("--sae", "--serial-from-id needs positive decimal SAE ids")
        paths = write_kms_certs(
            args.out,
            args.sae,
            args.host or ("127.0.0.1", "localhost"),
            serial_from_id=args.serial_from_id,
        )
        for name, path in sorted(paths.items()):
            print(f"{name}: {path}")
        return 0
    if args.kms_command == "probe":
        report = asyncio.run(run_probe(probe_config(args)))
        print(json.dumps(report.to_json(), indent=2) if args.json else report.table())
        return 0 if report.runs else 1
    if args.config is None:
        raise ConfigError("--config", "required to run the key manager")
    asyncio.run(serve(load_kms_config(args.config)))
    return 0
