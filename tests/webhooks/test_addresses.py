"""Which addresses are public: an explicit list of IANA's special-purpose ranges, whatever the interpreter knows."""

from __future__ import annotations

import pytest

from webhooks.addresses import why_not_public


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.2", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.5.4", "private"),
    ("192.168.0.1", "private"),
    ("100.64.0.1", "shared (carrier-grade NAT)"),
    ("169.254.169.254", "link-local"),
    ("0.0.0.0", "this-network"),
    ("224.0.0.1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    # Python 3.11.7's ipaddress takes these for global (fixed only in later patch releases):
    ("192.0.0.8", "IETF protocol assignment"),
    ("192.0.0.9", "IETF protocol assignment"),
    ("192.0.0.170", "IETF protocol assignment"),
    # Special-purpose, yet marked globally reachable by IANA: still no place for a notification.
    ("192.31.196.1", "AS112"),
    ("192.52.193.1", "AMT"),
    ("192.175.48.1", "AS112 direct delegation"),
    ("192.88.99.1", "6to4 relay anycast"),
    ("198.18.0.1", "benchmarking"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.1", "documentation"),
    ("203.0.113.1", "documentation"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fe80::1", "link-local"),
    ("fec0::1", "site-local"),  # deprecated site-local: public for Python 3.11.7
    ("fd12:3456::1", "unique local (private)"),
    ("ff02::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("2001::1", "IETF protocol assignment"),  # Teredo
    ("2001:1::1", "IETF protocol assignment"),
    ("2001:20::1", "IETF protocol assignment"),
    ("2620:4f:8000::1", "AS112 direct delegation"),
    ("5f00::1", "segment routing"),
    ("100::1", "discard-only"),
    ("64:ff9b:1::1", "local-use IPv4/IPv6 translation"),
    ("4000::1", "not global unicast"),
    ("::1.2.3.4", "not global unicast"),  # deprecated IPv4-compatible
    # IPv4 inside IPv6 is judged as the IPv4 address it carries.
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:192.0.0.8", "IETF protocol assignment"),
    ("64:ff9b::a00:1", "private"),
    ("2002:c0a8:1::", "private"),
])
def test_special_purpose_addresses_are_not_public(address: str, kind: str) -> None:
    assert why_not_public(address) == kind


@pytest.mark.parametrize("address", [
    "93.184.215.14", "8.8.8.8", "1.1.1.1", "192.0.1.1", "192.0.3.1", "100.128.0.1", "172.32.0.1",
    "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "2a00:1450:4001:80b::200e",
    "::ffff:93.184.215.14", "64:ff9b::808:808", "2002:5db8:d70e::1",
])
def test_public_unicast_addresses_pass(address: str) -> None:
    assert why_not_public(address) is None
