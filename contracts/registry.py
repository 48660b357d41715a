"""The contracts the pilot platform runs, in begin-block hook order."""

from __future__ import annotations

from contracts import membership, notary, validators, voucher
from contracts.runtime import Registry

DEFAULT_REGISTRY = Registry(
    [membership.contract, notary.contract, voucher.contract, validators.contract]
)
