"""Where workflows may send HTTP requests: a deny list of address ranges (SSRF defense).

A workflow author chooses URLs, so without a policy a workflow could read cloud metadata
(instance credentials at 169.254.169.254), Bastion's own HTTP API, its database or Redis,
or any service listening on loopback. The policy decides on resolved addresses, never on
names or URL text: every address a name resolves to is checked, and the caller connects to
the one address that was returned (pinned), so a second DNS answer cannot swap in another
(DNS rebinding). Numeric spellings (`2130706433`, `0x7f.1`, `127.1`) are resolved by the
system resolver like any name and so land on the address they really mean.

Order of the decision: Bastion's own services (`internal`) are always refused; an `allow`
entry opens a hole in the deny list (an operator's service on loopback); otherwise an
address inside a `deny` range is refused and any other address is permitted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeAlias, TypeVar

from bastion.errors import InvalidInput
from bastion.workflows.errors import NodeFailed

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
_T = TypeVar("_T")

DEFAULT_DENY: tuple[str, ...] = (
    "0.0.0.0/8",  # "this network": 0.0.0.0 reaches local listeners on Linux
    "127.0.0.0/8",
    "::1/128",
    "::/128",
    "169.254.0.0/16",  # link-local, home of the cloud metadata services
    "fe80::/10",
    "fd00:ec2::254/128",  # AWS instance metadata over IPv6
    "100.100.100.200/32",  # Alibaba Cloud metadata
    "224.0.0.0/4",  # multicast
    "ff00::/8",
    "255.255.255.255/32",
)

# Prefixes whose addresses carry an IPv4 address in their low 32 bits and may be translated
# to it on the way (IPv4-compatible, NAT64): 64:ff9b::a9fe:a9fe can reach 169.254.169.254.
_EMBEDS_IPV4 = (ipaddress.IPv6Network("::/96"), ipaddress.IPv6Network("64:ff9b::/96"))
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


class EgressDenied(NodeFailed):
    """The egress policy refused a destination; the message names the host and the reason."""


@dataclass(frozen=True)
class Endpoint:
    """An address range, optionally narrowed to one port (None: every port)."""

    network: IPNetwork
    port: int | None = None

    def matches(self, address: IPAddress, port: int) -> bool:
        return address in self.network and self.port in (None, port)


def _parse_network(text: str) -> IPNetwork:
    # strict: "10.0.0.1/8" is almost certainly a typo for a narrower or wider range, and
    # silently widening it to 10.0.0.0/8 would deny or allow more than the operator meant.
    network = ipaddress.ip_network(text.strip(), strict=True)
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        # Addresses are judged in their IPv4 form, so an IPv4-mapped entry must be too,
        # or it would never match anything.
        low = int(network.network_address) & 0xFFFFFFFF
        return ipaddress.IPv4Network((low, network.prefixlen - 96))
    return network


def _parse_endpoint(entry: str) -> Endpoint:
    text = entry.strip()
    port_text: str | None = None
    if text.startswith("["):
        address, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError("expected [address]:port")
    elif text.count(":") == 1:  # IPv4 with a port; a bare IPv6 address has several colons
        address, _, port_text = text.partition(":")
    else:
        address = text
    network = _parse_network(address)
    if port_text is None:
        return Endpoint(network)
    if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536):
        raise ValueError("port must be a number from 1 to 65535")
    return Endpoint(network, int(port_text))


def _normalise(address: IPAddress) -> IPAddress:
    # ::ffff:127.0.0.1 is 127.0.0.1 on a dual-stack socket: decide on the IPv4 form.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _embedded(address: IPAddress) -> tuple[IPAddress, ...]:
    """IPv4 addresses that an IPv6 address may be translated to before it leaves the host."""
    if not isinstance(address, ipaddress.IPv6Address):
        return ()
    found: list[IPAddress] = [
        ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        for prefix in _EMBEDS_IPV4
        if address in prefix
    ]
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    return tuple(found)


@dataclass(frozen=True)
class EgressPolicy:
    """Which addresses workflow HTTP requests may connect to.

    `deny`: ranges refused (DEFAULT_DENY, plus what the operator adds, e.g. private LANs).
    `allow`: endpoints permitted even inside a denied range (a service on loopback).
    `internal`: Bastion's own listeners (HTTP, database, Redis, docker proxy); refused even
    when `allow` or the deny list would let them through.
    """

    deny: tuple[IPNetwork, ...]
    allow: tuple[Endpoint, ...] = ()
    internal: tuple[Endpoint, ...] = ()

    @classmethod
    def parse(
        cls, deny: Sequence[str], allow: Sequence[str] = (), internal: Sequence[str] = ()
    ) -> EgressPolicy:
        """Build a policy from configuration text.

        `deny`: CIDRs or single addresses. `allow`, `internal`: "ip:port", "[ipv6]:port", a
        CIDR or single address (every port), or a CIDR with a port ("10.0.0.0/8:5432").
        Raises InvalidInput naming the first bad entry.
        """
        return cls(
            deny=tuple(_parse_each("deny", deny, _parse_network)),
            allow=tuple(_parse_each("allow", allow, _parse_endpoint)),
            internal=tuple(_parse_each("internal", internal, _parse_endpoint)),
        )

    async def resolve(self, host: str, port: int) -> str:
        """Resolve `host` and return the address to connect to, if all its addresses pass.

        Raises EgressDenied when any address is refused, NodeFailed when `host` does not
        resolve.
        """
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except OSError as exc:
            raise NodeFailed(f"cannot resolve {host}: {exc.strerror}") from None
        except (UnicodeError, ValueError):
            raise NodeFailed(f"cannot resolve {host}: not a valid host name") from None
        return self.permitted_address(host, port, [str(info[4][0]) for info in infos])

    def permitted_address(self, host: str, port: int, addresses: Sequence[str]) -> str:
        """The address to connect to out of what `host` resolved to; every one must pass.

        All, not the first: the resolver's order is not the connector's order, and a name
        with one public and one private record would otherwise reach the private one.
        """
        if not addresses:
            raise NodeFailed(f"cannot resolve {host}: no addresses")
        checked = [self._check(host, port, ipaddress.ip_address(text)) for text in addresses]
        return str(checked[0])

    def _check(self, host: str, port: int, address: IPAddress) -> IPAddress:
        address = _normalise(address)
        forms = (address, *_embedded(address))
        for endpoint in self.internal:
            if any(endpoint.matches(form, port) for form in forms):
                raise EgressDenied(
                    f"egress to {host} refused: {_with_port(address, port)} is one of "
                    "Bastion's own services"
                )
        if any(endpoint.matches(address, port) for endpoint in self.allow):
            return address
        for form in forms:
            for network in self.deny:
                if form in network:
                    via = "" if form == address else f" (reaching {form})"
                    raise EgressDenied(
                        f"egress to {host} refused: resolves to {address}{via}, inside "
                        f"denied range {network}"
                    )
        return address


def _with_port(address: IPAddress, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def _parse_each(kind: str, entries: Sequence[str], parse: Callable[[str], _T]) -> list[_T]:
    parsed: list[_T] = []
    for entry in entries:
        try:
            parsed.append(parse(entry))
        except ValueError as exc:
            raise InvalidInput(f"egress {kind} entry {entry!r} is not valid: {exc}") from None
    return parsed
