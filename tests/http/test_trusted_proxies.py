"""Tests of trusted proxies: parsed once (settings and the CLI option), looked up per request."""

from __future__ import annotations

import argparse
import ipaddress

import pytest

from trioshop.cli.options import ip_address
from trioshop.config import Settings
from trioshop.http.admin import client_address

PROXY = ipaddress.ip_address("10.0.0.5")


def test_settings_parse_the_addresses_once_into_a_set() -> None:
    """Settings hold the trusted proxies as a set of address objects, written forms folded."""
    settings = Settings(trusted_proxies=["10.0.0.5", "::1", "0:0::1", PROXY])
    assert settings.trusted_proxies == frozenset({PROXY, ipaddress.ip_address("::1")})


@pytest.mark.parametrize("bad", ["proxy.local", "10.0.0.0/8", "", 167772165])
def test_settings_refuse_what_is_not_an_address(bad: object) -> None:
    """A name, a network, an empty string or a number is refused, naming what is expected."""
    with pytest.raises(ValueError, match=r"expected an IP address such as 127\.0\.0\.1, got"):
        Settings(trusted_proxies=[bad])


def test_the_cli_option_uses_the_same_parser_and_message() -> None:
    """--trusted-proxy gives Settings' address object, or Settings' message as argparse's."""
    assert ip_address("10.0.0.5") == PROXY
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        ip_address("proxy.local")
    with pytest.raises(ValueError) as settings_refused:
        Settings(trusted_proxies=["proxy.local"])
    assert str(refused.value) == str(settings_refused.value)


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("10.0.0.5", ["203.0.113.7"], "203.0.113.7"),
        ("10.0.0.5", ["198.51.100.1, 203.0.113.7"], "203.0.113.7"),
        ("10.0.0.5", ["198.51.100.1", "203.0.113.7"], "203.0.113.7"),
        ("10.0.0.5", ["not-an-address"], "unknown"),
        ("10.0.0.5", [], "10.0.0.5"),
        ("10.0.0.6", ["127.0.0.1"], "10.0.0.6"),
        (None, ["127.0.0.1"], None),
    ],
)
def test_client_address_trusts_only_a_listed_peer(
    peer: str | None, forwarded: list[str], client: str | None
) -> None:
    """From a trusted peer the last X-Forwarded-For address is the client; else the peer."""
    assert client_address(peer, forwarded, frozenset({PROXY})) == client
