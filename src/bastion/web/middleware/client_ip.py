"""The client's address, as seen through a known number of trusted reverse proxies.

Each trusted proxy appends the address it received the request from to
X-Forwarded-For. With N trusted hops, the N-th entry from the right was written by the
outermost trusted proxy, so it is the first address an attacker cannot choose. Entries
further left are client-supplied: taking the left-most one (as the original did) let any
client pick its own address and walk past IP-based throttling.
"""

from __future__ import annotations

import functools
import ipaddress

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

UNKNOWN = "0.0.0.0"  # noqa: S104 - a placeholder address, never bound


@functools.lru_cache(maxsize=4096)  # bounded: random junk cannot grow it
def _parse_ip(value: str) -> str | None:
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _header_entries(scope: Scope, name: bytes) -> list[str] | None:
    values = [v for k, v in scope.get("headers", ()) if k == name]
    if not values:
        return []
    try:
        joined = b",".join(values).decode("ascii")
    except UnicodeDecodeError:
        return None
    return [entry.strip() for entry in joined.split(",")]


def resolve_client(scope: Scope, trust_count: int) -> tuple[str, str]:
    """(client address, scheme) for a request; the socket peer whenever in doubt."""
    peer = scope.get("client")
    peer_ip = (_parse_ip(peer[0]) if peer else None) or UNKNOWN
    scheme = str(scope.get("scheme", "http"))
    if trust_count == 0:
        return peer_ip, scheme
    forwarded = _header_entries(scope, b"x-forwarded-for")
    if forwarded is None or len(forwarded) < trust_count:
        return peer_ip, scheme
    client = _parse_ip(forwarded[-trust_count])
    if client is None:
        return peer_ip, scheme
    protos = _header_entries(scope, b"x-forwarded-proto") or []
    if protos and protos[-1].lower() in ("http", "https"):
        scheme = protos[-1].lower()
    return client, scheme


def client_ip(request: HTTPConnection) -> str:
    """The address ClientIPMiddleware resolved for this request."""
    return str(request.scope.get("state", {}).get("client_ip", UNKNOWN))


class ClientIPMiddleware:
    def __init__(self, app: ASGIApp, *, trust_count: int) -> None:
        if trust_count < 0:
            raise ValueError("trust_count must be >= 0")
        self.app = app
        self.trust_count = trust_count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            client_ip, scheme = resolve_client(scope, self.trust_count)
            state = scope.setdefault("state", {})
            state["client_ip"] = client_ip
            state["scheme"] = scheme
        await self.app(scope, receive, send)
