"""Listen and peer addresses: host names, IPv4 and bracketed IPv6, one parser for the
config, the transport and the listeners."""

from __future__ import annotations

import pytest

from qchain.config import split_address


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("localhost:26600", ("localhost", 26600)),
        ("val.port.example:1", ("val.port.example", 1)),
        ("0.0.0.0:8443", ("0.0.0.0", 8443)),
        ("[::1]:9000", ("::1", 9000)),
    ],
)
def test_listen_and_peer_addresses_take_names_and_ipv6(text: str, parts: tuple[str, int]) -> None:
    assert split_address(text) == parts


@pytest.mark.parametrize("text", ["localhost", ":1", "h:0", "h:65536", "h:x", "[]:1"])
def test_bad_addresses(text: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        split_address(text)
