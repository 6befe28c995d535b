"""Which IP addresses a notification may go to: public unicast ones, by a list written out here.

The list is IANA's IPv4 and IPv6 special-purpose address registries, plus multicast, the reserved
240/4 and the deprecated IPv6 site-local range; it does not lean on `ipaddress`'s flags, whose
answers change with the interpreter's patch level (3.11.7 takes 192.0.0.8 and fec0::1 for public).
Beyond the list, IPv6 is public only inside 2000::/3 (global unicast). An IPv4 address carried in
IPv6 (IPv4-mapped, 6to4, NAT64's well-known prefix) is judged as that IPv4 address.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

# (range, what it is), from https://www.iana.org/assignments/iana-ipv4-special-registry
NOT_PUBLIC_V4: tuple[tuple[IPv4Network, str], ...] = tuple((IPv4Network(net), kind) for net, kind in (
    ("0.0.0.0/8", "this-network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared (carrier-grade NAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignment"),
    ("192.0.2.0/24", "documentation"),
    ("192.31.196.0/24", "AS112"),
    ("192.52.193.0/24", "AMT"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("192.175.48.0/24", "AS112 direct delegation"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),  # 255.255.255.255, the limited broadcast, included
))

# From https://www.iana.org/assignments/iana-ipv6-special-registry and the IPv6 address space registry.
NOT_PUBLIC_V6: tuple[tuple[IPv6Network, str], ...] = tuple((IPv6Network(net), kind) for net, kind in (
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "local-use IPv4/IPv6 translation"),
    ("100::/64", "discard-only"),
    ("100:0:0:1::/64", "dummy prefix"),
    ("2001::/23", "IETF protocol assignment"),  # Teredo, benchmarking, ORCHID, AMT, AS112, ...
    ("2001:db8::/32", "documentation"),
    ("2620:4f:8000::/48", "AS112 direct delegation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing"),
    ("fc00::/7", "unique local (private)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
))
GLOBAL_UNICAST_V6 = IPv6Network("2000::/3")
NAT64 = IPv6Network("64:ff9b::/96")  # carries an IPv4 address in its last 32 bits


def carried(ip: IPv4Address | IPv6Address) -> IPv4Address | IPv6Address:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64), else the address itself."""
    if isinstance(ip, IPv4Address):
        return ip
    inner = ip.ipv4_mapped or ip.sixtofour
    if inner is None and ip in NAT64:
        inner = IPv4Address(int(ip) & 0xFFFFFFFF)
    return inner or ip


def why_not_public(address: str) -> str | None:
    """What kind of non-public address this is (e.g. "loopback"), or None for a public unicast one."""
    ip = carried(ip_address(address))
    if isinstance(ip, IPv4Address):
        return next((kind for net, kind in NOT_PUBLIC_V4 if ip in net), None)
    kind = next((kind for net, kind in NOT_PUBLIC_V6 if ip in net), None)
    if kind is None and ip not in GLOBAL_UNICAST_V6:
        return "not global unicast"
    return kind


def is_address(host: str) -> bool:
    """Whether `host` is an IP address literal rather than a name."""
    try:
        ip_address(host)
    except ValueError:
        return False
    return True
