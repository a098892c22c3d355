"""Headers that must not cross the proxy: hop-by-hop ones (RFC 9110 §7.6.1) and the token."""

from __future__ import annotations

from collections.abc import Iterable

RawHeaders = Iterable[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Never forwarded to Docker: the token is the proxy's, not Docker's; Host and the body
# framing are the proxy's own (an allowed request never has a body, see app.py); Expect
# would ask Docker to wait for a body that never comes; Docker has no use for cookies.
REQUEST_ONLY = frozenset({b"authorization", b"host", b"content-length", b"expect", b"cookie"})


def _named_in_connection(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    named: set[bytes] = set()
    for key, value in headers:
        if key.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return named


def _strip(headers: RawHeaders, also: frozenset[bytes]) -> list[tuple[bytes, bytes]]:
    listed = [(key.lower(), value) for key, value in headers]
    drop = HOP_BY_HOP | also | _named_in_connection(listed)
    return [
        (key, value) for key, value in listed if key not in drop and not key.startswith(b"proxy-")
    ]


def request_headers(headers: RawHeaders) -> list[tuple[bytes, bytes]]:
    """The client's headers as Docker may see them."""
    return _strip(headers, REQUEST_ONLY)


def response_headers(headers: RawHeaders) -> list[tuple[bytes, bytes]]:
    """Docker's headers as the client may see them (the ASGI server frames the body)."""
    return _strip(headers, frozenset())
