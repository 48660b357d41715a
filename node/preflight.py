"""What `qchain node run` refuses before it opens the store or binds a port.

On a chain that is not a devnet (its id does not start with
`qchain.keys.DEVNET_CHAIN_PREFIX`):

- a validator key or member key in the genesis, or this node's own signing key, derived
  from the published dev seed (`qchain.keys.dev_seed_label`): anyone could sign with it;
- a file holding a secret (the signing key, the API's TLS key, the admin token, the key
  manager client key) that group or others may read or write (mode & 0o077), or that the
  user running the node does not own;
- a timing profile other than the genesis's (`consensus.timing`): validators whose timers
  differ wait for each other in vain.

On every chain, a devnet too, a genesis that enables validator-set changes
(`consensus.reconfiguration`) is refused where the node does not build what such a chain
needs (docs/CONSENSUS.md, the last "Revision" on §10): a timing profile without a heartbeat
(`propose_wait_max_ms = "none"`: §10.7's liveness machinery, which keeps an idle chain
moving across an activation, is not built). The node itself refuses, at start, a store
that carries the amnesia mark (restored, rebuilt or state-synced: §10.9 is not built),
so a `--state-sync` there writes the checked snapshot and then stops; it refuses a
transaction that proposes or approves a `rotate`, and votes for no block carrying one
(§10.6's link ranges are not built), and stops deciding if one is approved all the same.

On a devnet the others are warnings: its keys are public anyway, and a Docker devnet makes its
files readable by the container's user on purpose.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from contracts.genesis import Genesis
from qchain.config import NodeConfig
from qchain.errors import ConfigError, KeyFileError
from qchain.keys import DEVNET_CHAIN_PREFIX, Scheme, SigningKey, dev_seed_label, is_devnet_chain

log = logging.getLogger("qchain.node")


def secret_files(cfg: NodeConfig) -> Iterator[tuple[str, Path]]:
    """(config key, path) of every file the config names that holds a secret."""
    yield "node.signing_key", cfg.node.signing_key
    if cfg.api.tls_key is not None:
        yield "api.tls_key", cfg.api.tls_key
    if cfg.admin.token_file is not None:
        yield "admin.token_file", cfg.admin.token_file
    if cfg.qkd.client_key is not None:
        yield "qkd.client_key", cfg.qkd.client_key


def secret_file_problems(cfg: NodeConfig) -> list[str]:
    """What is wrong with the secret files' modes and owners (missing files are left to
    the code that reads them)."""
    problems = []
    uid = os.geteuid()
    for key, path in secret_files(cfg):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        except OSError as e:
            problems.append(f"{key} = {path}: cannot stat: {e.strerror}")
            continue
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            problems.append(
                f"{key} = {path} is open to group or others (mode {mode:04o}); it holds a "
                f"secret: chmod 600 {path}"
            )
        if st.st_uid != uid:
            problems.append(
                f"{key} = {path} belongs to uid {st.st_uid}, not to the user running the "
                f"node (uid {uid}): chown it to that user, or run the node as its owner"
            )
    return problems


def dev_key_problems(cfg: NodeConfig, genesis: Genesis) -> list[str]:
    """Keys of this chain that the published dev seed derives."""
    n = len(genesis.validators)
    problems = []
    for v in genesis.validators:
        label = dev_seed_label(Scheme.ML_DSA_65, v.public_key, n)
        if label is not None:
            problems.append(
                f"{cfg.node.genesis}: validators[{v.index}] ({v.name}) has the dev seed's "
                f"{label!r} key"
            )
    for i, m in enumerate(genesis.members):
        label = dev_seed_label(m.scheme, m.public_key, n)
        if label is not None:
            problems.append(
                f"{cfg.node.genesis}: members[{i}] ({m.name}) has the dev seed's {label!r} key"
            )
    try:
        own = SigningKey.load(cfg.node.signing_key)
    except KeyFileError:
        return problems
    label = dev_seed_label(own.scheme, own.public_key, n)
    if label is not None:
        problems.append(
            f"node.signing_key = {cfg.node.signing_key} is the dev seed's {label!r} key"
        )
    return problems


def check_before_run(cfg: NodeConfig, genesis: Genesis) -> None:
    """Raise `ConfigError` naming what to fix, or log warnings on a devnet."""
    if genesis.consensus.reconfiguration and cfg.timing.propose_wait_max_ms is None:
        raise ConfigError(
            "timing.propose_wait_max_ms",
            "the genesis enables validator-set changes, and this node runs them only with "
            'a heartbeat: without one (propose_wait_max_ms = "none") an idle chain may '
            "stop before an activation height, and docs/CONSENSUS.md §10.7's liveness "
            "machinery, which would keep it going, is not built. Set a number of "
            "milliseconds in [timing] (or leave consensus.reconfiguration out of the genesis)",
        )
    profile = []
    if cfg.node.profile != genesis.consensus.timing:
        profile.append(
            f"node.profile is {cfg.node.profile!r} but the genesis says the chain runs the "
            f"{genesis.consensus.timing!r} timing profile: set profile = "
            f'"{genesis.consensus.timing}" in [node] (qchain node config writes it)'
        )
    files = secret_file_problems(cfg)
    if is_devnet_chain(genesis.chain_id):
        for p in files + profile:
            log.warning("devnet %s: %s", genesis.chain_id, p)
        return
    dev = dev_key_problems(cfg, genesis)
    if dev:
        raise ConfigError(
            str(cfg.path or "node config"),
            f"chain {genesis.chain_id!r} is not a devnet (devnet chain ids start with "
            f"{DEVNET_CHAIN_PREFIX!r}) but uses keys derived from the published dev seed, "
            f"which anyone can sign with: {'; '.join(dev)}. Make each site's key with "
            "`qchain validator init` and each member's with `qchain keys new`, then rebuild "
            "the genesis (`qchain genesis build`)",
        )
    if files or profile:
        raise ConfigError(str(cfg.path or "node config"), "; ".join(files + profile))
