"""`qchain kms`: run the simulated key manager, or make its TLS material.

qchain kms --config kms.toml
qchain kms certs --out DIR --sae node0 --sae node1 [--host 127.0.0.1 --host kms]
qchain kms certs --out DIR --sae 1001 --sae 1002 --serial-from-id
qchain kms probe --kme URL --sae-id A --peer-sae-id B ... (see `qchain.qkd.probe`)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from qchain.errors import ConfigError
from qchain.qkd.certs import write_kms_certs
from qchain.qkd.kms import KMSServer
from qchain.qkd.kms_config import KMSConfig, load_kms_config


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
    if args.config is None:
        raise ConfigError("--config", "required to run the key manager")
    asyncio.run(serve(load_kms_config(args.config)))
    return 0
