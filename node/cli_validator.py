"""`qchain validator init`: make a partner's site directory (`node.site`): its own
validator key, API TLS key and self-signed certificate, admin token, site.toml and the
public join.json that goes to the genesis coordinator.
`qchain validator rotate-tls` and `rotate-token`: a new API certificate or admin token for
an existing site."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="validator_cmd", metavar="VERB", required=True)
    init = sub.add_parser("init", help="create a validator's site directory and keys")
    init.add_argument("--dir", required=True, type=Path, help="the site directory to create")
    init.add_argument("--name", required=True, help="the organisation's validator name")
    init.add_argument("--p2p", required=True, help="HOST:PORT the other validators dial")
    init.add_argument("--api", required=True, help="https://HOST:PORT partners reach")
    init.add_argument("--kme-url", default="", help="the site's QKD key manager (ETSI 014)")
    init.add_argument("--sae-id", help="this validator's SAE id at its KME (default: --name)")
    init.add_argument("--kme-cert", type=Path, help="client certificate for the KME (PEM)")
    init.add_argument("--kme-key", type=Path, help="client key for the KME (PEM), copied 0600")
    init.add_argument("--kme-ca", type=Path, help="CA of the KME's server certificate (PEM)")
    init.add_argument("--p2p-listen", help="ADDR:PORT to bind (default 0.0.0.0:<p2p port>)")
    init.add_argument("--api-listen", help="ADDR:PORT to bind (default 0.0.0.0:<api port>)")
    init.add_argument("--admin-listen", help="ADDR:PORT of the admin API (default 127.0.0.1:9000)")
    tls = sub.add_parser("rotate-tls", help="a new API TLS key and certificate for a site")
    tls.add_argument("--dir", required=True, type=Path, help="the site directory")
    tok = sub.add_parser("rotate-token", help="a new admin API token for a site")
    tok.add_argument("--dir", required=True, type=Path, help="the site directory")


def run(args: argparse.Namespace) -> int:
    if args.validator_cmd == "rotate-tls":
        return _rotate_tls(args.dir)
    if args.validator_cmd == "rotate-token":
        return _rotate_token(args.dir)
    import dataclasses

    from node.site import KmeFiles, init_site, new_site, split_host_port
    from qchain.errors import ConfigError

    site = new_site(
        args.dir,
        name=args.name,
        p2p=args.p2p,
        api=args.api,
        kme_url=args.kme_url,
        sae_id=args.sae_id,
        p2p_listen=args.p2p_listen,
        api_listen=args.api_listen,
    )
    if args.admin_listen is not None:
        split_host_port(args.admin_listen, "--admin-listen")
        site = dataclasses.replace(site, admin_listen=args.admin_listen)
    given = [args.kme_cert, args.kme_key, args.kme_ca]
    if any(given) and not all(given):
        raise ConfigError("--kme-cert", "--kme-cert, --kme-key and --kme-ca go together")
    kme = KmeFiles(args.kme_cert, args.kme_key, args.kme_ca) if all(given) else None
    key = init_site(site, kme)
    print(f"site {site.name!r} created in {site.dir}")
    print(f"validator public key: {key.public_key.hex()[:32]}...")
    print(f"send {site.dir / 'join.json'} to the genesis coordinator; it holds nothing secret")
    print("validator.key, api.key, admin.token and kme-client.key never leave this site")
    return 0


def _rotate_tls(directory: Path) -> int:
    from node.site import rotate_api_cert

    _, kept = rotate_api_cert(directory)
    print(f"new API key and certificate in {directory}; the old ones are kept as:")
    for path in kept:
        print(f"  {path}")
    print("send the new api.crt to the partners (their --ca-file), then restart the node")
    return 0


def _rotate_token(directory: Path) -> int:
    from node.site import rotate_admin_token

    kept = rotate_admin_token(directory)
    print(f"new admin token in {directory}; the old one is kept as {kept} (0600)")
    print("restart the node; admin clients read the new token from the file")
    return 0
