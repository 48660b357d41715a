"""`qchain keys`: create and inspect signing key files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from qchain.errors import KeyFileError
from qchain.keys import Scheme, SigningKey


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="keys_cmd", metavar="VERB", required=True)
    new = sub.add_parser("new", help="generate a key and write it to a file (mode 0600)")
    new.add_argument("--out", required=True, type=Path, help="key file to write")
    new.add_argument("--scheme", choices=[s.value for s in Scheme], default=Scheme.ML_DSA_65.value)
    new.add_argument("--force", action="store_true", help="overwrite an existing file")
    new.add_argument("--json", action="store_true", help="print JSON")
    show = sub.add_parser("show", help="print a key file's address and public key")
    show.add_argument("file", type=Path)
    show.add_argument("--json", action="store_true", help="print JSON")


def _print(key: SigningKey, path: Path, as_json: bool) -> None:
    info = {
        "file": str(path),
        "scheme": key.scheme.value,
        "address": key.address.hex(),
        "public_key": key.public_key.hex(),
    }
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        print(f"file:       {path}")
        print(f"scheme:     {key.scheme.value}")
        print(f"address:    {key.address.hex()}")
        print(f"public key: {key.public_key.hex()}")


def run(args: argparse.Namespace) -> int:
    if args.keys_cmd == "new":
        path: Path = args.out
        if path.exists() and not args.force:
            raise KeyFileError(f"{path} exists; pass --force to overwrite it")
        key = SigningKey.generate(args.scheme)
        key.save(path)
        _print(key, path, args.json)
        return 0
    key = SigningKey.load(args.file)
    _print(key, args.file, args.json)
    return 0
