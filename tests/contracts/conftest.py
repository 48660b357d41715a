"""Fixtures for the contract tests."""

from __future__ import annotations

import pytest

from contracts.testing import DevChain, pilot_chain
from qchain.store import MemoryStore


@pytest.fixture
def chain() -> DevChain:
    """A chain on a memory store with one member per role (`PILOT_MEMBERS`)."""
    return pilot_chain(MemoryStore())
