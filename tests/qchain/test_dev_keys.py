"""The published dev seed lives in `qchain.keys` so that a node can recognise dev keys
without importing the devnet tooling; devnets keep using it through `devnet.network`."""

from __future__ import annotations

import pytest

from contracts.genesis import TIMING_PROFILES
from devnet.network import DEV_ACCOUNTS, account_key, make_genesis, plan_network, validator_key
from qchain.config import PROFILES
from qchain.errors import ConfigError
from qchain.keys import (
    DEV_ACCOUNT_ROLES,
    Scheme,
    SigningKey,
    dev_seed_label,
    is_devnet_chain,
)


def test_devnet_accounts_are_the_labels_the_node_checks() -> None:
    assert tuple(role for role, _, _ in DEV_ACCOUNTS) == DEV_ACCOUNT_ROLES
    assert tuple(PROFILES) == TIMING_PROFILES


@pytest.mark.parametrize("scheme", [Scheme.ML_DSA_65, Scheme.ED25519])
def test_every_dev_account_key_is_recognised(scheme: Scheme) -> None:
    for role in DEV_ACCOUNT_ROLES:
        key = account_key(role, scheme.value)
        assert dev_seed_label(scheme, key.public_key, 4) == f"account-{role}"


def test_validator_keys_are_recognised_up_to_the_genesis_size() -> None:
    key = validator_key(6)
    assert dev_seed_label(Scheme.ML_DSA_65, key.public_key, 7) == "validator-6"
    assert dev_seed_label(Scheme.ML_DSA_65, key.public_key, 4) is None
    fresh = SigningKey.generate()
    assert dev_seed_label(Scheme.ML_DSA_65, fresh.public_key, 100) is None


def test_devnet_chain_ids_carry_the_prefix() -> None:
    assert is_devnet_chain("qchain-devnet") and is_devnet_chain("qchain-devnet-ci")
    assert not is_devnet_chain("qingdao-pilot-1")
    with pytest.raises(ConfigError) as e:
        plan_network(chain_id="qingdao-pilot-1", base_port=None)
    assert e.value.field == "chain_id"


def test_devnet_genesis_records_its_timing_profile() -> None:
    test = make_genesis(plan_network(profile="test", base_port=None))
    lan = make_genesis(plan_network(profile="lan", base_port=None))
    assert (test.consensus.timing, lan.consensus.timing) == ("test", "lan")
    assert test.hash != lan.hash
