"""Which sources may call the node: trusted networks, and the registrar.

Sans-I/O: addresses in, yes/no out. A conferencing node on a public address would otherwise
take calls (and spend answer-URL requests and media ports) for anyone who finds it.
"""

from __future__ import annotations

import ipaddress
import socket

DEFAULT_TRUST = ("127.0.0.0/8", "::1/128")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: tuple[str, ...] | list[str]) -> list[Network]:
    nets = []
    for c in cidrs:
        try:
            nets.append(ipaddress.ip_network(c.strip(), strict=False))
        except ValueError:
            raise ValueError(f"trust: {c!r} is not an address or CIDR network") from None
    return nets


def source_ip(src: str) -> str:
    """The address of pjsip's ``host:port`` / ``[v6]:port`` source string."""
    src = src.strip()
    if src.startswith("["):
        return src[1:src.find("]")]
    if src.count(":") == 1:
        return src.rsplit(":", 1)[0]
    return src


class TrustedSources:
    def __init__(self, cidrs: tuple[str, ...] | list[str], hosts: tuple[str, ...] = ()):
        self.networks = parse_networks(cidrs)
        for host in hosts:  # the registrar: every address its name has now
            for ip in resolve(host):
                self.networks.append(ipaddress.ip_network(ip))

    def allows(self, src: str) -> bool:
        try:
            ip = ipaddress.ip_address(source_ip(src))
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == n.version and ip in n for n in self.networks)


def resolve(host: str) -> list[str]:
    try:
        return sorted({ai[4][0] for ai in socket.getaddrinfo(host, None)})
    except OSError:
        return []
