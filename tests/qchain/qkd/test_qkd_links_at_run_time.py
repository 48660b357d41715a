"""A link added at run time (a validator joins) takes the parameters of a link of one of
its SAEs: `KeyManager.add_link_like`, what the key manager's `PUT /admin/links/{a}/{b}`
and the whole-network simulator's joiner use."""

from __future__ import annotations

import pytest

from qchain.qkd.clock import VirtualClock
from qchain.qkd.keymanager import KeyManager, LinkConfig


def _manager(*links: LinkConfig) -> KeyManager:
    return KeyManager(list(links), VirtualClock())


def test_a_new_link_copies_a_link_of_either_sae_and_may_take_its_own_rate() -> None:
    m = _manager(
        LinkConfig(("a", "b"), 1000, key_size=128, latency=0.5, initial_key_count=3),
        LinkConfig(("c", "d"), 9000),
    )
    m.add_link_like("e", "a")
    cfg = m.link_config("a", "e")
    assert (cfg.bits_per_second, cfg.key_size, cfg.latency, cfg.initial_key_count) == (
        1000,
        128,
        0.5,
        3,
    )
    m.add_link_like("d", "f", bits_per_second=77)
    assert m.link_config("d", "f").bits_per_second == 77
    assert m.link_config("d", "f").key_size == 256  # c~d's
    m.add_link_like("x", "y")  # neither SAE known: the first link's parameters
    assert m.link_config("x", "y").key_size == 128
    assert {"e", "f", "x", "y"} <= m.saes


def test_a_link_that_exists_or_has_nothing_to_copy_is_refused() -> None:
    m = _manager(LinkConfig(("a", "b"), 1000))
    with pytest.raises(ValueError, match="exists"):
        m.add_link_like("b", "a")
    with pytest.raises(ValueError, match="SAE id"):
        m.add_link_like("a", "no spaces")
    m.drop_link("a", "b")
    with pytest.raises(ValueError, match="no link to copy"):
        m.add_link_like("a", "c")
